"""``sample_adaptive`` (Gotta Go Fast) in 2-D, where its acceptance test depends on the noise.

Each example's error estimate ``E`` is driven by its own Brownian increment, so which attempts are
rejected depends on the noise. If a rejected attempt drew new noise, acceptance would select
increments (on the 2-D mixture this inflated the covariance of the largest component, trace 0.52
against 0.30, and more so as rtol fell). A rejected increment is instead split by the Brownian
bridge and its rest kept for the next steps, so every example follows one Brownian path. The
tests: the variance of pure noise (a zero score on VE: ``x = int g dW``), and the covariance of
the mixture's largest component within Monte Carlo error, on VE, VP and sub-VP.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde
from test_fast_sampling import _assert_moments

from scoresde import samplers as fs
from scoresde.samplers import default_eps
from scoresde.samplers.adaptive import _Path, _split

F64 = torch.float64


def test_pure_noise_has_the_variance_of_the_brownian_integral():
    """Zero score on VE: the reverse SDE is ``dx = g dW``, so ``Var x_eps = sigma_T^2 -
    sigma_eps^2`` exactly. Rejections happen (the estimate ``(g(t) - g(t - h)) dW / 2`` depends on
    dW); the variance of the 8000 entries must match within 4 standard errors (SE = Var sqrt(2 /
    8000), Gaussian) plus 2% (the trapezoidal rule on g^2 at rtol = 0.02)."""
    sde, eps = make_sde("ve"), 1e-3
    seen = []
    x, nfe = fs.sample_adaptive(
        sde,
        lambda x, t: torch.zeros_like(x),
        None,
        z=torch.zeros(4000, 2, dtype=F64),
        rtol=0.02,
        atol=1e-3,
        eps=eps,
        denoise=False,
        generator=torch.Generator().manual_seed(0),
        callback=lambda i, t, x, xm: seen.append(t.clone()),
    )
    ts = torch.stack(seen)  # (attempts, B)
    rejected = ((ts[1:] == ts[:-1]) & (ts[:-1] > eps)).sum().item()
    assert rejected > 100
    t = torch.tensor([sde.T, eps], dtype=F64)
    var = sde.sigma(t)[0] ** 2 - sde.sigma(t)[1] ** 2
    se = var * math.sqrt(2 / x.numel())
    assert abs(x.var() - var) <= 4 * se + 0.02 * var, f"variance {x.var():.1f}, exact {var:.1f}"


def test_a_rejected_increment_is_kept_on_the_path():
    """The two pushed segments of a rejected step add up to its length and its increment."""
    g = torch.Generator().manual_seed(1)
    B, K = 5, 4
    dW = torch.randn(B, 3, generator=g, dtype=F64)
    path = _Path(
        torch.zeros(B, K, dtype=F64), torch.zeros(B, K, 3, dtype=F64), torch.zeros(B).long()
    )
    h = torch.full((B,), 0.1, dtype=F64)
    h_new = torch.tensor([0.05, 0.01, 0.09, 0.02, 0.1], dtype=F64)
    rej = torch.tensor([True, True, True, False, False])
    xi = torch.randn(B, 3, generator=g, dtype=F64)
    path = _split(path, rej, h, h_new, dW, xi)
    assert path.count.tolist() == [2, 2, 2, 0, 0]
    torch.testing.assert_close(path.length[:3].sum(1), h[:3])
    torch.testing.assert_close(path.dW[:3].sum(1), dW[:3])
    torch.testing.assert_close(path.length[:3, 1], h_new[:3])  # the next attempt takes h_new


def _component_covariance(x, mixture, sde, eps, k=0):
    """Per-example estimates ``r_k(x) (x - m_k)(x - m_k)^T / w_k`` of component k's covariance
    at eps, with ``r_k`` the exact responsibility under p_eps: their mean is exactly
    ``alpha^2 Sigma_k + sigma^2 I`` for x ~ p_eps, and they are iid, so their SE is exact."""
    te = torch.tensor([eps], dtype=F64)
    a, s = sde.alpha(te).item(), sde.sigma(te).item()
    m, S = a * mixture.means[k], a**2 * mixture.covs[k] + s**2 * torch.eye(2, dtype=F64)
    log_n = torch.distributions.MultivariateNormal(m, S).log_prob(x)
    r = (log_n + mixture.weights[k].log() - mixture.log_prob(x, eps, sde)).exp()
    d = x - m
    return r[:, None, None] * d[:, :, None] * d[:, None, :] / mixture.weights[k], S


def test_adaptive_reproduces_the_2d_mixture(mixture, sde):
    """1000 examples at rtol = 0.1 (the paper's atol). The largest component's covariance
    (entries 0.1-0.2): its weak error, measured with 1e4 examples (SE 0.002-0.004), is at most
    0.009 (VE) and 0.004 (VP, sub-VP): budget 0.015 beyond 4 SE. Mixture moments: budgets
    0.03 / 0.05 (measured on VE and VP with 8000: 0.026 / 0.035 at most, SE 0.015 / 0.03)."""
    eps, g = default_eps(sde), torch.Generator().manual_seed(2)
    z = mixture.sample_t(1000, sde, sde.T, g)
    x, nfe = fs.sample_adaptive(
        sde, mixture.score_fn(sde), None, rtol=0.1, denoise=False, z=z, generator=g
    )
    v, S = _component_covariance(x, mixture, sde, eps)
    err, se = (v.mean(0) - S).abs(), v.std(0) / math.sqrt(len(x))
    assert (err <= 4 * se + 0.015).all(), f"component covariance error {err} (SE {se})"
    _assert_moments(x[:, None], mixture, sde, eps, 0.03, 0.05)


@pytest.mark.parametrize("rtol", [0.5, 0.2])
def test_adaptive_is_reproducible_and_counts_two_per_attempt(sde, rtol):
    score = lambda x, t: -x / (sde.alpha(t) ** 2 + sde.sigma(t) ** 2)[:, None]  # noqa: E731

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return fs.sample_adaptive(sde, score, (6, 2), rtol=rtol, generator=g, dtype=F64)

    (a, nfe_a), (b, nfe_b) = run(3), run(3)
    assert torch.equal(a, b) and nfe_a == nfe_b and nfe_a % 2 == 1  # + the denoising step
