"""Samplers for score-based models: predictor-corrector (PC) and the probability-flow ODE.

A *predictor* steps the reverse-time SDE (Song et al. 2021, Eq. 6) from t to t - T/N; a *corrector*
runs Langevin MCMC at fixed t (Algorithms 4-5 of the paper). Both are plain functions returning
``(x, x_mean)``, where ``x_mean`` is the step without its final noise (used for the denoising step).

Predictors:   ``step(sde, score_fn, x, t, generator=None, noise=None) -> (x, x_mean)``
Correctors:   ``step(sde, score_fn, x, t, snr, n_steps, generator=None, noise=None) -> (x, x_mean)``

``noise`` injects the standard-normal draws (for tests against fixed noise); a corrector with
``n_steps > 1`` takes them stacked, ``(n_steps, *x.shape)``. Otherwise noise comes from
``generator``. :func:`sample_pc` drives the steps; :func:`sample_ode` and :func:`encode` integrate
the probability-flow ODE (Eq. 13) with :func:`scoresde.ode.integrate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..core import ode
from ..core.score import check_score
from ..core.sde import SDE, bcast

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
    "default_eps",
    "sample_pc",
    "sample_ode",
    "encode",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Step = tuple[Tensor, Tensor]


def _z(x: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
    """A standard-normal draw shaped like ``x``, or the injected ``noise``."""
    if noise is None:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
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


# ---- checks at the boundary ------------------------------------------------------------------
def _pick(table: dict, choice, what: str) -> Callable:
    if callable(choice):
        return choice
    if choice not in table:
        raise ValueError(f"unknown {what} {choice!r}; valid: {', '.join(table)}")
    return table[choice]


def default_eps(sde: SDE) -> float:
    """The paper's final time: 1e-5 for VE, 1e-3 for VP / sub-VP.

    Told apart by the prior: VP and sub-VP end at N(0, I) (``prior_std == 1``), VE at
    N(0, sigma_max^2) with sigma_max != 1.
    """
    return 1e-5 if sde.prior_std != 1 else 1e-3


def _check_eps(sde: SDE, eps: float | None) -> float:
    eps = default_eps(sde) if eps is None else float(eps)
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must satisfy 0 < eps < T={sde.T}, got {eps}")
    return eps


def _check_finite(v: Tensor, what: str) -> None:
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{what} contains NaN or inf")


def _initial(sde: SDE, shape, x: Tensor | None, generator, device, dtype, what: str) -> Tensor:
    """The starting state: the given ``x`` (checked) or a prior draw."""
    if x is None:
        if shape is None:
            raise ValueError(f"give the sample shape or a starting {what}")
        return sde.prior_sampling(shape, generator, device, dtype)
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(x.shape)} but shape={tuple(shape)}")
    _check_finite(x, what)
    return x


def _check_chain(sde: SDE, predict: Callable, correct: Callable, grid: Tensor, names: str) -> None:
    """Raise ``ValueError`` where the discrete chain that the steps use is undefined on the grid.

    The DDPM chain of VP / sub-VP needs beta_i = beta(t) / N < 1, i.e. N > beta_max; ancestral
    sampling needs an SDE that has a discrete chain at all. One vectorised evaluation, one sync.
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
            "(a DDPM chain needs beta_i = beta(t)/N < 1, i.e. N > beta_max); use more steps"
        )


