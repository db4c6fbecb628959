"""The sampler table and the shared contract of every sampler.

``sd.sample(name)`` is the named function; unknown names and options fail with the valid ones;
a grid tensor equal to a named grid gives the same samples; a score that turns NaN at a later
step, or returns an integer or complex tensor, is refused by every sampler.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde.samplers import GRIDS, default_eps, sampler_options

F64 = torch.float64

# Small, fast options for each sampler of the table.
OPTIONS = {
    "pc": dict(steps=30),
    "ode": dict(method="rk4", steps=4),
    "heun": dict(steps=4, churn=5.0),
    "dpm_solver": dict(steps=6),
    "adaptive": dict(rtol=0.5),
    "lambda": dict(lam=0.3, steps=6),
    "unipc": dict(steps=6),
    "deis": dict(steps=6),
    "ipndm": dict(steps=6),
    "lms": dict(steps=6),
    "dpm_solver_adaptive": dict(rtol=0.5, atol=0.5),
    "dpm_solver_sde": dict(steps=6),
}


def test_the_table_names_every_sampler():
    assert list(sd.SAMPLERS) == list(OPTIONS)
    assert sd.SAMPLERS["heun"] is sd.sample_heun and sd.SAMPLERS["pc"] is sd.sample_pc


@pytest.mark.parametrize("name", list(OPTIONS))
def test_sample_equals_the_named_function(mixture, sde, name):
    score = mixture.score_fn(sde)
    a, nfe_a = sd.sample(
        sde,
        score,
        (5, 2),
        sampler=name,
        generator=torch.Generator().manual_seed(1),
        dtype=F64,
        **OPTIONS[name],
    )
    b, nfe_b = sd.SAMPLERS[name](
        sde, score, (5, 2), generator=torch.Generator().manual_seed(1), dtype=F64, **OPTIONS[name]
    )
    assert torch.equal(a, b) and nfe_a == nfe_b


@pytest.mark.parametrize("name", list(OPTIONS))
def test_options_are_keyword_only(name):
    sampler = sd.SAMPLERS[name]
    sde = make_sde("vp")
    with pytest.raises(TypeError):
        sampler(sde, lambda x, t: -x, (2, 2), *OPTIONS[name].values())
    assert set(OPTIONS[name]) <= set(sampler_options(name))


def test_every_sampler_names_its_start_latent_z():
    for name in sd.SAMPLERS:
        assert "z" in sampler_options(name), name
    assert "x" in sampler_options("pc")  # the old name, kept as an alias


def test_unknown_sampler_lists_the_valid_names():
    sde = make_sde("vp")
    with pytest.raises(ValueError, match="did you mean 'dpm_solver'") as info:
        sd.sample(sde, lambda x, t: -x, (2, 2), sampler="dpm_solvr")
    assert "valid: " + ", ".join(OPTIONS) in str(info.value)


def test_unknown_option_names_the_samplers_options():
    sde = make_sde("vp")
    with pytest.raises(ValueError, match="takes no option 'order'") as info:
        sd.sample(sde, lambda x, t: -x, (2, 2), sampler="heun", order=2)
    assert "its options: " + ", ".join(sampler_options("heun")) in str(info.value)
    with pytest.raises(ValueError, match="did you mean 'steps'"):
        sd.sample(sde, lambda x, t: -x, (2, 2), sampler="lambda", step=3)


def test_sample_pc_takes_z_or_its_alias_x(mixture):
    sde = make_sde("vp")
    score = mixture.score_fn(sde)
    x0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    run = lambda **kw: sd.sample_pc(
        sde, score, None, steps=30, generator=torch.Generator().manual_seed(3), **kw
    )
    (a, nfe_a), (b, nfe_b) = run(z=x0), run(x=x0)
    assert torch.equal(a, b) and nfe_a == nfe_b == 60
    with pytest.raises(ValueError, match="not both"):
        run(z=x0, x=x0)


# ---- grids given as tensors ----------------------------------------------------------------------
def _same(run_named, run_tensor):
    (a, nfe_a), (b, nfe_b) = run_named(), run_tensor()
    assert nfe_a == nfe_b and torch.equal(a, b)


@pytest.mark.parametrize("grid", list(GRIDS))
def test_lambda_grid_tensor_equals_named_grid(mixture, sde, grid):
    eps, score = default_eps(sde), mixture.score_fn(sde)
    t = GRIDS[grid](sde, 7, eps, dtype=F64)

    def run(**kw):
        g = torch.Generator().manual_seed(3)
        return lambda: sd.sample_lambda(sde, score, (6, 2), lam=0.5, generator=g, dtype=F64, **kw)

    _same(run(grid=grid, steps=7), run(grid=t))
    _same(run(grid=grid, steps=7), run(grid=t, steps=7, eps=eps))


@pytest.mark.parametrize("rho", [7.0, 3.0])
def test_heun_grid_tensor_equals_edm_grid(mixture, sde, rho):
    eps, score = default_eps(sde), mixture.score_fn(sde)
    t = GRIDS["edm"](sde, 5, eps, rho=rho, dtype=F64)

    def run(**kw):
        g = torch.Generator().manual_seed(4)
        return lambda: sd.sample_heun(sde, score, (6, 2), churn=3.0, generator=g, dtype=F64, **kw)

    _same(run(steps=5, rho=rho), run(grid=t))


@pytest.mark.parametrize("grid", ["logSNR", "time_uniform"])
def test_dpm_solver_grid_tensor_equals_named_grid(mixture, sde, grid):
    eps, score = default_eps(sde), mixture.score_fn(sde)
    z = sde.prior_sampling((6, 2), torch.Generator().manual_seed(5), dtype=F64)
    named = lambda **kw: lambda: sd.sample_dpm_solver(sde, score, None, z=z, grid=grid, **kw)
    given = lambda n, **kw: (
        lambda: sd.sample_dpm_solver(
            sde, score, None, z=z, grid=GRIDS[grid](sde, n, eps, dtype=F64), **kw
        )
    )
    # multistep: one interval per evaluation
    _same(named(steps=9, method="multistep"), given(9, method="multistep"))
    # singlestep, 12 evaluations of order 3: DPM-Solver's schedule 3, 3, 3, 2, 1 on 5 intervals
    _same(named(steps=12), given(5, steps=12))
    # no steps with a tensor: one step of `order` per interval, as singlestep_fixed
    _same(named(steps=12, method="singlestep_fixed"), given(4))


def test_grid_tensor_in_float32_is_accepted():
    sde = make_sde("vp")
    t = torch.linspace(1.0, 1e-3, 9, dtype=torch.float32)
    x, nfe = sd.sample_lambda(sde, lambda x, t: -x, (3, 2), grid=t, eps=1e-3)
    assert nfe == 8 and torch.isfinite(x).all()


T_OK = torch.linspace(1.0, 1e-3, 6, dtype=F64)


@pytest.mark.parametrize(
    "grid, kw, match",
    [
        (T_OK[None], {}, "1-D"),
        (T_OK[:1], {}, "at least 2"),
        (T_OK.flip(0), {}, "eps"),
        (torch.tensor([1.0, 0.5, 0.6, 1e-3], dtype=F64), {}, "decrease"),
        (torch.linspace(0.9, 1e-3, 6, dtype=F64), {}, "from T=1.0"),
        (T_OK, dict(eps=1e-2), "to eps=0.01"),
        (torch.tensor([1.0, math.nan, 1e-3], dtype=F64), {}, "NaN"),
        (T_OK, dict(steps=7), "8 times"),
        (torch.linspace(1.0, 0.0, 6, dtype=F64), {}, "eps must satisfy"),
    ],
)
@pytest.mark.parametrize("name", ["heun", "dpm_solver", "lambda"])
def test_bad_grid_tensor(name, grid, kw, match):
    sde = make_sde("vp")
    if name == "dpm_solver" and "steps" in kw:
        kw = kw | dict(method="multistep")
    with pytest.raises(ValueError, match=match):
        sd.SAMPLERS[name](sde, lambda x, t: -x, (2, 2), grid=grid, **kw)


def test_unknown_grid_name_suggests_one():
    with pytest.raises(ValueError, match="did you mean 'logSNR'"):
        sd.sample_dpm_solver(make_sde("vp"), lambda x, t: -x, (2, 2), grid="logsnr")


# ---- bad scores ----------------------------------------------------------------------------------
class _TurnsNaN:
    """The exact score for ``calls`` evaluations, then NaN (a network that diverges mid-solve)."""

    def __init__(self, score_fn, calls: int):
        self.score_fn, self.calls, self.n = score_fn, calls, 0

    def __call__(self, x, t):
        self.n += 1
        s = self.score_fn(x, t)
        return s * math.nan if self.n > self.calls else s


@pytest.mark.parametrize("name", list(OPTIONS) + ["ode_dopri5"])
def test_score_turning_nan_later_raises(mixture, name):
    sde = make_sde("vp")
    sampler, kw = (
        (sd.sample_ode, {}) if name == "ode_dopri5" else (sd.SAMPLERS[name], OPTIONS[name])
    )
    score = _TurnsNaN(mixture.score_fn(sde), calls=3)
    with pytest.raises(ValueError, match="NaN or inf at some step"):
        sampler(sde, score, (4, 2), dtype=F64, **kw)
    assert score.n > 3


@pytest.mark.parametrize("divergence", ["exact", "rademacher"])
def test_score_turning_nan_later_raises_in_log_likelihood(mixture, divergence):
    sde = make_sde("vp")
    x = mixture.sample(4, torch.Generator().manual_seed(6))
    score = _TurnsNaN(mixture.score_fn(sde), calls=3)
    with pytest.raises(ValueError, match="NaN or inf at some step"):
        sd.log_likelihood(sde, score, x, divergence=divergence)
    with pytest.raises(ValueError, match="NaN or inf at some step"):
        sd.log_likelihood(sde, _TurnsNaN(mixture.score_fn(sde), 3), x, method="rk4", steps=4)


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("dtype", [torch.int64, torch.complex128])
def test_integer_or_complex_score_is_refused(name, dtype):
    sde = make_sde("vp")
    with pytest.raises(ValueError, match="floating tensor shaped like x"):
        sd.SAMPLERS[name](
            sde, lambda x, t: torch.zeros(x.shape, dtype=dtype), (2, 2), **OPTIONS[name]
        )


def test_integer_score_is_refused_by_log_likelihood(mixture):
    x = mixture.sample(3, torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match="floating tensor"):
        sd.log_likelihood(make_sde("vp"), lambda x, t: x.long(), x, divergence="exact")
