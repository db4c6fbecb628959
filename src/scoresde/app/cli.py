"""The ``scoresde`` command line: each verb parses, builds, calls, prints. No mathematics here.

Verbs: ``train``, ``sample``, ``likelihood``, ``demo``, ``plot``, ``convert``, ``info``, ``tune``.
Sampling and likelihoods go through :mod:`scoresde.training.evaluate`; ``--sampler`` names an
entry of :data:`scoresde.samplers.SAMPLERS`, and each sampler flag given reaches the sampler when
it takes that option. A user error (bad name, missing file, corrupt checkpoint, config typo) ends
with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "build_parser"]


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


def _advance(bar) -> Callable[[int, int], None]:
    """A ``callback(done, total)`` that moves ``bar`` to ``done``."""
    shown = [0]

    def callback(done: int, total: int) -> None:
        bar.update(done - shown[0])
        shown[0] = done

    return callback


def _load_run(workdir: str, device: str, ema: bool = True):
    """``(world, model on its device in eval mode, config, standardizer)`` of a run folder."""
    from ..training import distributed
    from ..training.checkpoint import load_model

    d = distributed.init(device=_pick_device(device))  # one process without torchrun
    model, cfg, standardizer = load_model(workdir, ema=ema)
    return d, model.to(d.device).eval(), cfg, standardizer


# ---- verbs -------------------------------------------------------------------------------------
def _train_config(args: argparse.Namespace):
    """The run's config: the preset or file, ``--data-dir`` / ``--data``, then every ``--set``."""
    from ..training.config import apply_overrides, load_config

    sets = list(args.set)
    if args.data_dir:  # JSON strings are YAML strings: the path is never read as a number
        sets.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.data:
        sets.append(f"data.path={json.dumps(args.data)}")
    return apply_overrides(load_config(args.config), sets)  # an image folder / .npz: its scaling


def _download(cfg) -> str:
    """Fetch the run's named image data set unless it is present; what happened, in words."""
    from ..data import IMAGE_DATASETS, ensure_downloaded

    name = cfg.data.name
    if cfg.data.path is not None or name not in IMAGE_DATASETS:
        raise ValueError(
            f"--download fetches a named image data set ({', '.join(sorted(IMAGE_DATASETS))}); "
            f"this run reads {cfg.data.path or name!r}"
        )
    where = ensure_downloaded(name, cfg.data.data_dir)
    return f"data set {name!r}: " + (f"downloaded into {where}" if where else "found")


def cmd_train(args: argparse.Namespace) -> int:
    """``scoresde train``: resolve the config, train with a progress bar, print the result."""
    from ..training.config import dump_yaml
    from ..training.loop import train

    cfg = _train_config(args)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return 0
    if args.download:
        print(_download(cfg))
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


def _sampler_options(args: argparse.Namespace) -> dict:
    """The sampler flags given on the command line that the chosen sampler takes."""
    from ..samplers import sampler_options

    given = {k: getattr(args, k) for k in args.sampler_flags if getattr(args, k) is not None}
    return {k: v for k, v in given.items() if k in sampler_options(args.sampler)}