class _CheckedScore:
    """Wraps ``score_fn``: checks the shape of every output and the first one for NaN/inf (one
    host sync per sampler call), and counts the evaluations in ``nfe``."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        s = check_score(self.score_fn(x, t), x)
        if self.nfe == 0:
            _check_finite(s, "the first score_fn output")
        self.nfe += 1
        return s


# ---- predictor-corrector sampling ------------------------------------------------------------
def sample_pc(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
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
    x: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Predictor-corrector sampling (Algorithm 1 of the paper) from T down to ``eps``.

    Args:
        sde: the forward SDE; ``steps`` (default ``sde.N``) sets the number of steps N.
        score_fn: ``score_fn(x, t)`` with ``x`` of shape ``shape`` and ``t`` of shape ``(B,)``.
        shape: ``(B, ...)`` of the samples.
        predictor, corrector: names in ``PREDICTORS`` / ``CORRECTORS`` or the step functions.
        snr: signal-to-noise ratio r of the Langevin step size.
        corrector_steps: corrector iterations M per step (0 means none).
        eps: final time (default :func:`default_eps`); the grid is ``linspace(T, eps, N)``.
        denoise: return the noise-free mean of the last step (the paper's final denoising).
        generator: source of all random numbers (prior and step noise).
        callback: called as ``callback(i, t, x, x_mean)`` after each step.
        device, dtype: of the prior draw; ignored when ``x`` is given.
        x: start from this state instead of a prior draw.

    Returns:
        ``(x, nfe)``: samples and the number of score evaluations made.
    """
    predict = _pick(PREDICTORS, predictor, "predictor")
    correct = _pick(CORRECTORS, corrector, "corrector")
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    if int(corrector_steps) != corrector_steps or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps}")
    if steps is not None and (int(steps) != steps or steps < 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    eps = _check_eps(sde, eps)
    sde_n = sde if steps is None else sde.with_steps(int(steps))
    x = _initial(sde, shape, x, generator, device, dtype, "x")
    # The (B,) time of every step, precomputed: views of one linspace.
    grid = torch.linspace(sde.T, eps, sde_n.N, device=x.device, dtype=x.dtype)
    ts = grid[:, None].expand(sde_n.N, x.shape[0])
    _check_chain(sde_n, predict, correct, grid, f"predictor {predictor!r}, corrector {corrector!r}")
    score = _CheckedScore(score_fn)
    x_mean = x
    for i in range(sde_n.N):
        t = ts[i]
        x, x_mean = correct(sde_n, score, x, t, snr, int(corrector_steps), generator)
        x, x_mean = predict(sde_n, score, x, t, generator)
        if callback is not None:
            callback(i, t, x, x_mean)
    return (x_mean if denoise else x), score.nfe


# ---- probability-flow ODE --------------------------------------------------------------------
def _flow(sde: SDE, score: ScoreFn) -> ode.Func:
    """``dx/dt`` of the probability-flow ODE (Eq. 13): ``f x - g^2 s / 2``.

    ``ode.integrate`` keeps every evaluation inside the integration interval.
    """

    def f(t: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = y[0]
        tv = t.to(x.dtype).expand(x.shape[0])
        return (sde.probability_flow_drift(x, tv, score(x, tv)),)

    return f


# ---- probability-flow ODE (public) -----------------------------------------------------------
def sample_ode(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    z: Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, int]:
    """Sample by integrating the probability-flow ODE from T to ``eps``.

    Args:
        z: latent at time T (default: a prior draw of ``shape``).
        method: a name in :data:`scoresde.ode.METHODS` (adaptive: ``rtol``, ``atol``; fixed grid:
            ``steps`` uniform steps; ``scipy-RK45``: the paper's black-box path).
        eps: final time (default :func:`default_eps`).
        denoise: finish with one reverse-diffusion mean step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)``: samples and the number of score evaluations made.
    """
    ode.check_method(method, steps)
    eps = _check_eps(sde, eps)
    x = _initial(sde, shape, z, generator, device, dtype, "z")
    score = _CheckedScore(score_fn)
    flow = _flow(sde, score)
    (x,), _ = ode.integrate(flow, (x,), sde.T, eps, method, rtol, atol, steps)
    if denoise:
        t = torch.full(x.shape[:1], eps, device=x.device, dtype=x.dtype)
        f, _ = sde.reverse_discretize(x, t, score(x, t))
        x = x - f
    return x, score.nfe


def encode(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    eps: float | None = None,
) -> tuple[Tensor, int]:
    """Map data ``x`` at time ``eps`` to its latent at T along the probability-flow ODE.

    The inverse of :func:`sample_ode` (without denoising) up to solver tolerance.
    Returns ``(z, nfe)``.
    """
    ode.check_method(method, steps)
    eps = _check_eps(sde, eps)
    x = _initial(sde, None, x, None, None, None, "x")
    score = _CheckedScore(score_fn)
    flow = _flow(sde, score)
    (z,), _ = ode.integrate(flow, (x,), eps, sde.T, method, rtol, atol, steps)
    return z, score.nfe
