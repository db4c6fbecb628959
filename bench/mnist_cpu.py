"""MNIST on a CPU: train a preset on a fixed compute budget, then test bits/dim and sample grids.

Stages (each writes into ``--workdir``; the summary goes to ``bench/results/mnist_cpu.json`` and a
table is printed):

1. train ``--preset`` (default ``mnist_vp`` with likelihood weighting and importance sampling of
   t) until the budget is spent: ``--minutes`` of wall time, or with ``--budget cpu`` (default)
   ``--minutes * --threads`` minutes of process CPU time, which is the same compute on dedicated
   cores and stays fair when the machine is shared. Training runs in chunks of ``--chunk`` steps
   (each ends with the test DSM loss, test bits/dim on ``train.bpd_n`` images and a checkpoint);
   ``--resume`` continues a killed run;
2. test bits/dim of the EMA model on the first ``--n-test`` test images: uniform dequantization,
   one Rademacher probe per image, dopri5 at rtol = atol = 1e-5 from t = 1e-5; mean, standard
   error and median (the mean is sensitive to a few images whose solve is poor);
3. a 64-sample grid with the preset's sampler, and grids of the fast samplers at NFE 10 / 20 / 50.

The summary also gives the floor that the likelihood's start time puts under any model: a perfect
model's p_eps is the dequantized data blurred by N(0, sigma(eps)^2). Inside the range that costs
little (neighbouring bins are about as likely), but a pixel at 0 or 255 sits on a hard edge of
the range, and where the next value is rare too (MNIST's background) both edges of its bin of
width w = scale / 256 are hard: it loses -E_u log2[Phi(u / sigma) - Phi((u - w) / sigma)] bits,
u uniform on [0, w]. Summed over the test set's edge pixels: for MNIST (81 % of pixels at 0 or
255) at eps = 1e-5 of the VP SDE (sigma = 1.0e-3) 0.29 bits/dim in [0, 1] and 0.15 in the centered
[-1, 1] (w twice as wide), so the preset trains in the centered space. The range's outer edge
alone, a strict lower bound, costs half of each (0.14 and 0.07).

    python bench/mnist_cpu.py [--minutes 60] [--budget cpu|wall] [--threads 2] [--preset mnist_vp]
        [--set train.lr=2e-3 ...] [--workdir runs/mnist_cpu] [--resume] [--n-test 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from scoresde.app.cli import main as cli_main
from scoresde.data import load_data
from scoresde.training.checkpoint import load_model
from scoresde.training.config import apply_overrides, build_sde, load_config
from scoresde.training.evaluate import dataset_nll
from scoresde.training.loop import train
from scoresde.viz import plots

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "mnist_cpu.json"
DEFAULT_SETS = ("train.weighting=likelihood", "train.importance=true", "train.bpd_n=64")


def edge_floor_bpd(x: torch.Tensor, sigma: float, width: float) -> float:
    """Bits/dim that a perfect model loses at the range's edges (see the module docstring):
    ``x`` the uint8 images, ``sigma`` the noise std at eps, ``width`` one bin in model space."""
    u = (torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000 * width
    normal = torch.distributions.Normal(0.0, sigma)
    lost = -torch.log2(normal.cdf(u) - normal.cdf(u - width)).mean().item()
    return lost * ((x == 0) | (x == 255)).double().mean().item()


def _clock(budget: str) -> float:
    return time.process_time() if budget == "cpu" else time.perf_counter()


def train_on_budget(cfg, workdir: Path, limit_s: float, budget: str, chunk: int, resume: bool):
    """Train in chunks of at most ``chunk`` steps until ``limit_s`` seconds of the budget's clock.

    Each chunk after the first is cut to the steps that the last chunk's cost per step says still
    fit in the budget, so a run ends within about one step's cost of ``limit_s``. A decaying
    ``train.lr_schedule`` ends with the budget: after each chunk its last step (``train.steps``,
    capped at the configured value) becomes the last step that the budget is estimated to reach.
    """
    used_file = workdir / "budget_used.json"
    record = json.loads(used_file.read_text()) if resume and used_file.is_file() else {}
    used, step = record.get("used_s", 0.0), record.get("step", 0)
    wall0, per_step, cap = time.perf_counter(), record.get("per_step_s"), cfg.train.steps
    metrics: dict = {}
    while step < cfg.train.steps:
        left = None if per_step is None else int((limit_s - used) / per_step)
        n = chunk if left is None else min(chunk, left)
        if n < 1:
            break
        if left is not None and cfg.train.lr_schedule != "constant":
            horizon = dataclasses.replace(cfg.train, steps=min(cap, step + left))
            cfg = dataclasses.replace(cfg, train=horizon)
        t0 = _clock(budget)
        metrics = train(cfg, workdir, resume=resume or step > 0, max_steps=step + n)
        spent = _clock(budget) - t0
        used, per_step = used + spent, spent / max(metrics["step"] - step, 1)
        step = metrics["step"]
        record = {"used_s": used, "step": step, "per_step_s": per_step}
        used_file.write_text(json.dumps(record))
        print(
            f"step {step:6d}  used {used / 60:6.1f} / {limit_s / 60:.0f} min  "
            f"test DSM {metrics['test_loss']:.4g}  "
            f"test bpd {metrics.get('test_bpd', math.nan):.4g}  last step {cfg.train.steps}",
            flush=True,
        )
    return step, used, time.perf_counter() - wall0, metrics


def _cli(*argv: str) -> str:
    """Run a ``scoresde`` verb in this process; return what it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli_main(list(argv))
    if code != 0:
        raise RuntimeError(f"scoresde {' '.join(argv)} exited with {code}")
    return buf.getvalue()


