"""Projection samplers given a linear observation: PC projection and RePaint.

* ``pc`` (Song et al. 2021, Appendix I; the official ``get_pc_inpainter`` / ``get_pc_colorizer``):
  predictor-corrector sampling where, after every corrector and every predictor step, the
  observed part of ``x`` is replaced by the observation diffused to the step's time,
  ``A x_t <- alpha(t) y + sigma(t) A z`` (:meth:`Observation.impose`). For colorization that is
  the grey channel of the decoupled colour space, as in the official code. Defaults as there:
  reverse diffusion + Langevin, snr 0.16, one corrector step, final denoising.
* ``repaint`` (Lugmayr et al. 2022): the same projection, plus resampling: at every ``jump``-th
  step the state is re-noised ``jump`` steps back in time by the exact forward transition
  ``x_a = (alpha_a / alpha_b) x_b + sqrt(sigma_a^2 - (alpha_a / alpha_b)^2 sigma_b^2) z`` and
  denoised again, ``resample - 1`` times (the paper's jump length j and resampling count r).

Projection methods treat ``y`` as noiseless (``noise_std`` is ignored); DPS takes noisy ``y``.
Where the observation is noiseless every method returns ``A x = y`` exactly at the end (for a
mask: the observed coordinates equal ``y`` bit for bit).

Differences from the official code, on purpose: the observed part after a predictor step is
diffused to the time the step reaches (the official code uses the time it starts from), and the
start state at T has the observed part diffused to T (the official one starts from the clean
``y``, overwritten at the first projection).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_eps, check_int, check_range, lookup, start_state
from ..core.sde import SDE
from ..samplers._shared import SampleStreams, randn
from ..samplers.pc import CORRECTORS, PREDICTORS, _check_chain
from .observations import Observation

__all__ = [
    "Chain",
    "start",
    "project",
    "renoise",
    "repaint_moves",
    "sample_pc_projection",
    "sample_repaint",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor, Tensor], None]
Generator = torch.Generator | SampleStreams | None


class Chain:
    """The fixed-step chain of a conditional solve: the SDE with ``N`` steps, the ``(N,)`` grid
    ``linspace(T, eps, N)`` of step start times, and ``alpha``, ``sigma`` of the N + 1 states
    (state k is reached after k steps; the last one is t = 0: ``alpha = 1``, ``sigma = 0``)."""

    def __init__(self, sde: SDE, steps: int | None, eps: float | None, x: Tensor):
        self.sde = sde if steps is None else sde.with_steps(check_int("steps", steps, 1))
        self.N = self.sde.N
        eps = check_eps(sde, eps)
        self.grid = torch.linspace(sde.T, eps, self.N, device=x.device, dtype=x.dtype)
        one = torch.ones(1, device=x.device, dtype=x.dtype)
        self.alpha = torch.cat([sde.alpha(self.grid), one])
        self.sigma = torch.cat([sde.sigma(self.grid), 0 * one])
        self.B = x.shape[0]

    def t(self, k: int) -> Tensor:
        """The ``(B,)`` start time of step ``k``."""
        return self.grid[k].expand(self.B)

    def coeffs(self, k: int) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` of state ``k`` as ``(B,)`` tensors."""
        return self.alpha[k].expand(self.B), self.sigma[k].expand(self.B)


def start(
    sde: SDE,
    shape: tuple[int, ...] | None,
    obs: Observation,
    z: Tensor | None,
    generator: Generator,
) -> Tensor:
    """The checked start state at T (a prior draw in ``obs.y``'s device and dtype, or ``z``;
    with a :class:`~scoresde.samplers.SampleStreams` the prior draw is the first of each
    sample's stream, as in :func:`scoresde.sample`)."""
    if not isinstance(obs, Observation):
        raise ValueError(
            f"obs must be an Observation (Inpainting, Colorization, SuperResolution, "
            f"LinearObservation), got {type(obs).__name__}"
        )
    if shape is not None:
        obs.check(tuple(shape))
    if z is None and shape is not None and isinstance(generator, SampleStreams):
        z = generator.prior(sde, tuple(shape), obs.y.device, obs.y.dtype)
    x = start_state(sde, shape, z, generator, obs.y.device, obs.y.dtype)
    obs.check(tuple(x.shape))
    return x


def randn_like(x: Tensor, generator: Generator) -> Tensor:
    """A standard-normal draw shaped like ``x`` from ``generator`` (row ``i`` from stream ``i``
    of a :class:`~scoresde.samplers.SampleStreams`)."""
    return randn(x, generator)


def project(obs: Observation, x: Tensor, ch: Chain, k: int, generator, noise: bool) -> Tensor:
    """``x`` with its observed part set to ``y`` diffused to state ``k`` (its mean where
    ``noise`` is false)."""
    alpha, sigma = ch.coeffs(k)
    z = randn_like(x, generator) if noise else None
    return obs.impose(x, obs.diffused(x, alpha, sigma, z))


