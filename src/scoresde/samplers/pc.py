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
from typing import NamedTuple

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


# ---- the steps as kernels ---------------------------------------------------------------------
# Every built-in step is a pair: the coefficients it takes from the SDE at the times ``t`` (each
# shaped like ``t``) and an update ``(x, s, z, *coefficients) -> (x, x_mean)`` with the score
# ``s`` and the draw ``z``. The public step functions apply the coefficients per example;
# ``sample_pc`` computes them once on its whole grid (one vectorised evaluation on the sampler's
# device) and hands each step its 0-d values, so the loop does tensor arithmetic on x only.
class _Kernel(NamedTuple):
    coefficients: Callable[..., tuple[Tensor, ...]]  # (sde, t[, snr]) -> tensors shaped like t
    update: Callable[..., Step]  # (x, s, z, *coefficients) -> (x, x_mean)


def _em_coefficients(sde: SDE, t: Tensor) -> tuple[Tensor, ...]:
    """``(f, g^2, dt, g sqrt(-dt))`` with dt = -T/N."""
    dt = -sde.T / sde.N
    g = sde.g(t)
    return sde.f(t), g**2, torch.full_like(t, dt), g * math.sqrt(-dt)


def _em_update(x: Tensor, s: Tensor, z: Tensor, f, g2, dt, noise_std) -> Step:
    """``x_mean = x + [f x - g^2 s] dt``, ``x = x_mean + g sqrt(-dt) z``."""
    x_mean = x + (f * x - g2 * s) * dt
    return x_mean + noise_std * z, x_mean


def _rd_coefficients(sde: SDE, t: Tensor) -> tuple[Tensor, ...]:
    """``(a, G^2, G)`` of the SDE's discrete chain ``x_{i+1} = x_i + a x_i + G z`` (linear in x:
    ``sde.discretize`` at x = 1 gives a)."""
    f, G = sde.discretize(torch.ones_like(t)[:, None], t)
    return f[:, 0], G**2, G


def _rd_update(x: Tensor, s: Tensor, z: Tensor, a, G2, G) -> Step:
    """Eq. 46: ``x_mean = x - (a x - G^2 s)``, ``x = x_mean + G z``."""
    x_mean = x - (a * x - G2 * s)
    return x_mean + G * z, x_mean


def _ancestral_coefficients(sde: SDE, t: Tensor) -> tuple[Tensor, ...]:
    """``(k, c, s_t) = sde.ancestral(t)``; sub-VP raises ``ValueError``."""
    return sde.ancestral(t)


def _ancestral_update(x: Tensor, s: Tensor, z: Tensor, k, c, std) -> Step:
    """Eq. 47: ``x_mean = (x + k s) / c``, ``x = x_mean + s_t z``."""
    x_mean = (x + k * s) / c
    return x_mean + std * z, x_mean


def _mean_norm(v: Tensor) -> Tensor:
    """Mean over the batch of the per-example Euclidean norms: one scalar for the batch."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).mean()


def _langevin_coefficients(sde: SDE, t: Tensor, snr: float) -> tuple[Tensor, ...]:
    """``(snr, alpha_i)``."""
    return torch.full_like(t, snr), sde.langevin_alpha(t)


def _langevin_update(x: Tensor, s: Tensor, z: Tensor, snr, alpha) -> Step:
    """``x <- x + e s + sqrt(2 e) z``, ``e = (snr ||z|| / ||s||)^2 2 alpha`` (batch-mean norms)."""
    e = (snr * _mean_norm(z) / _mean_norm(s)) ** 2 * 2 * alpha
    x_mean = x + e * s
    return x_mean + torch.sqrt(2 * e) * z, x_mean


def _ald_coefficients(sde: SDE, t: Tensor, snr: float) -> tuple[Tensor, ...]:
    """``(e, sqrt(2 e))`` with ``e = (snr sigma(t))^2 2 alpha_i``."""
    e = (snr * sde.sigma(t)) ** 2 * 2 * sde.langevin_alpha(t)
    return e, torch.sqrt(2 * e)


def _ald_update(x: Tensor, s: Tensor, z: Tensor, e, root_2e) -> Step:
    """``x_mean = x + e s``, ``x = x_mean + sqrt(2 e) z``."""
    x_mean = x + e * s
    return x_mean + root_2e * z, x_mean


def _iterate(update: Callable[..., Step], score_fn, x, t, c, n_steps: int, draw) -> Step:
    """``n_steps`` updates at the time ``t`` with coefficients ``c``; ``draw(x, i)`` is the i-th
    draw (made after the score, as every step does)."""
    x_mean = x
    for i in range(n_steps):
        s = score_fn(x, t)
        x, x_mean = update(x, s, draw(x, i), *c)
    return x, x_mean


def _per_example(kernel: _Kernel, sde: SDE, x: Tensor, t: Tensor, *args) -> list[Tensor]:
    """The kernel's coefficients at the ``(B,)`` times ``t``, shaped to broadcast against x."""
    return [bcast(c, x) for c in kernel.coefficients(sde, t, *args)]


