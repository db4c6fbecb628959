"""Fast samplers against the reference PC sampler, on Gaussian mixtures with their exact score.

Targets: the 2-D, three-component mixture of the test suite, and a harder 64-D mixture of eight
well-separated components with anisotropic full covariances (eigenvalues from 0.01 to 0.5).
For each SDE and target every sampler starts from the same prior draws and is swept over its
knob (steps, NFE budget or tolerance). Errors against p_eps:

* ``energy``: energy distance to p_eps. 2-D: averaged over 128 fixed directions (in 2-D the
  projections determine the law), with the p_eps side in closed form (a projected mixture is a
  1-D mixture, and E|N(d, s^2)| is known), so only the sample is noisy; 64-D: the two-sample
  U-statistic (:func:`scoresde.core.metrics.energy_distance`) against as many exact draws. Both are
  unbiased; their noise (``energy_floor_sd``) is the spread over 4 sets of exact draws.
* ``logp_gap``: mean log p_eps(x) over the samples minus its exact expectation (estimated on 20
  times as many exact draws), in nats, with its standard error ``logp_se``. Negative: mass in
  low-density regions; positive: mass collapsed onto the modes.

The reference is the paper's PC sampler (reverse diffusion + Langevin, snr 0.16, 1000 steps,
2000 NFE, final denoising). For each sampler the table gives the smallest NFE from which it stays
at or below the reference's error for the rest of its sweep ("-": never). Where the reference's
error is within two noise SDs of zero it cannot be resolved; the NFE given then (starred) is the
one from which the sampler stays within that noise band. All samplers start from the same prior
draws, so the deterministic ones share their sampling noise.
The samplers run in float32 (as a network would), errors are computed in float64.

Writes ``bench/results/fast_samplers.json`` and ``bench/results/fast_samplers_<sde>.png``, prints
the tables. Run: ``.venv/bin/python bench/fast_samplers.py [--sdes vp ve] [--n2 N] [--n64 N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import mixture_2d

import scoresde as sd
from scoresde import samplers as fs
from scoresde.core.metrics import energy_distance
from scoresde.samplers import default_eps, sample_ode, sample_pc

SDES = {
    "ve": lambda: sd.VESDE(0.01, 50.0, 1000),
    "vp": lambda: sd.VPSDE(0.1, 20.0, 1000),
    "subvp": lambda: sd.SubVPSDE(0.1, 20.0, 1000),
}
F64 = torch.float64


def mixture_64d(seed: int = 0) -> sd.GaussianMixture:
    """Eight components in 64-D: means ~ N(0, 0.25 I) (pairwise distances 4.5-6.5), random
    rotations of log-uniform eigenvalues in [0.01, 0.5], weights uniform in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    K, D = 8, 64
    means = 0.5 * torch.randn(K, D, generator=g, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(K, D, D, generator=g, dtype=F64))
    log_lam = torch.empty(K, D, dtype=F64).uniform_(math.log(0.01), math.log(0.5), generator=g)
    covs = Q @ torch.diag_embed(log_lam.exp()) @ Q.transpose(1, 2)
    weights = torch.rand(K, generator=g, dtype=F64) + 0.5
    return sd.GaussianMixture(weights, means, covs)


TARGETS = {"2d": mixture_2d, "64d": mixture_64d}

# name -> (run(sde, score_fn, z, knob, generator) -> (x, nfe), knobs of the sweep)
Run = Callable[..., tuple[torch.Tensor, int]]
NFE_GRID = [6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100]


def _lam(lam: float) -> Run:
    return lambda sde, f, z, k, g: fs.sample_lambda(
        sde, f, None, lam=lam, steps=k, z=z, generator=g
    )


def _dpm(order: int, method: str, grid: str = "logSNR") -> Run:
    return lambda sde, f, z, k, g: fs.sample_dpm_solver(
        sde, f, None, steps=k, order=order, method=method, grid=grid, z=z
    )


