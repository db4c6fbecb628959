"""The ODE solvers of ``core.ode``: the native dopri5 and fixed-grid methods against closed forms
and against torchdiffeq's, which they replace (the same evaluation counts, values to round-off),
and the errors they raise."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from scoresde.core import ode

F64 = torch.float64


def _a(t: torch.Tensor) -> torch.Tensor:
    """The rate of dy/dt = a(t) y: a(t) = -1 - cos(3 t), in [-2, 0]."""
    return -1 - torch.cos(3 * t)


def _A(t: float) -> float:
    """An antiderivative of a: A(t) = -t - sin(3 t) / 3."""
    return -t - math.sin(3 * t) / 3


def _field(t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """dy/dt = a(t) y, and for a second state v (K, B): dv/dt = the per-row sum of y (B, D)."""
    out = (_a(t) * y[0],)
    return out if len(y) == 1 else out + (y[0].sum(1).expand_as(y[1]),)


def _torchdiffeq(y0, t0, t1, method, tol=1e-5, steps=None):
    """The same solve by torchdiffeq, called as ``ode.integrate`` called it before: time kept in
    [t0, t1], the last adaptive step landing on t1."""
    nfe, lo, hi = [0], min(t0, t1), max(t0, t1)

    def counted(t, y):
        nfe[0] += 1
        return _field(t.clamp(lo, hi), y)

    if steps is None:
        grid = torch.tensor([t0, t1], dtype=F64)
        options = {"step_t": grid[1:]}
    else:
        grid, options = torch.linspace(t0, t1, steps + 1, dtype=F64), None
    out = torchdiffeq.odeint(counted, y0, grid, rtol=tol, atol=tol, method=method, options=options)
    return tuple(o[-1] for o in out), nfe[0]


def _state(pair: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(40, 3, generator=g, dtype=F64)
    return (y, torch.zeros(2, 40, dtype=F64)) if pair else (y,)


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 1e-3)])
@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_dopri5_takes_torchdiffeqs_steps(pair, t0, t1, tol):
    """The same step-size control (initial step, error norm, update; the largest per-tensor RMS
    for a pair of tensors), so the same number of evaluations; the values differ by round-off
    only. Measured: at most 3e-15 relative, from the order of the sums and torchdiffeq's
    interpolation at t1 (a polynomial with coefficients ~16 |y|); 1e-12 leaves room for that."""
    y0 = _state(pair)
    got, nfe = ode.integrate(_field, y0, t0, t1, "dopri5", tol, tol)
    want, nfe_want = _torchdiffeq(y0, t0, t1, "dopri5", tol)
    assert nfe == nfe_want
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ode.FIXED)
@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 1e-3)])
def test_fixed_grids_reproduce_torchdiffeq_exactly(method, t0, t1):
    """The step functions do torchdiffeq's arithmetic in its order (time reversal only flips
    signs, which is exact), so float64 results are equal to the last bit."""
    y0 = _state(True)
    got, nfe = ode.integrate(_field, y0, t0, t1, method, steps=7)
    want, nfe_want = _torchdiffeq(y0, t0, t1, method, steps=7)
    assert nfe == nfe_want
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 1e-3)])
def test_dopri5_meets_its_tolerance_on_a_closed_form(t0, t1):
    """y(t1) = y0 exp(A(t1) - A(t0)). Each accepted step keeps its error estimate below
    atol + rtol |y| (|y| <= max|y0|, since a <= 0); the kept fifth-order solution errs less, and
    |a| <= 2 amplifies an early error at most e^2 by t1. So |error| <= e^2 steps (atol + rtol
    max|y0|), steps = (nfe - 2) / 6 attempts."""
    (y0,), tol = _state(False), 1e-9
    (y,), nfe = ode.integrate(_field, (y0,), t0, t1, "dopri5", tol, tol)
    exact = y0 * math.exp(_A(t1) - _A(t0))
    bound = math.e**2 * (nfe - 2) / 6 * (tol + tol * y0.abs().max().item())
    assert (y - exact).abs().max().item() <= bound


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 1e-3)])
def test_a_lean_second_stage_changes_nothing_but_the_calls(t0, t1):
    """The second tensor of ``_field`` is a quadrature (its derivative reads y[0] only). With
    ``lean`` giving the derivative of y[0] alone, dopri5's second stage calls it and the result,
    the steps and the evaluation count are bit for bit those of the full field: the second
    stage has zero weight in the solution and the error estimate. It is called once per
    attempted step, (nfe - 2) / 6 times; without ``lean`` the full field takes every call."""
    y0, calls = _state(True), {"full": 0, "lean": 0}

    def full(t, y):
        calls["full"] += 1
        return _field(t, y)

    def lean(t, y):
        calls["lean"] += 1
        return (_a(t) * y[0],)

    want, nfe_want = ode.integrate(full, y0, t0, t1, "dopri5", 1e-8, 1e-8)
    assert calls == {"full": nfe_want, "lean": 0}
    calls["full"] = 0
    got, nfe = ode.integrate(full, y0, t0, t1, "dopri5", 1e-8, 1e-8, lean=lean)
    assert nfe == nfe_want and calls["lean"] == (nfe - 2) // 6 > 10
    assert calls["full"] + calls["lean"] == nfe
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_field_sees_0d_times_inside_the_interval_in_the_state_dtype():
    """The initial step probe may overshoot the interval; the field never sees it (the interval
    as that dtype holds it: 0.9 in float32 is 0.89999998)."""
    seen = []

    def field(t, y):
        seen.append(t)
        return (-50 * y[0],)

    for method, kw in (("dopri5", {}), ("rk4", {"steps": 3})):
        for dtype in (torch.float32, F64):
            seen.clear()
            ode.integrate(field, (torch.ones(3, 2, dtype=dtype),), 0.9, 1.0, method, **kw)
            assert all(t.ndim == 0 and t.dtype == dtype for t in seen)
            lo = torch.tensor(0.9, dtype=dtype).item()
            assert len(seen) > 4 and all(lo <= t.item() <= 1.0 for t in seen)


def test_a_blow_up_or_a_nan_field_raises_ode_error():
    """y' = y^2 from y = 1 blows up at t = 1: the step size underflows there. A NaN field makes
    the first step size NaN: the same error after the two evaluations that chose it, both at
    times inside the interval."""
    with pytest.raises(ode.ODEError, match="underflowed between t=0 and t=2"):
        ode.integrate(lambda t, y: (y[0] ** 2,), (torch.ones(2, dtype=F64),), 0.0, 2.0)
    calls = []

    def nan_field(t, y):
        calls.append(t)
        return (y[0] * math.nan,)

    with pytest.raises(ode.ODEError, match="underflowed"):
        ode.integrate(nan_field, (torch.ones(2, dtype=F64),), 1.0, 0.0)
    assert len(calls) == 2 and all(0.0 <= t.item() <= 1.0 for t in calls)
    calls.clear()  # NaN from the 11th evaluation (inside the second attempt, calls 9 to 14) on

    def later_nan(t, y):
        calls.append(t)
        return (-y[0] * (math.nan if len(calls) > 10 else 1.0),)

    with pytest.raises(ode.ODEError, match="underflowed"):
        ode.integrate(later_nan, (torch.ones(2, dtype=F64),), 1.0, 0.0)
    assert len(calls) == 14