def _predict(kernel: _Kernel, sde, score_fn, x, t, generator, noise) -> Step:
    """A predictor's step at the ``(B,)`` times ``t``: one update."""
    c = _per_example(kernel, sde, x, t)
    return _iterate(kernel.update, score_fn, x, t, c, 1, lambda x, i: _z(x, generator, noise))


def _correct(kernel: _Kernel, sde, score_fn, x, t, snr, n_steps, generator, noise) -> Step:
    """A corrector's ``n_steps`` updates at the ``(B,)`` times ``t``."""
    c = _per_example(kernel, sde, x, t, snr)
    draw = lambda x, i: _z_i(x, generator, noise, i, n_steps)  # noqa: E731
    return _iterate(kernel.update, score_fn, x, t, c, n_steps, draw)


_EM = _Kernel(_em_coefficients, _em_update)
_RD = _Kernel(_rd_coefficients, _rd_update)
_ANCESTRAL = _Kernel(_ancestral_coefficients, _ancestral_update)
_LANGEVIN = _Kernel(_langevin_coefficients, _langevin_update)
_ALD = _Kernel(_ald_coefficients, _ald_update)


# ---- predictors ------------------------------------------------------------------------------
def euler_maruyama(
    sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, generator=None, noise=None
) -> Step:
    """Euler-Maruyama step of the reverse SDE with dt = -T/N:
    ``x_mean = x + [f x - g^2 s] dt``, ``x = x_mean + g sqrt(-dt) z``."""
    return _predict(_EM, sde, score_fn, x, t, generator, noise)


def reverse_diffusion(
    sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, generator=None, noise=None
) -> Step:
    """Reverse diffusion step (the paper's Eq. 46): ``x_mean = x - f_rev``, ``x = x_mean + G z``
    with ``f_rev = f_i - G_i^2 s`` from the SDE's discrete chain ``(f_i, G_i) = sde.discretize``."""
    return _predict(_RD, sde, score_fn, x, t, generator, noise)


def ancestral(
    sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor, generator=None, noise=None
) -> Step:
    """Ancestral sampling of the SMLD / DDPM chain (Eq. 47): ``x_mean = (x + k s) / c``,
    ``x = x_mean + s_t z`` with ``(k, c, s_t) = sde.ancestral(t)``; sub-VP raises ``ValueError``."""
    return _predict(_ANCESTRAL, sde, score_fn, x, t, generator, noise)


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
    return _correct(_LANGEVIN, sde, score_fn, x, t, snr, n_steps, generator, noise)


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
    return _correct(_ALD, sde, score_fn, x, t, snr, n_steps, generator, noise)


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
_KERNELS: dict[Callable[..., Step], _Kernel] = {
    euler_maruyama: _EM,
    reverse_diffusion: _RD,
    ancestral: _ANCESTRAL,
    langevin: _LANGEVIN,
    ald: _ALD,
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


def _grid(sde: SDE, eps: float, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The times ``linspace(T, eps, N)`` (dtype and device of x) and the ``(B,)`` time of every
    step: views of it, made once."""
    grid = torch.linspace(sde.T, eps, sde.N, device=x.device, dtype=x.dtype)
    return grid, grid[:, None].expand(sde.N, x.shape[0]).unbind(0)


def _on_grid(step: Callable[..., Step], sde, score, grid, ts, generator, corrector=None):
    """``step_i(i, x) -> (x, x_mean)``: the step at the i-th time of ``grid``, made once per call
    (``corrector``: a corrector's ``(snr, n_steps)``; None for a predictor).

    A built-in step takes its coefficients computed once on the whole grid (0-d tensors on the
    device of x, one per step); any other step function is called as it is.
    """
    args, n_steps = (corrector, corrector[1]) if corrector else ((), 1)
    kernel = next((k for f, k in _KERNELS.items() if f is step), None)  # any callable: no hash
    if kernel is None or n_steps == 0:
        return lambda i, x: step(sde, score, x, ts[i], *args, generator)
    coefficients = kernel.coefficients(sde, grid, *args[:1])  # a corrector's also take snr
    per_step = list(zip(*(c.unbind(0) for c in coefficients)))
    draw = lambda x, i: randn(x, generator)  # noqa: E731
    return lambda i, x: _iterate(kernel.update, score, x, ts[i], per_step[i], n_steps, draw)


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
    grid, ts = _grid(sde_n, eps, x)
    _check_chain(sde_n, predict, correct, grid, f"predictor {predictor!r}, corrector {corrector!r}")
    score = CheckedScore(score_fn)
    corrector_i = _on_grid(correct, sde_n, score, grid, ts, generator, (snr, M))
    predictor_i = _on_grid(predict, sde_n, score, grid, ts, generator)
    x_mean = x
    for i in range(sde_n.N):
        x, x_mean = corrector_i(i, x)
        x, x_mean = predictor_i(i, x)
        if callback is not None:
            callback(i, ts[i], x, x_mean)
    return (x_mean if denoise else x), score.finish()
