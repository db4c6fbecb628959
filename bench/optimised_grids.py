"""Optimised time grids against each sampler's default grid, on mixtures with exact scores.

Targets, samplers' start draws and statistics are those of ``peers.py`` (imported from it): the
2-D mixture under VE and VP and the 64-D mixture under VP; ``logp_gap`` and ``sw1`` of the samples
at p_eps against exact draws, and the noise floor of both between two exact sets. Also:

* ``path_err``: mean ||x - x_ode||^2 against the accurate solve of the probability-flow ODE from
  the same start draws (DPM-Solver++(3M), 1000 steps), the error a grid can remove; that solve's
  own ``logp_gap`` / ``sw1`` (``ode``) are what a perfect ODE sampler scores from these draws.

Grids, for each NFE in 5, 10, 20 (one evaluation per step for every sampler here):

* ``default``: the sampler's own default (logSNR for DDIM, UniPC, DEIS, DPM-Solver++; EDM for
  iPNDM);
* ``gits``: :func:`scoresde.optimised_grid` with DDIM costs only (``max_runs=0``, GITS), one grid
  per NFE shared by every sampler;
* ``fitted``: :func:`scoresde.optimised_grid` fitted to that sampler (DP start, then the descent on
  its own end-point error).

Warm-up: 256 prior draws (independent of the evaluation draws), 120 candidates, 2 teacher steps
each; its cost ``warmup_calls`` counts batched evaluations of the score (each over the 256
latents), the teacher's 240 included.

Writes ``bench/results/optimised_grids.json`` and prints one table per target. Run:
``.venv/bin/python bench/optimised_grids.py [--n2 N] [--n64 N] [--nfe 5 10 20]`` (minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from common import mixture_2d
from fast_samplers import mixture_64d
from peers import OURS, SDES, TARGETS, Counted, Scorer

import scoresde as sd
from scoresde.samplers import default_eps

F64 = torch.float64
# name -> (sampler, options): DDIM and the higher-order samplers of peers.py
SAMPLERS = {"ddim": ("dpm_solver", dict(order=1, method="multistep"))} | {
    name: OURS[name][:2] for name in ("unipc_bh2_2", "deis_3", "dpm_solver++3M", "ipndm_4")
}
GRIDS = ("default", "gits", "fitted")


def fit(sde, score_fn, nfe: int, warmup: torch.Tensor, sampler: str, options: dict, runs: int):
    """One optimised grid, its warm-up evaluations and seconds."""
    counted = Counted(score_fn)
    t0 = time.perf_counter()
    t = sd.optimised_grid(sde, counted, warmup, nfe, sampler=sampler, options=options,
                          max_runs=runs)  # fmt: skip
    return t, counted.calls, time.perf_counter() - t0


def measure(sde, score_fn, z, x_ode, scorer, sampler, options, grid) -> dict:
    """A sampler from ``z`` on ``grid`` (a name's steps or a tensor): peers' statistics and the
    error against the ODE solve."""
    kw = dict(steps=grid) if isinstance(grid, int) else dict(grid=grid)
    x, nfe = sd.sample(sde, score_fn, None, sampler=sampler, z=z, **kw, **options)
    err = (x - x_ode).reshape(len(x), -1).square().sum(-1).mean().item()
    return {"nfe": nfe, "path_err": err, **scorer(x)}


def sweep(target: str, sde_name: str, n: int, nfes: list[int], m: int, seed: int):
    """Every sampler and grid at every NFE on one (target, SDE)."""
    mix = mixture_2d() if target == "2d" else mixture_64d()
    sde = SDES[sde_name]()
    eps, score_fn = default_eps(sde), mix.score_fn(sde)
    z = mix.sample_t(n, sde, sde.T, torch.Generator().manual_seed(seed))  # as peers.py
    scorer = Scorer(mix, sde, eps, n, seed + 10)
    x_ode, _ = sd.sample_dpm_solver(sde, score_fn, None, steps=1000, order=3, method="multistep",
                                    z=z)  # fmt: skip
    warmup = sde.prior_sampling((m, mix.dim), torch.Generator().manual_seed(seed + 30), dtype=F64)
    head = {"floor": scorer.floor(seed + 20), "ode": scorer(x_ode)}
    rows = []
    for nfe in nfes:
        gits = fit(sde, score_fn, nfe, warmup, "ddim", {}, 0)
        for name, (sampler, options) in SAMPLERS.items():
            fitted = fit(sde, score_fn, nfe, warmup, sampler, options, 300)
            for grid, (t, calls, secs) in zip(GRIDS, [(nfe, 0, 0.0), gits, fitted]):
                r = measure(sde, score_fn, z, x_ode, scorer, sampler, options, t)
                rows.append({"target": target, "sde": sde_name, "sampler": name, "grid": grid,
                             "nfe_asked": nfe, "warmup_calls": calls, "warmup_seconds": secs,
                             "times": t.tolist() if grid != "default" else None, **r})  # fmt: skip
                print(f"{target} {sde_name} {name:15} {grid:8} nfe {r['nfe']:3d} "
                      f"gap {r['logp_gap']:+.4f} sw1 {r['sw1']:.4f} err {r['path_err']:.2e} "
                      f"warm-up {calls} calls {secs:.1f}s", flush=True)  # fmt: skip
    return rows, head


def print_table(rows: list[dict], heads: dict, nfes: list[int]) -> None:
    """One table per (target, SDE): logp gap, sliced W1 and path error by NFE and grid."""
    for key, head in heads.items():
        target, sde_name = key.split("/")
        fl, ode = head["floor"], head["ode"]
        print(f"\n{target} {sde_name}: logp gap (nats) | sliced W1 | path error; noise floor gap "
              f"{fl['logp_gap']:+.4f} sw1 {fl['sw1']:.4f}; ODE solve gap {ode['logp_gap']:+.4f} "
              f"sw1 {ode['sw1']:.4f}")  # fmt: skip
        print(f"{'sampler':15} {'grid':8}" + "".join(f"{'NFE ' + str(n):>27}" for n in nfes))
        mine = [r for r in rows if (r["target"], r["sde"]) == (target, sde_name)]
        for name, grid in dict.fromkeys((r["sampler"], r["grid"]) for r in mine):
            cells = []
            for n in nfes:
                r = next(r for r in mine if (r["sampler"], r["grid"], r["nfe_asked"]) ==
                         (name, grid, n))  # fmt: skip
                cells.append(f"{r['logp_gap']:+8.3f} {r['sw1']:7.4f} {r['path_err']:8.1e}")
            print(f"{name:15} {grid:8}" + "".join(f"{c:>27}" for c in cells))
        calls = {n: [r["warmup_calls"] for r in mine if r["nfe_asked"] == n] for n in nfes}
        spans = [f"NFE {n}: {c[1]}; {min(c[2::3])}-{max(c[2::3])}" for n, c in calls.items()]
        print("warm-up calls (gits; fitted min-max): " + ", ".join(spans))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n2", type=int, default=4000, help="samples on the 2-D target")
    p.add_argument("--n64", type=int, default=2000, help="samples on the 64-D target")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--warmup", type=int, default=256, help="warm-up latents")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows, heads = [], {}
    for target, sde_name in TARGETS:
        n = args.n2 if target == "2d" else args.n64
        r, heads[f"{target}/{sde_name}"] = sweep(target, sde_name, n, args.nfe, args.warmup,
                                                 args.seed)  # fmt: skip
        rows += r
    print_table(rows, heads, args.nfe)
    meta = {"torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
            "dtype": "float64", "n2": args.n2, "n64": args.n64, "warmup": args.warmup,
            "candidates": 120, "substeps": 2, "max_runs": 300, "seed": args.seed}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "optimised_grids.json"
    path.write_text(json.dumps({"meta": meta, "heads": heads, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
