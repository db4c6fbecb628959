"""Time grids: end points, monotonicity, and the variable in which each grid is uniform."""

from __future__ import annotations

import pytest
import torch
from conftest import make_sde

from scoresde.samplers import grids as ts

# The grids are built in float64; the inverse maps (t_of_log_snr, a square root) round to a few
# ulps, so equal spacing holds to ~1e-15 relative. 1e-11 leaves ample room and still fails for
# any grid uniform in another variable (those differ by O(1) relative).
RTOL = 1e-11


def _equal_spacing(v: torch.Tensor) -> None:
    d = v.diff()
    torch.testing.assert_close(d, torch.full_like(d, d.mean().item()), rtol=RTOL, atol=0)


def _transformed(sde, name: str, t: torch.Tensor, rho: float = 7.0) -> torch.Tensor:
    """The variable in which grid ``name`` is uniform."""
    if name == "time_uniform":
        return t
    if name == "time_quadratic":
        return t.sqrt()
    lam = sde.log_snr(t)
    return lam if name == "logSNR" else torch.exp(-lam / rho)  # sigma_edm^(1/rho)


@pytest.mark.parametrize("name", list(ts.GRIDS))
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_grid_ends_monotone_and_uniform(sde, name, steps):
    eps = 1e-3
    t = ts.GRIDS[name](sde, steps, eps, dtype=torch.float64)
    assert t.shape == (steps + 1,) and t.dtype == torch.float64
    assert t[0].item() == sde.T and t[-1].item() == eps
    assert (t.diff() < 0).all()
    _equal_spacing(_transformed(sde, name, t))


def test_edm_rho(sde):
    """Other exponents: rho = 1 is uniform in sigma_edm = sigma / alpha itself."""
    for rho in (1.0, 3.0):
        t = ts.edm(sde, 12, 1e-3, rho=rho, dtype=torch.float64)
        _equal_spacing(_transformed(sde, "edm", t, rho))


def test_log_snr_is_uniform_in_t_for_ve():
    """VE: lambda = -log sigma_min - t log(sigma_max / sigma_min) is affine in t."""
    ve = make_sde("ve")
    a = ts.log_snr(ve, 20, 1e-5, dtype=torch.float64)
    b = ts.uniform(ve, 20, 1e-5, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=RTOL, atol=0)


def test_dtype_device_follow_arguments(sde):
    for f in ts.GRIDS.values():
        t = f(sde, 5, 1e-3, device="cpu", dtype=torch.float32)
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        assert f(sde, 5, 1e-3).dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0, eps=1e-3), "steps"),
        (dict(steps=2.5, eps=1e-3), "steps"),
        (dict(steps=True, eps=1e-3), "steps"),
        (dict(steps=4, eps=0.0), "eps"),
        (dict(steps=4, eps=1.0), "eps"),
        (dict(steps=4, eps=-1e-3), "eps"),
    ],
)
@pytest.mark.parametrize("name", list(ts.GRIDS))
def test_bad_arguments(sde, name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ts.GRIDS[name](sde, **kwargs)


def test_edm_bad_rho(sde):
    with pytest.raises(ValueError, match="rho"):
        ts.edm(sde, 4, 1e-3, rho=0.0)
