"""EDM's Heun sampler (Karras et al. 2022, Algorithm 2) on the probability-flow ODE of any SDE.

It works in ``y = x / alpha(t)``, whose noise level is ``sigma_edm = sigma / alpha = exp(-lambda)``
(VE: y = x), so one code path serves VE, VP and sub-VP (see :mod:`._shared`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_range, start_state
from ..core.sde import SDE
from ._shared import Callback, Node, ScoreFn, end_node, finish, nodes, randn, report, score_at
from .grids import time_grid

__all__ = ["sample_heun"]


def _slope(score: CheckedScore, y: Tensor, n: Node) -> Tensor:
    """``dy / dsigma_edm`` of the probability-flow ODE in ``y = x / alpha``.

    ``y`` has noise level ``sigma_edm = sigma / alpha``, and EDM's ODE (Karras et al. 2022, Eq. 4
    with s = 1) reads ``dy/dsigma_edm = -sigma_edm grad_y log p(y) = -sigma_edm alpha s(alpha y, t)
    = -sigma s(x, t)``, which equals EDM's ``(y - D(y)) / sigma_edm`` with ``D = x0_theta``.
    """
    return -n.sigma * score_at(score, n.alpha * y, n)


def _churn_levels(
    sde: SDE, t: Tensor, churn: float, s_tmin: float, s_tmax: float
) -> tuple[list[Node], list[float]]:
    """EDM's raised levels ``sigma_hat = (1 + gamma_i) sigma_i`` (Algorithm 2, lines 4-6).

    ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` where ``S_tmin <= sigma_i <= S_tmax``, else 0; it is
    also capped so that ``sigma_hat`` never exceeds ``sigma_edm(T)`` (no time past T).
    Returns the nodes at ``t_hat`` and the std ``sqrt(sigma_hat^2 - sigma_i^2)`` of the added noise.
    """
    sig = torch.exp(-sde.log_snr(t[:-1]))
    inside = (sig >= s_tmin) & (sig <= s_tmax)
    gamma = torch.where(inside, min(churn / len(sig), math.sqrt(2) - 1), 0.0)
    gamma = torch.minimum(gamma, sig[0] / sig - 1).clamp(min=0)
    sig_hat = sig * (1 + gamma)
    t_hat = torch.where(gamma > 0, sde.t_of_log_snr(-sig_hat.log()), t[:-1])
    return nodes(sde, t_hat), torch.sqrt(sig_hat**2 - sig**2).tolist()


def _heun_step(score: CheckedScore, y: Tensor, hat: Node, nxt: Node) -> Tensor:
    """One Heun (trapezoidal) step in ``sigma_edm`` from ``hat`` to ``nxt`` (lines 7-10)."""
    dsig = nxt.sigma_edm - hat.sigma_edm
    d = _slope(score, y, hat)
    d2 = _slope(score, y + dsig * d, nxt)  # slope at the Euler end point
    return y + dsig * 0.5 * (d + d2)


def _check_churn(churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    check_range("churn", churn, 0)
    check_range("s_noise", s_noise, 0)
    if not s_tmin <= s_tmax:
        raise ValueError(f"need s_tmin <= s_tmax, got {s_tmin}, {s_tmax}")


def sample_heun(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    steps: int | None = None,
    grid: str | Tensor = "edm",
    eps: float | None = None,
    rho: float = 7.0,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """EDM's Heun sampler: second-order (trapezoidal) steps in ``sigma_edm`` from T to ``eps``.

    With ``churn > 0`` noise first lifts ``sigma_i`` to ``(1 + gamma_i) sigma_i``. ``denoise`` adds
    EDM's last step, the Euler step from ``sigma_edm(eps)`` to 0, which is exactly Tweedie's
    ``x0 = (x + sigma^2 s) / alpha``. EDM's N noise levels (35 NFE at N = 18) are
    ``steps = N - 1`` with ``denoise=True`` here.

    Args:
        steps: Heun steps between T and ``eps`` (default 18, or the intervals of a grid tensor).
        grid: EDM's grid (:func:`scoresde.samplers.grids.edm`, exponent ``rho``, 7 in the
            paper), another name in :data:`~scoresde.samplers.grids.GRIDS`, or a decreasing
            tensor of times from T to ``eps`` (``eps=None``: its last time).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        churn, s_tmin, s_tmax, s_noise: EDM's ``S_churn, S_tmin, S_tmax, S_noise`` (levels in
            ``sigma_edm``); ``churn=0`` is the deterministic sampler.
        denoise: finish with the Euler step to ``sigma_edm = 0`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = 2 steps + denoise``.
    """
    _check_churn(churn, s_tmin, s_tmax, s_noise)
    options = {"rho": rho} if isinstance(grid, str) and grid == "edm" else {}
    t, eps = time_grid(sde, grid, steps, eps, default=18, **options)
    line, (hat, lift) = nodes(sde, t), _churn_levels(sde, t, churn, s_tmin, s_tmax)
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    y = x / line[0].alpha
    for i in range(len(line) - 1):
        if lift[i] > 0:  # Algorithm 2, line 5: raise the noise level to sigma_hat
            y = y + lift[i] * s_noise * randn(y, generator)
        y = _heun_step(score, y, hat[i], line[i + 1])
        x = line[i + 1].alpha * y
        report(callback, i, line[i + 1].t, x, x)
    return finish(score, line[-1].alpha * y, end_node(sde, eps), denoise)
