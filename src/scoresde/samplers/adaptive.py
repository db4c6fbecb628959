"""Adaptive-step reverse-SDE solver of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast",
Algorithm 1): Euler-Maruyama and stochastic improved Euler with the same noise, their difference
as the error estimate, a step size per example, and the Brownian increment of a rejected step
kept (split by the Brownian bridge), so that rejection selects no noise."""

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
    sde: SDE, score: CheckedScore, x: Tensor, t: Tensor, h: Tensor, dW: Tensor
) -> tuple[Tensor, Tensor]:
    """Euler-Maruyama ``x'`` and stochastic improved Euler ``x''`` of the reverse SDE over ``h``,
    both driven by the same Brownian increment ``dW`` (variance ``h``; Algorithm 1)."""
    hb = bcast(h, x)
    k1 = -hb * sde.reverse_drift(x, t, score(x, t)) + bcast(sde.g(t), x) * dW
    x1, t1 = x + k1, t - h
    k2 = -hb * sde.reverse_drift(x1, t1, score(x1, t1)) + bcast(sde.g(t1), x) * dW
    return x1, x + 0.5 * (k1 + k2)


class _Path(NamedTuple):
    """The known future of each example's Brownian path: a stack of ``(length, increment)``
    segments that follow its current time, top last (rejection sampling with memory, RSwM1 of
    Rackauckas & Nie 2017). ``count`` is the stack height per example."""

    length: Tensor  # (B, K)
    dW: Tensor  # (B, K, ...)
    count: Tensor  # (B,) long


def _pop(path: _Path, h: Tensor, t: Tensor, eps: float, xi: Tensor) -> tuple[Tensor, Tensor, _Path]:
    """The step size and Brownian increment of the next attempt: the top segment where the stack
    holds one, else the proposal ``min(h, t - eps)`` with a fresh ``sqrt(h) xi``."""
    rows, top = torch.arange(len(t), device=t.device), (path.count - 1).clamp(min=0)
    known = path.count > 0
    h_use = torch.where(known, path.length[rows, top], torch.minimum(h, t - eps))
    dW = torch.where(bcast(known, xi), path.dW[rows, top], bcast(h_use.sqrt(), xi) * xi)
    return h_use, dW, path._replace(count=path.count - known.long())


def _push(path: _Path, where: Tensor, length: Tensor, dW: Tensor) -> _Path:
    """Push ``(length, dW)`` onto the stacks of the examples ``where`` (in place)."""
    rows, top = torch.arange(len(where), device=where.device), path.count
    L, W = path.length, path.dW
    L[rows, top] = torch.where(where, length, L[rows, top])
    W[rows, top] = torch.where(bcast(where, dW), dW, W[rows, top])
    return _Path(L, W, path.count + where.long())


def _split(path: _Path, rej: Tensor, h_use: Tensor, h_new: Tensor, dW: Tensor, xi: Tensor):
    """A rejected step keeps its increment: the Brownian bridge gives the part over ``h_new``,
    ``W' ~ N((h_new / h) dW, h_new (h - h_new) / h)``; the rest ``dW - W'`` over ``h - h_new``
    goes on the stack under it, so the path stays one Brownian path whatever is rejected."""
    q = torch.where(rej, h_new / h_use, torch.zeros_like(h_use))
    part = bcast(q, dW) * dW + bcast((h_new * (1 - q)).clamp(min=0).sqrt(), dW) * xi
    path = _push(path, rej, h_use - h_new, dW - part)
    return _push(path, rej, h_new, part)


def _attempt(sde, score, state, eps, c, generator):
    """One attempt for every example: ``(x, x'_prev, t, h, path)`` after it.

    ``E = ||(x' - x'') / delta||_rms`` per example with ``delta = max(atol, rtol max(|x'|,
    |x'_prev|))``; where ``E <= 1`` the step is accepted and ``x''`` kept (extrapolation), else
    the increment is split (:func:`_split`); then ``h <- min(t - eps, theta h E^(-r))``.
    """
    x, x_prev, t, h, path = state
    h_use, dW, path = _pop(path, h, t, eps, randn(x, generator))
    x1, x2 = _em_heun(sde, score, x, t, h_use, dW)
    delta = torch.clamp(c.rtol * torch.maximum(x1.abs(), x_prev.abs()), min=c.atol)
    E = _flat_rms((x2 - x1) / delta)
    ok, active = E <= 1, h_use > 0
    x, x_prev = torch.where(bcast(ok, x), x2, x), torch.where(bcast(ok, x), x1, x_prev)
    h_new = torch.where(active, c.safety * h_use * E.pow(-c.exponent), h_use)
    path = _split(path, ~ok & active, h_use, h_new, dW, randn(x, generator))
    done = ok & (t - h_use <= eps)
    t = torch.where(done, eps, torch.where(ok, t - h_use, t))
    path = path._replace(count=torch.where(done, 0, path.count))
    return x, x_prev, t, torch.minimum(t - eps, h_new), path


def _grow(path: _Path, need: int) -> _Path:
    """Room for ``need`` segments per example (the stack grows by doubling)."""
    K = path.length.shape[1]
    if need <= K:
        return path
    extra = max(need, 2 * K) - K
    L = torch.cat([path.length, path.length.new_zeros(len(path.count), extra)], 1)
    W = torch.cat([path.dW, path.dW.new_zeros(len(path.count), extra, *path.dW.shape[2:])], 1)
    return _Path(L, W, path.count)


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

    ``E`` depends on each example's own noise: new noise after a rejection would select
    increments (on the 2-D mixture that inflated the covariance, more as rtol fell). A rejected
    increment is kept instead: the Brownian bridge splits it and the rest waits on a per-example
    stack (RSwM1 of Rackauckas & Nie 2017), so every example follows one Brownian path. Steps
    from the stack are taken as they are (about 1.3x the NFE at rtol = 0.05 in 2-D).

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
    B, count = x.shape[0], torch.zeros(x.shape[:1], dtype=torch.long, device=x.device)
    path = _Path(x.new_zeros(B, 2), x.new_zeros(B, 2, *x.shape[1:]), count)
    state, height = (x, x, t, torch.clamp(torch.full_like(t, h_init), max=sde.T - eps), path), 0
    with score:  # a NaN / inf score is the usual cause of a broken step size: say so
        for i in itertools.count():
            state = (*state[:4], _grow(state[4], height + 2))
            state = _attempt(sde, score, state, eps, c, generator)
            report(callback, i, state[2], state[0], state[0])
            t, h, path = state[2:]
            flags = [(t > eps).any().long(), (~torch.isfinite(h).all()).long(), path.count.max()]
            running, broken, height = torch.stack(flags).tolist()
            if broken:
                raise RuntimeError(
                    "sample_adaptive: the step size became NaN or inf (check score_fn)"
                )
            if not running:
                break
    return finish(score, state[0], end_node(sde, eps), denoise)
