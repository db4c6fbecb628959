"""Denoising score matching (DSM) for the SDEs of ``scoresde.core.sde`` (Song et al. 2021, Eq. 7).

For data x0, time t and noise z ~ N(0, I), the perturbed point is ``x_t = alpha(t) x0 + sigma(t) z``
and the per-example loss is

    l(x0, t, z) = lambda(t) || s_theta(x_t, t) + z / sigma(t) ||^2      (summed over dimensions),

whose expectation over t ~ U(eps, T), x0 and z is minimised by the exact score of p_t. Weightings
(``WEIGHTINGS``): ``"score"`` lambda = sigma^2 (the paper's default), ``"likelihood"``
lambda = g^2 (Song et al. 2021b, "Maximum likelihood training of score-based diffusion models")
and ``"edm"``, EDM's weight (Karras et al. 2022, Eq. 8 and Table 1)
lambda_D = (sigma^^2 + sigma_d^2) / (sigma^ sigma_d)^2 on the denoiser error ||D - x0||^2, with
sigma^ = sigma / alpha and sigma_d the std of the data: ``sigma_data`` of :func:`dsm_loss`, by
default the ``sigma_data`` of the ScoreModel passed as ``score_fn`` (``score.SIGMA_DATA`` = 0.5
for a plain function). By Tweedie, D = (x_t + sigma^2 s) / alpha
and x0 = (x_t - sigma z) / alpha, so D - x0 = (sigma^2 / alpha) (s + z / sigma) and

    lambda_D ||D - x0||^2 = lambda_D sigma^4 / alpha^2 ||s + z/sigma||^2,
    lambda = lambda_D sigma^^2 sigma^2 = sigma^2 (sigma^^2 + sigma_d^2) / sigma_d^2.

With the ``edm`` parameterization this is ||F - F_target||^2, the unit-weight regression of
EDM (lambda_D c_out^2 = 1).

Importance sampling of t: with ``importance=True``, t is drawn from q(t) proportional to
g(t)^2 / sigma(t)^2 and each loss is reweighted by lambda(t) / ((T - eps) q(t)), an unbiased
estimate of the same uniform-in-t expectation with less variance for the likelihood weighting.
For every linear SDE here, d log_snr / dt = -g^2 / (2 sigma^2) (from d sigma^2/dt = 2 f sigma^2 +
g^2), so q is the uniform density in the half log-SNR ``sde.log_snr``, and t is
``sde.t_of_log_snr`` of a uniform draw.

How t is drawn (``T_SAMPLING``): ``"uniform"`` is U(eps, T), or q(t) above with ``importance``;
``"log_normal"`` is EDM's training distribution of noise levels, ln sigma^ ~ N(P_mean, P_std^2)
with :data:`EDM_P_MEAN` = -1.2, :data:`EDM_P_STD` = 1.2, mapped to t by ``sde.t_of_log_snr``
(the half log-SNR is -ln sigma^) and clipped to [eps, T]. It carries no importance weight: the
loss is then EDM's expectation over that distribution, a different objective from the
uniform-in-t one, minimised by the same exact score. The clip puts the draws beyond the SDE's
range at eps and T; for the paper's SDEs with eps = 1e-5 that is 0.23% of them at eps for VE
(sigma^(eps) = 0.01), 1.5e-6 for VP, none for sub-VP (sigma^(eps) = 1e-6), and 1e-5 or fewer
at T (measured on 2e6 draws).

Losses are per example, ``(B,)``; the trainer reduces them over the batch with :func:`reduce`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .checks import check_eps, check_score_output, lookup
from .score import SIGMA_DATA, check_sigma_data, edm_sigma
from .sde import SDE, bcast

__all__ = [
    "WEIGHTINGS",
    "REDUCTIONS",
    "T_SAMPLING",
    "EDM_P_MEAN",
    "EDM_P_STD",
    "dsm_loss",
    "sample_t",
    "t_of_u",
    "importance_weight",
    "reduce",
]

EDM_P_MEAN, EDM_P_STD = -1.2, 1.2  # EDM's ln sigma^ ~ N(P_mean, P_std^2) (Karras et al., Table 1)

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _lambda_score(sde: SDE, t: Tensor, sigma_d: float = SIGMA_DATA) -> Tensor:
    return sde.sigma(t) ** 2


def _lambda_likelihood(sde: SDE, t: Tensor, sigma_d: float = SIGMA_DATA) -> Tensor:
    return sde.g(t) ** 2


def _lambda_edm(sde: SDE, t: Tensor, sigma_d: float = SIGMA_DATA) -> Tensor:
    # EDM's lambda_D times (sigma^2 / alpha)^2 (module docstring)
    return sde.sigma(t) ** 2 * (1 + (edm_sigma(sde, t) / sigma_d) ** 2)


# (sde, t, sigma_d) -> lambda(t); sigma_d is EDM's std of the data (only ``edm`` uses it)
WEIGHTINGS: dict[str, Callable[[SDE, Tensor, float], Tensor]] = {
    "score": _lambda_score,
    "likelihood": _lambda_likelihood,
    "edm": _lambda_edm,
}

REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"mean": torch.mean, "sum": torch.sum}


def _log_snr_range(sde: SDE, eps: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """Half log-SNR at t = eps and at t = T (lambda decreases in t)."""
    ends = torch.tensor([eps, sde.T], device=like.device, dtype=like.dtype)
    lam = sde.log_snr(ends)
    return lam[0], lam[1]


# (sde, n, eps, importance, generator, device, dtype) -> t (n,)
TimeDraw = Callable[..., Tensor]


def _t_uniform(
    sde: SDE,
    n: int,
    eps: float,
    importance: bool,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """U(eps, T), or q(t) ~ g^2/sigma^2 (uniform in the half log-SNR) if ``importance``."""
    return t_of_u(
        sde, torch.rand(n, generator=generator, device=device, dtype=dtype), eps, importance
    )


def t_of_u(sde: SDE, u: Tensor, eps: float, importance: bool) -> Tensor:
    """The time at quantile ``u`` in [0, 1) of U(eps, T), or of q(t) ~ g^2/sigma^2 (uniform in the
    half log-SNR, u = 0 at T) if ``importance``: uniform u gives the draws of :func:`sample_t`."""
    if not importance:
        return eps + (sde.T - eps) * u
    lam_eps, lam_T = _log_snr_range(sde, eps, u)
    return sde.t_of_log_snr(lam_T + (lam_eps - lam_T) * u).clamp(eps, sde.T)


def _t_log_normal(
    sde: SDE,
    n: int,
    eps: float,
    importance: bool,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """EDM's ln sigma^ ~ N(P_mean, P_std^2) as t in [eps, T] (the half log-SNR is -ln sigma^)."""
    log_sigma_hat = EDM_P_MEAN + EDM_P_STD * torch.randn(
        n, generator=generator, device=device, dtype=dtype
    )
    return sde.t_of_log_snr(-log_sigma_hat).clamp(eps, sde.T)


