"""The optimised time grid (GITS-style dynamic programming, then a fit to the sampler itself).

Checked against closed forms: the DDIM step costs on a Gaussian, where the probability-flow ODE
is solved exactly; zero costs on a point mass, where DDIM is exact; the dynamic programme
against a brute-force search over all paths; the teacher against the exact ODE solution. Then
on the 2-D mixture the optimised grids lower the sampler's error against an accurate solve of
the ODE, and the grids run in every sampler that takes ``grid=``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde.core.mixture import oracle_mixture_2d
from scoresde.samplers import default_eps, grids
from scoresde.samplers import grid_search as gs

F64 = torch.float64
S2 = 0.5  # variance of the Gaussian data N(0, S2 I) of the closed-form tests


def _gaussian_path(sde, t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact ODE states and scores at the times ``t`` from ``z`` at T, data N(0, S2 I).

    In ``y = x / alpha`` with noise level ``s = sigma / alpha`` the probability-flow ODE is
    ``dy/ds = s y / (S2 + s^2)``, so ``y(s) = y_T sqrt((S2 + s^2) / (S2 + s_T^2))``; the score of
    ``p_t = N(0, alpha^2 S2 + sigma^2)`` is ``-x / (alpha^2 S2 + sigma^2)``.
    """
    s, a = torch.exp(-sde.log_snr(t)), sde.alpha(t)
    ratio = torch.sqrt((S2 + s**2) / (S2 + s[0] ** 2))
    X = (a * ratio)[:, None, None] * (z / a[0])
    S = -X / (a**2 * S2 + sde.sigma(t) ** 2)[:, None, None]
    return X, S


