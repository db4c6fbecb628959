"""The ``scoresde`` command line: parses, builds, calls. No mathematics here.

Verbs: ``train``, ``sample``, ``likelihood``, ``demo``, ``convert``, ``info``. A user error (bad
name, missing file, corrupt checkpoint, config typo) ends with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "SAMPLERS"]


# ---- samplers by name: name -> (function, CLI options it takes) --------------------------------
def _samplers() -> dict[str, tuple[Callable, tuple[str, ...]]]:
    from ..samplers import fast as fs
    from ..samplers import pc as s

    return {
        "pc": (s.sample_pc, ("predictor", "corrector", "snr", "steps", "corrector_steps", "eps")),
        "ode": (s.sample_ode, ("method", "rtol", "atol", "steps", "eps", "denoise")),
        "heun": (fs.sample_heun, ("steps", "eps", "churn", "rho", "denoise")),
        "dpm_solver": (
            fs.sample_dpm_solver,
            ("steps", "order", "eps", "grid", "denoise", "dpm_method:method"),
        ),
        "adaptive": (fs.sample_adaptive, ("rtol", "atol", "eps", "denoise")),
        "lambda": (fs.sample_lambda, ("lam", "steps", "eps", "denoise")),
    }


SAMPLERS = ("pc", "ode", "heun", "dpm_solver", "adaptive", "lambda")


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA GPU is available")
    return torch.device(name)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, disable=None)


# ---- verbs -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from ..data.images import IMAGE_DATASETS, ensure_downloaded
    from ..training.config import apply_overrides, dump_yaml, load_config
    from ..training.loop import train

    cfg = load_config(args.config)
    sets = list(args.set)
    if args.data_dir:  # JSON strings are YAML strings: the path is never read as a number
        sets.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.data:
        sets.append(f"data.path={json.dumps(args.data)}")
    cfg = apply_overrides(cfg, sets)  # an image folder / .npz gets its scaling in validation
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return 0
    if args.download:
        name = cfg.data.name
        if cfg.data.path is not None or name not in IMAGE_DATASETS:
            raise ValueError(
                f"--download fetches a named image data set ({', '.join(sorted(IMAGE_DATASETS))}); "
                f"this run reads {cfg.data.path or name!r}"
            )
        where = ensure_downloaded(name, cfg.data.data_dir)
        print(f"data set {name!r}: " + (f"downloaded into {where}" if where else "found"))
    bar = _progress(cfg.train.steps, "train")

    def on_step(step: int, metrics: dict) -> None:
        bar.n = step
        shown = {k: f"{v:.4g}" for k, v in metrics.items() if isinstance(v, float)}
        bar.set_postfix(shown, refresh=False)
        bar.update(0)

    try:
        result = train(cfg, args.workdir, resume=args.resume, callback=on_step)
    finally:
        bar.close()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 reports for all
        return 0
    summary = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
    )
    print(f"trained {args.workdir}: {summary}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ..training import distributed
    from ..training.checkpoint import load_model
    from ..viz import plots

    d = distributed.init(device=_pick_device(args.device))  # one process without torchrun
    device = d.device
    model, cfg, standardizer = load_model(args.workdir, ema=not args.no_ema)
    model = model.to(device).eval()
    fn, takes = _samplers()[args.sampler]
    # "cli_name:kwarg" renames an option whose flag differs from the sampler's argument.
    pairs = [k.split(":") if ":" in k else (k, k) for k in takes]
    opts = {kw: getattr(args, a) for a, kw in pairs if getattr(args, a) is not None}
    shape, sizes = _data_shape(cfg), distributed.chunk_sizes(args.n, args.chunk)
    t0 = time.perf_counter()
    parts, nfe = [], 0
    with torch.no_grad():  # chunk k from seed + k: the same samples for any number of processes
        for k in distributed.shard(len(sizes), d):
            g = torch.Generator(device=device).manual_seed(args.seed + k)
            xk, nfe_k = fn(
                model.sde, model.score_fn, (sizes[k], *shape), generator=g, device=device, **opts
            )
            parts.append(xk)
            nfe = max(nfe, int(nfe_k))
    empty = torch.empty((0, *shape), device=device)
    x = distributed.gather_chunks(parts, sizes, d, empty)
    nfe = int(distributed.all_reduce(torch.tensor(nfe, device=device), d, "max"))
    wall = time.perf_counter() - t0
    if not d.is_main:  # rank 0 writes
        return 0
    x = _to_data_units(x.cpu(), cfg, standardizer)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = _save_samples(x, out, plots)
    print(f"wrote {out} ({args.n} samples, shape {tuple(x.shape[1:])}) and {picture}")
    split = f" ({len(sizes)} chunks, {d.world} processes)" if d.active else ""
    print(f"sampler={args.sampler} nfe={nfe} time={wall:.2f}s{split}")
    return 0


def cmd_likelihood(args: argparse.Namespace) -> int:
    from ..core.likelihood import bits_per_dim, log_likelihood
    from ..data.arrays import images_to_model, is_image_path, load_array, load_data, load_image_path
    from ..training import distributed
    from ..training.checkpoint import load_model

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    d = distributed.init(device=_pick_device(args.device))  # one process without torchrun
    device = d.device
    model, cfg, standardizer = load_model(args.workdir, ema=True)
    model = model.to(device).eval()
    if args.data and is_image_path(args.data):  # a folder / .npz, at the model's image shape
        x = load_image_path(args.data, cfg.data.shape, "test")
    elif args.data:
        x = load_array(args.data)
    else:
        _, x, _ = load_data(cfg.data)
    if args.n is not None:
        x = x[: args.n]
    images = x.dtype == torch.uint8
    divergence = args.divergence or ("rademacher" if images else "exact")
    log_det = float(standardizer.log_det()) if standardizer is not None else 0.0
    g_deq = torch.Generator().manual_seed(args.seed)  # dequantization noise, on the CPU
    R, nfes = args.repeats, 0
    nll = torch.zeros(len(x), dtype=torch.float64)
    bar = _progress(len(x) * R, "likelihood")
    for r in range(R):  # each repeat: fresh dequantization noise (images) and probes
        if images:  # uniform dequantization u = (x + U) / 256, then model space scale * u + shift
            y = images_to_model(x, cfg.data, generator=g_deq)
        else:
            y = standardizer.forward(x) if standardizer is not None else x
        batches, logps = torch.split(y, args.batch_size), []
        for k in distributed.shard(len(batches), d):  # batch k of repeat r: probes from its seed
            g = torch.Generator(device=device).manual_seed(args.seed + r * len(batches) + k)
            batch = batches[k]
            lp, _, nfe = log_likelihood(
                model.sde,
                model.score_fn,
                batch.to(device=device, dtype=torch.float32),
                divergence=divergence,
                rtol=args.rtol,
                atol=args.atol,
                eps=args.eps,
                generator=g,
            )
            logps.append(lp.double().cpu() + log_det)
            nfes += nfe
            bar.update(len(batch))
        sizes, empty = [len(b) for b in batches], torch.empty(0, dtype=torch.float64)
        logp = distributed.gather_chunks(logps, sizes, d, empty)  # every batch, in order
        nll -= logp / R  # per-example mean over the R repeats
    bar.close()
    nfes = int(distributed.all_reduce(torch.tensor(nfes), d, "sum"))
    if not d.is_main:  # rank 0 writes
        return 0
    n, D = len(nll), x[0].numel()
    result = {
        "nll": nll.mean().item(),
        "nll_per_dim": nll.mean().item() / D,
        "se": (nll.std().item() / math.sqrt(n)) if n > 1 else float("nan"),
        "median": nll.median().item(),
        "n": n,
        "repeats": R,
        "divergence": divergence,
        "nfe": nfes,
    }
    if images:  # bits/dim of the 8-bit data: DESIGN section 4, scale read from the config
        bpd = bits_per_dim(-nll, x.shape, scale=cfg.data.scale)
        result |= {
            "bpd": bpd.mean().item(),
            "bpd_se": (bpd.std().item() / math.sqrt(n)) if n > 1 else float("nan"),
            "bpd_median": bpd.median().item(),
        }
    out = Path(args.out) if args.out else Path(args.workdir) / "likelihood.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"nll = {result['nll']:.4f} ± {result['se']:.4f} nats "
        f"({result['nll_per_dim']:.4f} per dim, median {result['median']:.4f}, n={n}, "
        f"{divergence} divergence); wrote {out}"
    )
    if images:
        print(
            f"bits/dim = {result['bpd']:.4f} ± {result['bpd_se']:.4f} "
            f"(median {result['bpd_median']:.4f}, {R} dequantization draw(s) per image)"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, steps=args.steps, n=args.n, seed=args.seed, log=print)
    print(json.dumps(result, indent=2))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from ..viz.plots import training_curves

    metrics = Path(args.workdir) / "metrics.csv"
    if not metrics.is_file():
        raise ValueError(f"no metrics.csv in {args.workdir}: is it a training run folder?")
    out = training_curves(metrics, args.out or Path(args.workdir) / "curves.png")
    print(f"wrote {out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..interop.official import convert_official

    out = convert_official(args.official, args.config, args.out, ema=not args.no_ema)
    print(f"converted {args.official} -> {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..interop.official import model_summary
    from ..training.checkpoint import load_model

    model, _, _ = load_model(args.workdir, ema=True)
    print(model_summary(model))
    return 0


# ---- helpers -----------------------------------------------------------------------------------
def _data_shape(cfg) -> tuple[int, ...]:
    data = cfg["data"] if isinstance(cfg, dict) else cfg.data
    shape = data["shape"] if isinstance(data, dict) else getattr(data, "shape", None)
    if not shape:
        raise ValueError("the checkpoint's config does not record the data shape")
    return tuple(int(s) for s in shape)


def _to_data_units(x: torch.Tensor, cfg, standardizer) -> torch.Tensor:
    if standardizer is not None:
        return standardizer.inverse(x)
    data = cfg["data"] if isinstance(cfg, dict) else cfg.data
    get = data.get if isinstance(data, dict) else lambda k, d=None: getattr(data, k, d)
    scale, shift = get("scale", None), get("shift", None)
    if scale is not None and x.ndim == 4:  # images: back to [0, 1] pixels
        return ((x - (shift or 0.0)) / scale).clamp(0, 1)
    return x


def _save_samples(x: torch.Tensor, out: Path, plots) -> Path:
    arr = x.numpy()
    if out.suffix == ".npz":
        np.savez(out, samples=arr)
    else:
        np.save(out, arr)
    picture = out.with_suffix(".png")
    if arr.ndim == 4:
        plots.image_grid(arr[:64], picture)
    elif arr.ndim == 2 and arr.shape[1] <= 2:
        plots.clouds({f"{len(arr)} samples": arr}, picture)
    else:
        return out
    return picture


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    p = argparse.ArgumentParser(
        prog="scoresde",
        description="Score-based generative modeling through SDEs: train, sample, likelihood.",
    )
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    t = sub.add_parser("train", help="train a score model from a preset or a YAML config")
    t.add_argument(
        "--config", required=True, help="preset name (see --list) or path to a YAML file"
    )
    t.add_argument(
        "--data",
        help="your own data: FILE.npy or FILE.csv of shape (N, D), or images: a FOLDER of "
        "PNG/JPEG files (resized to the preset's data.shape, converted to its channels; "
        "train/ and test/ subfolders, else data.test_fraction split) or FILE.npz (x_train, x_test)",
    )
    t.add_argument(
        "--data-dir",
        dest="data_dir",
        help="where named data sets (mnist, fashion_mnist, cifar10) live; default $SCORESDE_DATA, "
        "else ./data, ../shared/data",
    )
    t.add_argument(
        "--download",
        action="store_true",
        help="fetch the preset's named data set from its official source first (if not found)",
    )
    t.add_argument(
        "--workdir", default="runs/train", help="run folder (checkpoint, metrics, samples)"
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=2000 (repeatable)",
    )
    t.add_argument(
        "--resume", action="store_true", help="continue from the run folder's checkpoint"
    )
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a trained model")
    s.add_argument("--workdir", required=True, help="run folder holding checkpoint.pt")
    s.add_argument("--sampler", default="pc", choices=SAMPLERS)
    s.add_argument("--predictor", help="pc: euler_maruyama | reverse_diffusion | ancestral | none")
    s.add_argument("--corrector", help="pc: langevin | ald | none")
    s.add_argument("--snr", type=float, help="pc: signal-to-noise ratio of the corrector")
    s.add_argument("--corrector-steps", dest="corrector_steps", type=int)
    s.add_argument(
        "--steps", type=int, help="number of steps (pc, ode fixed grid, heun, dpm_solver)"
    )
    s.add_argument("--method", help="ode: dopri5 | rk4 | euler | scipy-RK45 ...")
    s.add_argument("--rtol", type=float)
    s.add_argument("--atol", type=float)
    s.add_argument("--order", type=int, help="dpm_solver: 1, 2 or 3")
    s.add_argument("--grid", help="dpm_solver: logSNR | time_uniform | time_quadratic")
    s.add_argument("--dpm-method", dest="dpm_method", help="dpm_solver: singlestep | multistep")
    s.add_argument("--churn", type=float, help="heun: stochastic churn")
    s.add_argument("--rho", type=float, help="heun: exponent of the EDM time grid (7)")
    s.add_argument("--lam", type=float, help="lambda: 0 = reverse SDE, 1 = probability-flow ODE")
    s.add_argument("--eps", type=float, help="last time of the reverse process")
    s.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=int,
        default=1000,
        help="number of samples (under torchrun write --num-samples: torchrun's own parser "
        "takes --n for an abbreviation of its options)",
    )
    s.add_argument(
        "--chunk",
        type=int,
        default=1000,
        help="samples per chunk; chunk k is drawn with seed + k, so the samples are the same "
        "in one process and under torchrun (chunks are dealt to the processes)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    s.add_argument("--out", required=True, help="FILE.npy (or .npz); a PNG is written beside it")
    s.set_defaults(func=cmd_sample)

    lk = sub.add_parser("likelihood", help="negative log-likelihood by the probability-flow ODE")
    lk.add_argument("--workdir", required=True)
    lk.add_argument(
        "--data",
        help="FILE.npy or .csv, or images (a FOLDER of PNG/JPEG, or FILE.npz with x_test) "
        "for an image model; default: the run's test split",
    )
    lk.add_argument(
        "--divergence",
        choices=("exact", "rademacher", "gaussian"),
        help="default: exact for vectors, rademacher (Hutchinson) for images",
    )
    lk.add_argument(
        "--n",
        "--num-examples",
        dest="n",
        type=int,
        help="use the first N examples (--num-examples under torchrun, which reads --n itself)",
    )
    lk.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="R evaluations per example, averaged before the mean and its standard error over "
        "examples: fresh dequantization noise (images) and Hutchinson probes each time",
    )
    lk.add_argument("--batch-size", dest="batch_size", type=int, default=1000)
    lk.add_argument("--rtol", type=float, default=1e-5)
    lk.add_argument("--atol", type=float, default=1e-5)
    lk.add_argument("--eps", type=float, default=1e-5)
    lk.add_argument("--seed", type=int, default=0)
    lk.add_argument("--device", default="auto")
    lk.add_argument("--out", help="JSON path (default: WORKDIR/likelihood.json)")
    lk.set_defaults(func=cmd_likelihood)

    d = sub.add_parser("demo", help="train on the swiss roll and draw every picture (~2 minutes)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    d.add_argument("--n", type=int, default=2000, help="samples per picture")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    pl = sub.add_parser("plot", help="redraw a run's training curves (loss, test bits/dim)")
    pl.add_argument("--workdir", required=True, help="run folder holding metrics.csv")
    pl.add_argument("--out", help="PNG path (default: WORKDIR/curves.png)")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser("convert", help="convert an official score_sde_pytorch checkpoint")
    c.add_argument("--official", required=True, help="checkpoint .pth of the official code")
    c.add_argument("--config", required=True, help="its config as JSON")
    c.add_argument("--out", required=True, help="run folder to write")
    c.add_argument("--no-ema", action="store_true", help="take the raw weights, not the EMA")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="summarise a model: parameters, SDE, parameterization")
    i.add_argument("--workdir", required=True)
    i.set_defaults(func=cmd_info)
    from .tune import add_tune_parser  # the verb and its options live beside the search

    add_tune_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from ..core.ode import ODEError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ODEError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"scoresde {args.verb}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scoresde {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
