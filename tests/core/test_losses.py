"""DSM loss against closed forms (DESIGN section 5).

For a Gaussian p0 = N(mu, s^2 I) the perturbed marginal is N(alpha mu, v I), v = alpha^2 s^2 +
sigma^2,
and at the exact score s* = -(x - alpha mu) / v the expected loss at fixed t is

    E lambda ||s* + z/sigma||^2 = lambda (D/sigma^2 - E||s*||^2)
                                = lambda D alpha^2 s^2 / (sigma^2 v)

because E[z/sigma | x_t] = -s*(x_t) (the cross term is -2 E||s*||^2). Monte Carlo tolerances are
5 standard errors of the sample mean (CLT; a false alarm has probability ~6e-7 per check).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

from scoresde.core.losses import WEIGHTINGS, dsm_loss, importance_weight, reduce, sample_t

D, MU, S = 3, 0.7, 0.5
N_MC = 20000


def _gauss_score(sde):
    def score(x, t):
        alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return -(x - alpha * MU) / (alpha**2 * S**2 + sigma**2)

    return score


def _expected(sde, weighting: str, t: float) -> float:
    tt = torch.tensor([t], dtype=torch.float64)
    alpha2, sigma2 = sde.alpha(tt).item() ** 2, sde.sigma(tt).item() ** 2
    lam = WEIGHTINGS[weighting](sde, tt).item()
    return lam * D * alpha2 * S**2 / (sigma2 * (alpha2 * S**2 + sigma2))


def _x0(n: int, g: torch.Generator) -> torch.Tensor:
    return MU + S * torch.randn(n, D, generator=g, dtype=torch.float64)


def _within(values: torch.Tensor, target: float, k: float = 5.0) -> None:
    se = values.std().item() / math.sqrt(values.numel())
    assert abs(values.mean().item() - target) < k * se, (values.mean().item(), target, se)


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_exact_score_gives_closed_form_at_fixed_t(sde, weighting, t):
    g = torch.Generator().manual_seed(0)
    tt = torch.full((N_MC,), t, dtype=torch.float64)
    loss = dsm_loss(sde, _gauss_score(sde), _x0(N_MC, g), weighting, generator=g, t=tt)
    assert loss.shape == (N_MC,)
    _within(loss, _expected(sde, weighting, t))


def test_mixture_exact_score_value(sde, mixture):
    # For any p0: E lambda ||s* + z/sigma||^2 = D - sigma^2 E_{p_t} ||s*||^2 (lambda = sigma^2);
    # E||s*||^2 is estimated on independent exact draws from p_t, so both errors add.
    g = torch.Generator().manual_seed(1)
    t = 0.2
    loss = dsm_loss(
        sde,
        mixture.score_fn(sde),
        mixture.sample(N_MC, g),
        generator=g,
        t=torch.full((N_MC,), t, dtype=torch.float64),
    )
    xt = mixture.sample_t(N_MC, sde, t, g)
    tt = torch.full((N_MC,), t, dtype=torch.float64)
    fisher = mixture.score(xt, tt, sde).pow(2).sum(1) * sde.sigma(tt) ** 2
    se = math.hypot(loss.std().item(), fisher.std().item()) / math.sqrt(N_MC)
    assert abs(loss.mean().item() - (mixture.dim - fisher.mean().item())) < 5 * se


def test_exact_score_minimises_with_common_random_numbers(sde, mixture):
    # With the same (t, z, x0), loss(s* + delta) - loss(s*) =
    # lambda (2 delta.(s* + z/sigma) + |delta|^2), whose first term has mean zero: the mean
    # difference equals E lambda |delta|^2 > 0.
    exact = mixture.score_fn(sde)

    def perturbed(x, t):
        return exact(x, t) + 0.5 * torch.tanh(x) / sde.sigma(t)[:, None]

    x0 = mixture.sample(N_MC, torch.Generator().manual_seed(2))
    l_exact = dsm_loss(sde, exact, x0, generator=torch.Generator().manual_seed(3))
    l_pert = dsm_loss(sde, perturbed, x0, generator=torch.Generator().manual_seed(3))
    assert l_exact.mean() < l_pert.mean()
    g = torch.Generator().manual_seed(3)
    t = sample_t(sde, N_MC, generator=g, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    mean, sigma = sde.marginal_prob(x0, t)
    delta2 = (0.5 * torch.tanh(mean + sigma[:, None] * z)).pow(2).sum(1)  # lambda |delta|^2
    _within(l_pert - l_exact - delta2, 0.0)


def _time_average(sde, weighting: str, eps: float) -> float:
    # (1/(T - eps)) int_eps^T E l(t) dt, integrated in u = log t for the 1/t behaviour near 0.
    def f(u):
        return _expected(sde, weighting, math.exp(u)) * math.exp(u)

    val, err = integrate.quad(f, math.log(eps), math.log(sde.T), epsabs=0, epsrel=1e-10, limit=200)
    return val / (sde.T - eps)


@pytest.mark.parametrize(
    "weighting,importance",
    [("score", False), ("likelihood", False), ("likelihood", True), ("score", True)],
)
def test_time_averaged_loss_matches_quadrature(sde, weighting, importance):
    # With and without importance sampling the estimator's mean is the same time average, so the
    # importance-weighted estimator is unbiased for the uniform one (Monte Carlo SE, _within).
    g = torch.Generator().manual_seed(4)
    eps = 1e-5
    loss = dsm_loss(sde, _gauss_score(sde), _x0(N_MC, g), weighting, eps, g, importance=importance)
    _within(loss, _time_average(sde, weighting, eps))


def test_importance_times_are_uniform_in_log_snr(sde):
    # P(t <= t0) under q = (lambda(eps) - lambda(t0)) / (lambda(eps) - lambda(T)); binomial SE.
    eps, n = 1e-5, 20000
    t = sample_t(
        sde,
        n,
        eps,
        importance=True,
        generator=torch.Generator().manual_seed(5),
        dtype=torch.float64,
    )
    assert t.min() >= eps and t.max() <= sde.T
    lam = sde.log_snr(torch.tensor([eps, 0.05, 0.5, sde.T], dtype=torch.float64))
    for t0, lam0 in zip((0.05, 0.5), lam[1:3]):
        p = ((lam[0] - lam0) / (lam[0] - lam[3])).item()
        frac = (t <= t0).double().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_importance_weight_is_inverse_density(sde):
    # q(t) = g^2 / (sigma^2 Z) integrates to one over [eps, T]: int 1/((T - eps) w(t)) dt = 1.
    eps = 1e-5

    def q(u):
        t = torch.tensor([math.exp(u)], dtype=torch.float64)
        return math.exp(u) / ((sde.T - eps) * importance_weight(sde, t, eps).item())

    total, _ = integrate.quad(q, math.log(eps), math.log(sde.T), epsrel=1e-10, limit=200)
    assert abs(total - 1) < 1e-7


def test_generator_reproducible_and_reduce(sde):
    x0 = torch.randn(64, 2, dtype=torch.float64)
    score = _gauss_score(sde)
    a = dsm_loss(
        sde, lambda x, t: score(x, t)[:, :2], x0, generator=torch.Generator().manual_seed(7)
    )
    b = dsm_loss(
        sde, lambda x, t: score(x, t)[:, :2], x0, generator=torch.Generator().manual_seed(7)
    )
    assert torch.equal(a, b)
    assert torch.allclose(reduce(a, "sum"), a.sum()) and torch.allclose(reduce(a), a.mean())


def test_bad_inputs(sde):
    x0 = torch.zeros(4, 2)
    score = lambda x, t: x
    with pytest.raises(ValueError, match="likelihood, score"):
        dsm_loss(sde, score, x0, weighting="elbo")
    with pytest.raises(ValueError, match="eps"):
        dsm_loss(sde, score, x0, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        dsm_loss(sde, score, x0, eps=1.5)
    with pytest.raises(ValueError, match="NaN"):
        dsm_loss(sde, score, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="mean, sum"):
        reduce(torch.zeros(3), "max")
    with pytest.raises(ValueError, match="t must"):
        dsm_loss(sde, score, x0, t=torch.full((4,), 2.0))
