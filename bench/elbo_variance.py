"""The ELBO's Monte Carlo spread on a trained image run: stratified against independent times.

For the first ``--n`` test images of the run in ``--workdir`` (EMA weights, one uniform
dequantization with ``--seed``), ``--repeats`` independent ELBO estimates of ``--samples`` draws
each, once with the K draws' times stratified (``sd.elbo``'s default: draw k in the k-th of K
equal parts of the time density) and once independent. Per image the repeats give the standard
deviation of one estimate in bits/dim; the table gives its mean over the images, the mean
estimate beside the probability-flow ODE's bits/dim of the same images (one Rademacher probe,
dopri5 at 1e-5), and the seconds of one estimate per image batch.

The ELBO bounds the reverse SDE's bits/dim, not the ODE's: with a learned score the two are
different models, and the ELBO may lie below the ODE (``tests/core/test_elbo.py`` has a score in
closed form for which it does).

Run::

    .venv/bin/python bench/elbo_variance.py --workdir runs/mnist [--n 8] [--samples 16]
        [--repeats 40] [--importance | --uniform] [--threads 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.data import images_to_model, load_data
from scoresde.training.checkpoint import load_model

OUT = Path(__file__).resolve().parent / "results" / "elbo_variance.json"


def estimates(model, y: torch.Tensor, scale: float, args, stratified: bool) -> dict:
    """``--repeats`` ELBO estimates of ``--samples`` draws per image, in bits/dim."""
    g = torch.Generator().manual_seed(args.seed + 1)
    rows, t0 = [], time.perf_counter()
    for _ in range(args.repeats):
        lp, _ = sd.elbo(
            model.sde, model.score_fn, y, args.samples, args.importance, g, stratified=stratified
        )
        rows.append(sd.bits_per_dim(lp, y.shape, scale))
    seconds = (time.perf_counter() - t0) / args.repeats
    bpd = torch.stack(rows)  # (repeats, n)
    return {
        "stratified": stratified,
        "mean_bpd": bpd.mean().item(),
        "std_per_estimate": bpd.std(0).mean().item(),  # per image, averaged over the images
        "seconds_per_estimate": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--n", type=int, default=8, help="test images")
    ap.add_argument("--samples", type=int, default=16, help="draws per estimate (K)")
    ap.add_argument("--repeats", type=int, default=40, help="estimates per image and variant")
    ap.add_argument("--uniform", dest="importance", action="store_false", help="t ~ U(eps, T)")
    ap.add_argument("--importance", dest="importance", action="store_true", default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_model(args.workdir, ema=True)
    _, x_test, _ = load_data(cfg.data)
    y = images_to_model(
        x_test[: args.n], cfg.data, generator=torch.Generator().manual_seed(args.seed)
    )
    with torch.no_grad():
        lp, _, nfe = sd.log_likelihood(
            model.sde, model.score_fn, y, "rademacher", generator=torch.Generator().manual_seed(1)
        )
        ode = sd.bits_per_dim(lp, y.shape, cfg.data.scale).mean().item()
        rows = [estimates(model, y, cfg.data.scale, args, s) for s in (True, False)]
    result = {"workdir": args.workdir, "n": args.n, "samples": args.samples,
              "repeats": args.repeats, "importance": args.importance, "seed": args.seed,
              "threads": args.threads, "ode_bpd": ode, "ode_nfe": nfe, "rows": rows,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    ratio = rows[0]["std_per_estimate"] / rows[1]["std_per_estimate"]
    print(f"ODE bits/dim of the {args.n} images: {ode:.4f} ({nfe} NFE)")
    print("| times | mean ELBO bits/dim ± MC se | std of one estimate | seconds per estimate |")
    print("|---|---|---|---|")
    for r in rows:
        se = r["std_per_estimate"] / math.sqrt(args.repeats * args.n)
        name = "stratified" if r["stratified"] else "independent"
        print(f"| {name} | {r['mean_bpd']:.4f} ± {se:.4f} | {r['std_per_estimate']:.3f} | "
              f"{r['seconds_per_estimate']:.2f} |")  # fmt: skip
    print(f"std ratio (stratified / independent): {ratio:.3f}, variance {ratio**2:.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
