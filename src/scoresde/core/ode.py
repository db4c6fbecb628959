"""One entry point for integrating an ODE from t0 to t1: on tensors (here, torchdiffeq) or scipy.

``integrate(func, y0, t0, t1, method=...)`` takes ``func(t, y) -> dy/dt`` where ``y`` is a tuple
of tensors and ``t`` a 0-d tensor (in the dtype of ``y0``), and returns ``(y1, nfe)``. Three
families of methods:

* adaptive solvers with ``rtol``/``atol``: ``dopri5`` (the default) solved here, ``dopri8``,
  ``bosh3``, ``fehlberg2``, ``adaptive_heun`` by torchdiffeq; the state stays on its device;
* fixed-grid solvers (``euler``, ``midpoint``, ``rk4``, ``heun3``) on ``steps`` uniform steps,
  solved here;
* ``scipy-RK45`` (and ``scipy-RK23``, ``scipy-DOP853``, ``scipy-Radau``, ``scipy-BDF``,
  ``scipy-LSODA``): the black-box path of the paper's code, the state held in float64 on the host
  and ``func`` evaluated in the dtype of ``y0``; kept for parity with the official numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchdiffeq
from torch import Tensor

from .checks import check_int, check_range, lookup

__all__ = ["integrate", "ADAPTIVE", "FIXED", "SCIPY", "METHODS", "ODEError"]

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED = ("euler", "midpoint", "rk4", "heun3")
NATIVE = ("dopri5",) + FIXED  # solved here; the other adaptive methods by torchdiffeq
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


# ---- native explicit Runge-Kutta on one tensor ------------------------------------------------
# dopri5 and the fixed-grid methods run here, on the state as one tensor: times are host floats
# (float64), every stage is a few fused tensor operations, and an adaptive step reads one number
# back (its error norm, which decides acceptance). The arithmetic follows torchdiffeq's solvers
# (the same tableaus, stage times, initial step and step-size control): in float64 the fixed
# grids agree with them to the last bit and dopri5 to round-off, with the same evaluation counts
# (tests/core/test_ode.py). What torchdiffeq adds per evaluation and step is gone: the negated
# field of a decreasing time, a cast of t that scans |y|, a NaN scan of y per step, stage sums
# through a strided (..., 7) buffer. The other adaptive methods still run through torchdiffeq.
Rhs = Callable[[float, Tensor], Tensor]
Norm = Callable[[Tensor], Tensor]

_THIRD, _TWO_THIRDS = 1 / 3, 2 / 3


def _euler(f: Rhs, t0: float, h: float, t1: float, y0: Tensor, k1: Tensor) -> Tensor:
    """Increment of one Euler step."""
    return h * k1


def _midpoint(f: Rhs, t0: float, h: float, t1: float, y0: Tensor, k1: Tensor) -> Tensor:
    """Increment of one explicit midpoint step."""
    half = 0.5 * h
    return h * f(t0 + half, y0 + k1 * half)


def _rk4(f: Rhs, t0: float, h: float, t1: float, y0: Tensor, k1: Tensor) -> Tensor:
    """Increment of one step of Kutta's 3/8 rule (torchdiffeq's ``rk4``)."""
    k2 = f(t0 + h * _THIRD, y0 + h * k1 * _THIRD)
    k3 = f(t0 + h * _TWO_THIRDS, y0 + h * (k2 - k1 * _THIRD))
    k4 = f(t1, y0 + h * (k1 - k2 + k3))
    return (k1 + 3 * (k2 + k3) + k4) * h * 0.125


def _heun3(f: Rhs, t0: float, h: float, t1: float, y0: Tensor, k1: Tensor) -> Tensor:
    """Increment of one step of Heun's third-order method (c = 0, 1/3, 2/3; b = 1/4, 0, 3/4)."""
    k2 = f(t0 + h * _THIRD, y0 + h * k1 * _THIRD)
    k3 = f(t0 + h * _TWO_THIRDS, y0 + h * (k2 * _TWO_THIRDS))
    return h * (k1 * 0.25 + k3 * 0.75)


_FIXED_STEPS: dict[str, Callable[..., Tensor]] = {
    "euler": _euler,
    "midpoint": _midpoint,
    "rk4": _rk4,
    "heun3": _heun3,
}


def _fixed_grid(f: Rhs, y: Tensor, grid: list[float], step: Callable[..., Tensor]) -> Tensor:
    """``y`` carried along ``grid`` by one ``step`` per interval."""
    for t0, t1 in zip(grid[:-1], grid[1:]):
        y = y + step(f, t0, t1 - t0, t1, y, f(t0, y))
    return y


