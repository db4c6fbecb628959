"""Diffusion posterior sampling (DPS; Chung et al. 2023, Algorithm 1).

Each step is a predictor step of the unconditional reverse SDE followed by a gradient step on the
data-fit of the Tweedie denoiser ``x0_hat(x_t) = (x_t + sigma(t)^2 s(x_t, t)) / alpha(t)``:

    x_{i-1} = x'_{i-1} - zeta_i grad_{x_i} ||y - A x0_hat(x_i)||^2,
    zeta_i = zeta / ||y - A x0_hat(x_i)||        (the paper's step size, Appendix C.2),

so the step is ``2 zeta`` times the gradient of the residual norm, per example. One score
evaluation per step, differentiated once (a vector-Jacobian product through ``score_fn``).
Noisy ``y`` is allowed (the Gaussian data-fit is the one above). Where ``noise_std == 0`` the
observed part is set to ``y`` at the end, so ``A x = y`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_range, lookup
from ..core.sde import SDE, bcast
from ..samplers.pc import PREDICTORS, _check_chain
from .observations import Observation
from .projection import Chain, Generator, start

__all__ = ["sample_dps", "dps_gradient"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def dps_gradient(
    score: ScoreFn, obs: Observation, x: Tensor, t: Tensor, alpha: Tensor, sigma: Tensor
) -> tuple[Tensor, Tensor]:
    """``(s, g)``: the score at ``(x, t)`` and ``g = grad_x ||y - A x0_hat(x)||`` per example
    (``alpha``, ``sigma``: ``(B,)`` schedules at ``t``)."""
    with torch.inference_mode(False), torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        s = score(xr, t)
        x0 = (xr + bcast(sigma**2, xr) * s) / bcast(alpha, xr)
        r = obs.y.to(xr) - obs.A(x0)
        norm = torch.linalg.vector_norm(r.reshape(xr.shape[0], -1), dim=1)
        (g,) = torch.autograd.grad(norm.sum(), xr)
    return s.detach(), g


def sample_dps(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    obs: Observation,
    *,
    zeta: float = 1.0,
    predictor: str | Callable = "reverse_diffusion",
    steps: int | None = None,
    eps: float | None = None,
    denoise: bool = True,
    generator: Generator = None,
    callback: Callable[[int, Tensor, Tensor, Tensor], None] | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """DPS sampling of ``p(x | y)`` (see the module).

    Args:
        zeta: the step size zeta' of the paper (its experiments use 0.1 to 1).
        predictor: the unconditional step (a name in ``PREDICTORS`` or a step function).
        The rest as in :func:`scoresde.sample_pc`; device and dtype follow ``obs.y`` (or ``z``).

    Returns:
        ``(x, nfe)``: the samples and the number of score evaluations (one per step).
    """
    predict = lookup(PREDICTORS, predictor, "predictor")
    zeta = check_range("zeta", zeta, 0)
    x = start(sde, shape, obs, z, generator)
    ch = Chain(sde, steps, eps, x)
    _check_chain(ch.sde, predict, None, ch.grid, f"predictor {predictor!r}")
    score = CheckedScore(score_fn)
    x_mean = x
    for i in range(ch.N):
        s, g = dps_gradient(score, obs, x, ch.t(i), *ch.coeffs(i))
        x, x_mean = predict(ch.sde, lambda *_, s=s: s, x, ch.t(i), generator)
        x, x_mean = x - 2 * zeta * g, x_mean - 2 * zeta * g
        if callback is not None:
            callback(i, ch.t(i), x, x_mean)
    x = x_mean if denoise else x
    if obs.noise_std == 0:
        x = obs.impose(x, obs.diffused(x, *ch.coeffs(ch.N), None))
    return x, score.finish()
