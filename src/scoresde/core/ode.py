"""One entry point for integrating an ODE from t0 to t1: torchdiffeq on tensors, or scipy.

``integrate(func, y0, t0, t1, method=...)`` takes ``func(t, y) -> dy/dt`` where ``y`` is a tuple
of tensors and ``t`` a 0-d tensor, and returns ``(y1, nfe)``. Three families of methods:

* torchdiffeq's adaptive solvers (``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``,
  ``adaptive_heun``) with ``rtol``/``atol``: the state stays on its device, no host round-trips;
* torchdiffeq's fixed-grid solvers (``euler``, ``midpoint``, ``rk4``, ``heun3``) on ``steps``
  uniform steps;
* ``scipy-RK45`` (and ``scipy-RK23``, ``scipy-DOP853``, ``scipy-Radau``, ``scipy-BDF``,
  ``scipy-LSODA``): the black-box path of the paper's code, the state held in float64 on the host
  and ``func`` evaluated in the dtype of ``y0``; kept for parity with the official numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchdiffeq
from torch import Tensor

from .checks import check_int, check_range, lookup

__all__ = ["integrate", "ADAPTIVE", "FIXED", "SCIPY", "METHODS", "ODEError"]

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED = ("euler", "midpoint", "rk4", "heun3")
SCIPY = ("scipy-RK45", "scipy-RK23", "scipy-DOP853", "scipy-Radau", "scipy-BDF", "scipy-LSODA")
METHODS = ADAPTIVE + FIXED + SCIPY

Func = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]


class ODEError(RuntimeError):
    """The ODE solver could not finish; the message says what to change."""


def check_method(method: str, steps: int | None) -> None:
    """Raise ``ValueError`` for an unknown method or a fixed-grid method without ``steps >= 1``."""
    lookup(dict.fromkeys(METHODS), method, "ODE method", callables=False)
    if method in FIXED and steps is None:
        raise ValueError(f"fixed-grid method {method!r} needs steps >= 1, got None")
    if method in FIXED:
        check_int("steps", steps, 1)


def check_tolerances(rtol: float, atol: float) -> None:
    """Raise ``ValueError`` unless ``rtol > 0`` and ``atol >= 0`` (a negative tolerance would
    silently turn the error control off)."""
    check_range("rtol", rtol, 0.0, open_low=True)
    check_range("atol", atol, 0.0)


def integrate(
    func: Func,
    y0: Sequence[Tensor],
    t0: float,
    t1: float,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
) -> tuple[tuple[Tensor, ...], int]:
    """Integrate ``dy/dt = func(t, y)`` from ``t0`` to ``t1``; returns ``(y(t1), nfe)``."""
    check_method(method, steps)
    if method not in FIXED:
        check_tolerances(rtol, atol)
    y0 = tuple(y0)
    nfe = 0

    lo, hi = min(t0, t1), max(t0, t1)

    def counted(t: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        # torchdiffeq probes its first step size (and may overshoot) outside [t0, t1]: keep
        # every evaluation inside the interval, where the SDE's coefficients are defined.
        nonlocal nfe
        nfe += 1
        return func(t.clamp(lo, hi), y)

    if method in SCIPY:
        return _scipy(counted, y0, t0, t1, method.removeprefix("scipy-"), rtol, atol), nfe
    like = y0[0]
    if method in FIXED:
        grid = torch.linspace(t0, t1, steps + 1, dtype=like.dtype, device=like.device)
        options = None
    else:
        grid = torch.tensor([t0, t1], dtype=like.dtype, device=like.device)
        # Land the last step exactly on t1: never evaluate func beyond the end point.
        options = {"step_t": grid[1:]}
    try:
        out = torchdiffeq.odeint(
            counted, y0, grid, rtol=rtol, atol=atol, method=method, options=options
        )
    except AssertionError as e:  # torchdiffeq reports "underflow in dt" this way
        if "underflow" not in str(e):
            raise
        raise ODEError(
            f"the {method} solver's step size underflowed between t={t0:g} and t={t1:g} "
            f"(rtol={rtol:g}, atol={atol:g}). The field is too stiff near the end point: use a "
            "larger eps, looser tolerances, or a fixed-grid method (method='rk4', steps=...)."
        ) from None
    return tuple(o[-1] for o in out), nfe


def _scipy(func: Func, y0, t0, t1, method, rtol, atol) -> tuple[Tensor, ...]:
    from scipy.integrate import solve_ivp

    like = y0[0]
    shapes = [y.shape for y in y0]
    sizes = [y.numel() for y in y0]

    def unflatten(v: np.ndarray) -> tuple[Tensor, ...]:
        parts = np.split(v, np.cumsum(sizes)[:-1])
        return tuple(
            torch.from_numpy(p).to(device=like.device, dtype=like.dtype).reshape(s)
            for p, s in zip(parts, shapes)
        )

    def rhs(t: float, v: np.ndarray) -> np.ndarray:
        tt = torch.tensor(t, device=like.device, dtype=like.dtype)
        dy = func(tt, unflatten(v))
        return np.concatenate([d.detach().reshape(-1).cpu().double().numpy() for d in dy])

    v0 = np.concatenate([y.detach().reshape(-1).cpu().double().numpy() for y in y0])
    sol = solve_ivp(rhs, (t0, t1), v0, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise ODEError(f"scipy {method} failed between t={t0:g} and t={t1:g}: {sol.message}")
    return unflatten(sol.y[:, -1])
