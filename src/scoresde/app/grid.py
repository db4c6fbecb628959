"""``scoresde sample --grid optimised | FILE.json``: a time grid fitted to the run's model and the
chosen sampler, or one read back from an earlier fit.

``optimised`` runs :func:`scoresde.optimised_grid` on ``--grid-warmup`` prior draws (their own
seed stream, apart from the samples'), with ``--steps`` intervals (default: the sampler's own
default steps), then samples on that grid and writes it as JSON beside ``--out``
(``FILE.grid.json``, or ``DIR/grid.json``): ``{"times": [...], "sampler": ..., "options": ...,
"warmup": M, ...}``.
``--grid FILE.json`` reads such a file (only ``times`` is needed), so the fit is paid once. Every
other ``--grid`` value is a grid name and goes to the sampler as it is.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import torch

from ..core.score import ScoreModel
from ..samplers import SAMPLERS
from ..samplers.grid_search import GRID_SEARCH_SAMPLERS, optimised_grid

__all__ = ["FITTED", "check_fit", "fitted_grid_options", "read_grid", "grid_path"]

FITTED = "optimised"
# set by the fit, not options of it; ``eps`` goes to the fit as its own argument
_NOT_FIT = ("grid", "steps", "eps", "denoise", "callback")
_DEFAULT_STEPS = 10  # a sampler whose ``steps`` has no default


def read_grid(path: str | Path) -> torch.Tensor:
    """The ``times`` of a grid file (float64); a missing or malformed file: one ValueError."""
    path = Path(path)
    try:
        times = json.loads(path.read_text())["times"]
        t = torch.tensor(times, dtype=torch.float64)
    except FileNotFoundError:
        raise ValueError(f"--grid {path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"--grid {path}: not a grid file ({type(err).__name__}: {err}); it needs a JSON "
            'object with "times", a decreasing list of times from T to eps'
        ) from None
    if t.ndim != 1:
        raise ValueError(f'--grid {path}: "times" must be a flat list of numbers')
    return t


def grid_path(out: Path, kind: str) -> Path:
    """Where the fitted grid of a sample run goes: ``DIR/grid.json`` or ``FILE.grid.json``."""
    return out / "grid.json" if kind == "dir" else out.with_suffix(".grid.json")


def check_fit(sampler: str, warmup: int) -> None:
    """One ValueError unless ``sampler`` can be fitted a grid on ``warmup >= 2`` draws."""
    if sampler not in GRID_SEARCH_SAMPLERS:
        valid = ", ".join(s for s in GRID_SEARCH_SAMPLERS if s in SAMPLERS)
        raise ValueError(
            f"--grid {FITTED} fits a deterministic fixed-step sampler; --sampler {sampler} is "
            f"not one (valid: {valid})"
        )
    if warmup < 2:
        raise ValueError(f"--grid-warmup must be at least 2 draws, got {warmup}")


def _fit_steps(sampler: str, options: dict) -> int:
    steps = options.get("steps")
    if steps is None:
        steps = inspect.signature(SAMPLERS[sampler]).parameters["steps"].default
    return steps if isinstance(steps, int) else _DEFAULT_STEPS


def fitted_grid_options(
    model: ScoreModel,
    shape: tuple[int, ...],
    sampler: str,
    options: dict,
    *,
    warmup: int,
    seed: int,
    device: torch.device | str,
) -> tuple[dict, dict]:
    """``(options for the sampler, record)``: ``options`` with ``grid`` the times fitted by
    :func:`scoresde.optimised_grid` (and no ``steps``), and the JSON record of the fit."""
    check_fit(sampler, warmup)
    steps = _fit_steps(sampler, options)
    own = {k: v for k, v in options.items() if k not in _NOT_FIT}
    gen = torch.Generator(device=device).manual_seed(seed + 0x5EED)  # apart from the samples
    t0 = time.perf_counter()
    with torch.no_grad():
        times = optimised_grid(model.sde, model.score_fn, (warmup, *shape), steps,
                               sampler=sampler, options=own, eps=options.get("eps"),
                               generator=gen, device=device)  # fmt: skip
    record = {
        "times": times.tolist(), "sampler": sampler, "options": own, "steps": steps,
        "warmup": warmup, "seed": seed, "seconds": round(time.perf_counter() - t0, 3),
    }  # fmt: skip
    rest = {k: v for k, v in options.items() if k not in ("grid", "steps")}
    return {**rest, "grid": times}, record
