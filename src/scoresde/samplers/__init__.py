"""Samplers: plain functions over ``(sde, score_fn, shape, *, options)`` returning ``(x, nfe)``.

One file per family: :mod:`.pc` (predictors, correctors, ``sample_pc``), :mod:`.flow` (the
probability-flow ODE: ``sample_ode``, ``encode``), :mod:`.edm` (``sample_heun``),
:mod:`.dpm_solver`, :mod:`.adaptive` (``sample_adaptive``), :mod:`.plugin` (the lambda family,
``sample_lambda``), and :mod:`.grids` (time grids). All share the conventions: options are keyword
only, ``z`` is the start latent at T (default: a prior draw of ``shape``; device and dtype follow
it), ``eps=None`` is :func:`default_eps`, ``generator`` is the one source of random numbers and
``nfe`` counts the evaluations of ``score_fn``.

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

from ..core.checks import default_eps, did_you_mean, lookup
from ..core.sde import SDE
from .adaptive import sample_adaptive
from .dpm_solver import DPM_METHODS, sample_dpm_solver
from .edm import sample_heun
from .flow import encode, sample_ode
from .grids import GRIDS
from .pc import CORRECTORS, PREDICTORS, sample_pc
from .plugin import sample_lambda

__all__ = [
    "SAMPLERS",
    "sample",
    "sampler_options",
    "sample_pc",
    "sample_ode",
    "encode",
    "sample_heun",
    "sample_dpm_solver",
    "sample_adaptive",
    "sample_lambda",
    "PREDICTORS",
    "CORRECTORS",
    "GRIDS",
    "DPM_METHODS",
    "default_eps",
]

SAMPLERS: dict[str, Callable[..., tuple[Tensor, int]]] = {
    "pc": sample_pc,
    "ode": sample_ode,
    "heun": sample_heun,
    "dpm_solver": sample_dpm_solver,
    "adaptive": sample_adaptive,
    "lambda": sample_lambda,
}


def sampler_options(name: str | Callable[..., tuple[Tensor, int]]) -> tuple[str, ...]:
    """The keyword options that the sampler ``name`` (or a sampler function) accepts after
    ``shape``."""
    params = list(inspect.signature(lookup(SAMPLERS, name, "sampler")).parameters.values())
    return tuple(p.name for p in params[3:] if p.kind is not inspect.Parameter.VAR_KEYWORD)


def sample(
    sde: SDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...] | None,
    sampler: str | Callable[..., tuple[Tensor, int]] = "pc",
    generator: torch.Generator | None = None,
    **options,
) -> tuple[Tensor, int]:
    """Draw samples with the sampler named ``sampler`` (a key of :data:`SAMPLERS`, or a sampler
    function with the same contract).

    ``options`` are that sampler's keyword options (see :func:`sampler_options`); an option it
    does not take raises one ``ValueError`` naming the ones it does. The result equals the named
    function's for the same arguments and generator.

    Returns:
        ``(x, nfe)``: the samples and the number of score evaluations.
    """
    fn = lookup(SAMPLERS, sampler, "sampler")
    valid = sampler_options(fn)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        name = sampler if isinstance(sampler, str) else getattr(fn, "__name__", "sampler")
        raise ValueError(
            f"sampler {name!r} takes no option {unknown[0]!r}{did_you_mean(unknown[0], valid)}; "
            f"its options: {', '.join(valid)}"
        )
    return fn(sde, score_fn, shape, generator=generator, **options)
