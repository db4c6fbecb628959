"""The three SDEs against their own closed forms: derivatives, densities, chains and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_sde

import scoresde as sd

F64_EPS = 2.0**-52
F32_EPS = 2.0**-23


def _t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(values, dtype=dtype)


# ---- the marginal against drift and diffusion ---------------------------------------------------
def _central(u, t: torch.Tensor, h: float) -> torch.Tensor:
    return (u(t + h) - u(t - h)) / (2 * h)


@pytest.mark.parametrize("which", ["alpha", "var"])
def test_marginal_derivatives_match_drift_and_diffusion(sde, which):
    """d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2 (float64 central differences).

    Tolerance: the central difference D(h) has error c h^2 + O(h^4); Richardson's estimate of it is
    |D(2h) - D(h)| / 3, doubled here to cover the O(h^4) rest, plus round-off of the difference
    quotient, a few ulp of u over h.
    """
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    if which == "alpha":
        u, exact = sde.alpha, sde.f(t) * sde.alpha(t)
    else:
        u, exact = (lambda s: sde.sigma(s) ** 2), 2 * sde.f(t) * sde.sigma(t) ** 2 + sde.g(t) ** 2
    h = 1e-4
    d1, d2 = _central(u, t, h), _central(u, t, 2 * h)
    tol = 2 * (d2 - d1).abs() / 3 + 8 * F64_EPS * u(t).abs().clamp(min=1) / h
    assert ((d1 - exact).abs() <= tol).all(), (d1 - exact).abs().max()


# ---- prior density ------------------------------------------------------------------------------
def test_prior_logp_normalised_1d_and_2d(sde):
    """exp(prior_logp) integrates to 1: trapezoid rule on [-10 s, 10 s] (1-D) and [-8 s, 8 s]^2.

    For a Gaussian the trapezoid rule on a uniform grid is spectrally accurate (error far below
    1e-12 at these spacings) and the truncated tails weigh < 2 erfc(8/sqrt 2) ~ 1e-15 per axis, so
    only float64 summation round-off remains: 1e-10.
    """
    s = sde.prior_std
    x = torch.linspace(-10 * s, 10 * s, 2001, dtype=torch.float64)
    p1 = sde.prior_logp(x[:, None]).exp()
    assert abs(torch.trapezoid(p1, x).item() - 1) < 1e-10
    y = torch.linspace(-8 * s, 8 * s, 401, dtype=torch.float64)
    X, Y = torch.meshgrid(y, y, indexing="ij")
    p2 = sde.prior_logp(torch.stack([X, Y], -1).reshape(-1, 2)).exp().reshape(401, 401)
    assert abs(torch.trapezoid(torch.trapezoid(p2, y), y).item() - 1) < 1e-10


def test_prior_logp_equals_torch_distributions(sde):
    """Same numbers as a product of torch Normals on 4-D data (float64 rounding, ~1e-13 rel.)."""
    z = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = z * sde.prior_std
    zero, s = torch.tensor(0.0, dtype=z.dtype), torch.tensor(sde.prior_std, dtype=z.dtype)
    ref = torch.distributions.Normal(zero, s).log_prob(z).sum(dim=(1, 2, 3))
    torch.testing.assert_close(sde.prior_logp(z), ref, rtol=1e-12, atol=0)


def test_prior_sampling_has_prior_std(sde):
    """Prior draws have std prior_std: 20000 draws, std's standard error s/sqrt(2n), 5 SE."""
    n = 20000
    z = sde.prior_sampling((n, 1), torch.Generator().manual_seed(1), dtype=torch.float64)
    se = sde.prior_std / math.sqrt(2 * n)
    assert abs(z.std().item() - sde.prior_std) < 5 * se
    assert abs(z.mean().item()) < 5 * sde.prior_std / math.sqrt(n)


# ---- the marginal against Monte Carlo of the forward SDE -----------------------------------------
def _em_moments(sde: sd.SDE, m0: float, v0: float, K: int, t_end: float):
    """Exact mean and variance of the Euler-Maruyama chain with K steps (linear recursion)."""
    dt = t_end / K
    t = torch.arange(K, dtype=torch.float64) * dt
    a, g2 = 1 + sde.f(t) * dt, sde.g(t) ** 2 * dt
    m, v = m0, v0
    for k in range(K):
        m, v = a[k] * m, a[k] ** 2 * v + g2[k]
    return float(m), float(v)


