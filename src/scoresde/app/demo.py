"""The two-minute demo: a VP-SDE score model on the 2-D swiss roll, and every picture of it.

``run_demo(out)`` trains the ``toy_swissroll_vp`` preset into ``out`` and writes there:

* ``samples.png``: held-out data, PC samples and probability-flow ODE samples side by side;
* ``trajectories.png``: paths of the plug-in reverse SDEs, lambda = 0 (reverse SDE) and lambda = 1
  (probability-flow ODE), sdeflow-light's Figure 5;
* ``field.png``: the learned score field and the learned density log p_t at several t;
* ``flow.gif``: points flowing from noise to data along the probability-flow ODE;
* ``loss.png``: the training and test DSM losses;
* ``metrics.json``: test NLL (nats, data units) with its standard error, two-sample distances to
  held-out data, NFEs and wall times.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..core.likelihood import log_likelihood
from ..core.metrics import energy_distance
from ..data import load_data
from ..samplers import sample_lambda, sample_ode, sample_pc
from ..training.checkpoint import load_model
from ..training.config import apply_overrides, load_config
from ..training.evaluate import dataset_nll
from ..training.loop import train
from ..viz import plots

__all__ = ["run_demo"]

PRESET = "toy_swissroll_vp"
FIELD_TIMES = (0.01, 0.05, 0.1, 0.2, 0.4)


def _paths(model, n: int, lam: float, steps: int, frames: int, g: torch.Generator) -> np.ndarray:
    """``(frames, n, 2)`` snapshots of the plug-in reverse SDE with parameter ``lam``."""
    keep = set(np.linspace(0, steps - 1, frames - 1).round().astype(int).tolist())
    snaps: list[torch.Tensor] = []

    def record(i: int, t: torch.Tensor, x: torch.Tensor, x_mean: torch.Tensor) -> None:
        if i in keep:
            snaps.append(x.detach().clone())

    z = model.sde.prior_sampling((n, 2), generator=g)
    with torch.no_grad():
        x, _ = sample_lambda(
            model.sde,
            model.score_fn,
            (n, 2),
            lam=lam,
            steps=steps,
            z=z,
            generator=g,
            callback=record,
        )
    return torch.stack([z, *snaps[: frames - 2], x]).numpy()


def _field(model, box, t_values) -> tuple[Callable, Callable]:
    sde = model.sde

    def score(points: np.ndarray, t: float) -> np.ndarray:
        x = torch.as_tensor(points, dtype=torch.float32)
        with torch.no_grad():
            return model.score_fn(x, torch.full((len(x),), t)).numpy()

    def log_density(points: np.ndarray, t: float) -> np.ndarray:
        x = torch.as_tensor(points, dtype=torch.float32)
        lp, _, _ = log_likelihood(
            sde, model.score_fn, x, divergence="exact", eps=t, rtol=1e-4, atol=1e-4
        )
        return lp.detach().numpy()

    return score, log_density


def _pictures_of_samples(model, std, test: torch.Tensor, n: int, g: torch.Generator, out: Path):
    """``samples.png``: held-out data beside PC and probability-flow ODE samples (data units)."""
    with torch.no_grad():
        y_pc, nfe_pc = sample_pc(model.sde, model.score_fn, (n, 2), generator=g)
        y_ode, nfe_ode = sample_ode(model.sde, model.score_fn, (n, 2), generator=g)
    x_pc, x_ode = std.inverse(y_pc), std.inverse(y_ode)
    plots.clouds(
        {
            "held-out data": test.numpy(),
            f"PC sampler ({nfe_pc} NFE)": x_pc.numpy(),
            f"probability-flow ODE ({nfe_ode} NFE)": x_ode.numpy(),
        },
        out / "samples.png",
        title="VP-SDE on the swiss roll",
    )
    return {
        "energy_distance_pc": energy_distance(x_pc, test).item(),
        "energy_distance_ode": energy_distance(x_ode, test).item(),
        "nfe_pc": nfe_pc,
        "nfe_ode": nfe_ode,
    }


def _pictures_of_paths(model, std, n: int, g: torch.Generator, out: Path) -> None:
    """``trajectories.png`` (lambda = 0 and 1) and ``flow.gif`` (lambda = 1), in data units."""
    p0 = _paths(model, min(n, 1000), 0.0, 500, 60, g)
    p1 = _paths(model, min(n, 1000), 1.0, 500, 60, g)
    unstd = lambda p: std.inverse(torch.as_tensor(p).reshape(-1, 2)).reshape(p.shape).numpy()
    plots.trajectories(
        {"λ = 0: reverse SDE": unstd(p0), "λ = 1: probability-flow ODE": unstd(p1)},
        out / "trajectories.png",
        n_lines=12,
    )
    labels = [f"t = {t:.2f}" for t in np.linspace(1.0, 0.0, len(p1))]
    plots.animate_clouds(unstd(p1), out / "flow.gif", labels=labels)


def _pictures_of_fields(model, std, test: torch.Tensor, out: Path) -> None:
    """``field.png`` (score field and log p_t at ``FIELD_TIMES``) and ``loss.png``."""
    box = plots.limits(std.forward(test).numpy(), pad=0.25)
    score, log_density = _field(model, box, FIELD_TIMES)
    plots.field_and_density(score, log_density, FIELD_TIMES, box, out / "field.png")
    plots.loss_curves(out / "metrics.csv", out / "loss.png", keys=("train_loss", "test_loss"))


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
    sampled = _pictures_of_samples(model, std, test, n, g, out)
    log("trajectories (lambda = 0 and 1) and the animation")
    _pictures_of_paths(model, std, n, g, out)
    log("score field and density")
    _pictures_of_fields(model, std, test, out)
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
