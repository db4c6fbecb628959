"""Samplers: plain functions over ``(sde, score_fn, shape, *, options)`` returning ``(x, nfe)``.

One file per family: :mod:`.pc` (predictors, correctors, ``sample_pc``), :mod:`.flow` (the
probability-flow ODE: ``sample_ode``, ``encode``), :mod:`.edm` (``sample_heun``),
:mod:`.dpm_solver` (also adaptive and stochastic), :mod:`.multistep` (UniPC, DEIS, iPNDM, lms),
:mod:`.adaptive` (``sample_adaptive``), :mod:`.plugin` (the lambda family,
``sample_lambda``), and :mod:`.grids` (time grids). All share the conventions: options are keyword
only, ``z`` is the start latent at T (default: a prior draw of ``shape``; device and dtype follow
it), ``eps=None`` is :func:`default_eps`, ``generator`` is the one source of random numbers and
``nfe`` counts the evaluations of ``score_fn``. A :class:`SampleStreams` may stand for
``generator``: one stream per sample index, so that samples do not depend on the batch.

:mod:`.table` holds the one name -> sampler table, :data:`SAMPLERS`, that the command line, the
config (``sample.sampler``), the training loop and :func:`.grid_search.optimised_grid` all read;
this file holds :func:`sample`, the entry point over it (as torchdiffeq's ``odeint(...,
method=)``). Adding a sampler touches its own file and one line of the table. Samplers import
only from :mod:`scoresde.core`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import default_eps, did_you_mean, lookup
from ..core.sde import SDE
from ._shared import SampleStreams, stream_seed
from .adaptive import sample_adaptive
from .dpm_solver import (
    DPM_METHODS,
    SDE_METHODS,
    sample_dpm_solver,
    sample_dpm_solver_adaptive,
    sample_dpm_solver_sde,
)
from .edm import sample_heun
from .flow import encode, sample_ode
from .grid_search import GRID_SEARCH_SAMPLERS, optimised_grid
from .grids import GRIDS
from .multistep import UNIPC_VARIANTS, sample_deis, sample_ipndm, sample_lms, sample_unipc
from .pc import CORRECTORS, PREDICTORS, sample_pc
from .plugin import sample_lambda
from .table import SAMPLERS

__all__ = [
    "SAMPLERS",
    "sample",
    "sampler_options",
    "sample_pc",
    "sample_ode",
    "encode",
    "sample_heun",
    "sample_dpm_solver",
    "sample_dpm_solver_adaptive",
    "sample_dpm_solver_sde",
    "sample_unipc",
    "sample_deis",
    "sample_ipndm",
    "sample_lms",
    "sample_adaptive",
    "sample_lambda",
    "PREDICTORS",
    "CORRECTORS",
    "GRIDS",
    "optimised_grid",
    "GRID_SEARCH_SAMPLERS",
    "DPM_METHODS",
    "SDE_METHODS",
    "UNIPC_VARIANTS",
    "default_eps",
    "SampleStreams",
    "stream_seed",
]


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
    generator: torch.Generator | SampleStreams | None = None,
    **options,
) -> tuple[Tensor, int]:
    """Draw samples with the sampler named ``sampler`` (a key of :data:`SAMPLERS`, or a sampler
    function with the same contract).

    ``options`` are that sampler's keyword options (see :func:`sampler_options`); an option it
    does not take raises one ``ValueError`` naming the ones it does. The result equals the named
    function's for the same arguments and generator; a :class:`SampleStreams` generator also
    gives the start latent ``z`` (unless one is given), so row ``i`` depends on stream ``i`` only.

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
    if isinstance(generator, SampleStreams) and shape is not None and "z" in valid:
        if options.get("z") is None and options.get("x") is None:  # the start from the streams
            options["z"] = generator.prior(sde, shape, options.get("device"), options.get("dtype"))
    return fn(sde, score_fn, shape, generator=generator, **options)
