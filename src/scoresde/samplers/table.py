"""The one name -> sampler table, :data:`SAMPLERS` (re-exported by :mod:`scoresde.samplers`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .adaptive import sample_adaptive
from .dpm_solver import sample_dpm_solver, sample_dpm_solver_adaptive, sample_dpm_solver_sde
from .edm import sample_heun
from .flow import sample_ode
from .multistep import sample_deis, sample_ipndm, sample_lms, sample_unipc
from .pc import sample_pc
from .plugin import sample_lambda

__all__ = ["SAMPLERS"]

SAMPLERS: dict[str, Callable[..., tuple[Tensor, int]]] = {
    "pc": sample_pc,
    "ode": sample_ode,
    "heun": sample_heun,
    "dpm_solver": sample_dpm_solver,
    "adaptive": sample_adaptive,
    "lambda": sample_lambda,
    "unipc": sample_unipc,
    "deis": sample_deis,
    "ipndm": sample_ipndm,
    "lms": sample_lms,
    "dpm_solver_adaptive": sample_dpm_solver_adaptive,
    "dpm_solver_sde": sample_dpm_solver_sde,
}
