"""UniPC, DEIS, iPNDM, lms, the adaptive DPM-Solver and stochastic DPM-Solver++ against the
Gaussian-mixture oracle, with the shared references and checks of ``test_fast_sampling``:

* convergence orders against the dopri5 solve of the probability-flow ODE (VE, VP, sub-VP);
* samples at a moderate NFE against the exact p_eps (moments and a two-sample test);
* exact identities: every order-1 method is DDIM, eta = 0 is the deterministic solver, the
  eta = 1 ancestral step is the order-1 SDE step; NFE accounting, reproducibility, bad options.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde
from test_fast_sampling import (
    N_SAMPLES,
    _check_samples,
    _Counter,
    _gaussian_score,
    _reference,
    _rms,
    _target,
)

import scoresde as sd
from scoresde import samplers as fs
from scoresde.samplers import default_eps

F64 = torch.float64

# (sampler, kwargs, fitted order k, step counts N); one step is one evaluation (ancestral 2S:
# two). The N are in the asymptotic range: local slopes measured on VE, VP and sub-VP lie within
# 0.3 of k there (sub-VP converges last). iPNDM's fixed weights are exact for equal steps only;
# on the EDM grid its order is 2 for every order >= 2 (see its docstring).
ORDERS = {
    "unipc_1": (fs.sample_unipc, dict(order=1), 2, [32, 64, 128]),
    "unipc_2": (fs.sample_unipc, dict(order=2), 3, [64, 128, 256]),
    "unipc_3": (fs.sample_unipc, dict(order=3), 4, [64, 128, 256]),
    "unipc_2_bh1": (fs.sample_unipc, dict(order=2, variant="bh1"), 3, [64, 128, 256]),
    "unip_2": (fs.sample_unipc, dict(order=2, corrector=False), 2, [64, 128, 256]),
    "deis_1": (fs.sample_deis, dict(order=1), 1, [32, 64, 128]),
    "deis_2": (fs.sample_deis, dict(order=2), 2, [64, 128, 256]),
    "deis_3": (fs.sample_deis, dict(order=3), 3, [64, 128, 256]),
    "lms_2": (fs.sample_lms, dict(order=2), 2, [64, 128, 256]),
    "lms_3": (fs.sample_lms, dict(order=3), 3, [64, 128, 256]),
    "lms_4": (fs.sample_lms, dict(order=4), 4, [128, 256, 512]),
    "ipndm_2": (fs.sample_ipndm, dict(order=2), 2, [64, 128, 256]),
    "ipndm_4": (fs.sample_ipndm, dict(order=4), 2, [64, 128, 256]),
    "ancestral_2s_eta0": (
        fs.sample_dpm_solver_sde,
        dict(method="ancestral", order=2, eta=0.0),
        2,
        [32, 64, 128],
    ),
}


def _slope(Ns: list[int], errors: list[float]) -> float:
    """Least-squares slope of -log error against log N."""
    A = torch.tensor([[math.log(N), 1.0] for N in Ns], dtype=F64)
    b = torch.tensor(errors, dtype=F64).log()[:, None]
    return -torch.linalg.lstsq(A, b).solution[0, 0].item()


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("solver", list(ORDERS))
def test_convergence_order(mixture, name, solver):
    """The band k +- 0.4 tells order k from k +- 1."""
    sde, eps, score_fn, z, exact = _reference(mixture, name)
    sampler, kwargs, k, Ns = ORDERS[solver]
    errors = [_rms(sampler(sde, score_fn, None, steps=N, z=z, **kwargs)[0], exact) for N in Ns]
    slope = _slope(Ns, errors)
    assert abs(slope - k) < 0.4, f"{solver} on {name}: errors {errors}, fitted order {slope:.2f}"


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("order", [2, 3])
def test_adaptive_dpm_solver_error_follows_the_tolerance(mixture, name, order):
    """With rtol = atol = tol the error is proportional to tol (slopes measured 0.7-1.05) and
    below it; the cost grows as tol falls."""
    sde, eps, score_fn, z, exact = _reference(mixture, name)
    tols = [1e-2, 1e-3, 1e-4]
    runs = [
        fs.sample_dpm_solver_adaptive(sde, score_fn, None, z=z, order=order, rtol=t, atol=t)
        for t in tols
    ]
    errors = [_rms(x, exact) for x, _ in runs]
    nfes = [nfe for _, nfe in runs]
    slope = -_slope([1 / t for t in tols], errors)
    assert 0.55 < -slope < 1.3, f"errors {errors} at tolerances {tols}"
    assert all(e < t for e, t in zip(errors, tols)) and nfes == sorted(nfes)


# ---- exact identities ---------------------------------------------------------------------------
def test_every_order_one_method_is_ddim(mixture, sde):
    """Order 1 of DEIS, lms, iPNDM and DPM-Solver++ SDE / ancestral at eta = 0 is DDIM."""
    score_fn = mixture.score_fn(sde)
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(1), dtype=F64)
    ddim, _ = fs.sample_dpm_solver(sde, score_fn, None, steps=9, order=1, method="multistep", z=z)
    runs = [
        fs.sample_deis(sde, score_fn, None, steps=9, order=1, z=z),
        fs.sample_lms(sde, score_fn, None, steps=9, order=1, grid="logSNR", z=z),
        fs.sample_ipndm(sde, score_fn, None, steps=9, order=1, grid="logSNR", z=z),
        fs.sample_dpm_solver_sde(sde, score_fn, None, steps=9, order=1, eta=0.0, z=z),
        fs.sample_dpm_solver_sde(
            sde, score_fn, None, steps=9, order=1, eta=0.0, z=z, method="ancestral"
        ),
    ]
    for x, nfe in runs:
        assert nfe == 9
        torch.testing.assert_close(x, ddim, rtol=0, atol=1e-12 * sde.prior_std)


@pytest.mark.parametrize("order", [2, 3])
def test_sde_solver_at_eta_zero_is_dpm_solver_pp(mixture, sde, order):
    score_fn = mixture.score_fn(sde)
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(2), dtype=F64)
    a, _ = fs.sample_dpm_solver(sde, score_fn, None, steps=11, order=order, method="multistep", z=z)
    b, _ = fs.sample_dpm_solver_sde(sde, score_fn, None, steps=11, order=order, eta=0.0, z=z)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12 * sde.prior_std)


def test_ancestral_eta_one_is_the_ddpm_posterior_step(mixture, sde):
    """At eta = 1, DDIM to sigma_down plus sigma_up of noise is the exact posterior
    q(x_t | x_s, x0) step: the order-1 SDE step with the same noise."""
    score_fn = mixture.score_fn(sde)
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(3), dtype=F64)
    run = lambda method: fs.sample_dpm_solver_sde(  # noqa: E731
        sde, score_fn, None, steps=7, order=1, method=method, z=z,
        generator=torch.Generator().manual_seed(4),
    )[0]  # fmt: skip
    torch.testing.assert_close(run("ancestral"), run("sde"), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("corrector", [True, False])
def test_unipc_corrector_costs_no_evaluation(sde, corrector):
    for steps in (1, 2, 3, 7):
        for denoise in (False, True):
            score = _Counter(_gaussian_score(sde))
            _, nfe = fs.sample_unipc(
                sde, score, (3, 2), steps=steps, order=3, corrector=corrector, denoise=denoise
            )
            assert nfe == score.calls == steps + denoise


def test_unipc_corrector_changes_the_result(mixture):
    sde = make_sde("vp")
    z = sde.prior_sampling((8, 2), torch.Generator().manual_seed(5), dtype=F64)
    a, _ = fs.sample_unipc(sde, mixture.score_fn(sde), None, steps=6, z=z)
    b, _ = fs.sample_unipc(sde, mixture.score_fn(sde), None, steps=6, z=z, corrector=False)
    assert (a - b).abs().max() > 1e-4


# ---- samples against the exact p_eps --------------------------------------------------------
# Deterministic samplers: their RMS distance to the exact flow map at these settings, measured on
# 512 draws for VE / VP / sub-VP, is at most 0.032 (UniPC-3 at 25 steps 0.028, DEIS-3 at 30
# 0.032, iPNDM-4 at 20 0.028, lms-4 at 30 0.032, all on sub-VP; DPM-Solver-23 at rtol = atol =
# 1e-2: 0.0007). Budget b = 0.04 as in test_fast_sampling.
DETERMINISTIC = {
    "unipc": dict(steps=25, order=3),
    "deis": dict(steps=30, order=3),
    "ipndm": dict(steps=20, order=4),
    "lms": dict(steps=30, order=4),
    "dpm_solver_adaptive": dict(rtol=1e-2, atol=1e-2),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_samplers_reproduce_mixture(mixture, sde, name):
    eps = default_eps(sde)
    z = mixture.sample_t(N_SAMPLES, sde, sde.T, torch.Generator().manual_seed(6))
    x, _ = sd.sample(sde, mixture.score_fn(sde), None, sampler=name, z=z, **DETERMINISTIC[name])
    b, sd_ = 0.04, _target(mixture, sde, eps)[1].diag().sqrt()
    _check_samples(x, mixture, sde, eps, b, b * (sd_[:, None] + sd_[None, :]) + b**2)


# Stochastic samplers at 100 steps: weak errors measured with 4e4 samples (MC SE 0.007 in the
# mean, 0.012 in the covariance) on VE / VP / sub-VP: at most 0.021 in the mean (3 SE, one shared
# draw; 0.007-0.008 with two other seeds) and 0.017 in the covariance: budgets 0.02 / 0.03.
STOCHASTIC = {
    "sde_2m_eta1": dict(steps=100, order=2, eta=1.0),
    "sde_3m_eta0.5": dict(steps=100, order=3, eta=0.5),
    "ancestral_2s_eta1": dict(steps=100, order=2, eta=1.0, method="ancestral"),
}


@pytest.mark.parametrize("variant", list(STOCHASTIC))
def test_stochastic_dpm_solver_reproduces_mixture(mixture, sde, variant):
    eps, g = default_eps(sde), torch.Generator().manual_seed(7)
    z = mixture.sample_t(N_SAMPLES, sde, sde.T, g)
    x, _ = fs.sample_dpm_solver_sde(
        sde, mixture.score_fn(sde), None, z=z, generator=g, **STOCHASTIC[variant]
    )
    _check_samples(x, mixture, sde, eps, 0.02, 0.03)


@pytest.mark.parametrize("method", ["sde", "ancestral"])
def test_stochastic_dpm_solver_reproducible(sde, method):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return fs.sample_dpm_solver_sde(
            sde, _gaussian_score(sde), (6, 2), steps=5, method=method, generator=g, dtype=F64
        )[0]

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


# ---- bad options --------------------------------------------------------------------------------
BAD = [
    (fs.sample_unipc, dict(order=4), "order must be 1, 2 or 3, got 4"),
    (fs.sample_unipc, dict(order=0), "order must be 1, 2 or 3, got 0"),
    (fs.sample_unipc, dict(variant="bh3"), "unknown variant 'bh3'.*; valid: bh1, bh2"),
    (fs.sample_unipc, dict(steps=0), "steps must be"),
    (fs.sample_unipc, dict(grid="cosine"), "unknown grid 'cosine'; valid: time_uniform"),
    (fs.sample_deis, dict(order=4), "order must be 1, 2 or 3, got 4"),
    (fs.sample_deis, dict(order=2.5), "order must be 1, 2 or 3"),
    (fs.sample_lms, dict(order=5), "order must be 1, 2, 3 or 4, got 5"),
    (fs.sample_ipndm, dict(order=0), "order must be 1, 2, 3 or 4, got 0"),
    (fs.sample_ipndm, dict(eps=0.0), "eps"),
    (fs.sample_dpm_solver_adaptive, dict(order=1), "order must be 2 or 3"),
    (fs.sample_dpm_solver_adaptive, dict(rtol=0.0), "rtol > 0"),
    (fs.sample_dpm_solver_adaptive, dict(atol=-1.0), "atol >= 0"),
    (fs.sample_dpm_solver_adaptive, dict(safety=1.5), r"safety must lie in \(0, 1\]"),
    (fs.sample_dpm_solver_sde, dict(order=4), "order must be 1, 2 or 3 with method='sde'"),
    (
        fs.sample_dpm_solver_sde,
        dict(order=3, method="ancestral"),
        "order must be 1 or 2 with method='ancestral', got 3",
    ),
    (fs.sample_dpm_solver_sde, dict(method="sd"), "unknown method 'sd'.*; valid: sde, ancestral"),
    (fs.sample_dpm_solver_sde, dict(eta=-0.1), "eta >= 0"),
    (fs.sample_dpm_solver_sde, dict(eta=1.5, method="ancestral"), r"eta must lie in \[0, 1\]"),
]


@pytest.mark.parametrize("sampler, kwargs, match", BAD)
def test_bad_options(sampler, kwargs, match):
    sde = make_sde("vp")
    with pytest.raises(ValueError, match=match):
        sampler(sde, _gaussian_score(sde), (2, 2), **kwargs)
