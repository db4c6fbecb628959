"""Benchmark of ``log_likelihood`` on a 2-D Gaussian mixture with its exact score.

For each SDE and divergence (exact, Rademacher) it times one ``log_likelihood`` call on n points
drawn from p_eps and compares the result with the exact log p_eps(x):

* ``err_*``: logp - log p_eps(x), what a user of the model sees (solver error, the prior
  mismatch at T, and for Rademacher the Hutchinson noise);
* ``solver_err_max``: the same after replacing the prior by the exact p_T at the end point
  (logp - prior_logp(z) + log p_T(z) - log p_eps(x)): the error of the solve itself for the
  exact divergence, the solve plus the probe noise for Rademacher.

``wall_s`` is the best of ``--repeat`` calls (the machine may be shared).

Writes ``bench/results/likelihood_exact_score.json`` and prints a table. Run:
``.venv/bin/python bench/likelihood_exact_score.py [--n 1000] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from common import mixture_2d as mixture

import scoresde as sd

EPS = 1e-5
SDES = {
    "ve": lambda: sd.VESDE(0.01, 50.0, 1000),
    "vp": lambda: sd.VPSDE(0.1, 20.0, 1000),
    "subvp": lambda: sd.SubVPSDE(0.1, 20.0, 1000),
}


def run(name: str, divergence: str, n: int, tol: float, seed: int, repeat: int) -> dict:
    """Timed ``log_likelihood`` calls (best of ``repeat``) and errors against the closed form."""
    sde, mix = SDES[name](), mixture()
    x = mix.sample_t(n, sde, EPS, generator=torch.Generator().manual_seed(seed))
    walls = []
    for _ in range(repeat):
        g = torch.Generator().manual_seed(seed + 1)
        t0 = time.perf_counter()
        logp, z, nfe = sd.log_likelihood(
            sde, mix.score_fn(sde), x, divergence, tol, tol, EPS, generator=g
        )
        walls.append(time.perf_counter() - t0)
    exact = mix.log_prob(x, torch.full((n,), EPS, dtype=x.dtype), sde)
    log_pT = mix.log_prob(z, torch.full((n,), sde.T, dtype=z.dtype), sde)
    err = logp - exact
    solver_err = err - sde.prior_logp(z) + log_pT
    return {
        "sde": name,
        "divergence": divergence,
        "n": n,
        "rtol": tol,
        "atol": tol,
        "nfe": nfe,
        "wall_s": min(walls),
        "err_mean": err.mean().item(),
        "err_abs_mean": err.abs().mean().item(),
        "err_abs_max": err.abs().max().item(),
        "solver_err_max": solver_err.abs().max().item(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="number of points")
    p.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of dopri5")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="timed calls per row (best kept)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows = [
        run(name, div, args.n, args.tol, args.seed, args.repeat)
        for name in SDES
        for div in ("exact", "rademacher")
    ]
    head = f"{'sde':6} {'divergence':11} {'nfe':>5} {'wall s':>7} {'mean err':>9}"
    head += f" {'mean|err|':>9} {'max|err|':>9} {'solver max':>10}"
    print(f"log_likelihood, {args.n} points of the 2-D mixture, dopri5 rtol=atol={args.tol:g}")
    print(head)
    for r in rows:
        print(
            f"{r['sde']:6} {r['divergence']:11} {r['nfe']:5d} {r['wall_s']:7.2f} "
            f"{r['err_mean']:9.2e} {r['err_abs_mean']:9.2e} {r['err_abs_max']:9.2e} "
            f"{r['solver_err_max']:10.2e}"
        )
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "repeat": args.repeat,
        "device": "cpu",
        "machine": platform.machine(),
        "processor": platform.processor(),
        "eps": EPS,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "likelihood_exact_score.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
