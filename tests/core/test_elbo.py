"""The ELBO of the reverse SDE against exact answers.

Oracle: with the exact score of p_t the model's reverse SDE has the same transitions as the
time reversal of the forward process and differs only in its start (the prior pi instead of
p_T). The bound is E over the forward paths from x of log dP/dQ(path | x), and that ratio is
p_eps(x) pi(x_T) / p_T(x_T), so the expected estimate is, for every x,

    ELBO(x) = log p_eps(x) + E[log pi(x_T) - log p_T(x_T) | x_eps = x],

with x_T ~ N(a x, c I) the kernel from eps to T. Averaged over x ~ p_eps the correction is
-KL(p_T || pi) <= 0. For a single isotropic Gaussian both are closed forms; for the mixture the
inner expectation is a Monte Carlo average over many x_T (no score calls). The estimator is
unbiased, so every check is "within a few standard errors of the exact value".
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde.core.likelihood import elbo_estimates

EPS = 1e-5
# Short SDEs whose prior mismatch is large enough to be resolved (KL(p_T || pi) of order 0.1).
SHORT = {"ve_short": sd.VESDE(0.01, 2.0, 1000), "vp_short": sd.VPSDE(0.1, 3.0, 1000)}


def get_sde(name: str) -> sd.SDE:
    return SHORT[name] if name in SHORT else make_sde(name)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kernel_to_T(sde: sd.SDE, eps: float) -> tuple[float, float]:
    """(a, c) of p_{eps,T}(x_T | x) = N(a x, c I)."""
    e, T = torch.tensor([eps], dtype=torch.float64), torch.tensor([sde.T], dtype=torch.float64)
    a = torch.exp(sde.log_alpha(T) - sde.log_alpha(e))
    return float(a), float(sde.sigma(T) ** 2 - a**2 * sde.sigma(e) ** 2)


def expect_log_normal(y_mean: torch.Tensor, c: float, m: torch.Tensor, v: float) -> torch.Tensor:
    """E[log N(y; m, v I)] for y ~ N(y_mean, c I), per row."""
    D = y_mean.shape[1]
    sq = ((y_mean - m) ** 2).sum(1)
    return -0.5 * D * math.log(2 * math.pi * v) - (sq + D * c) / (2 * v)


def gaussian_oracle(sde, mu, s0, x, eps):
    """Exact expected ELBO for data N(mu, s0^2 I) and the exact score, and KL(p_T || pi)."""
    a, c = kernel_to_T(sde, eps)
    T = torch.tensor([sde.T], dtype=torch.float64)
    alpha_T, sigma_T = float(sde.alpha(T)), float(sde.sigma(T))
    v_T, s2, D = alpha_T**2 * s0**2 + sigma_T**2, sde.prior_std**2, x.shape[1]
    gap = expect_log_normal(a * x, c, torch.zeros_like(mu), s2)
    gap = gap - expect_log_normal(a * x, c, alpha_T * mu, v_T)
    mix = sd.GaussianMixture([1.0], mu[None], [s0**2])
    m2 = float(((alpha_T * mu) ** 2).sum())
    kl = 0.5 * D * (v_T / s2 - 1 - math.log(v_T / s2)) + m2 / (2 * s2)
    return mix.log_prob(x, eps, sde) + gap, kl


def mixture_oracle(mix, sde, x, eps, n=20_000):
    """Exact expected ELBO of each row of x for the exact score (inner expectation by MC)."""
    a, c = kernel_to_T(sde, eps)
    g, out = gen(123), []
    for row in x:
        xT = a * row + math.sqrt(c) * torch.randn(n, x.shape[1], generator=g, dtype=x.dtype)
        out.append((sde.prior_logp(xT) - mix.log_prob(xT, sde.T, sde)).mean())
    return mix.log_prob(x, eps, sde) + torch.stack(out)


def repeated_estimates(sde, score_fn, x, n, **kw):
    """n independent one-sample estimates for each row of x: (rows, n) mean and standard error."""
    est, _ = elbo_estimates(sde, score_fn, x.repeat_interleave(n, 0), **kw)
    est = est[0].reshape(x.shape[0], n)
    return est.mean(1), est.std(1) / math.sqrt(n)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp", "ve_short", "vp_short"])
def test_gaussian_exact_score_gap_is_the_prior_mismatch(name):
    sde, mu, s0 = get_sde(name), torch.tensor([1.5, -1.0], dtype=torch.float64), 0.5
    mix = sd.GaussianMixture([1.0], mu[None], [s0**2])
    # Per point: the mean equals the closed form within 4 standard errors.
    x = torch.tensor([[1.4, -0.8], [0.5, 0.2]], dtype=torch.float64)
    mean, se = repeated_estimates(sde, mix.score_fn(sde), x, 3000, generator=gen(1), eps=EPS)
    expected, kl = gaussian_oracle(sde, mu, s0, x, EPS)
    assert ((mean - expected).abs() <= 4 * se).all(), (mean, expected, se)
    # Over x ~ p_eps: ELBO - log p_eps averages to -KL(p_T || pi), closed form.
    xs = mix.sample_t(10_000, sde, EPS, generator=gen(2))
    est, nfe = sd.elbo(sde, mix.score_fn(sde), xs, generator=gen(3), eps=EPS)
    gap = est - mix.log_prob(xs, EPS, sde)
    se_gap = float(gap.std()) / math.sqrt(len(gap))
    assert nfe == 1 and est.shape == (10_000,)
    assert abs(float(gap.mean()) + kl) <= 4 * se_gap, (float(gap.mean()), -kl, se_gap)
    assert float(gap.mean()) <= 3 * se_gap  # a lower bound on average
    if name in SHORT:  # resolved: KL 0.41 (VE) / 0.36 (VP) nats, measured 0.36 / 0.30 +- 0.04
        assert kl > 6 * se_gap, (kl, se_gap)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_mixture_exact_score_is_tight(name, mixture):
    sde = get_sde(name)
    x = torch.tensor([[-1.4, 0.1], [1.0, -1.2], [0.0, 0.5]], dtype=torch.float64)
    mean, se = repeated_estimates(sde, mixture.score_fn(sde), x, 4000, generator=gen(4), eps=EPS)
    logp, expected = mixture.log_prob(x, EPS, sde), mixture_oracle(mixture, sde, x, EPS)
    assert ((mean - expected).abs() <= 4 * se).all(), (mean, expected, se)
    assert (mean <= logp + 3 * se).all(), (mean, logp, se)
    # The exact gap log p_eps - E[ELBO] is the prior mismatch only; measured at these points it
    # is below 5e-4 nats (VP / sub-VP: alpha(T) = 6.6e-3; VE: sigma_max = 50), while the
    # standard errors here are ~0.05-0.1.
    assert ((logp - expected).abs() < 2e-3).all(), logp - expected


@pytest.mark.parametrize("name, ratio", [("vp", 0.5), ("subvp", 0.9)])
def test_importance_sampling_same_mean_smaller_variance(name, ratio):
    # Data far narrower than the prior (sd 0.005, like the fine structure of images): the
    # integrand sits at small t, which q(t) ~ g^2 / sigma^2 (uniform in log-SNR) finds and
    # U(eps, T) rarely hits. Ratio of the stds per estimate (importance / uniform) measured over
    # five seeds: VP 0.09-0.27, sub-VP 0.65-0.76. (For VE, g^2 / sigma^2 is constant: both
    # densities are U(eps, T).)
    sde = get_sde(name)
    mix = sd.GaussianMixture([1.0], [[0.3, -0.2]], [0.005**2])
    x = torch.tensor([[0.3025, -0.195]], dtype=torch.float64).repeat(4000, 1)
    runs = {
        imp: elbo_estimates(sde, mix.score_fn(sde), x, importance=imp, generator=gen(5))[0][0]
        for imp in (False, True)
    }
    means = {k: float(v.mean()) for k, v in runs.items()}
    stds = {k: float(v.std()) for k, v in runs.items()}
    se = math.hypot(stds[False], stds[True]) / math.sqrt(len(x))
    assert abs(means[True] - means[False]) <= 4 * se, (means, se)
    assert stds[True] < ratio * stds[False], stds
    exact = float(mixture_oracle(mix, sde, x[:1], EPS)[0])
    assert abs(means[True] - exact) <= 4 * stds[True] / math.sqrt(len(x)), (means, exact)


@pytest.mark.parametrize("importance", [True, False])
def test_stratified_times_same_mean_smaller_variance(importance):
    # 64-D data with fine structure (sd 0.05): the noise's part of the variance averages over
    # the dimensions, and where t falls is most of what is left, which the strata remove. 600
    # estimates of 16 draws each way; std ratio (stratified / independent) measured 0.30 with
    # importance, 0.37 uniform.
    sde, K, D, s0 = get_sde("vp"), 16, 64, 0.05
    mu = torch.full((D,), 0.3, dtype=torch.float64)
    mix = sd.GaussianMixture([1.0], mu[None], [s0**2])
    x = (mu + s0 * torch.randn(1, D, generator=gen(11), dtype=torch.float64)).repeat(600, 1)
    runs = {
        strat: sd.elbo(sde, mix.score_fn(sde), x, K, importance, gen(12), stratified=strat)[0]
        for strat in (False, True)
    }
    expected, _ = gaussian_oracle(sde, mu, s0, x[:1], EPS)
    for est in runs.values():
        se = float(est.std()) / math.sqrt(len(est))
        assert abs(float(est.mean()) - float(expected[0])) <= 4 * se, (est.mean(), expected, se)
    assert float(runs[True].std()) < 0.5 * float(runs[False].std())


def test_stratified_row_k_draws_its_time_from_the_kth_stratum():
    sde, K, seen = get_sde("vp"), 8, []
    mix = sd.GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    score = mix.score_fn(sde)

    def watched(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t[: len(t) // 2])  # the first half: x + noise (the second: x - noise)
        return score(y, t)

    x = torch.zeros(50, 2, dtype=torch.float64)
    for importance in (False, True):
        seen.clear()
        elbo_estimates(sde, watched, x, K, importance, gen(13))
        t = torch.stack(seen)  # (K, 50)
        lam = sde.log_snr(t)
        lam_eps, lam_T = (sde.log_snr(torch.tensor([v], dtype=torch.float64)) for v in (EPS, 1.0))
        u = (lam_T - lam) / (lam_T - lam_eps) if importance else (t - EPS) / (sde.T - EPS)
        k = torch.arange(K, dtype=torch.float64)[:, None]
        assert ((u >= k / K - 1e-9) & (u < (k + 1) / K + 1e-9)).all(), u


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_worse_score_gives_a_lower_bound(name, mixture):
    sde = get_sde(name)
    x = torch.tensor([[-1.4, 0.1], [1.0, 1.0]], dtype=torch.float64).repeat_interleave(2000, 0)
    exact = mixture.score_fn(sde)
    worse = lambda y, t: 0.8 * exact(y, t)  # noqa: E731
    good = elbo_estimates(sde, exact, x, generator=gen(6))[0][0]
    bad = elbo_estimates(sde, worse, x, generator=gen(6))[0][0]  # same t and noise: paired
    diff = (bad - good).reshape(2, -1)
    se = diff.std(1) / math.sqrt(diff.shape[1])
    assert (diff.mean(1) < -5 * se).all(), (diff.mean(1), se)


def test_samples_average_reproducible_and_shape_generic(mixture):
    sde = get_sde("vp")
    x = mixture.sample_t(5, sde, EPS, generator=gen(7))
    score = mixture.score_fn(sde)
    est, nfe = elbo_estimates(sde, score, x, samples=3, generator=gen(8))
    mean, nfe2 = sd.elbo(sde, score, x, samples=3, generator=gen(8))
    assert est.shape == (3, 5) and nfe == nfe2 == 3
    assert torch.allclose(mean, est.mean(0), rtol=1e-12, atol=0)
    again, _ = sd.elbo(sde, score, x, samples=3, generator=gen(8))
    assert torch.equal(again, mean)
    images, _ = sd.elbo(sde, score, x.reshape(5, 1, 1, 2), samples=3, generator=gen(8))
    assert torch.allclose(images, mean, rtol=1e-12, atol=1e-12)
    # eps=None is the default start time of log_likelihood, 1e-5.
    explicit, _ = sd.elbo(sde, score, x, samples=3, generator=gen(8), eps=1e-5)
    assert torch.equal(explicit, mean)
    single, _ = sd.elbo(sde, score, x.float(), samples=3, generator=gen(8))
    assert single.dtype == torch.float32 and torch.isfinite(single).all()  # other draws


def test_bits_per_dim_of_the_elbo_bounds_the_exact_one(mixture):
    # The ELBO in bits/dim through sd.bits_per_dim: an upper bound on the exact bits/dim.
    sde = get_sde("vp")
    x = torch.tensor([[-1.4, 0.1]], dtype=torch.float64)
    mean, se = repeated_estimates(sde, mixture.score_fn(sde), x, 4000, generator=gen(9))
    bpd = sd.bits_per_dim(mean, x.shape, scale=2.0)
    exact = sd.bits_per_dim(mixture.log_prob(x, EPS, sde), x.shape, scale=2.0)
    se_bpd = se / (x.shape[1] * math.log(2))
    assert (bpd >= exact - 3 * se_bpd).all() and (bpd - exact).abs().max() < 4 * se_bpd.max()


# ---- a wrong score with closed forms: the bound is on the reverse-SDE model, not the ODE's ----
# The linear score s(y, t) = -y / w(t), w = kappa v(t) with v = alpha^2 s0^2 + sigma^2 the
# marginal variance of data N(0, s0^2 I) (kappa = 1: exact). Both models are then Gaussian:
# the reverse SDE dx = [f + g^2 / w] x dt + g dw from N(0, pi_var I) at T has variance P(t) with
# dP/dt = 2 (f + g^2 / w) P - g^2, and the probability-flow ODE dx = [f + g^2 / (2 w)] x dt has
# dQ/dt = 2 (f + g^2 / (2 w)) Q. With x_t ~ N(a x, c I), E[h] = (a^2 |x|^2 + D c) / w^2 - 2 D / w,
# so the bound is one quadrature in t.
def _scalar(fn, t: float) -> float:
    return float(fn(torch.tensor([t], dtype=torch.float64)))


def linear_oracle(sde: sd.SDE, s0: float, kappa: float, x2: float, D: int) -> tuple:
    """(ELBO by quadrature, log p^SDE_eps(x), log p^ODE_eps(x)) for the linear score, |x|^2 = x2."""
    from scipy.integrate import quad, solve_ivp

    w = lambda t: kappa * (_scalar(sde.alpha, t) ** 2 * s0**2 + _scalar(sde.sigma, t) ** 2)  # noqa: E731
    f, g2 = (lambda t: _scalar(sde.f, t)), (lambda t: _scalar(sde.g, t) ** 2)  # noqa: E731

    def kernel(t: float) -> tuple[float, float]:
        a = math.exp(_scalar(sde.log_alpha, t) - _scalar(sde.log_alpha, EPS))
        return a, _scalar(sde.sigma, t) ** 2 - a**2 * _scalar(sde.sigma, EPS) ** 2

    def h(t: float) -> float:
        a, c = kernel(t)
        return g2(t) * ((a**2 * x2 + D * c) / w(t) ** 2 - 2 * D / w(t))

    def variance(drift_factor: float, noise: float) -> float:
        rhs = lambda t, p: 2 * (f(t) + drift_factor * g2(t) / w(t)) * p - noise * g2(t)  # noqa: E731
        sol = solve_ivp(rhs, (sde.T, EPS), [sde.prior_std**2], method="DOP853", rtol=1e-11,
                        atol=1e-14)  # fmt: skip
        return float(sol.y[0, -1])

    a_T, c_T = kernel(sde.T)
    prior = expect_log_normal(torch.tensor([[math.sqrt(x2) * a_T] + [0.0] * (D - 1)]), c_T,
                              torch.zeros(1, D), sde.prior_std**2)  # fmt: skip
    drift = D * (_scalar(sde.log_alpha, sde.T) - _scalar(sde.log_alpha, EPS))
    bound = float(prior) + drift - 0.5 * quad(h, EPS, sde.T, limit=500, epsrel=1e-11)[0]
    log_n = lambda var: -0.5 * D * math.log(2 * math.pi * var) - x2 / (2 * var)  # noqa: E731
    return bound, log_n(variance(1.0, 1.0)), log_n(variance(0.5, 0.0))


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("kappa", [0.5, 2.0])
def test_wrong_score_bounds_the_sde_model_and_not_the_ode_model(name, kappa):
    sde, s0 = get_sde(name), 0.5
    x = torch.tensor([[0.6, -0.8], [0.1, 0.2]], dtype=torch.float64)

    def score(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = sde.alpha(t) ** 2 * s0**2 + sde.sigma(t) ** 2
        return -y / (kappa * v)[:, None]

    mean, se = repeated_estimates(sde, score, x, 40_000, generator=gen(10), eps=EPS)
    for row, m, s in zip(x, mean.tolist(), se.tolist()):
        bound, log_sde, log_ode = linear_oracle(sde, s0, kappa, float(row @ row), 2)
        assert abs(m - bound) <= 4 * s, (m, bound, s)  # the estimator, on a wrong score
        assert bound < log_sde - 0.5  # a strict bound on the SDE model (gap 0.7-12 nats here)
        if kappa == 2.0:  # an under-confident score: the ODE model (variance Q = 25-76) is far
            # broader than the SDE model, whose drift pulls harder (P = 2.5-3.1), and the bound on
            # the SDE model lies above the ODE model's log-density: an ELBO in bits/dim below the
            # ODE's bits/dim is no contradiction when the score is not exact.
            assert bound > log_ode + 0.5, (bound, log_ode)
    exact_bound, exact_sde, _ = linear_oracle(sde, s0, 1.0, 1.0, 2)  # kappa = 1: tight
    assert abs(exact_bound - exact_sde) < 1e-6, (exact_bound, exact_sde)


def test_input_checks(mixture):
    sde, score = get_sde("vp"), mixture.score_fn(get_sde("vp"))
    x = torch.zeros(3, 2, dtype=torch.float64)
    bad_x = x.clone()
    bad_x[1, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        sd.elbo(sde, score, bad_x)
    for samples in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="samples must be an integer >= 1"):
            sd.elbo(sde, score, x, samples=samples)
    with pytest.raises(ValueError, match="importance must be True or False"):
        sd.elbo(sde, score, x, importance="yes")
    with pytest.raises(ValueError, match="stratified must be True or False"):
        sd.elbo(sde, score, x, stratified=1)
    for eps in (0.0, 1.0, -1e-3):
        with pytest.raises(ValueError, match="eps must satisfy"):
            sd.elbo(sde, score, x, eps=eps)
    with pytest.raises(ValueError, match="floating"):
        sd.elbo(sde, score, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or inf"):
        sd.elbo(sde, lambda y, t: torch.full_like(y, float("nan")), x)
    with pytest.raises(ValueError, match="shaped like x"):
        sd.elbo(sde, lambda y, t: y[:, :1], x)
