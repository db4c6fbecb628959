"""Controllable generation: observations, conditional samplers and classifier guidance.

:mod:`.observations` (``y = A x + sigma_y n``: masks, colorization, average pooling, a user's
operator), :mod:`.projection` (PC projection and RePaint), :mod:`.dps` (diffusion posterior
sampling), :mod:`.guidance` (classifier guidance, a score function for any sampler) and
:mod:`.posterior` (the exact posterior of a Gaussian mixture, the oracle of the tests).

This file holds the one name -> method table, :data:`METHODS`, and :func:`sample_conditional`
over it (as :func:`scoresde.sample` over ``SAMPLERS``). Control imports only core and samplers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import did_you_mean, lookup
from ..core.sde import SDE
from ..samplers._shared import SampleStreams
from .dps import sample_dps
from .guidance import classifier_guidance
from .observations import (
    COLOUR_MATRIX,
    Colorization,
    Inpainting,
    LinearObservation,
    Observation,
    SuperResolution,
    couple,
    decouple,
)
from .posterior import exact_posterior
from .projection import sample_pc_projection, sample_repaint

__all__ = [
    "METHODS",
    "sample_conditional",
    "method_options",
    "sample_pc_projection",
    "sample_repaint",
    "sample_dps",
    "classifier_guidance",
    "Observation",
    "Inpainting",
    "Colorization",
    "SuperResolution",
    "LinearObservation",
    "COLOUR_MATRIX",
    "decouple",
    "couple",
    "exact_posterior",
]

METHODS: dict[str, Callable[..., tuple[Tensor, int]]] = {
    "pc": sample_pc_projection,
    "dps": sample_dps,
    "repaint": sample_repaint,
}


def method_options(name: str | Callable[..., tuple[Tensor, int]]) -> tuple[str, ...]:
    """The keyword options of the method ``name`` (after ``sde, score_fn, shape, obs``)."""
    params = list(inspect.signature(lookup(METHODS, name, "method")).parameters.values())[4:]
    return tuple(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)


def sample_conditional(
    sde: SDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...] | None,
    obs: Observation,
    method: str | Callable[..., tuple[Tensor, int]] = "pc",
    steps: int | None = None,
    generator: torch.Generator | SampleStreams | None = None,
    **options,
) -> tuple[Tensor, int]:
    """Samples of ``p(x | y)`` for the observation ``obs`` with the method named ``method``.

    Args:
        sde, score_fn: the forward SDE and the unconditional score ``score_fn(x, t)``.
        shape: ``(B, ...)`` of the samples (checked against ``obs``; may be None with ``z``).
        obs: an :class:`Observation` (:class:`Inpainting`, :class:`Colorization`,
            :class:`SuperResolution`, :class:`LinearObservation`).
        method: a key of :data:`METHODS` (``"pc"``, ``"dps"``, ``"repaint"``) or a function with
            the same contract.
        steps: number of steps (default ``sde.N``).
        generator: the source of random numbers: a ``torch.Generator``, or a
            :class:`~scoresde.samplers.SampleStreams` (one stream per sample index, which also
            draws the start state unless ``z`` is given), so that sample ``i`` does not depend
            on the batch it is drawn in. (Except with the ``langevin`` corrector, whose step
            size averages norms over the batch as the official code does; ``ald`` or ``none``
            are per sample.)
        options: the method's keyword options (:func:`method_options`); an unknown one raises
            one ``ValueError`` naming those it takes.

    Returns:
        ``(x, nfe)``: the samples and the number of score evaluations. Where the observation is
        noiseless, ``A x = y`` at the end (a mask's observed coordinates exactly).
    """
    fn = lookup(METHODS, method, "method")
    valid = method_options(fn)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        name = method if isinstance(method, str) else getattr(fn, "__name__", "method")
        raise ValueError(
            f"method {name!r} takes no option {unknown[0]!r}"
            f"{did_you_mean(unknown[0], valid)}; its options: {', '.join(valid)}"
        )
    return fn(sde, score_fn, shape, obs, steps=steps, generator=generator, **options)
