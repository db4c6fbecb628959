"""Adaptive-step reverse-SDE solver of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast",
Algorithm 1): Euler-Maruyama and stochastic improved Euler with the same noise, their difference
as the error estimate, a step size per example."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_eps, check_range, start_state
from ..core.sde import SDE, bcast
from ._shared import Callback, ScoreFn, end_node, finish, randn, report

__all__ = ["sample_adaptive"]

ATOL_8BIT = 0.0078  # the paper's atol: about one 8-bit level of data scaled to [-1, 1]


class _Control(NamedTuple):
    """The step-size control: tolerances, and theta and r of ``h <- theta h E^(-r)``."""

    rtol: float
    atol: float
    safety: float
    exponent: float


def _flat_rms(v: Tensor) -> Tensor:
    """Per-example root mean square ``sqrt(||v||^2 / n)``: the paper's scaled L2 norm."""
    return v.reshape(v.shape[0], -1).square().mean(dim=1).sqrt()


def _em_heun(
    sde: SDE, score: CheckedScore, x: Tensor, t: Tensor, h: Tensor, w: Tensor
) -> tuple[Tensor, Tensor]:
    """Euler-Maruyama ``x'`` and stochastic improved Euler ``x''`` of the reverse SDE over ``h``,
    both driven by the same ``w ~ N(0, I)`` (Algorithm 1)."""
    hb, sq = bcast(h, x), bcast(h.sqrt(), x)
    k1 = -hb * sde.reverse_drift(x, t, score(x, t)) + bcast(sde.g(t), x) * sq * w
    x1, t1 = x + k1, t - h
    k2 = -hb * sde.reverse_drift(x1, t1, score(x1, t1)) + bcast(sde.g(t1), x) * sq * w
    return x1, x + 0.5 * (k1 + k2)


def _attempt(
    sde: SDE,
    score: CheckedScore,
    state: tuple[Tensor, Tensor, Tensor, Tensor],
    eps: float,
    c: _Control,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One attempt for every example: ``(x, x'_prev, t, h)`` after it.

    ``E = ||(x' - x'') / delta||`` with ``delta = max(atol, rtol max(|x'|, |x'_prev|))``; where
    ``E <= 1`` the step is accepted and ``x''`` kept (extrapolation); then
    ``h <- min(t - eps, theta h E^(-r))``.
    """
    x, x_prev, t, h = state
    x1, x2 = _em_heun(sde, score, x, t, h, randn(x, generator))
    delta = torch.clamp(c.rtol * torch.maximum(x1.abs(), x_prev.abs()), min=c.atol)
    E = _flat_rms((x2 - x1) / delta)
    ok = E <= 1
    x, x_prev = torch.where(bcast(ok, x), x2, x), torch.where(bcast(ok, x), x1, x_prev)
    t = torch.where(ok, torch.where(h >= t - eps, eps, t - h), t)
    # examples already at eps keep h = 0 (and 0 * inf is avoided)
    h = torch.minimum(t - eps, torch.where(h > 0, c.safety * h * E.pow(-c.exponent), h))
    return x, x_prev, t, h


def _control(rtol: float, atol: float | None, safety: float, exponent: float) -> _Control:
    return _Control(
        check_range("rtol", rtol, 0, open_low=True),
        check_range("atol", ATOL_8BIT if atol is None else atol, 0),
        check_range("safety", safety, 0, 1, open_low=True),
        check_range("exponent", exponent, 0, open_low=True),
    )


def sample_adaptive(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    rtol: float = 0.05,
    atol: float | None = None,
    eps: float | None = None,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Adaptive reverse-SDE steps from T to ``eps``, each example with its own ``t`` and ``h`` as
    in the authors' code; an attempt evaluates the whole batch twice, until every example has
    reached ``eps`` (one host sync per attempt, to test for the end).

    Dimension matters: ``E`` is driven by the noise ``w`` itself, and a rejected attempt draws new
    noise, so acceptance favours small draws. Where ``E`` averages over many entries (images, the
    design regime) that selection is negligible; on the 2-D test mixture it shrinks the covariance
    by about 0.27 at rtol = 0.05, while on 64-D copies of it the error stays below 0.01. The
    algorithm is kept as published.

    Args:
        rtol, atol: relative and absolute tolerances; ``atol=None`` is the paper's 0.0078
            (about one 8-bit level of data scaled to [-1, 1]; state it in data units otherwise).
        h_init: first step size; ``safety``, ``exponent``: theta and r of the step update.
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = 2 attempts + denoise``.
    """
    eps, c = check_eps(sde, eps), _control(rtol, atol, safety, exponent)
    h_init = check_range("h_init", h_init, 0, open_low=True)
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    t = torch.full(x.shape[:1], sde.T, device=x.device, dtype=x.dtype)
    state = (x, x, t, torch.clamp(torch.full_like(t, h_init), max=sde.T - eps))
    with score:  # a NaN / inf score is the usual cause of a broken step size: say so
        for i in itertools.count():
            state = _attempt(sde, score, state, eps, c, generator)
            report(callback, i, state[2], state[0], state[0])
            t, h = state[2:]
            running, broken = torch.stack([(t > eps).any(), ~torch.isfinite(h).all()]).tolist()
            if broken:
                raise RuntimeError(
                    "sample_adaptive: the step size became NaN or inf (check score_fn)"
                )
            if not running:
                break
    return finish(score, state[0], end_node(sde, eps), denoise)