def _gaussian_costs(sde, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``c(i, j)`` in closed form on the exact path: DDIM in ``y`` is the Euler step in ``s``,
    ``y_j = y_i - (s_i - s_j) eps_i`` with ``eps_i = s_i y_i / (S2 + s_i^2)``, so
    ``c(i, j) = alpha_j^2 E||y_T||^2 (r_i (1 - (s_i - s_j) s_i / (S2 + s_i^2)) - r_j)^2``."""
    s, a = torch.exp(-sde.log_snr(t)), sde.alpha(t)
    r = torch.sqrt((S2 + s**2) / (S2 + s[0] ** 2))
    y2 = (z / a[0]).square().sum(-1).mean()
    C = len(t) - 1
    cost = torch.full((C + 1, C + 1), math.inf, dtype=F64)
    for i in range(C):
        j = torch.arange(i + 1, C + 1)
        hat = r[i] * (1 - (s[i] - s[j]) * s[i] / (S2 + s[i] ** 2))
        cost[i, j] = a[j] ** 2 * y2 * (hat - r[j]) ** 2
    return cost


def test_ddim_costs_match_the_closed_form_on_a_gaussian(sde):
    eps = default_eps(sde)
    t = gs.candidate_times(sde, 30, eps)
    z = sde.prior_sampling((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    X, S = _gaussian_path(sde, t, z)
    got, want = gs.ddim_costs(sde, t, X, S[:-1]), _gaussian_costs(sde, t, z)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    ok = torch.isfinite(want)
    # Both sides cancel in (hat - r): measured relative error <= 1.2e-7 on costs of 5e-18
    # (sub-VP), <= 3e-10 elsewhere; a wrong step would be off by O(1).
    torch.testing.assert_close(got[ok], want[ok], rtol=1e-9, atol=1e-13)
    assert want[ok].max() > 0.5  # the Gaussian is not a case where DDIM is exact


def test_teacher_follows_the_exact_ode_and_keeps_its_scores(sde):
    eps = default_eps(sde)
    t = gs.candidate_times(sde, 40, eps)
    z = sde.prior_sampling((32, 2), torch.Generator().manual_seed(1), dtype=F64)
    score_fn = sd.GaussianMixture([1.0], [[0.0, 0.0]], [S2]).score_fn(sde)
    X, S = gs.teacher_trajectory(sde, score_fn, z, t, substeps=2)
    assert X.shape == (41, 32, 2) and S.shape == (40, 32, 2)
    exact, _ = _gaussian_path(sde, t, z)
    # DPM-Solver++(3M) on 80 log-SNR steps: measured relative error 3e-6 (VE) to 1.5e-4 (sub-VP).
    assert ((X - exact).norm() / exact.norm()).item() < 1e-3
    for i in range(40):  # the recorded scores are the teacher's own, at its states
        assert torch.equal(S[i], score_fn(X[i], t[i].expand(32)))


def test_ddim_costs_vanish_on_a_point_mass(sde):
    """A point mass has ``x0_theta = mu`` at every x and t: DDIM and the teacher are exact."""
    eps = default_eps(sde)
    t = gs.candidate_times(sde, 30, eps)
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(2), dtype=F64)
    point = sd.GaussianMixture([1.0], [[0.3, -0.2]], [0.0])
    X, S = gs.teacher_trajectory(sde, point.score_fn(sde), z, t)
    cost = gs.ddim_costs(sde, t, X, S)
    # Round-off of states of size ||x||^2 <= 5e3: measured <= 1.2e-25; the mixture's are >= 1e-8.
    assert cost[torch.isfinite(cost)].max() < 1e-20


def _brute_force(cost: torch.Tensor, steps: int, path_cost: str) -> float:
    C = len(cost) - 1
    best = math.inf
    for inner in itertools.combinations(range(1, C), steps - 1):
        path = [0, *inner, C]
        terms = [cost[a, b] for a, b in zip(path[:-1], path[1:])]
        total = sum(terms, torch.zeros((), dtype=F64)) if path_cost == "sum" else max(terms)
        best = min(best, float(total))
    return best


@pytest.mark.parametrize("path_cost", gs.PATH_COSTS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_path_is_the_brute_force_optimum(seed, path_cost):
    C = 9
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(C + 1, C + 1, generator=g, dtype=F64)
    cost[torch.rand(C + 1, C + 1, generator=g) < 0.2] = math.inf  # some forbidden steps
    cost = torch.where(torch.ones_like(cost).triu(1).bool(), cost, math.inf)
    cost[torch.arange(C), torch.arange(1, C + 1)] = 0.5  # a path of every length exists
    for steps in range(1, C + 1):
        path = gs.best_path(cost, steps, path_cost)
        assert len(path) == steps + 1 and path[0] == 0 and path[-1] == C
        assert all(a < b for a, b in zip(path[:-1], path[1:]))
        terms = [float(cost[a, b]) for a, b in zip(path[:-1], path[1:])]
        got = math.fsum(terms) if path_cost == "sum" else max(terms)
        assert got == pytest.approx(_brute_force(cost, steps, path_cost), rel=1e-12)


@pytest.mark.parametrize("sampler", ["ddim", "unipc"])
def test_grid_shape_ends_and_determinism(sde, sampler):
    eps = default_eps(sde)
    f = oracle_mixture_2d().score_fn(sde)
    opts = dict(sampler=sampler, candidates=30, max_runs=10, dtype=F64)
    t = sd.optimised_grid(sde, f, (32, 2), 6, generator=torch.Generator().manual_seed(3), **opts)
    assert t.dtype == F64 and t.device.type == "cpu" and t.shape == (7,)
    assert t[0].item() == sde.T and t[-1].item() == eps
    assert (t.diff() < 0).all()
    assert set(t.tolist()) <= set(gs.candidate_times(sde, 30, eps).tolist())
    z = sde.prior_sampling((32, 2), torch.Generator().manual_seed(3), dtype=F64)
    assert torch.equal(t, sd.optimised_grid(sde, f, z, 6, **opts))  # the same warm-up latents


def test_every_grid_sampler_takes_the_grid():
    sde = make_sde("vp")
    f = oracle_mixture_2d().score_fn(sde)
    t = sd.optimised_grid(sde, f, (32, 2), 5, candidates=20, max_runs=0, dtype=F64)
    z = sde.prior_sampling((8, 2), torch.Generator().manual_seed(4), dtype=F64)
    runs = {  # sampler, options, NFE on 5 intervals
        "dpm_solver": (dict(order=3, method="multistep"), 5),
        "unipc": ({}, 5),
        "deis": ({}, 5),
        "ipndm": ({}, 5),
        "lms": ({}, 5),
        "heun": (dict(denoise=False), 10),
        "lambda": ({}, 5),
        "dpm_solver_sde": ({}, 5),
    }
    for name, (options, nfe) in runs.items():
        g = torch.Generator().manual_seed(5)
        x, used = sd.sample(sde, f, None, sampler=name, grid=t, z=z, generator=g, **options)
        assert used == nfe and torch.isfinite(x).all(), name


def test_warm_up_cost():
    """The teacher makes ``C substeps`` evaluations (its scores at the candidates are reused);
    the descent adds at most ``max_runs`` runs of ``steps`` evaluations."""
    sde = make_sde("vp")
    f = oracle_mixture_2d().score_fn(sde)
    calls = [0]

    def counted(x, t):
        calls[0] += 1
        return f(x, t)

    sd.optimised_grid(sde, counted, (16, 2), 4, candidates=25, substeps=3, max_runs=0)
    assert calls[0] == 75
    calls[0] = 0
    sd.optimised_grid(sde, counted, (16, 2), 4, sampler="deis", candidates=25, max_runs=7)
    assert 50 < calls[0] <= 50 + 7 * 4


@pytest.fixture(scope="module")
def fresh():
    """Fresh latents (not the warm-up's) and their accurate ODE solutions on the 2-D mixture."""
    out = {}
    for name in ("ve", "vp"):
        sde = make_sde(name)
        f = oracle_mixture_2d().score_fn(sde)
        z = sde.prior_sampling((300, 2), torch.Generator().manual_seed(11), dtype=F64)
        ref, _ = sd.sample_dpm_solver(sde, f, None, steps=200, order=3, method="multistep", z=z)
        out[name] = (sde, f, z, ref)
    return out


def _error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x - ref).square().sum(-1).mean().item()


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_gits_grid_lowers_the_ddim_error(fresh, name):
    sde, f, z, ref = fresh[name]
    t = sd.optimised_grid(
        sde,
        f,
        (128, 2),
        10,
        candidates=60,
        max_runs=0,
        dtype=F64,
        generator=torch.Generator().manual_seed(0),
    )

    def ddim(grid):
        steps = 10 if isinstance(grid, str) else None
        x, _ = sd.sample_dpm_solver(
            sde, f, None, order=1, method="multistep", grid=grid, steps=steps, z=z
        )
        return _error(x, ref)

    named = min(ddim(g) for g in grids.GRIDS)
    # Measured (seeds 0-2 of the warm-up): optimised / best named grid = 0.37 (VE, against
    # edm) and 0.64 (VP, against time_quadratic); 0.8 fails any grid no better than those.
    assert ddim(t) < 0.8 * named


def test_fitted_grid_lowers_the_unipc_error(fresh):
    sde, f, z, ref = fresh["ve"]
    options = dict(order=2)
    t = sd.optimised_grid(
        sde,
        f,
        (128, 2),
        10,
        sampler="unipc",
        options=options,
        candidates=60,
        max_runs=100,
        dtype=F64,
        generator=torch.Generator().manual_seed(0),
    )
    fitted = _error(sd.sample_unipc(sde, f, None, grid=t, z=z, **options)[0], ref)
    default = _error(sd.sample_unipc(sde, f, None, steps=10, z=z, **options)[0], ref)
    # Measured: fitted / default log-SNR grid = 0.53 here; 0.13-0.78 over warm-up seeds 0-2 on
    # VE and VP.
    assert fitted < 0.8 * default


def test_table_holds_the_samplers_of_the_sampler_table():
    for name in gs.GRID_SEARCH_SAMPLERS:
        if name != "ddim":
            assert gs.fitted_sampler(name) is sd.SAMPLERS[name]
    sde = make_sde("vp")
    f = oracle_mixture_2d().score_fn(sde)
    z = sde.prior_sampling((8, 2), torch.Generator().manual_seed(6), dtype=F64)
    ddim = gs.fitted_sampler("ddim")(sde, f, None, steps=6, z=z)[0]
    torch.testing.assert_close(ddim, sd.sample_deis(sde, f, None, steps=6, order=1, z=z)[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=31), "exceeds the 30 candidate"),
        (dict(sampler="unipcc"), "valid: ddim, dpm_solver, unipc, deis, ipndm, lms, heun"),
        (dict(sampler="pc"), "unknown sampler 'pc'"),
        (dict(path_cost="mean"), "path_cost"),
        (dict(options=dict(grid="logSNR")), "set by optimised_grid"),
        (dict(options=dict(steps=5)), "set by optimised_grid"),
        (dict(sampler="unipc", options=dict(ordr=2)), "options do not fit"),
        (dict(substeps=0), "substeps"),
        (dict(max_runs=-1), "max_runs"),
        (dict(candidates=torch.linspace(1.0, 0.1, 31, dtype=F64)), "eps"),
        (dict(steps=0), "steps"),
    ],
)
def test_bad_arguments(kwargs, match):
    sde = make_sde("vp")
    f = oracle_mixture_2d().score_fn(sde)
    args = dict(steps=5, candidates=30) | kwargs
    steps = args.pop("steps")
    with pytest.raises(ValueError, match=match):
        sd.optimised_grid(sde, f, (8, 2), steps, **args)


def test_best_path_needs_enough_candidates():
    with pytest.raises(ValueError, match="candidate intervals"):
        gs.best_path(torch.zeros(4, 4, dtype=F64), 4)
