"""The plug-in reverse-SDE family of sdeflow-light (Huang et al. 2021, Appendix C).

For ``lam`` in [0, 1] the reverse-time SDEs

    dx = [f(t) x - (1 - lam / 2) g(t)^2 s(x, t)] dt + sqrt(1 - lam) g(t) dw_bar

all have the marginals ``p_t`` of the forward SDE. Why: with ``nu = 1 - lam >= 0``, adding
``nu g^2 / 2 (laplace p - div(s p)) = 0`` (as ``s p = grad p``) to the Fokker-Planck equation of
the probability-flow ODE, ``dp/dt = -div((f x - g^2 s / 2) p)``, and reading it backward in time
gives drift ``f x - (1 + nu) / 2 g^2 s`` and diffusion ``sqrt(nu) g``. ``lam = 0`` is the reverse
SDE (Song et al. 2021, Eq. 6), ``lam = 1`` the probability-flow ODE (Eq. 13).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_range, start_state
from ..core.sde import SDE, bcast
from ._shared import Callback, ScoreFn, batch_time, end_node, finish, randn, report
from .grids import time_grid

__all__ = ["sample_lambda", "lambda_step"]


def lambda_step(
    sde: SDE,
    score: CheckedScore,
    x: Tensor,
    t: float,
    dt: float,
    lam: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """One Euler-Maruyama step of the ``lam`` member from ``t`` to ``t - dt``: ``(x, x_mean)``."""
    c, nu = 1 - lam / 2, 1 - lam
    tb = batch_time(x, t)
    drift, g = sde.sde(x, tb)
    g = bcast(g, x)
    x_mean = x - (drift - c * g**2 * score(x, tb)) * dt
    x = x_mean + math.sqrt(nu * dt) * g * randn(x, generator) if nu > 0 else x_mean
    return x, x_mean


def sample_lambda(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    lam: float = 0.0,
    steps: int | None = None,
    grid: str | Tensor = "time_uniform",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Euler-Maruyama on the ``lam`` member of the family (module docstring) from T to ``eps``.

    Args:
        lam: the family parameter in [0, 1].
        steps: Euler-Maruyama steps (default 1000, or the intervals of a grid tensor).
        grid: a name in :data:`scoresde.samplers.grids.GRIDS` (default uniform in t) or a
            decreasing tensor of times from T to ``eps`` (``eps=None``: its last time).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``; the last step's noise is kept (``x_mean``,
        without it, goes to the callback).
    """
    lam = check_range("lam", lam, 0, 1)
    t, eps = time_grid(sde, grid, steps, eps, default=1000)
    ts = t.tolist()
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    for i in range(len(ts) - 1):
        x, x_mean = lambda_step(sde, score, x, ts[i], ts[i] - ts[i + 1], lam, generator)
        report(callback, i, ts[i + 1], x, x_mean)
    return finish(score, x, end_node(sde, eps), denoise)
