"""Time grids for fixed-step samplers.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.sde import SDE

__all__ = ["uniform", "quadratic", "log_snr", "edm", "GRIDS"]

_F64 = torch.float64


def _check(sde: SDE, steps: int, eps: float) -> None:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must satisfy 0 < eps < T={sde.T}, got {eps!r}")


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
    _check(sde, steps, eps)
    return _finish(sde, _lerp(sde.T, eps, steps), eps, device, dtype)


def quadratic(
    sde: SDE, steps: int, eps: float, device: torch.device | str | None = None, dtype=None
) -> Tensor:
    """``t_i = (sqrt(T) + i / N (sqrt(eps) - sqrt(T)))^2``: DPM-Solver's ``time_quadratic``."""
    _check(sde, steps, eps)
    t = _lerp(sde.T**0.5, eps**0.5, steps) ** 2
    return _finish(sde, t, eps, device, dtype)


def log_snr(
    sde: SDE, steps: int, eps: float, device: torch.device | str | None = None, dtype=None
) -> Tensor:
    """Uniform in ``lambda = sde.log_snr(t)``, mapped back by ``sde.t_of_log_snr`` (DPM-Solver)."""
    _check(sde, steps, eps)
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
    _check(sde, steps, eps)
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
