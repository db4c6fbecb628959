"""Training steps per second with 1 and 2 processes (torchrun + gloo, DistributedDataParallel).

Configurations: the toy preset ``toy_swissroll_vp`` (a 3-layer MLP on 2-D points) and the small
image preset ``digits_vp`` (a U-Net on 8x8 digits), each at its preset's global batch B and at 2B.
Runs, each in a fresh process (``torchrun --standalone`` for 2 processes), evaluation, samples and
checkpoints off except the one final checkpoint and evaluation, which are outside the timed window:

* ``1p1t``: one process, one thread;   * ``1p2t``: one process, two threads (the whole machine);
* ``2p1t``: two processes of one thread each (what ``torchrun --nproc_per_node=2`` starts).

Steps per second are timed by the training callback between step ``warm`` and the step before the
last (so start-up, the first steps and the final evaluation are excluded); each run is repeated
``--repeats`` times and the median is kept (the spread is recorded). Definitions, at global batch B:

* ``efficiency = sps(2p1t, B) / (2 * sps(1p1t, B))`` -- strong scaling: 1.0 when two processes,
  each computing B/2 examples, finish a step twice as fast as one process computing all B;
* ``speedup_vs_1p2t = sps(2p1t, B) / sps(1p2t, B)`` -- the practical question on this machine:
  two processes against one process using both cores through intra-op threads.

The machine (2 cores) is shared: the 1-minute load average before and after every run is recorded.
Writes ``bench/results/ddp_scaling.json`` and prints a table.
Run: ``.venv/bin/python bench/ddp_scaling.py [--repeats 3] [--only toy,digits]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "ddp_scaling.json"
CONFIGS = {  # name -> (preset, overrides, timed steps, warm-up steps excluded)
    "toy": ("toy_swissroll_vp", [], 300, 30),
    "digits": ("digits_vp", [], 80, 10),
}
RUNS = {"1p1t": (1, 1), "1p2t": (1, 2), "2p1t": (2, 1)}  # name -> (processes, threads each)


def worker(args: argparse.Namespace) -> None:
    """Train ``args.steps`` steps; rank 0 writes the callback's timestamps to ``args.out``."""
    import torch

    from scoresde.training.config import apply_overrides, load_config
    from scoresde.training.loop import train

    torch.set_num_threads(args.threads)
    sets = [
        f"train.steps={args.steps}", f"train.batch_size={args.batch}", "train.eval_every=0",
        "train.ckpt_every=0", "train.sample_every=0", "train.bpd_every=0",
        f"train.log_every={args.steps}", "train.tensorboard=false", *args.set,
    ]  # fmt: skip
    cfg = apply_overrides(load_config(args.preset), sets)
    stamps: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        train(cfg, workdir, callback=lambda step, m: stamps.__setitem__(step, time.perf_counter()))
    if int(os.environ.get("RANK", "0")) == 0:
        w, last = args.warm, args.steps - 1
        sps = (last - w) / (stamps[last] - stamps[w])
        Path(args.out).write_text(json.dumps({"sps": sps}))


def run_once(config: str, run: str, batch: int, repeat_out: Path) -> dict:
    """One measurement in fresh processes; returns steps/s and the load around it."""
    preset, sets, steps, warm = CONFIGS[config]
    procs, threads = RUNS[run]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    script = [str(Path(__file__).resolve()), "--worker", "--preset", preset]
    script += ["--batch", str(batch), "--steps", str(steps), "--warm", str(warm)]
    script += ["--threads", str(threads), "--out", str(repeat_out)]
    script += [a for s in sets for a in ("--set", s)]
    launch = [sys.executable]
    if procs > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    load0 = os.getloadavg()[0]
    subprocess.run([*launch, *script], env=env, check=True, capture_output=True, text=True)
    return {"sps": json.loads(repeat_out.read_text())["sps"], "load": [load0, os.getloadavg()[0]]}


def measure(config: str, run: str, batch: int, repeats: int, tmp: Path) -> dict:
    rows = [run_once(config, run, batch, tmp / "sps.json") for _ in range(repeats)]
    sps = [r["sps"] for r in rows]
    return {
        "config": config, "run": run, "batch": batch, "sps": statistics.median(sps),
        "sps_all": sps, "load": [r["load"] for r in rows],
        "examples_per_s": statistics.median(sps) * batch,
    }  # fmt: skip


def summarize(results: list[dict]) -> list[dict]:
    """Efficiency and speed-up per (config, batch) from the medians."""
    by = {(r["config"], r["batch"], r["run"]): r["sps"] for r in results}
    out = []
    for config, batch in sorted({(r["config"], r["batch"]) for r in results}):
        s = {run: by[(config, batch, run)] for run in RUNS}
        out.append({
            "config": config, "batch": batch, **{f"sps_{k}": v for k, v in s.items()},
            "efficiency": s["2p1t"] / (2 * s["1p1t"]),
            "speedup_vs_1p2t": s["2p1t"] / s["1p2t"],
        })  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset")
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--warm", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default=",".join(CONFIGS))
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from scoresde.training.config import load_config

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.only.split(","):
            b = load_config(CONFIGS[config][0]).train.batch_size
            for batch in (b, 2 * b):
                for run in RUNS:
                    r = measure(config, run, batch, args.repeats, Path(tmp))
                    results.append(r)
                    each = ", ".join(f"{v:.1f}" for v in r["sps_all"])
                    print(
                        f"  {config} B={batch} {run}: {r['sps']:.2f} steps/s ({each})", flush=True
                    )
    table = summarize(results)
    meta = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": __import__("torch").__version__,
        "repeats": args.repeats,
        "note": "2-core machine shared with other work; load averages recorded per run",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "results": results, "summary": table}, indent=2))
    keys = ("sps_1p1t", "sps_1p2t", "sps_2p1t", "efficiency", "speedup_vs_1p2t")
    print(
        "\n"
        + " ".join(f"{h:>9s}" for h in ("config", "B", "1p1t", "1p2t", "2p1t", "eff", "vs 1p2t"))
    )
    for t in table:
        cells = [f"{t['config']:>9s}", f"{t['batch']:9d}", *(f"{t[k]:9.2f}" for k in keys)]
        print(" ".join(cells))
    print(f"steps/s, median of {args.repeats} runs; eff = 2p1t / (2 * 1p1t); wrote {OUT}")


if __name__ == "__main__":
    main()