SAMPLERS: dict[str, tuple[Run, list]] = {
    "pc_reference": (lambda sde, f, z, k, g: sample_pc(sde, f, None, x=z, generator=g), [None]),
    "ode_dopri5": (
        lambda sde, f, z, k, g: sample_ode(sde, f, None, z=z, rtol=k, atol=k),
        [1e-2, 1e-3, 1e-4, 1e-5],
    ),
    "heun": (
        lambda sde, f, z, k, g: fs.sample_heun(sde, f, None, steps=k, denoise=False, z=z),
        [3, 4, 5, 6, 8, 10, 13, 15, 20, 25, 38, 50],
    ),
    "dpm_solver_2": (_dpm(2, "singlestep"), NFE_GRID),
    "dpm_solver_3": (_dpm(3, "singlestep"), NFE_GRID),
    "dpm_solver_3_tq": (_dpm(3, "singlestep", "time_quadratic"), NFE_GRID),
    "dpm_solver++2M": (_dpm(2, "multistep"), NFE_GRID),
    "dpm_solver++3M": (_dpm(3, "multistep"), NFE_GRID),
    "adaptive": (
        lambda sde, f, z, k, g: fs.sample_adaptive(
            sde, f, None, rtol=k, denoise=False, z=z, generator=g
        ),
        [0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
    ),
    "lambda_0_sde": (_lam(0.0), [20, 50, 100, 200, 500, 1000]),
    "lambda_0.5": (_lam(0.5), [20, 50, 100, 200, 500, 1000]),
    "lambda_1_ode": (_lam(1.0), [20, 50, 100, 200, 500, 1000]),
}
STOCHASTIC = {"adaptive", "lambda_0_sde", "lambda_0.5"}


def _e_abs(d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E|N(d, s^2)| = 2 s phi(d / s) + d (2 Phi(d / s) - 1)."""
    r = d / s
    return 2 * s * torch.exp(-0.5 * r**2) / math.sqrt(2 * math.pi) + d * torch.erf(r / math.sqrt(2))


def sliced_energy(x: torch.Tensor, mix: sd.GaussianMixture, sde: sd.SDE, eps: float, dirs) -> float:
    """Energy distance of the sample ``x`` to p_eps, averaged over the unit columns of ``dirs``.

    Along u, p_eps is the 1-D mixture sum_k w_k N(alpha mu_k.u, u^T (alpha^2 Sigma_k + sigma^2) u),
    so E|x - Y| and E|Y - Y'| are closed forms; E|X - X'| is the U-statistic of the sorted sample.
    """
    te = torch.tensor([eps], dtype=F64)
    a, s = sde.alpha(te).item(), sde.sigma(te).item()
    m = a * mix.means @ dirs  # (K, L)
    v = a**2 * torch.einsum("dl,kde,el->kl", dirs, mix.covs, dirs) + s**2
    w = mix.weights
    p = x @ dirs  # (n, L)
    n = len(p)
    exy = (w[:, None] * _e_abs(p[:, None, :] - m, v.sqrt())).sum(1).mean(0)
    pair = _e_abs(m[:, None] - m[None], (v[:, None] + v[None]).sqrt())
    eyy = (w[:, None, None] * w[None, :, None] * pair).sum((0, 1))
    ps, _ = torch.sort(p, dim=0)
    rank = torch.arange(1, n + 1, dtype=F64)[:, None]
    exx = 2 * (ps * (2 * rank - n - 1)).sum(0) / (n * (n - 1))
    return (2 * exy - exx - eyy).mean().item()


class Scorer:
    """Errors of a sample against p_eps of one (SDE, target)."""

    def __init__(self, mix: sd.GaussianMixture, sde: sd.SDE, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.mix, self.sde, self.eps, self.n = mix, sde, default_eps(sde), n
        self.exact = mix.sample_t(n, sde, self.eps, g)
        self.logp_exact = self._logp(mix.sample_t(20 * n, sde, self.eps, g)).mean().item()
        dirs = torch.randn(mix.dim, 128, generator=g, dtype=F64)
        self.dirs = dirs / dirs.norm(dim=0, keepdim=True)
        null = torch.tensor([self.energy(mix.sample_t(n, sde, self.eps, g)) for _ in range(4)])
        self.floor_mean, self.floor_sd = null.mean().item(), null.std().item()

    def _logp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix.log_prob(x, torch.full((len(x),), self.eps, dtype=F64), self.sde)

    def energy(self, x: torch.Tensor) -> float:
        if self.mix.dim <= 2:
            return sliced_energy(x, self.mix, self.sde, self.eps, self.dirs)
        return energy_distance(x, self.exact).item()

    def __call__(self, x: torch.Tensor) -> dict:
        x = x.double()
        if not bool(torch.isfinite(x).all()):
            return {"energy": math.inf, "logp_gap": -math.inf, "logp_se": math.nan}
        logp = self._logp(x)
        return {
            "energy": self.energy(x),
            "logp_gap": logp.mean().item() - self.logp_exact,
            "logp_se": logp.std().item() / math.sqrt(len(x)),
        }


def sweep(
    sde_name: str, target: str, n: int, seed: int, quick: bool = False
) -> tuple[list[dict], dict]:
    """Every sampler over its knobs on one (SDE, target); returns rows and the noise floors."""
    sde, mix = SDES[sde_name](), TARGETS[target]()
    scorer = Scorer(mix, sde, n, seed)
    score_fn = mix.score_fn(sde)
    z = sde.prior_sampling((n, mix.dim), torch.Generator().manual_seed(seed + 1))
    rows = []
    for name, (run, knobs) in SAMPLERS.items():
        for knob in knobs[:2] if quick else knobs:
            t0 = time.perf_counter()
            x, nfe = run(sde, score_fn, z, knob, torch.Generator().manual_seed(seed + 2))
            wall = time.perf_counter() - t0
            row = {"sde": sde_name, "target": target, "sampler": name, "knob": knob, "nfe": nfe}
            row |= scorer(x) | {"wall_s": wall}
            rows.append(row)
            print(
                f"  {sde_name} {target} {name:15} knob={knob!s:7} nfe={nfe:5d} "
                f"energy={row['energy']:+.2e} gap={row['logp_gap']:+.4f} ({wall:.1f}s)",
                flush=True,
            )
    floor = {"energy_floor_mean": scorer.floor_mean, "energy_floor_sd": scorer.floor_sd, "n": n}
    return rows, floor


def crossing(rows: list[dict], ref: dict, metric: str, noise: float) -> int | str | None:
    """Smallest NFE from which the sampler stays at or below the reference error (the energy
    distance as it is, unbiased; the absolute log p gap). When the reference error is within two
    noise SDs (unresolved), the threshold is that noise band instead and the NFE is starred."""
    err = (lambda r: r[metric]) if metric == "energy" else (lambda r: abs(r[metric]))
    unresolved = err(ref) <= 2 * noise
    limit = 2 * noise if unresolved else err(ref)
    best = None
    for r in sorted(rows, key=lambda r: r["nfe"], reverse=True):
        if err(r) > limit:
            break
        best = r["nfe"]
    return f"{best}*" if unresolved and best is not None else best


def table(rows: list[dict], floor: dict, sde_name: str, target: str) -> list[dict]:
    here = [r for r in rows if r["sde"] == sde_name and r["target"] == target]
    ref = next(r for r in here if r["sampler"] == "pc_reference")
    out = []
    for name in SAMPLERS:
        mine = [r for r in here if r["sampler"] == name]
        if name == "pc_reference" or not mine:
            continue
        out.append(
            {
                "sde": sde_name,
                "target": target,
                "sampler": name,
                "cross_energy": crossing(mine, ref, "energy", floor["energy_floor_sd"]),
                "cross_logp": crossing(mine, ref, "logp_gap", ref["logp_se"]),
            }
        )
    return out


def plot(rows: list[dict], floors: dict, sde_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for i, target in enumerate(TARGETS):
        here = [r for r in rows if r["sde"] == sde_name and r["target"] == target]
        if not here:
            continue
        ref = next(r for r in here if r["sampler"] == "pc_reference")
        noise = floors[(sde_name, target)]["energy_floor_sd"]
        panels = [("energy", "energy distance to p_eps"), ("logp_gap", "|mean log p gap| (nats)")]
        for j, (metric, label) in enumerate(panels):
            ax = axes[i, j]
            for k, name in enumerate(SAMPLERS):
                mine = sorted((r for r in here if r["sampler"] == name), key=lambda r: r["nfe"])
                if name == "pc_reference" or not mine:
                    continue
                ys = [r[metric] if metric == "energy" else abs(r[metric]) for r in mine]
                style = dict(color=plt.get_cmap("tab20")(k), marker="o", ms=3, label=name)
                ax.plot(
                    [r["nfe"] for r in mine], ys, ls="--" if name in STOCHASTIC else "-", **style
                )
            y_ref = ref[metric] if metric == "energy" else abs(ref[metric])
            ax.axhline(y_ref, color="k", ls="--", label="PC reference (2000 NFE)")
            if metric == "energy":
                ax.axhspan(-2 * noise, 2 * noise, color="gray", alpha=0.3, label="noise (2 SD)")
                ax.set_yscale("symlog", linthresh=max(noise, 1e-12))
            else:
                ax.axhspan(0, 2 * ref["logp_se"], color="gray", alpha=0.3, label="noise (2 SE)")
                ax.set_yscale("log")
                ax.set_ylim(bottom=0.1 * ref["logp_se"])
            ax.set(xscale="log", xlabel="NFE", ylabel=label, title=f"{sde_name}, {target}")
            ax.axvline(50, color="r", lw=0.5)
    handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sdes", nargs="+", default=["vp", "ve"], choices=list(SDES))
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--n2", type=int, default=50000, help="samples on the 2-D target")
    p.add_argument("--n64", type=int, default=4000, help="samples on the 64-D target")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="two knobs per sampler (a smoke test)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--replot", action="store_true", help="tables and plots from the saved JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    if args.replot:
        saved = json.loads((args.out / "fast_samplers.json").read_text())
        rows, meta = saved["rows"], saved["meta"]
        floors = {tuple(k.split("/")): v for k, v in saved["floors"].items()}
    else:
        rows, floors = [], {}
        sizes = {"2d": args.n2, "64d": args.n64}
        for sde_name in args.sdes:
            for target in args.targets:
                r, floors[(sde_name, target)] = sweep(
                    sde_name, target, sizes[target], args.seed, args.quick
                )
                rows += r
        meta = {
            "torch": torch.__version__,
            "threads": args.threads,
            "machine": platform.machine(),
            "dtype": "float32",
            "n2": args.n2,
            "n64": args.n64,
            "seed": args.seed,
        }
    tables = [t for (s, tg), fl in floors.items() for t in table(rows, fl, s, tg)]
    print("\nNFE from which each sampler stays at or below the PC reference's error (2000 NFE)")
    print("(*: reference within the noise; NFE from which the sampler stays in that noise band)")
    print(f"{'sde':5} {'target':6} {'sampler':16} {'energy':>7} {'|gap|':>6}")
    for t in tables:
        ce, cl = ("-" if t[k] is None else str(t[k]) for k in ("cross_energy", "cross_logp"))
        print(f"{t['sde']:5} {t['target']:6} {t['sampler']:16} {ce:>7} {cl:>6}")
    for (s, tg), fl in floors.items():
        ref = next(
            r for r in rows if (r["sde"], r["target"], r["sampler"]) == (s, tg, "pc_reference")
        )
        print(
            f"reference {s} {tg}: energy {ref['energy']:.2e} "
            f"(noise SD {fl['energy_floor_sd']:.1e}), "
            f"logp gap {ref['logp_gap']:+.4f} (SE {ref['logp_se']:.4f})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for sde_name in {s for s, _ in floors}:
        plot(rows, floors, sde_name, args.out / f"fast_samplers_{sde_name}.png")
    floors_out = {f"{s}/{t}": v for (s, t), v in floors.items()}
    path = args.out / "fast_samplers.json"
    path.write_text(
        json.dumps(
            {"meta": meta, "floors": floors_out, "crossings": tables, "rows": rows}, indent=2
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
