"""Denoising score matching (DSM) for the SDEs of ``scoresde.core.sde`` (Song et al. 2021, Eq. 7).

For data x0, time t and noise z ~ N(0, I), the perturbed point is ``x_t = alpha(t) x0 + sigma(t) z``
and the per-example loss is

    l(x0, t, z) = lambda(t) || s_theta(x_t, t) + z / sigma(t) ||^2      (summed over dimensions),

whose expectation over t ~ U(eps, T), x0 and z is minimised by the exact score of p_t. Weightings
(``WEIGHTINGS``): ``"score"`` lambda = sigma^2 (the paper's default) and ``"likelihood"``
lambda = g^2 (Song et al. 2021b, "Maximum likelihood training of score-based diffusion models").

Importance sampling of t: with ``importance=True``, t is drawn from q(t) proportional to
g(t)^2 / sigma(t)^2 and each loss is reweighted by lambda(t) / ((T - eps) q(t)), an unbiased
estimate of the same uniform-in-t expectation with less variance for the likelihood weighting.
For every linear SDE here, d log_snr / dt = -g^2 / (2 sigma^2) (from d sigma^2/dt = 2 f sigma^2 +
g^2), so q is the uniform density in the half log-SNR ``sde.log_snr``, and t is
``sde.t_of_log_snr`` of a uniform draw.

Losses are per example, ``(B,)``; the trainer reduces them over the batch with :func:`reduce`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .checks import check_eps, check_score_output, lookup
from .sde import SDE, bcast

__all__ = ["WEIGHTINGS", "REDUCTIONS", "dsm_loss", "sample_t", "importance_weight", "reduce"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _lambda_score(sde: SDE, t: Tensor) -> Tensor:
    return sde.sigma(t) ** 2


def _lambda_likelihood(sde: SDE, t: Tensor) -> Tensor:
    return sde.g(t) ** 2


WEIGHTINGS: dict[str, Callable[[SDE, Tensor], Tensor]] = {
    "score": _lambda_score,
    "likelihood": _lambda_likelihood,
}

REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"mean": torch.mean, "sum": torch.sum}


def _log_snr_range(sde: SDE, eps: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """Half log-SNR at t = eps and at t = T (lambda decreases in t)."""
    ends = torch.tensor([eps, sde.T], device=like.device, dtype=like.dtype)
    lam = sde.log_snr(ends)
    return lam[0], lam[1]


def sample_t(
    sde: SDE,
    n: int,
    eps: float = 1e-5,
    importance: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Draw ``n`` times from U(eps, T), or from q(t) ~ g^2/sigma^2 if ``importance``."""
    eps = check_eps(sde, eps, default=False)
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    if not importance:
        return eps + (sde.T - eps) * u
    lam_eps, lam_T = _log_snr_range(sde, eps, u)
    return sde.t_of_log_snr(lam_T + (lam_eps - lam_T) * u).clamp(eps, sde.T)


def importance_weight(sde: SDE, t: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 / ((T - eps) q(t))`` for q(t) = g^2 / (sigma^2 Z), Z = 2 (log_snr(eps) - log_snr(T))."""
    lam_eps, lam_T = _log_snr_range(sde, eps, t)
    Z = 2 * (lam_eps - lam_T)
    return Z * sde.sigma(t) ** 2 / (sde.g(t) ** 2 * (sde.T - eps))


def dsm_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    weighting: str = "score",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    importance: bool = False,
) -> Tensor:
    """Per-example denoising score matching loss ``(B,)`` (module docstring).

    Args:
        sde: the forward SDE (gives alpha, sigma, g).
        score_fn: ``(x, t) -> score`` shaped like ``x``.
        x0: clean data ``(B, ...)``.
        weighting: a key of ``WEIGHTINGS``.
        eps: smallest time; t ~ U(eps, T).
        generator: source of t and z (t is drawn first, then z).
        t: use these times ``(B,)`` instead of drawing them (z is still drawn).
        importance: t is (or is drawn) from q(t) ~ g^2/sigma^2; the loss carries the weight 1/q.
    """
    lam_fn = lookup(WEIGHTINGS, weighting, "weighting", callables=False, sort=True)
    eps = check_eps(sde, eps, default=False)
    if not isinstance(x0, Tensor) or x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty (B, ...) tensor, got {getattr(x0, 'shape', x0)}")
    if x0.device.type == "cpu" and not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or inf")
    B = x0.shape[0]
    if t is None:
        t = sample_t(sde, B, eps, importance, generator, x0.device, x0.dtype)
    sde.check_t(t, x0)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    mean, sigma = sde.marginal_prob(x0, t)
    x_t = mean + bcast(sigma, x0) * z
    s = check_score_output(score_fn(x_t, t), x_t)
    residual = s + z / bcast(sigma, x0)  # s + z / sigma, Eq. 7
    w = lam_fn(sde, t)
    if importance:
        w = w * importance_weight(sde, t, eps)
    return w * residual.reshape(B, -1).pow(2).sum(dim=1)


def reduce(loss: Tensor, how: str = "mean") -> Tensor:
    """Reduce per-example losses over the batch: ``"mean"`` or ``"sum"`` (``REDUCTIONS``)."""
    return lookup(REDUCTIONS, how, "reduction", callables=False, sort=True)(loss)
