"""The closed forms of the control oracle: the posterior mixture and the label posterior.

Both are checked against Bayes' rule evaluated pointwise: ``log p(x | y) - log p(x) -
log p(y | x)`` must be the same constant (``-log p(y)``) at every x, and ``log p_t(k | x)`` must be
``log w_k N_k(x) - log p_t(x)``.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde.control import exact_posterior

F64 = torch.float64


def test_noisy_posterior_is_bayes(mixture):
    A = torch.tensor([[1.0, 0.5]], dtype=F64)
    y, s = torch.tensor([0.7], dtype=F64), 0.3
    post = mixture.condition(A, y, s)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    loglik = -0.5 * (((y - x @ A.T) / s) ** 2).sum(1) - math.log(s * math.sqrt(2 * math.pi))
    c = post.log_prob(x) - mixture.log_prob(x) - loglik
    torch.testing.assert_close(c, c.mean().expand_as(c), rtol=0, atol=1e-10)


def test_noiseless_mask_posterior(mixture):
    obs = sd.Inpainting(torch.tensor([[0.8, 0.0]], dtype=F64), torch.tensor([[True, False]]))
    post = exact_posterior(mixture, obs)
    torch.testing.assert_close(
        post.means[:, 0], torch.full((3,), 0.8, dtype=F64), rtol=0, atol=1e-14
    )
    assert post.covs[:, 0].abs().max() < 1e-12  # the observed coordinate is fixed
    # each weight is w_k N(0.8; mu_k0, Sigma_k00), normalised
    m, v = mixture.means[:, 0], mixture.covs[:, 0, 0]
    w = mixture.weights * torch.exp(-0.5 * (0.8 - m) ** 2 / v) / v.sqrt()
    torch.testing.assert_close(post.weights, w / w.sum())
    # and the conditional of the second coordinate
    mu = mixture.means[:, 1] + mixture.covs[:, 1, 0] / v * (0.8 - m)
    torch.testing.assert_close(post.means[:, 1], mu)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_label_posterior_is_bayes(mixture, name):
    sde = make_sde(name)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.full((20,), 0.2, dtype=F64)
    logp = mixture.log_class_prob(x, t, sde)
    comp = torch.stack([mixture.component(k).log_prob(x, t, sde) for k in range(3)], 1)
    want = mixture.weights.log() + comp - mixture.log_prob(x, t, sde)[:, None]
    torch.testing.assert_close(logp, want, rtol=0, atol=1e-10)
