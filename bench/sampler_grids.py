"""Image grids of every fixed-step sampler at a few NFE budgets, from one trained image run.

Each cell is ``--n`` samples of the run's EMA model drawn from the same per-sample latents
(``--seed``), so the columns differ only by the sampler and its budget. The NFE of each cell is
the sampler's own count (Heun takes two evaluations per step, so it gets half the steps).
Writes one PNG, rows = sampler, columns = NFE, and a JSON of NFE and seconds per cell:

    .venv/bin/python bench/sampler_grids.py --workdir runs/mnist_cpu [--nfe 5 10 20] [--n 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import scoresde as sd  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# label -> (sampler, options for an NFE budget k)
SAMPLERS = {
    "unipc (bh2, 3)": ("unipc", lambda k: dict(steps=k, order=3)),
    "deis (tAB3)": ("deis", lambda k: dict(steps=k, order=3)),
    "ipndm": ("ipndm", lambda k: dict(steps=k)),
    "lms (4)": ("lms", lambda k: dict(steps=k, order=4)),
    "dpm_solver++ 3M": ("dpm_solver", lambda k: dict(steps=k, order=3, method="multistep")),
    "dpm_solver++ 2M SDE": ("dpm_solver_sde", lambda k: dict(steps=k, order=2)),
    "heun": ("heun", lambda k: dict(steps=max(1, (k + 1) // 2))),
}


def tile(images: np.ndarray) -> np.ndarray:
    """``(n, C, H, W)`` uint8 images as one square-ish mosaic ``(H', W', C)`` with 1-pixel gaps."""
    n, c, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = im.transpose(1, 2, 0)
    return out


def draw(cells: dict, nfes: list[int], path: Path, title: str) -> None:
    """One figure: a row per sampler, a column per NFE, each cell a mosaic."""
    names = list(cells)
    fig, axes = plt.subplots(len(names), len(nfes), figsize=(2.2 * len(nfes), 2.3 * len(names)))
    axes = np.atleast_2d(axes)
    for i, name in enumerate(names):
        for j, k in enumerate(nfes):
            ax = axes[i, j]
            mosaic, nfe = cells[name][k]
            ax.imshow(mosaic.squeeze(-1) if mosaic.shape[-1] == 1 else mosaic, cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"NFE {nfe}", fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="trained image run (checkpoint.pt)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--n", type=int, default=16, help="samples per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="PNG path (default: bench/results/sampler_grids_<run>.png)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = sd.load(args.workdir)
    run = Path(args.workdir).name
    out = Path(args.out) if args.out else RESULTS / f"sampler_grids_{run}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cells, rows = {}, []
    for label, (name, opts) in SAMPLERS.items():
        cells[label] = {}
        for k in args.nfe:
            t0 = time.perf_counter()
            streams = sd.samplers.SampleStreams(args.seed, range(args.n))
            shape = (args.n, *model.shape)
            with torch.no_grad():
                y, nfe = sd.sample(model.sde, model.score_fn, shape, name, streams, **opts(k))
            x = model.to_data_units(y, "uint8")
            seconds = time.perf_counter() - t0
            cells[label][k] = (tile(x.cpu().numpy()), nfe)
            rows.append({"sampler": label, "nfe_budget": k, "nfe": nfe, "seconds": seconds})
            print(f"{label:22s} NFE {k:3d}: {seconds:6.1f} s", flush=True)
    draw(cells, args.nfe, out, f"{run}: {args.n} samples per cell, same latents (seed {args.seed})")
    out.with_suffix(".json").write_text(json.dumps({"run": run, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
