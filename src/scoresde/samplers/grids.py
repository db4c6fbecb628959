"""Time grids for fixed-step samplers, by name or given as a tensor.

Every grid is a decreasing 1-D tensor of ``steps + 1`` times from ``T`` down to ``eps``; the grids
differ in the variable in which they are uniform:

============  =================================================================  ===================
name          uniform in                                                          from
============  =================================================================  ===================
``uniform``   t                                                                   Song et al. 2021
``quadratic`` sqrt(t)                                                             DPM-Solver
``log_snr``   lambda(t) = log(alpha(t) / sigma(t))                                DPM-Solver
``edm``       sigma_edm(t)^(1/rho), sigma_edm = sigma / alpha = exp(-lambda)      EDM, Eq. 5
============  =================================================================  ===================

The grids are computed in float64 on the host (once per sampler call, outside any loop), then cast
to ``device`` / ``dtype``; both end points are exactly ``T`` and ``eps`` before the cast.
A sampler that takes ``grid`` also takes such a tensor itself (k-diffusion's ``sigmas``, in
time): :func:`time_grid` resolves either, :func:`check_grid` checks a given one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import check_eps, check_finite, check_int, lookup
from ..core.sde import SDE

__all__ = ["uniform", "quadratic", "log_snr", "edm", "GRIDS", "check_grid", "time_grid"]

_F64 = torch.float64


def _check(sde: SDE, steps: int, eps: float) -> tuple[int, float]:
    return check_int("steps", steps, 1), check_eps(sde, eps, default=False)


def _finish(sde: SDE, t: Tensor, eps: float, device, dtype) -> Tensor:
    """Pin the end points (the inverse maps round by ~1e-16) and cast."""
    t[0], t[-1] = sde.T, eps
    return t.to(device=device, dtype=dtype or torch.get_default_dtype())


def _lerp(a: float, b: float, steps: int) -> Tensor:
    """``steps + 1`` float64 points from ``a`` to ``b``, both included."""
    return torch.linspace(a, b, steps + 1, dtype=_F64)


def _log_snr_ends(sde: SDE, eps: float) -> tuple[float, float]:
    lam = sde.log_snr(torch.tensor([sde.T, eps], dtype=_F64))
    return float(lam[0]), float(lam[1])


def uniform(
    sde: SDE, steps: int, eps: float, device: torch.device | str | None = None, dtype=None
) -> Tensor:
    """``t_i = T + i / N (eps - T)``, the grid of the paper's PC and Euler samplers."""
    steps, eps = _check(sde, steps, eps)
    return _finish(sde, _lerp(sde.T, eps, steps), eps, device, dtype)


def quadratic(
    sde: SDE, steps: int, eps: float, device: torch.device | str | None = None, dtype=None
) -> Tensor:
    """``t_i = (sqrt(T) + i / N (sqrt(eps) - sqrt(T)))^2``: DPM-Solver's ``time_quadratic``."""
    steps, eps = _check(sde, steps, eps)
    t = _lerp(sde.T**0.5, eps**0.5, steps) ** 2
    return _finish(sde, t, eps, device, dtype)


def log_snr(
    sde: SDE, steps: int, eps: float, device: torch.device | str | None = None, dtype=None
) -> Tensor:
    """Uniform in ``lambda = sde.log_snr(t)``, mapped back by ``sde.t_of_log_snr`` (DPM-Solver)."""
    steps, eps = _check(sde, steps, eps)
    lam = _lerp(*_log_snr_ends(sde, eps), steps)
    return _finish(sde, sde.t_of_log_snr(lam), eps, device, dtype)


def edm(
    sde: SDE,
    steps: int,
    eps: float,
    rho: float = 7.0,
    device: torch.device | str | None = None,
    dtype=None,
) -> Tensor:
    """EDM's noise levels (Karras et al. 2022, Eq. 5) in ``sigma_edm(t) = sigma(t) / alpha(t)``.

    ``sigma_i = (sigma_max^(1/rho) + i / N (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` with
    ``sigma_max = sigma_edm(T)``, ``sigma_min = sigma_edm(eps)``; then ``t_i = t(-log sigma_i)``,
    since ``lambda = -log sigma_edm``. ``sigma_edm`` is the noise level of ``x / alpha``.
    """
    steps, eps = _check(sde, steps, eps)
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    lam_T, lam_eps = _log_snr_ends(sde, eps)
    # sigma^(1/rho) = exp(-lambda / rho): uniform in it, then back to lambda.
    root = _lerp(math.exp(-lam_T / rho), math.exp(-lam_eps / rho), steps)
    return _finish(sde, sde.t_of_log_snr(-rho * root.log()), eps, device, dtype)


GRIDS: dict[str, Callable[..., Tensor]] = {
    "time_uniform": uniform,
    "time_quadratic": quadratic,
    "logSNR": log_snr,
    "edm": edm,
}


# A given grid's end points may differ from T and eps by the rounding of a lower precision.
_END_RTOL = 1e-6


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _END_RTOL * abs(b)


def check_grid(
    sde: SDE, grid: Tensor, eps: float | None = None, steps: int | None = None
) -> tuple[Tensor, float]:
    """A given grid as ``(t, eps)``: ``t`` a float64 host copy with its ends pinned to T and eps.

    ``grid`` must be a finite, strictly decreasing 1-D tensor of at least two times from ``T`` to
    ``eps``; ``eps=None`` takes its last time as ``eps`` (in ``(0, T)``). With ``steps``, the grid
    must have ``steps + 1`` times.
    """
    if not isinstance(grid, Tensor) or grid.ndim != 1 or len(grid) < 2:
        raise ValueError(
            f"a grid tensor must be 1-D with at least 2 times, got "
            f"{tuple(getattr(grid, 'shape', ())) or type(grid).__name__}"
        )
    t = grid.detach().to(device="cpu", dtype=_F64).clone()
    check_finite(t, "grid")
    eps = check_eps(sde, float(t[-1]) if eps is None else eps, default=False)
    if not bool((t.diff() < 0).all()):
        raise ValueError("grid must decrease strictly from T to eps")
    if not (_close(float(t[0]), sde.T) and _close(float(t[-1]), eps)):
        raise ValueError(
            f"grid must run from T={sde.T} to eps={eps:g}, got {float(t[0]):g} to {float(t[-1]):g}"
        )
    if steps is not None and len(t) != check_int("steps", steps, 1) + 1:
        raise ValueError(f"steps={steps} needs a grid of {steps + 1} times, got {len(t)}")
    t[0], t[-1] = sde.T, eps
    return t, eps


def time_grid(
    sde: SDE,
    grid: str | Tensor,
    steps: int | None,
    eps: float | None,
    *,
    default: int | None = None,
    **options,
) -> tuple[Tensor, float]:
    """A fixed-step sampler's float64 host grid of ``steps`` intervals and its ``eps``.

    ``grid`` is a name in :data:`GRIDS`, built from T to ``eps`` (default
    :func:`scoresde.core.checks.default_eps`) with ``steps`` intervals (``None``: ``default``);
    ``options`` go to the grid function. Or a tensor, checked by :func:`check_grid` (``steps=None``:
    as many as it has).
    """
    if isinstance(grid, Tensor):
        return check_grid(sde, grid, eps, steps)
    make = lookup(GRIDS, grid, "grid", callables=False)
    eps = check_eps(sde, eps)
    return make(sde, default if steps is None else steps, eps, dtype=_F64, **options), eps
