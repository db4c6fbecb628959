"""The pictures of a run folder (``scoresde plot``) and the pieces the demo draws with.

``plot_run(workdir, what)`` draws one picture of a 1-D or 2-D run (image runs: ``curves`` only):

* ``curves``: ``curves.png``, train and test DSM loss (and test bits/dim) from ``metrics.csv``;
* ``trajectories``: ``trajectories.png``, paths of the plug-in reverse SDEs lambda = 0 (reverse
  SDE) and lambda = 1 (probability-flow ODE) from noise to data, coloured by t;
* ``field``: ``field.png``, the learned score and the log-density it integrates to at several t;
* ``density``: ``density.png``, the model's density at the sampler's final time (probability-flow
  likelihood on a grid) against the data's histogram and KDE (and a toy mixture's exact density);
* ``animation``: ``density.gif``, that density at every evaluation of the training
  (``density.npz``, written by the training loop).

Every picture is in data units. Paths are recorded at times evenly spaced in log-SNR
(:func:`frame_times`): uniform in t, most frames would show the same Gaussian blob.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.checks import default_eps
from ..core.score import ScoreModel
from ..core.sde import SDE
from ..data import Standardizer, load_data
from ..data.toy import TOY_MIXTURES, toy_mixture
from ..samplers import grids, sample_lambda
from ..training.checkpoint import load_model
from ..training.config import Config, load_config
from ..training.density import (
    SNAPSHOT,
    grid_axes,
    integrate_score,
    log_density_on_grid,
    read_snapshots,
    score_on_grid,
)
from ..viz import plots

__all__ = ["WHAT", "FIELD_TIMES", "frame_times", "flow_paths", "lambda_paths", "plot_run"]
__all__ += ["draw_field", "draw_density", "draw_animation", "draw_curves"]

WHAT = ("curves", "trajectories", "field", "density", "animation")
PICTURE = dict(zip(WHAT, ("curves.png", "trajectories.png", "field.png", "density.png")))
PICTURE["animation"] = "density.gif"
FIELD_TIMES = (0.01, 0.05, 0.1, 0.2, 0.4)
LAMBDAS = ((0.0, "λ = 0: reverse SDE"), (1.0, "λ = 1: probability-flow ODE"))


def frame_times(sde: SDE, frames: int, eps: float | None = None) -> Tensor:
    """``frames`` times from ``T`` down to ``eps`` (default: the sampler's final time), evenly
    spaced in the log-SNR ``sde.log_snr(t)`` (float64)."""
    eps = default_eps(sde) if eps is None else eps
    return grids.log_snr(sde, frames - 1, eps, dtype=torch.float64)


def flow_paths(
    model: ScoreModel,
    n: int,
    dim: int,
    lam: float,
    frames: int = 60,
    substeps: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, Tensor]:
    """``(times (frames,), paths (frames, n, dim))`` of the plug-in reverse SDE ``lam`` (model
    units).

    Euler-Maruyama runs on a grid uniform in log-SNR with ``substeps`` steps between frames, so
    the frames fall on :func:`frame_times` exactly.
    """
    sde = model.sde
    fine = grids.log_snr(sde, (frames - 1) * substeps, default_eps(sde))
    z = sde.prior_sampling((n, dim), generator=generator)
    snaps = [z]

    def record(i: int, t: Tensor, x: Tensor, x_mean: Tensor) -> None:
        if (i + 1) % substeps == 0:
            snaps.append(x.detach().clone())

    with torch.no_grad():
        sample_lambda(sde, model.score_fn, (n, dim), lam=lam, grid=fine, z=z, generator=generator,
                      callback=record)  # fmt: skip
    return fine[::substeps].double().numpy(), torch.stack(snaps)


def _data_units(std: Standardizer | None, x: Tensor) -> np.ndarray:
    return (x if std is None else std.inverse(x)).numpy()


def lambda_paths(
    model: ScoreModel,
    std: Standardizer | None,
    dim: int,
    n: int,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(times, {name: paths in data units})`` for lambda = 0 and lambda = 1."""
    paths = {}
    for lam, name in LAMBDAS:
        times, p = flow_paths(model, n, dim, lam, generator=generator)
        paths[name] = _data_units(std, p)
    return times, paths


def draw_field(model: ScoreModel, std: Standardizer | None, data: Tensor, path: Path) -> Path:
    """``field.png``: the learned score and the log-density it integrates to at
    :data:`FIELD_TIMES`, on a grid over ``data`` (data units)."""
    axes = grid_axes(data, 400 if data.shape[1] == 1 else 80)
    scores = np.stack([score_on_grid(model, std, axes, t) for t in FIELD_TIMES])
    logs = np.stack([integrate_score(s, axes) for s in scores])
    return plots.field_and_density(axes, scores, logs, FIELD_TIMES, path)


def _exact(cfg: Config, axes: list[np.ndarray]) -> np.ndarray | None:
    """The known log p_0 of a toy mixture on the grid (None for other data)."""
    if cfg.data.path is not None or cfg.data.name not in TOY_MIXTURES:
        return None
    mesh = np.stack(np.meshgrid(*axes), -1).reshape(-1, len(axes))
    logp = toy_mixture(cfg.data.name).log_prob(torch.as_tensor(mesh)).numpy()
    return logp if len(axes) == 1 else logp.reshape(len(axes[1]), len(axes[0]))


def draw_density(
    model: ScoreModel, std: Standardizer | None, cfg: Config, data: Tensor, path: Path
) -> Path:
    """``density.png``: the model's density at the sampler's final time (probability-flow
    likelihood on a grid) against the held-out ``data`` (data units)."""
    axes = grid_axes(data, 400 if data.shape[1] == 1 else 64)
    t = default_eps(model.sde)
    logp = log_density_on_grid(model, std, axes, t)
    title = f"{cfg.data.name if cfg.data.path is None else Path(cfg.data.path).name}: density"
    return plots.density(axes, logp, data.numpy(), path, t, _exact(cfg, axes), title=title)


def draw_animation(workdir: Path, data: Tensor, path: Path) -> Path:
    """``density.gif``: the snapshots of ``density.npz``, one frame per evaluation."""
    file = workdir / SNAPSHOT
    if not file.is_file():
        raise ValueError(f"no {SNAPSHOT} in {workdir}: it is written at each evaluation of a "
                         "1-D or 2-D run")  # fmt: skip
    snap = read_snapshots(file)
    axes = [snap[k] for k in ("x0", "x1") if k in snap]
    return plots.animate_density(
        axes, snap["log_density"], snap["steps"], path, data.numpy(), float(snap["t"])
    )


def draw_curves(workdir: Path, path: Path) -> Path:
    """``curves.png`` from ``metrics.csv``; the bits/dim panel names ``train.bpd_n``."""
    metrics = workdir / "metrics.csv"
    if not metrics.is_file():
        raise ValueError(f"no metrics.csv in {workdir}: is it a training run folder?")
    config = workdir / "config.yaml"
    bpd_n = load_config(config).train.bpd_n if config.is_file() else None
    return plots.training_curves(metrics, path, bpd_n=bpd_n)


def _dim(cfg: Config, what: str, workdir: Path) -> int:
    """The data dimension of a 1-D or 2-D run; a ``ValueError`` in one line for other runs."""
    shape = tuple(cfg.data.shape or ())
    if len(shape) != 1 or shape[0] > 2:
        raise ValueError(f"--what {what} needs a 1-D or 2-D run; {workdir} holds data of shape "
                         f"{shape} (image runs: --what curves)")  # fmt: skip
    return shape[0]


def _held_out(cfg: Config, n: int) -> Tensor:
    """The run's test split in data units (at most ``n`` rows)."""
    try:
        _, test, _ = load_data(cfg.data)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot reload the run's data ({e})") from None
    return test[:n].double()


def plot_run(
    workdir: str | Path,
    what: str = "curves",
    out: str | Path | None = None,
    n: int = 1000,
    seed: int = 0,
) -> Path:
    """Draw the picture ``what`` (one of :data:`WHAT`) of the run in ``workdir``; returns its path
    (default ``workdir/<picture>``, module docstring). ``n``: paths or held-out points drawn."""
    if what not in WHAT:
        raise ValueError(f"--what must be one of {', '.join(WHAT)}, got {what!r}")
    workdir = Path(workdir)
    out = Path(out) if out else workdir / PICTURE[what]
    if what == "curves":
        return draw_curves(workdir, out)
    model, cfg, std = load_model(workdir, ema=True)
    dim = _dim(cfg, what, workdir)
    if what == "trajectories":
        times, paths = lambda_paths(model, std, dim, n, torch.Generator().manual_seed(seed))
        return plots.trajectories(paths, out, times)
    data = _held_out(cfg, n)
    draw: dict[str, Callable[[], Path]] = {
        "field": lambda: draw_field(model, std, data, out),
        "density": lambda: draw_density(model, std, cfg, data, out),
        "animation": lambda: draw_animation(workdir, data, out),
    }
    return draw[what]()
