"""Classifier guidance against the Gaussian-mixture oracle (DESIGN section 5).

With the exact label posterior ``log p_t(k | x_t)`` of the mixture as the classifier, the guided
score at scale 1 is exactly the score of component k diffused by the SDE
(``grad log p_t(x) + grad log p_t(k | x) = grad log p_t(x | k)``), so every sampler must draw
from component k alone. Checked through PC, the probability-flow ODE, Heun (EDM) and DPM-Solver.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_sde
from control_oracle import assert_moments, energy_pvalue

import scoresde as sd
from scoresde.samplers import default_eps

F64 = torch.float64
K = 2  # the component of smallest weight (0.2): guidance must move most of the mass


def _guided(mixture, sde, k=K, scale=1.0):
    return sd.classifier_guidance(
        mixture.score_fn(sde), lambda x, t: mixture.log_class_prob(x, t, sde), k, scale
    )


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_guided_score_is_the_component_score(mixture, name):
    sde = make_sde(name)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.99 + 0.01
    got = _guided(mixture, sde)(x, t)
    want = mixture.component(K).score(x, t, sde)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_scale_zero_is_the_unguided_score(mixture):
    sde = make_sde("vp")
    x, t = torch.randn(8, 2, dtype=F64), torch.full((8,), 0.3, dtype=F64)
    torch.testing.assert_close(_guided(mixture, sde, scale=0.0)(x, t), mixture.score(x, t, sde))


# (sampler, options). Budget: the moment errors measured once on 20,000 samples (VE, VP, sub-VP,
# these settings, exact draws of component k at T as the start) are at the Monte Carlo level
# (<= 0.0046 in the mean, SE 0.0028) except in the covariance of Heun (24 steps leave a bias of up
# to 0.015, sub-VP) and PC (200 reverse-diffusion steps: up to 0.0086, VE); ODE and DPM-Solver
# stay below 0.004. Budget 0.02 covers them.
SAMPLERS = {
    "pc": dict(sampler="pc", steps=200, corrector="none"),  # reverse diffusion alone, 200 NFE
    "ode": dict(sampler="ode", rtol=1e-5, atol=1e-5),
    "heun": dict(sampler="heun", steps=24, denoise=False),
    "dpm_solver": dict(sampler="dpm_solver", steps=30),
}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_guidance_samples_the_component(mixture, sde, sampler):
    comp = mixture.component(K)
    z = comp.sample_t(1000, sde, sde.T, torch.Generator().manual_seed(5))
    opts = dict(SAMPLERS[sampler])
    x, nfe = sd.sample(
        sde, _guided(mixture, sde), None, z=z, generator=torch.Generator().manual_seed(6), **opts
    )
    eps = default_eps(sde)
    a, s = float(sde.alpha(torch.tensor(eps))), float(sde.sigma(torch.tensor(eps)))
    mean, cov = a * comp.means[0], a**2 * comp.covs[0] + s**2 * torch.eye(2, dtype=F64)
    assert_moments(x, mean, cov, budget=0.02)
    exact = comp.sample_t(1000, sde, eps, torch.Generator().manual_seed(7))
    assert energy_pvalue(x, exact) >= 0.01
    assert nfe > 0


def test_bad_labels(mixture):
    sde = make_sde("vp")
    x, t = torch.randn(4, 2, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="out of range"):
        _guided(mixture, sde, k=3)(x, t)
    with pytest.raises(ValueError, match="class index"):
        sd.classifier_guidance(mixture.score_fn(sde), lambda x, t: x, 0.5)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        sd.classifier_guidance(mixture.score_fn(sde), lambda x, t: x[:, 0], 0)(x, t)
    with pytest.raises(ValueError, match="labels for a batch"):
        _guided(mixture, sde, k=torch.tensor([0, 1]))(x, t)
