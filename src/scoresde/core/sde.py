"""The three SDEs of Song et al. (2021): VE, VP and sub-VP.

Every SDE here is linear in x:  dx = f(t) x dt + g(t) dw,  so its transition kernel is Gaussian,

    p_0t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I),

and one object is the single source of truth for training noise, sampling and likelihood.
All methods are shape-generic: ``x`` is any ``(B, ...)`` tensor and ``t`` a ``(B,)`` tensor;
per-example coefficients come back as ``(B,)`` tensors, broadcast against ``x`` by :func:`bcast`.
Device and dtype follow the inputs. Coefficients are written in forms that do not cancel near
t = 0 (``expm1``): accurate to round-off in float64 and float32 alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "bcast"]


def bcast(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example ``(B,)`` tensor to broadcast against ``x`` of shape ``(B, ...)``."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def _flat_sum(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


class SDE:
    """Base class of a linear SDE ``dx = f(t) x dt + g(t) dw`` on ``[0, T]``.

    Subclasses define the scalar schedules :meth:`f`, :meth:`g`, :meth:`log_alpha`, :meth:`sigma`
    and the discrete chain of the paper (:meth:`discretize`); everything else is derived here.
    """

    T: float = 1.0
    N: int
    prior_std: float

    # ---- scalar schedules, (B,) -> (B,) ----------------------------------------------------
    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient f(t): the drift is f(t) x."""
        raise NotImplementedError

    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient g(t)."""
        raise NotImplementedError

    def log_alpha(self, t: Tensor) -> Tensor:
        """Log of the marginal mean coefficient alpha(t) = exp(int_0^t f)."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Standard deviation of the transition kernel p_0t."""
        raise NotImplementedError

    def alpha(self, t: Tensor) -> Tensor:
        """Marginal mean coefficient alpha(t)."""
        return torch.exp(self.log_alpha(t))

    def log_snr(self, t: Tensor) -> Tensor:
        """Half log-SNR lambda(t) = log(alpha(t) / sigma(t)) (DPM-Solver's lambda)."""
        return self.log_alpha(t) - torch.log(self.sigma(t))

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr`."""
        raise NotImplementedError

    # ---- the SDE ----------------------------------------------------------------------------
    def check_t(self, t: Tensor, x: Tensor | None = None) -> None:
        """Raise ``ValueError`` unless ``t`` is a ``(B,)`` tensor (matching ``x``) in ``[0, T]``.

        The range is checked for CPU tensors only, so that GPU code never waits on the host.
        """
        if not isinstance(t, Tensor) or t.ndim != 1:
            raise ValueError(f"t must be a 1-D (B,) tensor, got {getattr(t, 'shape', type(t))}")
        if x is not None and (x.ndim < 1 or x.shape[0] != t.shape[0]):
            raise ValueError(f"t has shape {tuple(t.shape)} but x has batch shape {tuple(x.shape)}")
        if t.device.type == "cpu" and t.numel() and (t.min() < 0 or t.max() > self.T):
            raise ValueError(f"t must lie in [0, T={self.T}], got values in [{t.min()}, {t.max()}]")

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift ``f(t) x`` (like ``x``) and diffusion ``g(t)`` (``(B,)``) of the forward SDE."""
        self.check_t(t, x)
        return bcast(self.f(t), x) * x, self.g(t)

    def marginal_prob(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``alpha(t) x0`` and std ``sigma(t)`` (``(B,)``) of ``p_0t(x_t | x0)``."""
        self.check_t(t, x0)
        return bcast(self.alpha(t), x0) * x0, self.sigma(t)

    def prior_sampling(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw from the prior ``N(0, prior_std^2 I)`` at t = T."""
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior at ``z``, summed over all but the batch dimension: ``(B,)``."""
        D = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * D * math.log(2 * math.pi * s2) - _flat_sum(z**2) / (2 * s2)

    # ---- discrete chains ---------------------------------------------------------------------
    def t_index(self, t: Tensor) -> Tensor:
        """Index of the discrete chain that ``t`` falls on: ``floor(t (N-1) / T)``, as the paper."""
        return (t * (self.N - 1) / self.T).long()

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One forward step ``x_{i+1} = x_i + f_i + G_i z`` of size ``T/N`` (Euler-Maruyama)."""
        drift, g = self.sde(x, t)
        dt = self.T / self.N
        return drift * dt, g * math.sqrt(dt)

    def ancestral(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Coefficients ``(k, c, s)`` of an ancestral step ``x' = (x + k s_theta) / c + s z``."""
        raise ValueError(
            f"ancestral sampling is defined for VESDE and VPSDE only, not {type(self).__name__}"
        )

    def langevin_alpha(self, t: Tensor) -> Tensor:
        """The factor alpha_i of the Langevin corrector's step size (the paper's Algorithms 4-5)."""
        return torch.ones_like(t)

    def with_steps(self, N: int) -> SDE:
        """A copy of this SDE whose discrete chain has ``N`` steps."""
        raise NotImplementedError

    # ---- reverse time ------------------------------------------------------------------------
    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE, ``f x - g^2 score`` (diffusion stays ``g``)."""
        drift, g = self.sde(x, t)
        return drift - bcast(g**2, x) * score

    def probability_flow_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the probability-flow ODE, ``f x - g^2 score / 2``."""
        drift, g = self.sde(x, t)
        return drift - 0.5 * bcast(g**2, x) * score

    def reverse_discretize(
        self, x: Tensor, t: Tensor, score: Tensor, probability_flow: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Discretized reverse step: ``x_{i-1} = x_i - f_rev + G_rev z`` (the paper's Eq. 46)."""
        f, G = self.discretize(x, t)
        if probability_flow:
            return f - 0.5 * bcast(G**2, x) * score, torch.zeros_like(G)
        return f - bcast(G**2, x) * score, G

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild this SDE."""
        raise NotImplementedError


class _Table:
    """A float64 lookup table cast once per (device, dtype) on first use."""

    def __init__(self, values: Tensor):
        self.values = values.double()
        self._cache: dict[tuple, Tensor] = {}

    def __call__(self, idx: Tensor, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self.values.to(device=like.device, dtype=like.dtype)
        return v[idx.to(v.device)]


class VESDE(SDE):
    """Variance-exploding SDE (SMLD): ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, f = 0."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        self.sigma_min, self.sigma_max, self.N = float(sigma_min), float(sigma_max), int(N)
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        # SMLD noise levels, geometric from sigma_min to sigma_max.
        self.discrete_sigmas = torch.exp(
            torch.linspace(math.log(sigma_min), math.log(sigma_max), N, dtype=torch.float64)
        )
        self._sigmas = _Table(self.discrete_sigmas)

    def config(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}

    def with_steps(self, N: int) -> VESDE:
        return VESDE(self.sigma_min, self.sigma_max, N)

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def g(self, t: Tensor) -> Tensor:
        # d sigma^2 / dt = 2 log(sigma_max / sigma_min) sigma^2
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def _adjacent_sigmas(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        i = self.t_index(t)
        sigma = self._sigmas(i, like)
        prev = torch.where(
            i == 0, torch.zeros_like(sigma), self._sigmas((i - 1).clamp(min=0), like)
        )
        return sigma, prev

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD chain: ``x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z``."""
        self.check_t(t, x)
        sigma, prev = self._adjacent_sigmas(t, x)
        return torch.zeros_like(x), torch.sqrt(sigma**2 - prev**2)

    def ancestral(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Ancestral sampling of the SMLD chain (the paper's Eq. 47).
        sigma, prev = self._adjacent_sigmas(t, t)
        k = sigma**2 - prev**2
        return k, torch.ones_like(k), torch.sqrt(prev**2 * k / sigma**2)


class VPSDE(SDE):
    """Variance-preserving SDE (DDPM): ``beta(t) = beta_min + t (beta_max - beta_min)``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        self.beta_min, self.beta_max, self.N = float(beta_min), float(beta_max), int(N)
        self.prior_std = 1.0
        # DDPM chain: beta_i = beta(t_i) / N.
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N, dtype=torch.float64)
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self._betas, self._alphas = _Table(self.discrete_betas), _Table(self.alphas)
        self._sqrt_1m_alphas_cumprod = _Table(torch.sqrt(1.0 - self.alphas_cumprod))

    def config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}

    def with_steps(self, N: int) -> SDE:
        return type(self)(self.beta_min, self.beta_max, N)

    def beta(self, t: Tensor) -> Tensor:
        """Noise rate beta(t)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.beta(t))

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def _t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # Solve (beta_max - beta_min)/4 t^2 + beta_min/2 t + log_alpha = 0 for t >= 0.
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return 2 * -log_alpha / (b + torch.sqrt(b**2 - 4 * a * log_alpha))

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        # alpha^2 / (1 - alpha^2) = e^{2 lam}  =>  log alpha = -softplus(-2 lam) / 2
        return self._t_of_log_alpha(-0.5 * torch.nn.functional.softplus(-2 * lam))

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM chain: ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z``."""
        self.check_t(t, x)
        i = self.t_index(t)
        beta, alpha = self._betas(i, x), self._alphas(i, x)
        return bcast(torch.sqrt(alpha), x) * x - x, torch.sqrt(beta)

    def ancestral(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Ancestral sampling of the DDPM chain (the paper's Eq. 47 for VP).
        beta = self._betas(self.t_index(t), t)
        return beta, torch.sqrt(1.0 - beta), torch.sqrt(beta)

    def langevin_alpha(self, t: Tensor) -> Tensor:
        return self._alphas(self.t_index(t), t)

    def discrete_sigma(self, t: Tensor) -> Tensor:
        """Noise std of the DDPM chain at the step of ``t``: ``sqrt(1 - prod_j<=i alpha_j)``."""
        return self._sqrt_1m_alphas_cumprod(self.t_index(t), t)


class SubVPSDE(VPSDE):
    """Sub-VP SDE: the VP drift, ``g(t)^2 = beta(t) (1 - alpha(t)^4)``, ``sigma = 1 - alpha^2``.

    Its discrete chain is Euler-Maruyama with ``dt = T/N``; the Langevin step uses the VP alphas
    (same beta schedule).
    """

    def g(self, t: Tensor) -> Tensor:
        return torch.sqrt(-self.beta(t) * torch.expm1(4 * self.log_alpha(t)))

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self.log_alpha(t))

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        # alpha / (1 - alpha^2) = e^lam  =>  alpha = 2 / (e^{-lam} + sqrt(e^{-2 lam} + 4))
        e = torch.exp(-lam)
        return self._t_of_log_alpha(math.log(2.0) - torch.log(e + torch.sqrt(e**2 + 4)))

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return SDE.discretize(self, x, t)

    def ancestral(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return SDE.ancestral(self, t)