def renoise(x: Tensor, ch: Chain, b: int, a: int, generator) -> Tensor:
    """The exact forward transition from state ``b`` back to the earlier (noisier) state ``a``."""
    r = ch.alpha[a] / ch.alpha[b]
    s = (ch.sigma[a] ** 2 - r**2 * ch.sigma[b] ** 2).clamp(min=0).sqrt()
    return r * x + s * randn_like(x, generator)


def _projection_loop(ch, score, x, obs, moves, steps, generator, callback):
    """Run ``moves`` (+1: corrector + predictor step with projections; -j: re-noise j states
    back) from state 0; returns ``(x, x_mean)`` at state N."""
    predict, correct, snr, M = steps
    k, x_mean = 0, x
    for i, move in enumerate(moves):
        if move < 0:
            x = x_mean = renoise(x, ch, k, k + move, generator)
            k += move
        else:
            if M > 0 and correct is not CORRECTORS["none"]:
                x, _ = correct(ch.sde, score, x, ch.t(k), snr, M, generator)
                x = project(obs, x, ch, k, generator, noise=True)
            x, x_mean = predict(ch.sde, score, x, ch.t(k), generator)
            k += 1
            x, x_mean = (
                project(obs, x, ch, k, generator, True),
                project(obs, x_mean, ch, k, None, False),
            )
        if callback is not None:
            callback(i, ch.t(min(k, ch.N - 1)), x, x_mean)
    return x, x_mean


def _steps(predictor, corrector, snr: float, corrector_steps: int) -> tuple:
    return (
        lookup(PREDICTORS, predictor, "predictor"),
        lookup(CORRECTORS, corrector, "corrector"),
        check_range("snr", snr, 0, open_low=True),
        check_int("corrector_steps", corrector_steps, 0),
    )


def _run(sde, score_fn, shape, obs, moves_of, steps, eps, denoise, generator, callback, z, st):
    """Shared driver of ``pc`` and ``repaint``."""
    x = start(sde, shape, obs, z, generator)
    ch = Chain(sde, steps, eps, x)
    _check_chain(ch.sde, st[0], st[1], ch.grid, "the predictor / corrector")
    x = project(obs, x, ch, 0, generator, noise=True)
    score = CheckedScore(score_fn)
    x, x_mean = _projection_loop(ch, score, x, obs, moves_of(ch.N), st, generator, callback)
    return (x_mean if denoise else x), score.finish()


def sample_pc_projection(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    obs: Observation,
    *,
    predictor: str | Callable = "reverse_diffusion",
    corrector: str | Callable = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    steps: int | None = None,
    eps: float | None = None,
    denoise: bool = True,
    generator: Generator = None,
    callback: Callback | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """PC sampling with projection onto the observation after every step (see the module).

    Args are those of :func:`scoresde.sample_pc` plus ``obs``, the :class:`Observation`; the
    samples' device and dtype follow ``obs.y`` (or ``z``).

    Returns:
        ``(x, nfe)``: samples with ``A x = y`` (exactly, for a mask) and the score evaluations.
    """
    st = _steps(predictor, corrector, snr, corrector_steps)
    moves = lambda n: [1] * n  # noqa: E731
    return _run(sde, score_fn, shape, obs, moves, steps, eps, denoise, generator, callback, z, st)


def repaint_moves(N: int, jump: int, resample: int) -> list[int]:
    """RePaint's schedule over N steps: +1 is one step down, ``-jump`` re-noises ``jump`` states
    back; at every state ``k = jump, 2 jump, ... < N`` that happens ``resample - 1`` times."""
    moves, k, done = [], 0, {}
    while k < N:
        moves.append(1)
        k += 1
        if k % jump == 0 and k < N and done.get(k, 0) < resample - 1:
            done[k] = done.get(k, 0) + 1
            moves.append(-jump)
            k -= jump
    return moves


def sample_repaint(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    obs: Observation,
    *,
    jump: int = 10,
    resample: int = 10,
    predictor: str | Callable = "reverse_diffusion",
    corrector: str | Callable = "none",
    snr: float = 0.16,
    corrector_steps: int = 1,
    steps: int | None = None,
    eps: float | None = None,
    denoise: bool = True,
    generator: Generator = None,
    callback: Callback | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """RePaint: projection sampling with resampling jumps (see the module).

    Args:
        jump: jump length j (states re-noised at once); resample: r, passes over each span
            (``resample=1`` is plain projection without a corrector). The paper's j = r = 10.
        The rest as in :func:`sample_pc_projection` (default: predictor only).

    Returns:
        ``(x, nfe)``; nfe is about ``steps * resample`` for ``jump`` much smaller than steps.
    """
    st = _steps(predictor, corrector, snr, corrector_steps)
    j, r = check_int("jump", jump, 1), check_int("resample", resample, 1)
    moves = lambda n: repaint_moves(n, j, r)  # noqa: E731
    return _run(sde, score_fn, shape, obs, moves, steps, eps, denoise, generator, callback, z, st)
