"""Fast samplers against the Gaussian-mixture oracle (DESIGN section 5).

The mixture's exact score makes every error here a sampler error:
* convergence orders of the deterministic samplers, against a dopri5 solve of the probability-flow
  ODE at rtol = atol = 1e-10 in float64 (its own error, ~3e-8 against dopri8 at 1e-11, is below
  1% of the smallest error fitted here, 1e-5);
* samples at a moderate NFE against the exact p_eps (moments and a two-sample permutation test),
  starting from exact draws of p_T so that the prior's mismatch with p_T plays no part;
* DDIM's closed form, the NFE accounting, reproducibility, and the argument checks.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde import samplers as fs
from scoresde.core import ode
from scoresde.samplers import default_eps

F64 = torch.float64


def _exact_flow(sde: sd.SDE, score_fn, z: torch.Tensor, eps: float) -> torch.Tensor:
    """The probability-flow map z (at T) -> x (at eps), dopri5 at rtol = atol = 1e-10."""

    def f(t, y):
        x = y[0]
        tv = t.clamp(eps, sde.T).expand(x.shape[0])  # dopri5 may probe a stage past eps
        return (sde.probability_flow_drift(x, tv, score_fn(x, tv)),)

    (x,), _ = ode.integrate(f, (z,), sde.T, eps, "dopri5", rtol=1e-10, atol=1e-10)
    return x


_REFERENCE: dict[str, tuple] = {}


def _reference(mixture: sd.GaussianMixture, name: str):
    """(sde, eps, score_fn, z, exact x) for 64 exact draws of p_T; computed once per SDE."""
    if name not in _REFERENCE:
        sde = make_sde(name)
        eps, score_fn = default_eps(sde), mixture.score_fn(sde)
        z = mixture.sample_t(64, sde, sde.T, torch.Generator().manual_seed(0))
        _REFERENCE[name] = (sde, eps, score_fn, z, _exact_flow(sde, score_fn, z, eps))
    return _REFERENCE[name]


def _rms(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x - y).norm(dim=1).pow(2).mean().sqrt().item()


# ---- convergence orders ----------------------------------------------------------------------
# (sampler, kwargs, order k, step counts N). For the single-step solvers N counts steps of
# order k (k evaluations each); for the others one step is one (Heun: two) evaluations.
# The N are in the asymptotic range: the error model C h^k (1 + a h) bends the fitted slope by
# O(h); the local slopes measured on these ranges (VE, VP, sub-VP) stay within 0.25 of k.
ORDERS = {
    "heun": (fs.sample_heun, dict(denoise=False), 2, [16, 32, 64]),
    "dpm_solver_1": (
        fs.sample_dpm_solver,
        dict(order=1, method="singlestep_fixed"),
        1,
        [32, 64, 128],
    ),
    "dpm_solver_2": (
        fs.sample_dpm_solver,
        dict(order=2, method="singlestep_fixed"),
        2,
        [16, 32, 64],
    ),
    "dpm_solver_3": (
        fs.sample_dpm_solver,
        dict(order=3, method="singlestep_fixed"),
        3,
        [32, 64, 128],
    ),
    "dpm_solver++2M": (fs.sample_dpm_solver, dict(order=2, method="multistep"), 2, [32, 64, 128]),
    "dpm_solver++3M": (fs.sample_dpm_solver, dict(order=3, method="multistep"), 3, [64, 128, 256]),
}


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("solver", list(ORDERS))
def test_convergence_order(mixture, name, solver):
    """Slope of log RMS error against log N: the band k +- 0.4 tells order k from k +- 1."""
    sde, eps, score_fn, z, exact = _reference(mixture, name)
    sampler, kwargs, k, Ns = ORDERS[solver]
    mult = k if kwargs.get("method") == "singlestep_fixed" else 1
    errors = [
        _rms(sampler(sde, score_fn, None, steps=N * mult, z=z, **kwargs)[0], exact) for N in Ns
    ]
    slope = (
        -torch.linalg.lstsq(
            torch.tensor([[math.log(N), 1.0] for N in Ns], dtype=F64),
            torch.tensor(errors, dtype=F64).log()[:, None],
        )
        .solution[0, 0]
        .item()
    )
    assert abs(slope - k) < 0.4, f"{solver} on {name}: errors {errors}, fitted order {slope:.2f}"


# ---- DDIM ------------------------------------------------------------------------------------
def test_one_step_dpm_solver_1_is_ddim(mixture, sde):
    """DDIM from T to eps: x = alpha_eps x0 + sigma_eps e with e = -sigma_T s(z, T) and
    x0 = (z - sigma_T e) / alpha_T. Both forms cancel O(prior_std) terms down to O(1), so they agree
    to a few float64 ulps of prior_std: 1e-12 * prior_std is a wide bound."""
    eps, score_fn = default_eps(sde), mixture.score_fn(sde)
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(1), dtype=F64)
    T, e_ = torch.full((16,), sde.T, dtype=F64), torch.full((16,), eps, dtype=F64)
    e = -sde.sigma(T)[:, None] * score_fn(z, T)
    x0 = (z - sde.sigma(T)[:, None] * e) / sde.alpha(T)[:, None]
    ddim = sde.alpha(e_)[:, None] * x0 + sde.sigma(e_)[:, None] * e
    tol = dict(rtol=0, atol=1e-12 * sde.prior_std)
    for method in ("singlestep", "multistep"):
        x, nfe = fs.sample_dpm_solver(sde, score_fn, None, steps=1, order=1, method=method, z=z)
        torch.testing.assert_close(x, ddim, **tol)
        assert nfe == 1


def test_dpm_solver_pp_1_equals_dpm_solver_1(mixture, sde):
    """DPM-Solver++(1) and DPM-Solver-1 are the same DDIM step written in x0 and in noise."""
    score_fn = mixture.score_fn(sde)
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(2), dtype=F64)
    a, _ = fs.sample_dpm_solver(sde, score_fn, None, steps=7, order=1, method="multistep", z=z)
    b, _ = fs.sample_dpm_solver(sde, score_fn, None, steps=7, order=1, method="singlestep", z=z)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12 * sde.prior_std)


# ---- samples against the exact p_eps ---------------------------------------------------------
def _target(mixture, sde, eps):
    """Mean and covariance of p_eps = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)."""
    te = torch.tensor([eps], dtype=F64)
    a, s = sde.alpha(te).item(), sde.sigma(te).item()
    return a * mixture.mean(), a**2 * mixture.cov() + s**2 * torch.eye(mixture.dim, dtype=F64)


def _assert_moments(x, mixture, sde, eps, b_mean, b_cov):
    """``x``: (n, k, D), n iid examples of k blocks, each block with marginal p_eps.

    Per-example block averages of x - m and of (x - m)(x - m)^T (m the exact mean) are iid, so
    their standard errors are exact; the limit is 4 standard errors (two-sided p = 6e-5 per entry)
    plus the sampler's discretisation budget.
    """
    m, C = _target(mixture, sde, eps)
    d = x - m
    mean_i, prod_i = d.mean(1), (d[..., :, None] * d[..., None, :]).mean(1)
    n = len(x)
    err_m, se_m = mean_i.mean(0).abs(), mean_i.std(0) / math.sqrt(n)
    err_c, se_c = (prod_i.mean(0) - C).abs(), prod_i.std(0) / math.sqrt(n)
    assert (err_m <= 4 * se_m + b_mean).all(), f"mean error {err_m} (SE {se_m}, budget {b_mean})"
    assert (err_c <= 4 * se_c + b_cov).all(), f"cov error {err_c} (SE {se_c}, budget {b_cov})"


def _energy_pvalue(x: torch.Tensor, y: torch.Tensor, perms: int = 200) -> float:
    """Permutation p-value of the energy distance between equal-size samples x and y."""
    n = len(x)
    D = torch.cdist(torch.cat([x, y]), torch.cat([x, y]))
    g = torch.Generator().manual_seed(3)
    splits = [torch.arange(2 * n)] + [torch.randperm(2 * n, generator=g) for _ in range(perms)]
    u = torch.stack([(idx < n).to(F64) for idx in splits], dim=1)  # (2n, perms + 1), 1 = "x"
    v = 1 - u
    Du, Dv = D @ u, D @ v
    stat = (2 * (u * Dv).sum(0) - (u * Du).sum(0) - (v * Dv).sum(0)) / n**2
    return ((stat[1:] >= stat[0]).sum().item() + 1) / (perms + 1)


def _check_samples(x, mixture, sde, eps, b_mean, b_cov, seed=4):
    """Moments within MC error + budget; the energy distance to 1,000 exact draws is not significant
    at level 0.01 (budgets of a few 1e-2 move it far less than its permutation spread at n = 1000).
    """
    _assert_moments(x[:, None], mixture, sde, eps, b_mean, b_cov)
    exact = mixture.sample_t(1000, sde, eps, torch.Generator().manual_seed(seed))
    assert _energy_pvalue(x[:1000], exact) >= 0.01


N_SAMPLES = 4000

# Deterministic samplers at a moderate NFE. Budget: their RMS distance to the exact flow map,
# measured on 512 draws for VE / VP / sub-VP: Heun 24 steps <= 0.036, DPM-Solver-3 (30 NFE)
# <= 0.033, DPM-Solver++(2M) (30 NFE) <= 0.030. With b = 0.04 >= E|x - Phi(z)|, the mean moves by
# at most b and each covariance entry by at most b (sd_i + sd_j) + b^2 (Cauchy-Schwarz).
DETERMINISTIC = {
    "heun": (fs.sample_heun, dict(steps=24, denoise=False)),
    "dpm_solver_3": (fs.sample_dpm_solver, dict(steps=30)),
    "dpm_solver++2M": (fs.sample_dpm_solver, dict(steps=30, order=2, method="multistep")),
}


@pytest.mark.parametrize("solver", list(DETERMINISTIC))
def test_deterministic_samplers_reproduce_mixture(mixture, sde, solver):
    eps = default_eps(sde)
    z = mixture.sample_t(N_SAMPLES, sde, sde.T, torch.Generator().manual_seed(5))
    sampler, kwargs = DETERMINISTIC[solver]
    x, _ = sampler(sde, mixture.score_fn(sde), None, z=z, **kwargs)
    b, sd_ = 0.04, _target(mixture, sde, eps)[1].diag().sqrt()
    _check_samples(x, mixture, sde, eps, b, b * (sd_[:, None] + sd_[None, :]) + b**2)


# Stochastic samplers: their weak error, measured with 5e4-1e5 samples (MC SE <= 0.005 in the
# mean, 0.007 in the covariance) on VE / VP / sub-VP, is at most 0.014 / 0.021 for the lambda family
# (100 steps VP / sub-VP, 1000 VE), 0.016 / 0.027 for Heun with churn (48 steps): budgets
# 0.02 / 0.03 and 0.02 / 0.04.
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_lambda_family_reproduces_mixture(mixture, sde, lam):
    """Every lam in [0, 1] has the marginals p_t: lam = 0 reverse SDE, lam = 1 ODE, and between."""
    eps, g = default_eps(sde), torch.Generator().manual_seed(6)
    steps = 1000 if sde.prior_std != 1 else 100  # Euler on VE's uniform grid needs the paper's N
    z = mixture.sample_t(N_SAMPLES // 2, sde, sde.T, g)
    x, nfe = fs.sample_lambda(
        sde, mixture.score_fn(sde), None, lam=lam, steps=steps, z=z, generator=g
    )
    assert nfe == steps
    _check_samples(x, mixture, sde, eps, 0.02, 0.03)


def test_heun_churn_reproduces_mixture(mixture, sde):
    eps, g = default_eps(sde), torch.Generator().manual_seed(7)
    z = mixture.sample_t(N_SAMPLES, sde, sde.T, g)
    x, nfe = fs.sample_heun(
        sde, mixture.score_fn(sde), None, steps=48, churn=5.0, denoise=False, z=z, generator=g
    )
    assert nfe == 96
    _check_samples(x, mixture, sde, eps, 0.02, 0.04)


def _blocks_score(mixture, sde, k):
    """Exact score of k independent copies of the mixture side by side: p_t factorises."""

    def score(x, t):
        return mixture.score(x.reshape(-1, mixture.dim), t.repeat_interleave(k), sde).reshape(
            x.shape
        )

    return score


def test_adaptive_reproduces_mixture_in_64_dimensions(mixture, sde):
    """The adaptive solver's error norm is a root mean square over the entries of one example: it
    concentrates in high dimension, its design regime (images). On 32 independent copies of the 2-D
    mixture (D = 64) its weak error, measured with 4000 examples (MC SE 0.002 / 0.003), is at most
    0.0063 / 0.011 at rtol = 0.05: budget 0.01 / 0.02. (The 2-D case, where the acceptance test
    depends on the noise draw itself, is tests/samplers/test_adaptive.py.)"""
    k, eps, g = 32, default_eps(sde), torch.Generator().manual_seed(8)
    z = mixture.sample_t(250 * k, sde, sde.T, g).reshape(250, k * mixture.dim)
    x, nfe = fs.sample_adaptive(
        sde, _blocks_score(mixture, sde, k), None, rtol=0.05, denoise=False, z=z, generator=g
    )
    assert nfe % 2 == 0 and nfe < 1000
    _assert_moments(x.reshape(250, k, mixture.dim), mixture, sde, eps, 0.01, 0.02)


# ---- NFE, denoising, callback, dtype ---------------------------------------------------------
def _gaussian_score(sde):
    """Exact score when the data are N(0, I): -x / (alpha^2 + sigma^2)."""
    return lambda x, t: -x / (sde.alpha(t) ** 2 + sde.sigma(t) ** 2)[:, None]


class _Counter:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.f(x, t)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("method", fs.DPM_METHODS)
def test_dpm_solver_steps_is_the_nfe(sde, order, method):
    for steps in range(order, 13):
        if method == "singlestep_fixed" and steps % order:
            continue
        for denoise in (False, True):
            score = _Counter(_gaussian_score(sde))
            _, nfe = fs.sample_dpm_solver(
                sde, score, (3, 2), steps=steps, order=order, method=method, denoise=denoise
            )
            assert nfe == score.calls == steps + denoise


def test_heun_denoise_is_tweedie_and_callback(mixture, sde):
    """denoise = EDM's Euler step to sigma_edm = 0 = Tweedie's (x + sigma^2 s) / alpha at eps."""
    eps, score_fn = default_eps(sde), mixture.score_fn(sde)
    z = sde.prior_sampling((8, 2), torch.Generator().manual_seed(9), dtype=F64)
    seen = []
    x, nfe = fs.sample_heun(
        sde, score_fn, None, steps=5, denoise=False, z=z, callback=lambda *a: seen.append(a)
    )
    assert nfe == 10 and [a[0] for a in seen] == list(range(5))
    torch.testing.assert_close(seen[-1][1], torch.full((8,), eps, dtype=F64))
    torch.testing.assert_close(seen[-1][2], x)
    y, nfe = fs.sample_heun(sde, score_fn, None, steps=5, denoise=True, z=z)
    te = torch.full((8,), eps, dtype=F64)
    tweedie = (x + sde.sigma(te)[:, None] ** 2 * score_fn(x, te)) / sde.alpha(te)[:, None]
    assert nfe == 11
    torch.testing.assert_close(y, tweedie, rtol=1e-12, atol=1e-12)


SAMPLERS = {
    "heun": (fs.sample_heun, dict(steps=3, churn=10.0)),
    "dpm_solver": (fs.sample_dpm_solver, dict(steps=6)),
    "adaptive": (fs.sample_adaptive, dict(rtol=0.5)),
    "lambda": (fs.sample_lambda, dict(lam=0.3, steps=5)),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_dtype_and_device_follow_z(sde, name):
    sampler, kwargs = SAMPLERS[name]
    z = sde.prior_sampling((4, 2), torch.Generator().manual_seed(10), dtype=torch.float32)
    x, _ = sampler(sde, _gaussian_score(sde), None, z=z, **kwargs)
    assert x.dtype == torch.float32 and x.device == z.device and torch.isfinite(x).all()
    x, _ = sampler(sde, _gaussian_score(sde), (4, 3), dtype=F64, **kwargs)
    assert x.dtype == F64 and x.shape == (4, 3)


@pytest.mark.parametrize("name", ["heun", "adaptive", "lambda"])
def test_stochastic_samplers_reproducible(sde, name):
    sampler, kwargs = SAMPLERS[name]
    score = _gaussian_score(sde)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sampler(sde, score, (6, 2), generator=g, dtype=F64, **kwargs)[0]

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


# ---- bad arguments -----------------------------------------------------------------------------
BAD = [
    (fs.sample_dpm_solver, dict(order=4), "order must be 1, 2 or 3"),
    (fs.sample_dpm_solver, dict(order=3, steps=2), "steps must be >= order"),
    (fs.sample_dpm_solver, dict(grid="cosine"), "unknown grid 'cosine'; valid: time_uniform"),
    (fs.sample_dpm_solver, dict(method="adaptive"), "unknown method 'adaptive'; valid: single"),
    (fs.sample_dpm_solver, dict(method="singlestep_fixed", steps=10), "divisible"),
    (fs.sample_dpm_solver, dict(steps=0), "steps must be"),
    (fs.sample_dpm_solver, dict(eps=0.0), "eps"),
    (fs.sample_heun, dict(eps=1.0), "eps"),
    (fs.sample_heun, dict(steps=0), "steps"),
    (fs.sample_heun, dict(churn=-1.0), "churn"),
    (fs.sample_heun, dict(rho=0.0), "rho"),
    (fs.sample_lambda, dict(lam=1.5), r"lam must lie in \[0, 1\]"),
    (fs.sample_lambda, dict(lam=-0.1), r"lam must lie in \[0, 1\]"),
    (fs.sample_lambda, dict(steps=2.5), "steps"),
    (fs.sample_adaptive, dict(rtol=0.0), "rtol > 0"),
    (fs.sample_adaptive, dict(atol=-1.0), "atol >= 0"),
    (fs.sample_adaptive, dict(eps=-1e-3), "eps"),
]


@pytest.mark.parametrize("sampler, kwargs, match", BAD)
def test_bad_arguments(sampler, kwargs, match):
    sde = make_sde("vp")
    with pytest.raises(ValueError, match=match):
        sampler(sde, _gaussian_score(sde), (2, 2), **kwargs)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bad_inputs(name):
    sampler, kwargs = SAMPLERS[name]
    sde = make_sde("vp")
    z = torch.zeros(2, 2)
    z[1, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        sampler(sde, _gaussian_score(sde), (2, 2), z=z, **kwargs)
    with pytest.raises(ValueError, match="shape"):
        sampler(sde, _gaussian_score(sde), (3, 2), z=torch.zeros(2, 2), **kwargs)
    with pytest.raises(ValueError, match="shaped like x"):
        sampler(sde, lambda x, t: x[:, :1], (2, 2), **kwargs)
