"""Gaussian mixtures: the exact oracle for every SDE here.

If p_0 = sum_k w_k N(mu_k, Sigma_k), a linear SDE keeps it a mixture at every t:

    p_t = sum_k w_k N(alpha(t) mu_k, alpha(t)^2 Sigma_k + sigma(t)^2 I),

so the exact score and the exact log-density exist at every t. Tests, benchmarks and toy data
use it.
Each Sigma_k is stored by its eigendecomposition U diag(lam) U^T, which makes every perturbed
covariance ``U diag(alpha^2 lam + sigma^2) U^T`` cheap to invert.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .score import batch_times
from .sde import SDE

__all__ = ["GaussianMixture", "oracle_mixture_2d"]


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions with full covariances.

    Args:
        weights: ``(K,)`` non-negative, normalised here.
        means: ``(K, D)``.
        covs: ``(K, D, D)`` covariances, ``(K, D)`` diagonals or ``(K,)`` isotropic variances.
    """

    def __init__(self, weights, means, covs, dtype: torch.dtype = torch.float64):
        w = torch.as_tensor(weights, dtype=dtype)
        mu = torch.as_tensor(means, dtype=dtype)
        c = torch.as_tensor(covs, dtype=dtype)
        if mu.ndim != 2 or w.shape != mu.shape[:1]:
            raise ValueError(f"need weights (K,) and means (K, D), got {w.shape}, {mu.shape}")
        K, D = mu.shape
        if c.ndim == 1:
            c = c[:, None, None] * torch.eye(D, dtype=dtype)
        elif c.ndim == 2:
            c = torch.diag_embed(c)
        if c.shape != (K, D, D):
            raise ValueError(f"covs must be (K, D, D), (K, D) or (K,), got {tuple(c.shape)}")
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self.weights = w / w.sum()
        self.means, self.covs = mu, c
        self.lam, self.U = torch.linalg.eigh(c)
        # Round-off of a singular covariance (a noiseless posterior) may give eigenvalues of
        # -1e-16 relative; clamp those, refuse a truly indefinite one.
        tol = 1e-10 * self.lam.abs().amax().clamp(min=1.0)
        if (self.lam < -tol).any():
            raise ValueError("covariances must be positive semi-definite")
        self.lam = self.lam.clamp(min=0)

    @property
    def dim(self) -> int:
        """Dimension D."""
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws from p_0, shape ``(n, D)``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        L = self.U * self.lam.clamp(min=0).sqrt()[:, None, :]  # (K, D, D), L L^T = Sigma
        return self.means[k] + torch.einsum("nde,ne->nd", L[k], z)

    def sample_t(
        self, n: int, sde: SDE, t: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` exact draws from the perturbed marginal p_t of ``sde``."""
        x0 = self.sample(n, generator)
        tt = torch.full((n,), float(t), dtype=x0.dtype)
        mean, std = sde.marginal_prob(x0, tt)
        return mean + std[:, None] * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)

    def _moments(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Rotated residuals U^T (x - alpha mu_k) and variances alpha^2 lam + sigma^2: (B, K, D).
        U, lam, mu = (v.to(x) for v in (self.U, self.lam, self.means))
        y = x[:, None, :] - alpha[:, None, None] * mu[None]
        proj = torch.einsum("bkd,kde->bke", y, U)
        var = alpha[:, None, None] ** 2 * lam[None] + sigma[:, None, None] ** 2
        log_n = -0.5 * (
            self.dim * math.log(2 * math.pi) + var.log().sum(-1) + (proj**2 / var).sum(-1)
        )
        return proj, var, log_n + self.weights.to(x).log()

    def _coeffs(
        self, x: Tensor, t: float | Tensor | None, sde: SDE | None
    ) -> tuple[Tensor, Tensor]:
        if sde is None or t is None:
            one = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
            return one, torch.zeros_like(one)
        t = batch_times(t, x)  # a plain number: the same time for every example
        return sde.alpha(t).to(x), sde.sigma(t).to(x)

    def log_prob(
        self, x: Tensor, t: float | Tensor | None = None, sde: SDE | None = None
    ) -> Tensor:
        """Exact log p_t(x) in nats for ``x`` of shape ``(B, D)`` or ``(B, ...)``; p_0 if no t;
        ``t`` is ``(B,)`` or one number for the whole batch."""
        flat = x.reshape(x.shape[0], -1)
        _, _, logw = self._moments(flat, *self._coeffs(flat, t, sde))
        return torch.logsumexp(logw, dim=1)

    def score(self, x: Tensor, t: float | Tensor | None = None, sde: SDE | None = None) -> Tensor:
        """Exact score grad_x log p_t(x), shaped like ``x``; ``t`` as in :meth:`log_prob`."""
        flat = x.reshape(x.shape[0], -1)
        proj, var, logw = self._moments(flat, *self._coeffs(flat, t, sde))
        r = torch.softmax(logw, dim=1)  # responsibilities (B, K)
        s = -torch.einsum("bke,kde->bd", r[:, :, None] * proj / var, self.U.to(flat))
        return s.reshape(x.shape)

    def score_fn(self, sde: SDE) -> Callable[[Tensor, float | Tensor], Tensor]:
        """The exact ``score_fn(x, t)`` of the perturbed marginals of ``sde`` (``t``: ``(B,)`` or
        one number)."""
        return lambda x, t: self.score(x, t, sde)

    def log_class_prob(
        self, x: Tensor, t: float | Tensor | None = None, sde: SDE | None = None
    ) -> Tensor:
        """Exact ``log p_t(k | x)`` of the component label k, ``(B, K)``; ``t`` as in
        :meth:`log_prob` (differentiable in ``x``: the oracle of a time-dependent classifier)."""
        flat = x.reshape(x.shape[0], -1)
        _, _, logw = self._moments(flat, *self._coeffs(flat, t, sde))
        return torch.log_softmax(logw, dim=1)

    def component(self, k: int) -> GaussianMixture:
        """Component k alone, ``p_0(x | k)``, as a one-component mixture."""
        return GaussianMixture([1.0], self.means[k : k + 1], self.covs[k : k + 1], self.means.dtype)

    def condition(self, A: Tensor, y: Tensor, noise_std: float = 0.0) -> GaussianMixture:
        """The posterior ``p_0(x | y)`` for ``y = A x + noise_std n``, ``A`` an ``(M, D)`` matrix.

        Each component is updated by the Gaussian conditioning formulas, with
        ``S = A Sigma A^T + noise_std^2 I`` and gain ``K = Sigma A^T S^+``:
        ``mu' = mu + K (y - A mu)``, ``Sigma' = Sigma - K A Sigma``, and its weight by the
        marginal likelihood ``w N(y; A mu, S)``. Pseudo-inverses and log-determinants are taken
        on the range of S, so a rank-deficient noiseless ``A`` (a mask) is fine.
        """
        A, y = A.to(self.means), y.to(self.means).reshape(-1)
        S = A @ self.covs @ A.T + noise_std**2 * torch.eye(len(A), dtype=A.dtype)
        lam, V = torch.linalg.eigh(S)  # (K, M), (K, M, M)
        keep = lam > 1e-12 * lam.amax()
        inv = torch.where(keep, 1 / lam.clamp(min=1e-300), torch.zeros_like(lam))
        S_pinv = torch.einsum("kmi,ki,kni->kmn", V, inv, V)
        gain = self.covs @ A.T @ S_pinv  # (K, D, M)
        r = y - self.means @ A.T  # (K, M)
        means = self.means + torch.einsum("kdm,km->kd", gain, r)
        covs = self.covs - gain @ A @ self.covs
        covs = 0.5 * (covs + covs.transpose(1, 2))
        proj = torch.einsum("kmi,km->ki", V, r)
        logdet = torch.where(keep, lam.clamp(min=1e-300).log(), torch.zeros_like(lam)).sum(1)
        rank = keep.sum(1).to(A.dtype)
        loglik = -0.5 * (rank * math.log(2 * math.pi) + logdet + (inv * proj**2).sum(1))
        logw = self.weights.log() + loglik
        return GaussianMixture(torch.softmax(logw, 0), means, covs, self.means.dtype)

    def mean(self) -> Tensor:
        """Mean of p_0."""
        return self.weights @ self.means

    def cov(self) -> Tensor:
        """Covariance of p_0."""
        m = self.mean()
        d = self.means - m
        return torch.einsum("k,kde->de", self.weights, self.covs + d[:, :, None] * d[:, None, :])


def oracle_mixture_2d(dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """The 2-D, three-component oracle of the tests and benchmarks: unequal weights (.5, .3, .2)
    and full covariances, one of them anisotropic and one correlated negatively.

    Not the toy data set ``mixture_2d`` of :mod:`scoresde.data`, which is a different mixture.
    """
    return GaussianMixture(
        weights=[0.5, 0.3, 0.2],
        means=[[-1.5, 0.0], [1.0, 1.0], [1.0, -1.5]],
        covs=[
            [[0.20, 0.05], [0.05, 0.10]],
            [[0.10, 0.0], [0.0, 0.30]],
            [[0.15, -0.05], [-0.05, 0.15]],
        ],
        dtype=dtype,
    )
