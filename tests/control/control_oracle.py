"""Statistics the control tests share: moments within Monte Carlo error, and a permutation test
of the energy distance (two-sample, distribution-free)."""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, budget: float) -> None:
    """Sample mean and covariance of ``x`` within 4 standard errors plus ``budget`` of the exact
    ``mean`` and ``cov`` (standard errors from the samples themselves)."""
    n = len(x)
    err_m, se_m = (x.mean(0) - mean).abs(), x.std(0) / math.sqrt(n)
    d = x - mean
    prod = d[:, :, None] * d[:, None, :]
    err_c, se_c = (prod.mean(0) - cov).abs(), prod.std(0) / math.sqrt(n)
    assert (err_m <= 4 * se_m + budget).all(), f"mean error {err_m} (SE {se_m}, budget {budget})"
    assert (err_c <= 4 * se_c + budget).all(), f"cov error {err_c} (SE {se_c}, budget {budget})"


def energy_pvalue(x: torch.Tensor, y: torch.Tensor, perms: int = 200) -> float:
    """Permutation p-value of the energy distance between equal-size samples ``x`` and ``y``."""
    n = len(x)
    z = torch.cat([x, y]).reshape(2 * n, -1).to(F64)
    D = torch.cdist(z, z)
    g = torch.Generator().manual_seed(3)
    splits = [torch.arange(2 * n)] + [torch.randperm(2 * n, generator=g) for _ in range(perms)]
    u = torch.stack([(idx < n).to(F64) for idx in splits], dim=1)
    v = 1 - u
    Du, Dv = D @ u, D @ v
    stat = (2 * (u * Dv).sum(0) - (u * Du).sum(0) - (v * Dv).sum(0)) / n**2
    return ((stat[1:] >= stat[0]).sum().item() + 1) / (perms + 1)


def _random_mixture(K: int, D: int, seed: int):
    """A K-component mixture in D dimensions with random means (spread 1.5) and full covariances
    of eigenvalues in [0.05, 0.3]."""
    import scoresde as sd

    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(K, D, generator=g, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(K, D, D, generator=g, dtype=F64))
    lam = 0.05 + 0.25 * torch.rand(K, D, generator=g, dtype=F64)
    covs = Q @ torch.diag_embed(lam) @ Q.transpose(1, 2)
    w = 0.5 + torch.rand(K, generator=g, dtype=F64)
    return sd.GaussianMixture(w, means, covs)


def cases() -> dict:
    """(mixture, observation, sample shape of one example) of the conditional tests: a noiseless
    mask and a noisy linear observation of the 2-D oracle, colorization of a 3-channel 1x2 image
    mixture, and 2x average pooling of a 4-D mixture."""
    import scoresde as sd
    from scoresde.core.mixture import oracle_mixture_2d

    mix2 = oracle_mixture_2d()
    W = torch.tensor([[1.0, 0.5]], dtype=F64)
    rgb = _random_mixture(3, 6, seed=1)  # (3, 1, 2) images, flattened channel-major
    x_rgb = rgb.means[0].reshape(1, 3, 1, 2)
    vec = _random_mixture(3, 4, seed=2)
    return {
        "mask": (
            mix2,
            sd.Inpainting(torch.tensor([[0.8, 0.0]], dtype=F64), torch.tensor([[True, False]])),
            (2,),
        ),
        "noisy_linear": (
            mix2,
            sd.LinearObservation(
                torch.tensor([[0.7]], dtype=F64), lambda x: x @ W.T, lambda v: v @ W, 0.3
            ),
            (2,),
        ),
        "colour": (rgb, sd.Colorization(x_rgb.mean(1, keepdim=True)), (3, 1, 2)),
        "superres": (vec, sd.SuperResolution(vec.means[1].reshape(1, 4)[:, ::2] * 1.0, 2), (4,)),
    }