def cmd_sample(args: argparse.Namespace) -> int:
    """``scoresde sample``: draw ``--n`` samples in chunks, write them (rank 0), print the NFE."""
    from ..training.evaluate import draw_samples
    from ..viz import plots

    d, model, cfg, standardizer = _load_run(args.workdir, args.device, ema=not args.no_ema)
    options, shape, t0 = _sampler_options(args), _data_shape(cfg), time.perf_counter()
    x, nfe = draw_samples(
        model, shape, args.n, sampler=args.sampler, chunk=args.chunk, seed=args.seed, dist=d,
        **options,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if not d.is_main:  # rank 0 writes
        return 0
    x = _to_data_units(x.cpu(), cfg, standardizer)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = _save_samples(x, out, plots)
    print(f"wrote {out} ({args.n} samples, shape {tuple(x.shape[1:])}) and {picture}")
    chunks = -(-args.n // args.chunk)
    split = f" ({chunks} chunks, {d.world} processes)" if d.active else ""
    print(f"sampler={args.sampler} nfe={nfe} time={wall:.2f}s{split}")
    return 0


def _likelihood_data(path: str | None, cfg, n: int | None) -> torch.Tensor:
    """``--data`` (an image folder / .npz at the model's image shape, or an array file), else
    the run's test split; its first ``n`` examples."""
    from ..data import is_image_path, load_array, load_data, load_image_path

    if path and is_image_path(path):
        x = load_image_path(path, cfg.data.shape, "test")
    elif path:
        x = load_array(path)
    else:
        _, x, _ = load_data(cfg.data)
    return x if n is None else x[:n]


def cmd_likelihood(args: argparse.Namespace) -> int:
    """``scoresde likelihood``: NLL (and bits/dim of images) of a data set; JSON from rank 0."""
    from ..training.evaluate import dataset_nll

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    d, model, cfg, standardizer = _load_run(args.workdir, args.device)
    x = _likelihood_data(args.data, cfg, args.n)
    bar = _progress(len(x) * args.repeats, "likelihood")
    try:
        nll = dataset_nll(
            model, x, cfg.data, standardizer, divergence=args.divergence, repeats=args.repeats,
            batch_size=args.batch_size, rtol=args.rtol, atol=args.atol, eps=args.eps,
            seed=args.seed, dist=d, callback=_advance(bar),
        )  # fmt: skip
    finally:
        bar.close()
    if not d.is_main:  # rank 0 writes
        return 0
    result = nll.summary()
    out = Path(args.out) if args.out else Path(args.workdir) / "likelihood.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"nll = {result['nll']:.4f} ± {result['se']:.4f} nats "
        f"({result['nll_per_dim']:.4f} per dim, median {result['median']:.4f}, "
        f"n={result['n']}, {result['divergence']} divergence); wrote {out}"
    )
    if "bpd" in result:
        print(
            f"bits/dim = {result['bpd']:.4f} ± {result['bpd_se']:.4f} "
            f"(median {result['bpd_median']:.4f}, {nll.repeats} dequantization draw(s) per image)"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``scoresde demo``: the swiss-roll demo; prints its metrics."""
    from .demo import run_demo

    result = run_demo(args.out, steps=args.steps, n=args.n, seed=args.seed, log=print)
    print(json.dumps(result, indent=2))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``scoresde plot``: redraw a run's training curves."""
    from ..viz.plots import training_curves

    metrics = Path(args.workdir) / "metrics.csv"
    if not metrics.is_file():
        raise ValueError(f"no metrics.csv in {args.workdir}: is it a training run folder?")
    out = training_curves(metrics, args.out or Path(args.workdir) / "curves.png")
    print(f"wrote {out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """``scoresde convert``: an official checkpoint into a run folder."""
    from ..interop.official import convert_official

    out = convert_official(args.official, args.config, args.out, ema=not args.no_ema)
    print(f"converted {args.official} -> {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``scoresde info``: the model summary of a run folder."""
    from ..interop.official import model_summary
    from ..training.checkpoint import load_model

    model, _, _ = load_model(args.workdir, ema=True)
    print(model_summary(model))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """``scoresde tune``: run the search, print the best trial and the files written."""
    from ..training.config import apply_overrides, load_config
    from . import tune

    tune.import_ray()  # before the config: without Ray, only the line saying how to install it
    result = tune.tune(
        apply_overrides(load_config(args.config), args.set), args.space, trials=args.trials,
        scheduler=args.scheduler, metric=args.metric, address=args.address,
        workdir=args.workdir, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, seed=args.seed,
        max_concurrent=args.max_concurrent, log=print,
    )  # fmt: skip
    print("\n".join(tune.summary(result, args.metric)))
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


def _add_sampler_flags(s: argparse.ArgumentParser) -> None:
    """The samplers' options; each reaches the chosen sampler when it takes it."""
    from ..samplers import SAMPLERS

    s.add_argument("--sampler", default="pc", choices=list(SAMPLERS))
    flags = [
        s.add_argument(
            "--predictor", help="pc: euler_maruyama | reverse_diffusion | ancestral | none"
        ),
        s.add_argument("--corrector", help="pc: langevin | ald | none"),
        s.add_argument("--snr", type=float, help="pc: signal-to-noise ratio of the corrector"),
        s.add_argument("--corrector-steps", dest="corrector_steps", type=int),
        s.add_argument(
            "--steps", type=int, help="number of steps (pc, ode fixed grid, heun, dpm_solver)"
        ),
        s.add_argument(
            "--method",
            "--dpm-method",
            dest="method",
            help="ode: dopri5 | rk4 | euler | scipy-RK45 ...; dpm_solver: singlestep | multistep",
        ),
        s.add_argument("--rtol", type=float),
        s.add_argument("--atol", type=float),
        s.add_argument("--order", type=int, help="dpm_solver: 1, 2 or 3"),
        s.add_argument("--grid", help="dpm_solver: logSNR | time_uniform | time_quadratic"),
        s.add_argument("--churn", type=float, help="heun: stochastic churn"),
        s.add_argument("--rho", type=float, help="heun: exponent of the EDM time grid (7)"),
        s.add_argument(
            "--lam", type=float, help="lambda: 0 = reverse SDE, 1 = probability-flow ODE"
        ),
        s.add_argument("--eps", type=float, help="last time of the reverse process"),
        s.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=None),
    ]
    s.set_defaults(sampler_flags=tuple(a.dest for a in flags))


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
    _add_sampler_flags(s)
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
    _add_tune(sub)
    return p


def _add_tune(sub) -> None:
    from .tune import METRICS, SCHEDULERS

    t = sub.add_parser("tune", help="hyperparameter search with Ray Tune")
    t.add_argument("--config", required=True, help="preset name or path to a YAML file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value before the search (repeatable)")  # fmt: skip
    t.add_argument("--space", help="YAML: config key -> {loguniform|uniform|randint|choice|grid}")
    t.add_argument("--trials", type=int, default=8, help="number of samples (Ray's num_samples)")
    t.add_argument("--scheduler", default="asha", choices=SCHEDULERS)
    t.add_argument("--metric", default="eval_loss", choices=tuple(METRICS))
    t.add_argument("--address", help="Ray cluster: auto | HOST:PORT (default: start Ray here)")
    t.add_argument("--workdir", default="runs/tune", help="results.csv, tune.png, best.yaml")
    t.add_argument("--cpus-per-trial", dest="cpus_per_trial", type=float, default=1.0)
    t.add_argument("--gpus-per-trial", dest="gpus_per_trial", type=float, default=None)
    t.add_argument("--seed", type=int, default=0, help="seed of the random search")
    t.add_argument("--max-concurrent", dest="max_concurrent", type=int, default=None,
                   help="at most this many trials at once (default: as cores allow)")  # fmt: skip
    t.set_defaults(func=cmd_tune)


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