T_SAMPLING: dict[str, TimeDraw] = {"uniform": _t_uniform, "log_normal": _t_log_normal}


def _time_draw(t_sampling: str, importance: bool) -> TimeDraw:
    """``T_SAMPLING[t_sampling]``; importance sampling only reweights the uniform draw."""
    draw = lookup(T_SAMPLING, t_sampling, "t sampling", callables=False, sort=True)
    if importance and t_sampling != "uniform":
        raise ValueError(
            f"importance sampling draws t from q(t) ~ g^2/sigma^2; it cannot be combined with "
            f"t_sampling={t_sampling!r} (use t_sampling='uniform' or importance=False)"
        )
    return draw


def sample_t(
    sde: SDE,
    n: int,
    eps: float = 1e-5,
    importance: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    t_sampling: str = "uniform",
) -> Tensor:
    """Draw ``n`` times from U(eps, T), from q(t) ~ g^2/sigma^2 if ``importance``, or from EDM's
    log-normal noise levels if ``t_sampling="log_normal"`` (module docstring)."""
    eps = check_eps(sde, eps, default=False)
    return _time_draw(t_sampling, importance)(sde, n, eps, importance, generator, device, dtype)


def importance_weight(sde: SDE, t: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 / ((T - eps) q(t))`` for q(t) = g^2 / (sigma^2 Z), Z = 2 (log_snr(eps) - log_snr(T))."""
    lam_eps, lam_T = _log_snr_range(sde, eps, t)
    Z = 2 * (lam_eps - lam_T)
    return Z * sde.sigma(t) ** 2 / (sde.g(t) ** 2 * (sde.T - eps))


def _sigma_data(score_fn: ScoreFn, sigma_data: float | None) -> float:
    """``sigma_data`` if given, else the ``sigma_data`` of ``score_fn``, else ``SIGMA_DATA``."""
    if sigma_data is None:
        sigma_data = getattr(score_fn, "sigma_data", SIGMA_DATA)
    return check_sigma_data(sigma_data)


def dsm_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    weighting: str = "score",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    importance: bool = False,
    t_sampling: str = "uniform",
    sigma_data: float | None = None,
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
        t_sampling: how t is drawn, a key of ``T_SAMPLING`` (``"log_normal"``: EDM's noise levels,
            no importance weight).
        sigma_data: EDM's sigma_d for the ``edm`` weighting; None: ``score_fn.sigma_data`` (a
            :class:`~scoresde.core.score.ScoreModel` keeps its own), else ``SIGMA_DATA``. Pass it
            when ``score_fn`` wraps a model (as the trainer does under several processes).
    """
    lam_fn = lookup(WEIGHTINGS, weighting, "weighting", callables=False, sort=True)
    sigma_d = _sigma_data(score_fn, sigma_data)
    _time_draw(t_sampling, importance)
    eps = check_eps(sde, eps, default=False)
    if not isinstance(x0, Tensor) or x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty (B, ...) tensor, got {getattr(x0, 'shape', x0)}")
    if x0.device.type == "cpu" and not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or inf")
    B = x0.shape[0]
    if t is None:
        t = sample_t(sde, B, eps, importance, generator, x0.device, x0.dtype, t_sampling)
    sde.check_t(t, x0)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    mean, sigma = sde.marginal_prob(x0, t)
    x_t = mean + bcast(sigma, x0) * z
    s = check_score_output(score_fn(x_t, t), x_t)
    residual = s + z / bcast(sigma, x0)  # s + z / sigma, Eq. 7
    w = lam_fn(sde, t, sigma_d)
    if importance:
        w = w * importance_weight(sde, t, eps)
    return w * residual.reshape(B, -1).pow(2).sum(dim=1)


def reduce(loss: Tensor, how: str = "mean") -> Tensor:
    """Reduce per-example losses over the batch: ``"mean"`` or ``"sum"`` (``REDUCTIONS``)."""
    return lookup(REDUCTIONS, how, "reduction", callables=False, sort=True)(loss)
