"""Predictor-corrector (PC) sampling: the predictors, the correctors and the loop that drives them.

A *predictor* steps the reverse-time SDE (Song et al. 2021, Eq. 6) from t to t - T/N; a *corrector*
runs Langevin MCMC at fixed t (Algorithms 4-5 of the paper). Both are plain functions returning
``(x, x_mean)``, where ``x_mean`` is the step without its final noise (used for the denoising step).

Predictors:   ``step(sde, score_fn, x, t, generator=None, noise=None) -> (x, x_mean)``
Correctors:   ``step(sde, score_fn, x, t, snr, n_steps, generator=None, noise=None) -> (x, x_mean)``

``noise`` injects the standard-normal draws (for tests against fixed noise); a corrector with
``n_steps > 1`` takes them stacked, ``(n_steps, *x.shape)``. Otherwise noise comes from
``generator``. :func:`sample_pc` drives the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_eps, check_int, check_range, lookup, start_state
from ..core.sde import SDE, bcast
from ._shared import randn

__all__ = [
    "euler_maruyama",
    "reverse_diffusion",
    "ancestral",
    "none_predictor",
    "langevin",
    "ald",
    "none_corrector",
    "PREDICTORS",
    "CORRECTORS",
    "sample_pc",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Step = tuple[Tensor, Tensor]


def _z(x: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
    """A standard-normal draw shaped like ``x``, or the injected ``noise``."""
    if noise is None:
        return randn(x, generator)
    if noise.shape != x.shape:
        raise ValueError(f"noise must be shaped like x {tuple(x.shape)}, got {tuple(noise.shape)}")
    return noise


# ---- predictors ------------------------------------------------------------------------------
def euler_maruyama(
    sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, generator=None, noise=None
) -> Step:
    """Euler-Maruyama step of the reverse SDE with dt = -T/N:
    ``x_mean = x + [f x - g^2 s] dt``, ``x = x_mean + g sqrt(-dt) z``."""
    dt = -sde.T / sde.N
    x_mean = x + sde.reverse_drift(x, t, score_fn(x, t)) * dt
    return x_mean + bcast(sde.g(t) * math.sqrt(-dt), x) * _z(x, generator, noise), x_mean


def reverse_diffusion(
    sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, generator=None, noise=None
) -> Step:
    """Reverse diffusion step (the paper's Eq. 46): ``x_mean = x - f_rev``, ``x = x_mean + G z``."""
    f, G = sde.reverse_discretize(x, t, score_fn(x, t))
    x_mean = x - f
    return x_mean + bcast(G, x) * _z(x, generator, noise), x_mean


def ancestral(
    sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, generator=None, noise=None
) -> Step:
    """Ancestral sampling of the SMLD / DDPM chain (Eq. 47): ``x_mean = (x + k s) / c``,
    ``x = x_mean + s_t z`` with ``(k, c, s_t) = sde.ancestral(t)``; sub-VP raises ``ValueError``."""
    k, c, s = sde.ancestral(t)
    x_mean = (x + bcast(k, x) * score_fn(x, t)) / bcast(c, x)
    return x_mean + bcast(s, x) * _z(x, generator, noise), x_mean


def none_predictor(
    sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, generator=None, noise=None
) -> Step:
    """No predictor: returns ``(x, x)`` and evaluates nothing."""
    return x, x


# ---- correctors ------------------------------------------------------------------------------
def _z_i(x: Tensor, generator, noise: Tensor | None, i: int, n_steps: int) -> Tensor:
    """The i-th of ``n_steps`` corrector draws; injected noise is ``x.shape`` or stacked."""
    if noise is not None and noise.shape == (n_steps, *x.shape):
        return noise[i]
    if noise is not None and n_steps > 1:
        raise ValueError(
            f"noise for {n_steps} corrector steps must be {(n_steps, *x.shape)}, "
            f"got {tuple(noise.shape)}"
        )
    return _z(x, generator, noise)


def _mean_norm(v: Tensor) -> Tensor:
    """Mean over the batch of the per-example Euclidean norms: one scalar for the batch."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).mean()


def langevin(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    snr: float,
    n_steps: int,
    generator=None,
    noise=None,
) -> Step:
    """Langevin corrector (Algorithms 4-5): ``n_steps`` of ``x <- x + e s + sqrt(2 e) z`` with
    ``e = (snr ||z|| / ||s||)^2 2 alpha``, norms averaged over the batch as in the official code."""
    alpha = bcast(sde.langevin_alpha(t), x)
    x_mean = x
    for i in range(n_steps):
        s = score_fn(x, t)
        z = _z_i(x, generator, noise, i, n_steps)
        e = (snr * _mean_norm(z) / _mean_norm(s)) ** 2 * 2 * alpha
        x_mean = x + e * s
        x = x_mean + torch.sqrt(2 * e) * z
    return x, x_mean


def ald(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    snr: float,
    n_steps: int,
    generator=None,
    noise=None,
) -> Step:
    """Annealed Langevin dynamics (SMLD): step size ``e = (snr sigma(t))^2 2 alpha`` per example."""
    e = bcast((snr * sde.sigma(t)) ** 2 * 2 * sde.langevin_alpha(t), x)
    x_mean = x
    for i in range(n_steps):
        x_mean = x + e * score_fn(x, t)
        x = x_mean + torch.sqrt(2 * e) * _z_i(x, generator, noise, i, n_steps)
    return x, x_mean


def none_corrector(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    snr: float,
    n_steps: int,
    generator=None,
    noise=None,
) -> Step:
    """No corrector: returns ``(x, x)`` and evaluates nothing."""
    return x, x


PREDICTORS: dict[str, Callable[..., Step]] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "none": none_predictor,
}
CORRECTORS: dict[str, Callable[..., Step]] = {
    "langevin": langevin,
    "ald": ald,
    "none": none_corrector,
}


# ---- predictor-corrector sampling ------------------------------------------------------------
def _check_chain(sde: SDE, predict: Callable, correct: Callable, grid: Tensor, names: str) -> None:
    """Raise ``ValueError`` where the discrete chain that the steps use is undefined on the grid.

    The DDPM chain of VP / sub-VP needs beta_i = beta(t) / N < 1, i.e. N > beta_max; ancestral
    sampling needs an SDE that has a discrete chain at all. One vectorised evaluation, one sync.
    Below that N the paper's predictors and correctors are kept as they are (no silent switch to
    another discretisation): the error names the continuous-time steps that work for any N.
    """
    ok = torch.ones_like(grid, dtype=torch.bool)
    if predict is ancestral:
        k, c, s = sde.ancestral(grid)  # raises ValueError where there is no ancestral chain
        ok &= torch.isfinite(k) & torch.isfinite(s) & (c > 0)
    if predict is reverse_diffusion:
        f, G = sde.discretize(torch.ones_like(grid)[:, None], grid)
        ok &= torch.isfinite(f[:, 0]) & torch.isfinite(G)
    if correct is langevin or correct is ald:
        ok &= sde.langevin_alpha(grid) > 0
    if not bool(ok.all()):
        raise ValueError(
            f"{names} use the discrete chain of {sde!r}, which is undefined with steps={sde.N} "
            "(a DDPM chain needs beta_i = beta(t)/N < 1, i.e. N > beta_max); use more steps, "
            "predictor='euler_maruyama' with corrector='none' (the reverse SDE in continuous "
            "time), or sampler 'dpm_solver_sde' (method='ancestral', eta=1: the DDPM posterior "
            "step of the continuous-time SDE, any number of steps)"
        )


def _latent(z: Tensor | None, x: Tensor | None) -> tuple[Tensor | None, str]:
    """The start latent given as ``z`` or by its alias ``x`` (not both), and its name."""
    if z is not None and x is not None:
        raise ValueError("give the start latent as z or as x, not both")
    return (z, "z") if x is None else (x, "x")


def sample_pc(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    predictor: str | Callable[..., Step] = "reverse_diffusion",
    corrector: str | Callable[..., Step] = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    steps: int | None = None,
    eps: float | None = None,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable[[int, Tensor, Tensor, Tensor], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
    x: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Predictor-corrector sampling (Algorithm 1 of the paper) from T down to ``eps``.

    Args:
        sde: the forward SDE; ``steps`` (default ``sde.N``) sets the number of steps N. The
            DDPM chain needs N > beta_max: fewer raise ``ValueError`` naming what runs instead.
        score_fn: ``score_fn(x, t)`` with ``x`` of shape ``shape`` and ``t`` of shape ``(B,)``.
        shape: ``(B, ...)`` of the samples (may be None when ``z`` is given).
        predictor, corrector: names in ``PREDICTORS`` / ``CORRECTORS`` or the step functions.
        snr: signal-to-noise ratio r of the Langevin step size.
        corrector_steps: corrector iterations M per step (0 means none).
        eps: final time (default :func:`scoresde.core.checks.default_eps`); the grid is
            ``linspace(T, eps, N)``.
        denoise: return the noise-free mean of the last step (the paper's final denoising).
        generator: source of all random numbers (prior and step noise).
        callback: called as ``callback(i, t, x, x_mean)`` after each step.
        device, dtype: of the prior draw; ignored when ``z`` is given.
        z: start from this state at T instead of a prior draw; ``x`` is an alias.

    Returns:
        ``(x, nfe)``: samples and the number of score evaluations made.
    """
    predict = lookup(PREDICTORS, predictor, "predictor")
    correct = lookup(CORRECTORS, corrector, "corrector")
    snr = check_range("snr", snr, 0, open_low=True)
    M = check_int("corrector_steps", corrector_steps, 0)
    sde_n = sde if steps is None else sde.with_steps(check_int("steps", steps, 1))
    eps = check_eps(sde, eps)
    z, what = _latent(z, x)
    x = start_state(sde, shape, z, generator, device, dtype, what)
    # The (B,) time of every step, precomputed: views of one linspace.
    grid = torch.linspace(sde.T, eps, sde_n.N, device=x.device, dtype=x.dtype)
    ts = grid[:, None].expand(sde_n.N, x.shape[0])
    _check_chain(sde_n, predict, correct, grid, f"predictor {predictor!r}, corrector {corrector!r}")
    score = CheckedScore(score_fn)
    x_mean = x
    for i in range(sde_n.N):
        x, x_mean = correct(sde_n, score, x, ts[i], snr, M, generator)
        x, x_mean = predict(sde_n, score, x, ts[i], generator)
        if callback is not None:
            callback(i, ts[i], x, x_mean)
    return (x_mean if denoise else x), score.finish()