def test_marginal_matches_monte_carlo_of_forward_sde(sde):
    """Simulate dx = f x dt + g dw from x(0) ~ N(x0, sigma(0)^2): Euler steps 1/1000, 20000 paths.

    At t = 0.25, 0.5, 1 the sample mean and variance agree with alpha(t) x0 and sigma(t)^2 within
    5 standard errors (sigma/sqrt(n) and sigma^2 sqrt(2/(n-1))) plus the Euler bias, computed
    exactly from the linear recursion of the chain's moments (first order in dt).
    """
    n, K, x0 = 20000, 1000, 1.5
    g = torch.Generator().manual_seed(2)
    v0 = sde.sigma(_t([0.0])).item() ** 2
    x = x0 + math.sqrt(v0) * torch.randn(n, generator=g, dtype=torch.float64)
    dt = 1.0 / K
    checks = {250: 0.25, 500: 0.5, 1000: 1.0}
    for k in range(K + 1):
        if k in checks:
            t_end = checks[k]
            alpha, sigma = sde.alpha(_t([t_end])).item(), sde.sigma(_t([t_end])).item()
            m_em, v_em = _em_moments(sde, x0, v0, k, t_end)
            bias_m, bias_v = abs(m_em - alpha * x0), abs(v_em - sigma**2)
            assert abs(x.mean().item() - alpha * x0) <= 5 * sigma / math.sqrt(n) + bias_m
            assert abs(x.var().item() - sigma**2) <= 5 * sigma**2 * math.sqrt(2 / (n - 1)) + bias_v
        if k < K:
            tk = _t([k * dt])
            z = torch.randn(n, generator=g, dtype=torch.float64)
            x = x + sde.f(tk) * x * dt + sde.g(tk) * math.sqrt(dt) * z


def test_euler_bias_is_first_order(sde):
    """The bias term used above really is O(dt): halving dt halves it (ratio 2 + O(dt))."""
    te = _t([1.0])
    v = sde.sigma(te).item() ** 2
    v0 = sde.sigma(_t([0.0])).item() ** 2
    e1 = abs(_em_moments(sde, 1.0, v0, 500, 1.0)[1] - v)
    e2 = abs(_em_moments(sde, 1.0, v0, 1000, 1.0)[1] - v)
    assert 1.9 < e1 / e2 < 2.1


# ---- log-SNR -------------------------------------------------------------------------------------
def test_log_snr_round_trip(sde):
    """t_of_log_snr inverts log_snr; both are a few float64 operations: 1e-10 relative in t."""
    t = torch.linspace(1e-3, 1.0, 101, dtype=torch.float64)
    lam = sde.log_snr(t)
    assert (lam[1:] < lam[:-1]).all()  # strictly decreasing
    torch.testing.assert_close(sde.t_of_log_snr(lam), t, rtol=1e-10, atol=0)


def test_log_snr_definition(sde):
    t = torch.linspace(1e-3, 1.0, 11, dtype=torch.float64)
    expect = torch.log(sde.alpha(t) / sde.sigma(t))
    torch.testing.assert_close(sde.log_snr(t), expect, rtol=1e-12, atol=1e-12)


# ---- discrete chains -----------------------------------------------------------------------------
def _chain_error(name: str, N: int) -> float:
    """Max error of the discrete chain's mean factor and variance (relative to the prior's).

    The chain is run through ``discretize`` itself: step k uses t on grid index k, its mean factor
    is ``1 + f/x`` and its added variance ``G^2``; after steps 0..k it is compared with the
    continuous marginal at t = (k+1) T / N.
    """
    sde = make_sde(name).with_steps(N)
    k = torch.arange(N, dtype=torch.float64)
    t = torch.clamp((k + 0.25) / (N - 1), max=1.0)  # lands on grid index k
    one = torch.ones(N, 1, dtype=torch.float64)
    f, G = sde.discretize(one, t)
    a = 1 + f[:, 0]
    log_m = torch.cumsum(torch.log(a), 0)  # mean factor after steps 0..k
    # v_k = a_k^2 v_{k-1} + G_k^2, v_{-1} = 0:  v_k = m_k^2 sum_{j<=k} G_j^2 / m_j^2
    v = torch.exp(2 * log_m) * torch.cumsum(G**2 * torch.exp(-2 * log_m), 0)
    tk = (k + 1) / N
    alpha, var = sde.alpha(tk), sde.sigma(tk) ** 2
    err_m = (log_m.exp() - alpha).abs().max()
    err_v = (v - var).abs().max() / sde.prior_std**2
    return max(err_m.item(), err_v.item())


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_discrete_chain_converges_first_order(name):
    """SMLD / DDPM / Euler chains reach the continuous marginal with error c/N + O(1/N^2): the
    observed order between N = 1000 and N = 4000 is 1 within 0.05 (the O(1/N) correction)."""
    e1, e2 = _chain_error(name, 1000), _chain_error(name, 4000)
    order = math.log(e1 / e2) / math.log(4)
    assert abs(order - 1) < 0.05, (e1, e2, order)