def _edge_floor(cfg, x: torch.Tensor) -> float:
    """:func:`edge_floor_bpd` of the test images ``x`` at the run's eps (``cfg``: its config)."""
    sigma = float(build_sde(cfg.sde).sigma(torch.tensor([cfg.train.eps], dtype=torch.float64)))
    return edge_floor_bpd(x, sigma, cfg.data.scale / 256)


def test_bits_per_dim(workdir: Path, n: int, batch: int, seed: int) -> tuple[dict, float]:
    """Bits/dim of the EMA model on the first ``n`` test images: mean, SE, median (the JSON of
    ``scoresde likelihood``, also written to ``<workdir>/likelihood.json``), and the floor from
    eps at the range's edges of the same images."""
    t0 = time.perf_counter()
    model, cfg, standardizer = load_model(workdir, ema=True)
    _, x, _ = load_data(cfg.data)
    nll = dataset_nll(model.eval(), x[:n], cfg.data, standardizer, divergence="rademacher",
                      batch_size=batch, seed=seed)  # fmt: skip
    result = nll.summary()
    (workdir / "likelihood.json").write_text(json.dumps(result, indent=2) + "\n")
    return {**result, "seconds": time.perf_counter() - t0}, _edge_floor(cfg, x[:n])


# name -> CLI options for an NFE budget k; each uses exactly k score evaluations
FAST = {
    "euler_maruyama": lambda k: ["--predictor", "euler_maruyama", "--corrector", "none",
                                 "--steps", str(k)],
    "heun": lambda k: ["--sampler", "heun", "--steps", str((k + 1) // 2)],
    "dpm_solver3": lambda k: ["--sampler", "dpm_solver", "--steps", str(k), "--order", "3"],
    "dpm_solver++2m": lambda k: ["--sampler", "dpm_solver", "--steps", str(k), "--order", "2",
                                 "--dpm-method", "multistep"],
}  # fmt: skip


def sample_grids(workdir: Path, nfes: tuple[int, ...], seed: int) -> dict:
    """``scoresde sample``: 64 samples with the preset's sampler, and each fast sampler."""
    runs = {"preset": []} | {f"{name}@{k}": opts(k) for name, opts in FAST.items() for k in nfes}
    out = {}
    for label, opts in runs.items():
        stem = "grid" if label == "preset" else f"grid_{label.replace('@', '_nfe')}"
        t0 = time.perf_counter()
        printed = _cli("sample", "--workdir", str(workdir), "--n", "64", "--seed", str(seed),
                       "--device", "cpu", "--out", str(workdir / f"{stem}.npz"), *opts)  # fmt: skip
        nfe = int(re.search(r"nfe=(\d+)", printed).group(1))
        samples = np.load(workdir / f"{stem}.npz")["samples"]
        png = plots.image_grid(samples, workdir / f"{stem}.png", title=f"{label}, NFE {nfe}")
        out[label] = {"path": str(png), "nfe": nfe, "seconds": time.perf_counter() - t0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mnist_vp")
    ap.add_argument("--set", action="append", default=[], help="extra config override")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--budget", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1000, help="steps between evaluations")
    ap.add_argument("--steps", type=int, default=100_000, help="upper bound on training steps")
    ap.add_argument("--workdir", default="runs/mnist_cpu")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=250, help="images per likelihood solve")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true", help="evaluate an existing run")
    ap.add_argument("--out", default=str(OUT), help=f"summary JSON (default {OUT})")
    ap.add_argument("--skip-grids", action="store_true", help="no sample grids (short screens)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    sets = [*DEFAULT_SETS, f"train.steps={args.steps}", f"train.eval_every={args.chunk}"]
    sets += [f"train.bpd_every={args.chunk}", "train.sample_every=0", *args.set]
    cfg = apply_overrides(load_config(args.preset), sets)
    factor = args.threads if args.budget == "cpu" else 1
    limit = args.minutes * 60 * factor

    result: dict = {"preset": args.preset, "overrides": sets, "threads": args.threads}
    result |= {"budget": args.budget, "budget_minutes": args.minutes, "machine": platform.machine()}
    if not args.skip_train:
        workdir.mkdir(parents=True, exist_ok=True)
        step, used, wall, last = train_on_budget(
            cfg, workdir, limit, args.budget, args.chunk, args.resume
        )
        result["train"] = {"steps": step, "budget_used_s": used, "wall_s": wall, "last": last}
    elif (workdir / "budget_used.json").is_file():  # what an earlier (killed) training recorded
        result["train_recorded"] = json.loads((workdir / "budget_used.json").read_text())
    result["test"], result["edge_floor_bpd"] = test_bits_per_dim(
        workdir, args.n_test, args.batch, args.seed
    )
    if not args.skip_grids:
        result["grids"] = sample_grids(workdir, (10, 20, 50), args.seed)
    result["curves"] = str(plots.training_curves(workdir / "metrics.csv", workdir / "curves.png"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    te = result["test"]
    print("\n| quantity | value |\n|---|---|")
    if "train_recorded" in result:
        rec = result["train_recorded"]
        print(f"| training steps (recorded) | {rec['step']} |")
        print(f"| budget used ({args.budget}, recorded) | {rec['used_s'] / 60:.1f} min |")
    if "train" in result:
        tr = result["train"]
        print(f"| training steps | {tr['steps']} |")
        print(f"| training wall time | {tr['wall_s'] / 60:.1f} min |")
        print(f"| budget used ({args.budget}) | {tr['budget_used_s'] / 60:.1f} min |")
    print(f"| test bits/dim (n={te['n']}) | {te['bpd']:.4f} ± {te['bpd_se']:.4f} |")
    print(f"| median bits/dim | {te['bpd_median']:.4f} |")
    print(f"| floor from eps at the range's edges | {result['edge_floor_bpd']:.4f} |")
    print(f"| likelihood NFE (all batches) | {te['nfe']} |")
    if "grids" in result:
        print(f"| grid | {result['grids']['preset']['path']} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
