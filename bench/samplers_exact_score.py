"""PC and probability-flow samplers on the 2-D test mixture with its exact score: NFE, time, error.

For each SDE (VE, VP, sub-VP) every predictor x corrector pair of ``sample_pc`` runs at
steps 10, 30, 100, 300, 1000, and ``sample_ode`` with dopri5 at tolerances 1e-2 ... 1e-6 and with
rk4 at a few step counts. Errors against exact draws of the data p_0 (``mixture.sample``):

* ``sw1``: sliced 1-Wasserstein distance to as many exact draws (64 directions); the same distance
  between two exact samples (its noise floor) is reported as the row ``exact``;
* ``logp_gap``: mean log p_0(samples) - mean log p_0(exact draws) (``mixture.log_prob``; the exact
  mean from 20x as many draws), in nats: negative = mass off the data, positive = mass collapsed
  onto the modes.

Also the overhead of the samplers (``sample_pc``, ``sample_ode`` with dopri5 and rk4, DPM-Solver++
multistep) over a bare loop that calls the score as often (10,000 points; CPU time, best of
repeats); ``--only overhead`` runs it alone and writes ``samplers_overhead.json``.

Every sampler is an entry of ``SAMPLERS``: ``name -> (run, params)`` with
``run(sde, score_fn, shape, param, generator) -> (x, nfe)``; add others there.
Steps for which a sampler is undefined (the DDPM chain needs N > beta_max = 20) are listed as such.

Writes ``bench/results/samplers_exact_score.json`` and ``.png`` (error vs NFE), prints a table.
Run: ``.venv/bin/python bench/samplers_exact_score.py [--quick] [--n 4000] [--threads 1]
[--only sweep|overhead] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import mixture_2d

import scoresde as sd
from scoresde.samplers import CORRECTORS, PREDICTORS, sample_dpm_solver, sample_ode, sample_pc

F64 = torch.float64
RESULTS = Path(__file__).resolve().parent / "results"
SDES: dict[str, Callable[[], sd.SDE]] = {
    "ve": lambda: sd.VESDE(0.01, 50.0, 1000),
    "vp": lambda: sd.VPSDE(0.1, 20.0, 1000),
    "subvp": lambda: sd.SubVPSDE(0.1, 20.0, 1000),
}
PC_STEPS = [10, 30, 100, 300, 1000]
TOLS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
RK4_STEPS = [3, 5, 10, 20, 50]

Run = Callable[..., tuple[torch.Tensor, int]]


def _pc(predictor: str, corrector: str) -> Run:
    return lambda sde, f, shape, steps, g: sample_pc(
        sde, f, shape, predictor=predictor, corrector=corrector, steps=steps, generator=g, dtype=F64
    )


def _ode(method: str) -> Run:
    if method == "dopri5":
        return lambda sde, f, shape, tol, g: sample_ode(
            sde, f, shape, rtol=tol, atol=tol, generator=g, dtype=F64
        )
    return lambda sde, f, shape, steps, g: sample_ode(
        sde, f, shape, method=method, steps=steps, generator=g, dtype=F64
    )


SAMPLERS: dict[str, tuple[Run, list]] = {
    **{
        f"pc:{p}+{c}": (_pc(p, c), PC_STEPS)
        for p in PREDICTORS
        for c in CORRECTORS
        if (p, c) != ("none", "none")
    },
    "ode:dopri5": (_ode("dopri5"), TOLS),
    "ode:rk4": (_ode("rk4"), RK4_STEPS),
}


# ---- errors --------------------------------------------------------------------------------------
def sliced_w1(x: torch.Tensor, y: torch.Tensor, dirs: torch.Tensor) -> float:
    """Sliced 1-Wasserstein distance of two equal-size samples along the unit rows of ``dirs``."""
    px, py = (x @ dirs.T).sort(dim=0).values, (y @ dirs.T).sort(dim=0).values
    return (px - py).abs().mean().item()


class Scorer:
    """Errors of a sample against the data distribution p_0 of the mixture."""

    def __init__(self, mix: sd.GaussianMixture, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.mix = mix
        self.exact = mix.sample(n, g)
        self.logp_exact = mix.log_prob(mix.sample(20 * n, g)).mean().item()
        ang = torch.arange(64, dtype=F64) * math.pi / 64
        self.dirs = torch.stack([ang.cos(), ang.sin()], 1)
        # noise floor: the distance between independent exact samples, over 20 replicates
        floor = torch.tensor([self(mix.sample(n, g))["sw1"] for _ in range(20)], dtype=F64)
        self.floor = {"sw1": floor.mean().item(), "sw1_sd": floor.std().item()}
        self.floor["logp_se"] = self(self.exact)["logp_se"]

    def __call__(self, x: torch.Tensor) -> dict:
        x = x.double()
        if not bool(torch.isfinite(x).all()):
            return {"sw1": math.inf, "logp_gap": -math.inf, "logp_se": math.nan}
        logp = self.mix.log_prob(x)
        return {
            "sw1": sliced_w1(x, self.exact, self.dirs),
            "logp_gap": logp.mean().item() - self.logp_exact,
            "logp_se": logp.std().item() / math.sqrt(len(x)),
        }


# ---- the sweep -----------------------------------------------------------------------------------
def sweep(sde_name: str, n: int, seed: int, quick: bool) -> tuple[list[dict], dict]:
    """Every sampler over its parameters on one SDE; returns the rows and the noise floor."""
    sde, mix = SDES[sde_name](), mixture_2d()
    scorer = Scorer(mix, n, seed)
    score_fn = mix.score_fn(sde)
    rows = []
    for name, (run, params) in SAMPLERS.items():
        for param in params[1::2] if quick else params:
            row = {"sde": sde_name, "sampler": name, "param": param}
            t0 = time.perf_counter()
            try:
                g = torch.Generator().manual_seed(seed + 1)  # independent of the exact draws
                x, nfe = run(sde, score_fn, (n, 2), param, g)
            except ValueError as e:  # undefined here (no ancestral chain, too few DDPM steps)
                rows.append(row | {"nfe": None, "undefined": str(e).split(";")[0][:80]})
                continue
            row |= {"nfe": nfe, "wall_s": time.perf_counter() - t0} | scorer(x)
            rows.append(row)
            print(
                f"  {sde_name:5} {name:30} {param!s:7} nfe={nfe:5d} sw1={row['sw1']:.4f} "
                f"gap={row['logp_gap']:+.4f} ({row['wall_s']:.2f}s)",
                flush=True,
            )
    return rows, scorer.floor | {"n": n}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# Each overhead case: (run(sde, score_fn, shape, dtype, generator) -> (x, nfe), steps of the
# sampler or None where the solver picks them). 200 steps of every fixed-step sampler, rk4 on 50
# (4 evaluations each); dopri5 at its default tolerances.
OverheadRun = Callable[..., tuple[torch.Tensor, int]]


def _pc_case(p: str, c: str, steps: int) -> tuple[OverheadRun, int]:
    def run(sde, f, shape, dtype, g):
        return sample_pc(
            sde, f, shape, predictor=p, corrector=c, steps=steps, dtype=dtype, generator=g
        )

    return run, steps


def overhead_cases(steps: int) -> dict[str, tuple[OverheadRun, int | None]]:
    """The samplers whose overhead is measured: name -> (run, steps)."""
    return {
        "pc:reverse_diffusion+none": _pc_case("reverse_diffusion", "none", steps),
        "pc:euler_maruyama+none": _pc_case("euler_maruyama", "none", steps),
        "pc:reverse_diffusion+langevin": _pc_case("reverse_diffusion", "langevin", steps),
        "ode:dopri5": (
            lambda sde, f, shape, dtype, g: sample_ode(sde, f, shape, dtype=dtype, generator=g),
            None,
        ),
        "ode:rk4": (
            lambda sde, f, shape, dtype, g: sample_ode(
                sde, f, shape, method="rk4", steps=steps // 4, dtype=dtype, generator=g
            ),
            steps // 4,
        ),
        "dpm_solver:multistep": (
            lambda sde, f, shape, dtype, g: sample_dpm_solver(
                sde, f, shape, steps=steps, method="multistep", dtype=dtype, generator=g
            ),
            steps,
        ),
    }


def _record(run: OverheadRun, sde, score_fn, shape, dtype) -> list[tuple]:
    """The ``(x, t, score)`` of every evaluation of one seeded run."""
    calls = []

    def recording(x, t):
        s = score_fn(x, t)
        calls.append((x.clone(), t, s))
        return s

    run(sde, recording, shape, dtype, torch.Generator().manual_seed(0))
    return calls


def _bare(score_fn: Callable, calls: list[tuple]) -> None:
    """The score at the recorded inputs, one call after the other (outputs dropped at once)."""
    for x, t, _ in calls:
        score_fn(x, t)


def _replay(outputs: list[torch.Tensor]) -> Callable:
    """A score function that returns ``outputs`` one after the other."""
    it = iter(outputs)
    return lambda x, t: next(it)


def _time_case(run: OverheadRun, sde, score_fn, n: int, dtype, repeats: int) -> dict:
    """Best-of-``repeats`` wall and CPU times of three things: the sampler (seeded, so every
    repeat makes the same calls); the bare score at the very inputs the sampler gave it,
    replayed; and the sampler alone, its score replaced by the recorded outputs (same
    trajectory, same number of evaluations, no score cost). Sampler and bare alternate their
    order from repeat to repeat; the median of their paired ratios is kept too."""
    calls = _record(run, sde, score_fn, (n, 2), dtype)
    replies = [s for _, _, s in calls]
    jobs = {
        "sampler": lambda: run(sde, score_fn, (n, 2), dtype, torch.Generator().manual_seed(0)),
        "bare": lambda: _bare(score_fn, calls),
        "own": lambda: run(sde, _replay(replies), (n, 2), dtype, torch.Generator().manual_seed(0)),
    }
    best = {f"{k}_{c}": math.inf for k in jobs for c in ("wall", "cpu")}
    ratios = []
    for r in range(repeats):
        took = {}
        for k in ["sampler", "bare", "own"] if r % 2 == 0 else ["bare", "sampler", "own"]:
            w0, c0 = _clock()
            jobs[k]()
            w1, c1 = _clock()
            took[k] = c1 - c0
            best[f"{k}_wall"] = min(best[f"{k}_wall"], w1 - w0)
            best[f"{k}_cpu"] = min(best[f"{k}_cpu"], c1 - c0)
        ratios.append(took["sampler"] / took["bare"])
    return best | {"nfe": len(calls), "overhead_cpu_median": statistics.median(ratios) - 1}


def draw_us(n: int, dtype: torch.dtype, repeats: int, k: int = 50) -> float:
    """CPU time of one standard-normal draw of shape (n, 2) in microseconds (best of
    ``repeats`` x ``k`` draws): the part of a stochastic step that no sampler code can remove."""
    g, best = torch.Generator().manual_seed(0), math.inf
    for _ in range(repeats):
        c0 = time.process_time()
        for _ in range(k):
            torch.randn((n, 2), generator=g, dtype=dtype)
        best = min(best, (time.process_time() - c0) / k)
    return best * 1e6


def overhead(
    n: int, steps: int, repeats: int, dtypes: tuple[torch.dtype, ...] = (torch.float32, F64)
) -> list[dict]:
    """Time of each sampler of :func:`overhead_cases` against a bare loop calling the score as
    often (same NFE, the same inputs), on VP at n points.

    Best of ``repeats``. Both wall and CPU time (``process_time``: on a shared machine the CPU
    time of this process is the steadier measure; one thread). In float32 (as a network would
    run) and float64. ``overhead_cpu`` = sampler / bare - 1; ``own`` = the sampler alone (with
    the recorded score outputs) / bare, the same quantity measured directly, which a busy machine
    disturbs less; ``overhead_cpu_median``: the median of the per-repeat ratios. ``step_us`` /
    ``eval_us``: the sampler's own CPU time per step (where the step count is fixed) and per score
    evaluation; ``draw_us``: one standard-normal draw of the state.
    """
    sde, mix = SDES["vp"](), mixture_2d()
    score_fn = mix.score_fn(sde)
    out = []
    for dtype in dtypes:
        for name, (run, n_steps) in overhead_cases(steps).items():
            best = _time_case(run, sde, score_fn, n, dtype, repeats)
            nfe, own = best["nfe"], best["own_cpu"]
            row = {"dtype": str(dtype).removeprefix("torch."), "sampler": name, "n": n}
            row |= {"steps": n_steps, **best}
            row["overhead_wall"] = best["sampler_wall"] / best["bare_wall"] - 1
            row["overhead_cpu"] = best["sampler_cpu"] / best["bare_cpu"] - 1
            row["own"] = own / best["bare_cpu"]
            row["draw_us"] = draw_us(n, dtype, repeats)
            row["score_ms"] = best["bare_cpu"] / nfe * 1e3
            row["step_us"] = None if n_steps is None else own / n_steps * 1e6
            row["eval_us"] = own / nfe * 1e6
            out.append(row)
            print(
                f"  overhead {row['dtype']} {name}: cpu {row['overhead_cpu']:+.1%}, "
                f"own {row['own']:.1%}",
                flush=True,
            )
    return out


def print_overhead(over: list[dict]) -> None:
    """The overhead table: CPU and wall overhead, the sampler's own share, score ms per call,
    sampler us per step / evaluation."""
    print(f"\noverhead over a bare score loop (VP, {over[0]['n']:,} points, same NFE; CPU time):")
    print(
        f"{'dtype':8} {'sampler':30} {'steps':>5} {'nfe':>5} {'cpu':>7} {'median':>7} {'wall':>7} "
        f"{'own':>6} {'score_ms':>8} {'us/step':>8} {'us/eval':>8} {'draw_us':>8}"
    )
    for o in over:
        step = "-" if o["steps"] is None else f"{o['step_us']:.0f}"
        print(
            f"{o['dtype']:8} {o['sampler']:30} {o['steps'] or '-'!s:>5} {o['nfe']:5d} "
            f"{o['overhead_cpu']:+7.1%} {o['overhead_cpu_median']:+7.1%} "
            f"{o['overhead_wall']:+7.1%} {o['own']:6.1%} {o['score_ms']:8.3f} {step:>8} "
            f"{o['eval_us']:8.1f} {o['draw_us']:8.0f}"
        )
    print(
        "cpu: best sampler / best bare - 1; median: of the paired ratios; own: the sampler with "
        "the recorded\nscore outputs / bare; draw_us: one N(0, I) draw of the state (one per "
        "PC predictor or corrector step)"
    )


# ---- output --------------------------------------------------------------------------------------
def print_table(rows: list[dict], floors: dict) -> None:
    for sde_name in SDES:
        here = [r for r in rows if r["sde"] == sde_name]
        if not here:
            continue
        f = floors[sde_name]
        print(
            f"\n{sde_name}: floor (exact vs exact, 20 draws) sw1 = {f['sw1']:.4f} "
            f"+- {f['sw1_sd']:.4f}; logp_gap standard error {f['logp_se']:.4f}"
        )
        print(f"{'sampler':32} {'param':>7} {'nfe':>6} {'wall_s':>8} {'sw1':>8} {'logp_gap':>9}")
        for r in here:
            if r["nfe"] is None:
                print(f"{r['sampler']:32} {r['param']!s:>7}   undefined: {r['undefined']}")
                continue
            print(
                f"{r['sampler']:32} {r['param']!s:>7} {r['nfe']:6d} {r['wall_s']:8.2f} "
                f"{r['sw1']:8.4f} {r['logp_gap']:+9.4f}"
            )


PRED_COLORS = {
    "euler_maruyama": "tab:blue",
    "reverse_diffusion": "tab:red",
    "ancestral": "tab:green",
    "none": "tab:gray",
}
CORR_STYLES = {"langevin": "-", "ald": "--", "none": ":"}
OTHER_COLORS = ["black", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive"]


def _style(name: str, k: int) -> dict:
    """PC pairs: color = predictor, line style = corrector; other samplers: their own color."""
    if name.startswith("pc:"):
        p, c = name[3:].split("+")
        return {"color": PRED_COLORS.get(p, "tab:cyan"), "ls": CORR_STYLES.get(c, "-."), "ms": 3}
    return {"color": OTHER_COLORS[k % len(OTHER_COLORS)], "ls": "-.", "ms": 5, "marker": "s"}


def plot(rows: list[dict], floors: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["sampler"] for r in rows))
    others = [n for n in names if not n.startswith("pc:")]
    fig, axes = plt.subplots(2, 3, figsize=(18, 9.5), sharex=True)
    metrics = [("sw1", "sliced W1 to exact draws"), ("logp_gap", "|mean log p0 gap| (nats)")]
    for j, sde_name in enumerate(SDES):
        for i, (metric, label) in enumerate(metrics):
            ax = axes[i, j]
            for name in names:
                pts = sorted(
                    (r["nfe"], abs(r[metric]))
                    for r in rows
                    if r["sde"] == sde_name
                    and r["sampler"] == name
                    and r["nfe"] is not None
                    and math.isfinite(r[metric])
                )
                if pts:
                    k = others.index(name) if name in others else 0
                    ax.plot(*zip(*pts), **({"marker": "o"} | _style(name, k)), label=name)
            if sde_name in floors:
                f = floors[sde_name]
                if metric == "sw1":
                    ax.axhspan(
                        f["sw1"] - f["sw1_sd"],
                        f["sw1"] + f["sw1_sd"],
                        color="k",
                        alpha=0.12,
                        label="noise floor (exact vs exact, mean +- sd)",
                    )
                else:
                    ax.axhline(
                        2 * f["logp_se"],
                        color="k",
                        lw=1,
                        ls=":",
                        label="2 standard errors of the gap",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{sde_name}: {label}")
            ax.grid(alpha=0.3, which="both")
            if i == 1:
                ax.set_xlabel("NFE (score evaluations)")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), fontsize=8, loc="center right")
    fig.suptitle(
        "2-D mixture, exact score: PC pairs (color = predictor, line = corrector) and "
        "probability-flow ODE; sub-VP's reverse diffusion equals its Euler-Maruyama"
    )
    fig.tight_layout(rect=(0, 0, 0.85, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _meta(args: argparse.Namespace, t_start: float, **extra) -> dict:
    return {
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **extra,
        "total_s": time.perf_counter() - t_start,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every other parameter, 1000 points")
    ap.add_argument("--n", type=int, default=4000, help="samples per run (quick: 1000)")
    ap.add_argument("--sdes", nargs="+", default=list(SDES), choices=list(SDES))
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON only")
    ap.add_argument("--only", choices=["sweep", "overhead"], help="run one part alone")
    ap.add_argument("--repeats", type=int, help="overhead: best of (default 7, quick 2)")
    args = ap.parse_args(argv)
    if args.replot:
        saved = json.loads((RESULTS / "samplers_exact_score.json").read_text())
        plot(saved["rows"], saved["floors"], RESULTS / "samplers_exact_score.png")
        return
    torch.set_num_threads(args.threads)
    n = 1000 if args.quick and args.n == 4000 else args.n
    t_start = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    over = []
    if args.only != "sweep":
        repeats = args.repeats or (2 if args.quick else 7)
        over = overhead(10_000, 50 if args.quick else 200, repeats)
        print_overhead(over)
    if args.only == "overhead":
        out = {"meta": _meta(args, t_start, quick=args.quick), "overhead": over}
        (RESULTS / "samplers_overhead.json").write_text(json.dumps(out, indent=1))
        print(f"\nwrote {RESULTS / 'samplers_overhead.json'}")
        return
    rows, floors = [], {}
    for sde_name in args.sdes:
        r, floors[sde_name] = sweep(sde_name, n, args.seed, args.quick)
        rows += r
    meta = _meta(args, t_start, n=n, quick=args.quick, dtype="float64")
    out = {"meta": meta, "floors": floors, "rows": rows, "overhead": over}
    (RESULTS / "samplers_exact_score.json").write_text(json.dumps(out, indent=1))
    plot(rows, floors, RESULTS / "samplers_exact_score.png")
    print_table(rows, floors)
    if over:
        print_overhead(over)
    print(f"\nwrote {RESULTS / 'samplers_exact_score.json'} and .png ({meta['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