def test_ddpm_cumprod_equals_alpha_squared():
    """prod_{i<=k} (1 - beta_i) = alpha(t_{k+1})^2 (1 + O(1/N)): the log error is at most
    sum beta_i^2 / 2 + |sum beta_i - int beta| <= (beta_max^2 / 2 + beta_max) / N."""
    sde = sd.VPSDE(0.1, 20.0, 1000)
    k = torch.arange(1000, dtype=torch.float64)
    err = (sde.alphas_cumprod.log() - 2 * sde.log_alpha((k + 1) / 1000)).abs().max().item()
    assert err <= (20.0**2 / 2 + 20.0) / 1000


def test_smld_chain_telescopes_exactly():
    """SMLD: sum_{j<=k} G_j^2 = sigma_k^2 exactly (telescoping), sigma_k = sigma(k / (N-1))."""
    sde = sd.VESDE(0.01, 50.0, 1000)
    k = torch.arange(999, dtype=torch.float64)
    _, G = sde.discretize(torch.zeros(999, 1, dtype=torch.float64), (k + 0.25) / 999)
    torch.testing.assert_close(torch.cumsum(G**2, 0), sde.sigma(k / 999) ** 2, rtol=1e-12, atol=0)


# ---- shapes, dtypes, bad input -------------------------------------------------------------------
def _all_outputs(sde: sd.SDE, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
    score = -x / (1 + sd.core.sde.bcast(t, x))
    return [
        *sde.sde(x, t),
        *sde.marginal_prob(x, t),
        sde.prior_logp(x),
        *sde.discretize(x, t),
        sde.reverse_drift(x, t, score),
        sde.probability_flow_drift(x, t, score),
        *sde.reverse_discretize(x, t, score),
    ]


def test_shape_generic_2d_and_4d_agree(sde):
    """(B, D) and (B, C, H, W) views of the same numbers give the same numbers (bit for bit)."""
    g = torch.Generator().manual_seed(3)
    x4 = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    t = _t([1e-3, 0.3, 0.7, 1.0])
    for a, b in zip(_all_outputs(sde, x4, t), _all_outputs(sde, x4.reshape(4, -1), t)):
        assert torch.equal(a.reshape(b.shape), b)


def test_float32_and_float64(sde):
    """dtype follows the input, and float32 agrees with float64 to float32 round-off.

    Each output is O(10) float32 operations deep (the VE ones exponentiate t log(sigma_max /
    sigma_min) ~ 8.5, amplifying t's rounding by that factor); 1e-5 relative covers ~100 ulp.
    Outputs formed as a difference of O(|x|) terms (the DDPM ``f = sqrt(1 - beta) x - x``) carry
    an absolute round-off of a few ulp of |x|: 8 F32_EPS max|x| more.
    """
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    t = _t([0.1, 0.3, 0.7, 1.0])
    out64 = _all_outputs(sde, x, t)
    out32 = _all_outputs(sde, x.float(), t.float())
    for a, b in zip(out32, out64):
        assert a.dtype == torch.float32
        scale = b.abs().max().clamp(min=1e-30)
        atol = 1e-5 * scale.item() + 8 * F32_EPS * x.abs().max().item()
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=atol)
    assert all(o.dtype == torch.float64 for o in out64)


@pytest.mark.parametrize(
    "t",
    [
        torch.tensor(0.5),
        torch.full((4, 1), 0.5),
        torch.full((3,), 0.5),
        _t([0.5, 0.5, 0.5, 1.1]),
        _t([-0.1, 0.5, 0.5, 0.5]),
        np.full(4, 0.5),
    ],
    ids=["0d", "column", "batch_mismatch", "above_T", "negative", "numpy"],
)
def test_bad_t_raises(sde, t):
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="t"):
        sde.sde(x, t)
    with pytest.raises(ValueError, match="t"):
        sde.marginal_prob(x, t)