# Dormand-Prince 5(4) (Dormand & Prince 1980), first same as last: row i of A gives stage i + 1
# from the stages before it; the last row is the fifth-order solution, whose derivative is the
# last stage; E = b5 - b4 weights the error estimate (torchdiffeq's tableau).
_DOPRI5_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DOPRI5_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DOPRI5_E = (
    35 / 384 - 1951 / 21600,
    0.0,
    500 / 1113 - 22642 / 50085,
    125 / 192 - 451 / 720,
    -2187 / 6784 - -12231 / 42400,
    11 / 84 - 649 / 6300,
    -1 / 60,
)


def _combine(y0: Tensor | None, ks: list[Tensor], weights: tuple[float, ...], h: float) -> Tensor:
    """``y0 + sum_j (w_j h) k_j`` (``y0=None``: the sum alone); zero weights are skipped."""
    out = None
    for w, k in zip(weights, ks):
        if w == 0.0:
            continue
        out = k * (w * h) if out is None else out.add_(k, alpha=w * h)
    return out if y0 is None else y0 + out


def _dopri5_step(
    f: Rhs, t0: float, h: float, t1: float, y0: Tensor, k1: Tensor, lean: Rhs | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One Dormand-Prince step: ``(y1, f(t1, y1), error estimate)``; six evaluations. The second
    stage has zero weight in the solution and in the error estimate (b2 = e2 = 0), so its
    derivative reaches them only through the later stages' inputs: ``lean`` (if given) computes
    it, for a state whose quadrature parts feed no derivative (see :func:`integrate`)."""
    ks = [k1]
    for i, (c, a) in enumerate(zip(_DOPRI5_C, _DOPRI5_A)):
        y = _combine(y0, ks, a, h)
        ks.append((lean if i == 0 and lean is not None else f)(t1 if c == 1.0 else t0 + c * h, y))
    return y, ks[-1], _combine(None, ks, _DOPRI5_E, h)


def _rms(v: Tensor) -> Tensor:
    """Root mean square over every element (torchdiffeq's norm)."""
    return v.square().mean().sqrt()


def _initial_step(
    f: Rhs, t0: float, y0: Tensor, f0: Tensor, tol: tuple, norm: Norm, s: float
) -> float:
    """The first step size (Hairer, Norsett & Wanner, Sec. II.4; torchdiffeq's rule for order 5):
    one more evaluation, at ``t0 + s h0`` (``s``: the direction of integration)."""
    rtol, atol = tol
    scale = atol + y0.abs() * rtol
    d0, d1 = float(norm(y0 / scale)), float(norm(f0 / scale))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = f(t0 + s * h0, y0 + (s * h0) * f0)
    d2 = abs(float(norm((f1 - f0) / scale)) / h0)
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1)


def _next_step(h: float, error: float) -> float:
    """torchdiffeq's step-size update: ``h min(10, max(0.9 E^(-1/5), 0.2))``, never shrinking
    after an accepted step (E <= 1) and growing tenfold when E = 0."""
    if error == 0:
        return h * 10.0
    shrink = 1.0 if error < 1 else 0.2
    return h * min(10.0, max(0.9 / error ** (1 / 5), shrink))


def _dopri5(
    f: Rhs, y: Tensor, t0: float, t1: float, tol: tuple, norm: Norm, lean: Rhs | None = None
) -> Tensor:
    """Adaptive Dormand-Prince from ``t0`` to ``t1`` (either direction); the last step lands on
    ``t1`` exactly. Accepts a step when the norm of the error over ``atol + rtol max(|y0|, |y1|)``
    is at most 1; one host read per step."""
    rtol, atol = tol
    s = 1.0 if t1 > t0 else -1.0
    k1 = f(t0, y)
    h, t = _initial_step(f, t0, y, k1, tol, norm, s), t0
    while t != t1:
        t_new = t + s * h if math.isfinite(h) else t
        if s * (t_new - t) <= 0:
            raise _Underflow
        step = s * h
        if s * (t_new - t1) > 0:  # the last step: land on t1
            t_new, step = t1, t1 - t
        y_new, k_new, err = _dopri5_step(f, t, step, t_new, y, k1, lean)
        error = float(norm(err / (atol + rtol * torch.maximum(y.abs(), y_new.abs()))))
        if math.isnan(error):  # a NaN field: no step size can help
            raise _Underflow
        h = _next_step(abs(step), error)
        if error <= 1:
            t, y, k1 = t_new, y_new, k_new
    return y


class _Underflow(Exception):
    """The adaptive step size reached zero, or the error estimate became NaN."""


def _underflow(method: str, t0: float, t1: float, rtol: float, atol: float) -> ODEError:
    """The error that says what to change when an adaptive step size underflows."""
    return ODEError(
        f"the {method} solver's step size underflowed between t={t0:g} and t={t1:g} "
        f"(rtol={rtol:g}, atol={atol:g}). The field is too stiff near the end point: use a "
        "larger eps, looser tolerances, or a fixed-grid method (method='rk4', steps=...)."
    )


def _one_tensor(y0: tuple[Tensor, ...]) -> tuple[Tensor, Callable, Callable, Norm]:
    """The state as one tensor: ``(y, unpack, pack, norm)``. A single tensor is kept as it is;
    several are concatenated flat (as torchdiffeq does), their norm the largest per-tensor RMS
    (torchdiffeq's norm of a tuple)."""
    if len(y0) == 1:
        return y0[0], lambda y: (y,), lambda out: out[0], _rms
    shapes, sizes = [v.shape for v in y0], [v.numel() for v in y0]

    def unpack(y: Tensor) -> tuple[Tensor, ...]:
        return tuple(part.view(shape) for part, shape in zip(y.split(sizes), shapes))

    def pack(out: Sequence[Tensor]) -> Tensor:
        return torch.cat([v.reshape(-1) for v in out])

    return pack(y0), unpack, pack, lambda v: torch.stack([_rms(p) for p in v.split(sizes)]).max()


def _native(
    func: Func,
    y0: tuple[Tensor, ...],
    t0: float,
    t1: float,
    method: str,
    tol: tuple,
    steps: int | None,
    lean: Func | None = None,
) -> tuple[tuple[Tensor, ...], int]:
    """``(y(t1), nfe)`` by the native solvers; ``func`` (and ``lean``) sees a 0-d time in the
    dtype of ``y0``, kept inside ``[t0, t1]``."""
    like = y0[0]
    lo, hi = min(t0, t1), max(t0, t1)
    y, unpack, pack, norm = _one_tensor(y0)
    nfe = 0

    def call(fn: Func, t: float, y: Tensor) -> tuple[Tensor, ...]:
        nonlocal nfe
        nfe += 1
        t = min(t, hi) if t >= lo else lo  # inside [t0, t1], a NaN probe included
        return fn(torch.full((), t, dtype=like.dtype, device=like.device), unpack(y))

    def rhs(t: float, y: Tensor) -> Tensor:
        return pack(call(func, t, y))

    def rhs_lean(t: float, y: Tensor) -> Tensor:  # the quadratures' derivatives left at zero
        lead = call(lean, t, y)
        return pack([*lead, *(torch.zeros_like(v) for v in y0[len(lead) :])])

    if method in FIXED:  # the grid in the dtype of the state, as torchdiffeq's
        grid = torch.linspace(t0, t1, steps + 1, dtype=like.dtype).tolist()
        return unpack(_fixed_grid(rhs, y, grid, _FIXED_STEPS[method])), nfe
    ends = torch.tensor([t0, t1], dtype=like.dtype).tolist()
    try:
        return unpack(_dopri5(rhs, y, *ends, tol, norm, None if lean is None else rhs_lean)), nfe
    except _Underflow:
        raise _underflow(method, t0, t1, *tol) from None


def integrate(
    func: Func,
    y0: Sequence[Tensor],
    t0: float,
    t1: float,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    lean: Func | None = None,
) -> tuple[tuple[Tensor, ...], int]:
    """Integrate ``dy/dt = func(t, y)`` from ``t0`` to ``t1``; returns ``(y(t1), nfe)``.

    ``lean(t, y)``, optional, returns the derivatives of the leading tensors of ``y`` alone, as
    ``func`` would, for a state whose trailing tensors are quadratures: their derivatives depend
    on the leading tensors and feed none. A stage whose quadrature derivatives never reach the
    result or the error estimate then calls ``lean`` (its quadrature derivatives left at zero):
    dopri5's second stage, one evaluation in six. The result and the steps are the same as
    without it. Only the native dopri5 uses it; every evaluation counts in ``nfe``.
    """
    check_method(method, steps)
    if method not in FIXED:
        check_tolerances(rtol, atol)
    y0 = tuple(y0)
    if method in NATIVE:
        return _native(func, y0, t0, t1, method, (rtol, atol), steps, lean)
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
    grid = torch.tensor([t0, t1], dtype=like.dtype, device=like.device)
    try:  # land the last step exactly on t1: never evaluate func beyond the end point
        out = torchdiffeq.odeint(
            counted, y0, grid, rtol=rtol, atol=atol, method=method, options={"step_t": grid[1:]}
        )
    except AssertionError as e:  # torchdiffeq reports "underflow in dt" this way
        if "underflow" not in str(e):
            raise
        raise _underflow(method, t0, t1, rtol, atol) from None
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
