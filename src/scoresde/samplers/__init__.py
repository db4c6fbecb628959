"""Samplers: plain functions over ``(sde, score_fn, shape, *, options)`` returning ``(x, nfe)``.

This file holds the one name -> sampler table, :data:`SAMPLERS`, that the command line, the
config (``sample.sampler``) and the training loop all read, and :func:`sample`, the entry point
over it (as torchdiffeq's ``odeint(..., method=)``). Adding a sampler touches its own file and
one line here. Samplers import only from :mod:`scoresde.core`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import lookup
from ..core.sde import SDE
from .fast import sample_adaptive, sample_dpm_solver, sample_heun, sample_lambda
from .pc import sample_ode, sample_pc

__all__ = ["SAMPLERS", "sample", "sampler_options"]

SAMPLERS: dict[str, Callable[..., tuple[Tensor, int]]] = {
    "pc": sample_pc,
    "ode": sample_ode,
    "heun": sample_heun,
    "dpm_solver": sample_dpm_solver,
    "adaptive": sample_adaptive,
    "lambda": sample_lambda,
}


def sampler_options(name: str) -> tuple[str, ...]:
    """The keyword options that the sampler ``name`` accepts after ``shape``."""
    params = list(inspect.signature(lookup(SAMPLERS, name, "sampler")).parameters.values())
    return tuple(p.name for p in params[3:] if p.kind is not inspect.Parameter.VAR_KEYWORD)


def sample(
    sde: SDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...] | None,
    sampler: str = "pc",
    generator: torch.Generator | None = None,
    **options,
) -> tuple[Tensor, int]:
    """Draw samples with the sampler named ``sampler`` (a key of :data:`SAMPLERS`).

    ``options`` are that sampler's keyword options (see :func:`sampler_options`); an option it
    does not take raises one ``ValueError`` naming the ones it does.

    Returns:
        ``(x, nfe)``: the samples and the number of score evaluations.
    """
    fn = lookup(SAMPLERS, sampler, "sampler")
    valid = sampler_options(sampler)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"sampler {sampler!r} takes no option {unknown[0]!r}; its options: {', '.join(valid)}"
        )
    return fn(sde, score_fn, shape, generator=generator, **options)
