"""The two-minute demo: a VP-SDE score model on the 2-D swiss roll, and every picture of it.

``run_demo(out)`` trains the ``toy_swissroll_vp`` preset into ``out`` and writes there:

* ``samples.png``: held-out data, PC samples and probability-flow ODE samples side by side;
* ``trajectories.png``: paths of the plug-in reverse SDEs, lambda = 0 (reverse SDE) and lambda = 1
  (probability-flow ODE), sdeflow-light's Figure 5, coloured by t;
* ``field.png``: the learned score field and the log p_t it integrates to at several t;
* ``flow.gif``: points flowing from noise to data along the probability-flow ODE (frames evenly
  spaced in log-SNR);
* ``density.png``, ``density.gif``: the model's density against the data's, at the end and at
  every evaluation of the training (``density.npz``);
* ``curves.png`` (written by the training loop): the training and test DSM losses;
* ``metrics.json``: test NLL (nats, data units) with its standard error, two-sample distances to
  held-out data, NFEs and wall times.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.metrics import energy_distance
from ..data import load_data
from ..samplers import sample_ode, sample_pc
from ..training.checkpoint import load_model
from ..training.config import apply_overrides, load_config
from ..training.evaluate import dataset_nll
from ..training.loop import train
from ..viz import plots
from .plot import LAMBDAS, draw_animation, draw_density, draw_field, lambda_paths

__all__ = ["run_demo"]

PRESET = "toy_swissroll_vp"
TITLE = "VP-SDE on the swiss roll"


def _pictures_of_samples(model, cfg, std, test: torch.Tensor, n: int, g: torch.Generator,
                         out: Path):  # fmt: skip
    """``samples.png``: held-out data beside PC samples (the preset's predictor and corrector) and
    probability-flow ODE samples (data units)."""
    pc = {k: getattr(cfg.sample, k) for k in ("predictor", "corrector", "snr")}
    with torch.no_grad():
        y_pc, nfe_pc = sample_pc(model.sde, model.score_fn, (n, 2), generator=g, **pc)
        y_ode, nfe_ode = sample_ode(model.sde, model.score_fn, (n, 2), generator=g)
    x_pc, x_ode = std.inverse(y_pc), std.inverse(y_ode)
    plots.clouds(
        {
            "held-out data": test.numpy(),
            f"PC sampler ({nfe_pc} NFE)": x_pc.numpy(),
            f"probability-flow ODE ({nfe_ode} NFE)": x_ode.numpy(),
        },
        out / "samples.png",
        title=TITLE,
    )
    return {
        "energy_distance_pc": energy_distance(x_pc, test).item(),
        "energy_distance_ode": energy_distance(x_ode, test).item(),
        "nfe_pc": nfe_pc,
        "nfe_ode": nfe_ode,
    }


def _pictures_of_paths(model, std, n: int, g: torch.Generator, out: Path) -> None:
    """``trajectories.png`` (lambda = 0 and 1) and ``flow.gif`` (lambda = 1), in data units, at
    times evenly spaced in log-SNR."""
    times, paths = lambda_paths(model, std, 2, min(n, 1000), g)
    plots.trajectories(paths, out / "trajectories.png", times, title=f"{TITLE}: noise to data")
    labels = [f"probability-flow ODE, t = {t:.3g}" for t in times]
    plots.animate_clouds(paths[LAMBDAS[1][1]], out / "flow.gif", labels=labels)


def _pictures_of_fields(model, cfg, std, test: torch.Tensor, out: Path) -> None:
    """``field.png`` (score field and log p_t at several t), ``density.png`` (the model's density
    against the data's) and ``density.gif`` (that density at every evaluation of the training)."""
    data = test.double()
    draw_field(model, std, data, out / "field.png")
    draw_density(model, std, cfg, data, out / "density.png")
    draw_animation(out, data, out / "density.gif")


def run_demo(
    out: str | Path = "runs/demo",
    steps: int | None = None,
    n: int = 2000,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Train the swiss-roll preset into ``out``, draw every picture, return the metrics."""
    t_start = time.perf_counter()
    # The demo's MLP works on batches of a few hundred 2-D points: one thread is faster than
    # two (thread synchronisation outweighs the work), and leaves a core free.
    torch.set_num_threads(1)
    out = Path(out)
    sets = [f"train.seed={seed}"] + ([f"train.steps={steps}"] if steps else [])
    cfg = apply_overrides(load_config(PRESET), sets)
    log(f"training {PRESET} for {cfg.train.steps} steps into {out}")
    train(cfg, out, overwrite=True)  # the demo redraws its folder each time
    t_train = time.perf_counter() - t_start

    model, cfg, std = load_model(out, ema=True)
    model.eval()
    _, test, _ = load_data(cfg.data)
    test = test[:n]
    g = torch.Generator().manual_seed(seed)
    log("sampling (PC and ODE)")
    sampled = _pictures_of_samples(model, cfg, std, test, n, g, out)
    log("trajectories (lambda = 0 and 1) and the animation")
    _pictures_of_paths(model, std, n, g, out)
    log("score field and density")
    _pictures_of_fields(model, cfg, std, test, out)
    log("test likelihood")
    m = min(len(test), 1000)
    nll = dataset_nll(model, test[:m], cfg.data, std, divergence="exact", batch_size=m)
    metrics = {
        "preset": PRESET,
        "train_steps": cfg.train.steps,
        "test_nll": nll.nll.mean().item(),
        "test_nll_se": nll.nll.std().item() / math.sqrt(m),
        "test_nll_n": m,
        "energy_distance_pc": sampled["energy_distance_pc"],
        "energy_distance_ode": sampled["energy_distance_ode"],
        "energy_distance_train_vs_test": _reference_distance(cfg, test),
        "nfe_pc": sampled["nfe_pc"],
        "nfe_ode": sampled["nfe_ode"],
        "nfe_likelihood": nll.nfe,
        "train_seconds": round(t_train, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _reference_distance(cfg, test: torch.Tensor) -> float:
    """Energy distance between training and held-out data of the same size: the noise floor."""
    train_x, _, _ = load_data(cfg.data)
    return energy_distance(train_x[: len(test)], test).item()
