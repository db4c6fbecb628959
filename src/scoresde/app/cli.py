"""The ``scoresde`` command line: each verb parses, builds, calls, prints. No mathematics here.

Verbs: ``train``, ``sample``, ``likelihood``, ``demo``, ``plot``, ``convert``, ``info``, ``tune``.
Sampling and likelihoods go through :mod:`scoresde.training.evaluate`; ``--sampler`` names an
entry of :data:`scoresde.samplers.SAMPLERS`, and each sampler flag given reaches the sampler when
it takes that option. A user error (bad name, missing file, corrupt checkpoint, config typo) ends
with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import functools
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


# What :func:`main` resolved for this invocation: ``--quiet`` and the header line (threads).
_RUN: dict = {"quiet": False, "header": None}


def _progress(total: float, desc: str, unit: str = "step"):
    """The run's progress reporter (bar on a terminal, plain lines otherwise; ``--quiet``: none);
    it writes the header line before its first output."""
    from .progress import Progress

    header, _RUN["header"] = _RUN["header"], None  # the header is written once per run
    return Progress(total, desc, unit=unit, quiet=_RUN["quiet"], header=header)


def _announce() -> None:
    """Write the header line now (verbs without a progress reporter)."""
    _progress(0, "").start()


def _advance(bar) -> Callable[[int, int], None]:
    """A ``callback(done, total)`` that moves ``bar`` to ``done``."""

    def callback(done: int, total: int) -> None:
        bar.set(done)

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

    sets = [*_device_set(getattr(args, "device", None)), *args.set]  # --set has the last word
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
    """``scoresde train``: resolve the config, train with a progress bar, print the result.

    ``--resume`` continues the run with its own config (``--config`` optional; ``--set`` may
    change train.steps and the keys safe to change, which are listed). SIGINT / SIGTERM save a
    checkpoint, say so on stderr and exit with 130 / 143.
    """
    from ..training.config import apply_overrides, dump_yaml, resume_changes
    from ..training.loop import Interrupted, train
    from ..training.workdir import refuse, saved_run

    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun rank 0 reports for all
    if args.config is None and not args.resume:
        raise ValueError("--config is needed (a preset or a YAML file) unless --resume is given")
    if args.resume and args.config is None:  # the run's own config, then --data-dir/--data/--set
        saved, step = saved_run(args.workdir)
        sets = list(args.set)
        sets += [f"data.data_dir={json.dumps(args.data_dir)}"] if args.data_dir else []
        sets += [f"data.path={json.dumps(args.data)}"] if args.data else []
        cfg = apply_overrides(saved, sets)
    else:
        cfg = _train_config(args)
        saved, step = saved_run(args.workdir) if args.resume else (None, 0)
    changes = resume_changes(saved, cfg) if saved is not None else []
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return 0
    if main_rank:  # what would lose a run, before any data are read or fetched
        refuse(args.workdir, args.resume, args.overwrite)
    if args.download:
        print(_download(cfg))
    if saved is not None and main_rank:
        print(f"resuming {args.workdir} at step {step} of {cfg.train.steps}")
        print("".join(f"  changed {c}\n" for c in changes), end="")
    bar = _progress(cfg.train.steps, "train")

    def on_step(step: int, metrics: dict) -> None:
        bar.set(step, **{k: v for k, v in metrics.items() if isinstance(v, float)})

    try:
        try:
            result = train(
                cfg, args.workdir, resume=args.resume, overwrite=args.overwrite, callback=on_step
            )
        finally:
            bar.close()
    except Interrupted as e:
        print(f"scoresde train: {e}", file=sys.stderr)
        return e.exit_code
    if not main_rank:
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
    bar = _progress(args.n, "sample", unit="samples")
    on_chunk, on_step = _sample_progress(bar, model.sde, args.n, args.chunk, options.get("eps"))
    try:
        x, nfe = draw_samples(
            model, shape, args.n, sampler=args.sampler, chunk=args.chunk, seed=args.seed, dist=d,
            callback=on_chunk, step_callback=on_step, **options,
        )  # fmt: skip
    finally:
        bar.close()
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


def _sample_progress(bar, sde, n: int, chunk: int, eps: float | None):
    """``(on_chunk(done, total), on_step(i, t, x, x_mean))`` moving ``bar`` in samples: whole
    chunks, plus the current chunk's share of the way from T down to ``eps`` (any sampler)."""
    from ..samplers import default_eps

    end, base, seen = (default_eps(sde) if eps is None else eps), [0], [-1.0]

    def on_chunk(done: int, total: int) -> None:
        base[0] = done
        bar.set(done)

    def on_step(i: int, t: torch.Tensor, x: torch.Tensor, x_mean: torch.Tensor) -> None:
        now = time.perf_counter()
        if now - seen[0] < 0.1:  # reading t syncs with the device: at most 10 times a second
            return
        seen[0], t_now = now, float(t.reshape(-1)[0])  # one time for the whole batch
        share = min(max((sde.T - t_now) / (sde.T - end), 0.0), 1.0)
        bar.set(base[0] + int(share * min(chunk, n - base[0])), t=round(t_now, 4))

    return on_chunk, on_step


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
    bar = _progress(len(x) * args.repeats, "likelihood", unit="examples")
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

    _announce()
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
    cfg = apply_overrides(load_config(args.config), [*_device_set(args.device), *args.set])
    bar = _progress(args.trials, "tune", unit="trials")
    try:
        result = tune.tune(
            cfg, args.space, trials=args.trials, scheduler=args.scheduler, metric=args.metric,
            address=args.address, workdir=args.workdir, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, seed=args.seed,
            max_concurrent=args.max_concurrent, log=print, progress=_tune_progress(bar),
        )  # fmt: skip
    finally:
        bar.close()
    print("\n".join(tune.summary(result, args.metric)))
    return 0


def _tune_progress(bar) -> Callable[[int, int, dict], None]:
    """A ``progress(done, total, latest)`` of the search that moves ``bar`` over the trials."""

    def progress(done: int, total: int, latest: dict) -> None:
        bar.total = max(bar.total, total)
        bar.set(done, **{k: v for k, v in latest.items() if v is not None})

    return progress


def _device_set(device: str | None) -> list[str]:
    """``--device`` as a ``train.device`` override (``auto``: the best device here)."""
    if device is None:
        return []
    return [f"train.device={json.dumps(str(_pick_device(device)))}"]


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

    s.add_argument("--sampler", default="pc", choices=list(SAMPLERS),
                   help="sampler family; the flags below reach it if it takes them")  # fmt: skip
    flags = [
        s.add_argument(
            "--predictor", help="pc: euler_maruyama | reverse_diffusion | ancestral | none"
        ),
        s.add_argument("--corrector", help="pc: langevin | ald | none"),
        s.add_argument("--snr", type=float, help="pc: signal-to-noise ratio of the corrector"),
        s.add_argument(
            "--corrector-steps",
            dest="corrector_steps",
            type=int,
            help="pc: corrector iterations per step",
        ),
        s.add_argument(
            "--steps",
            type=int,
            help="number of steps (pc: the SDE's N when unset; ode fixed grid, heun, dpm_solver)",
        ),
        s.add_argument(
            "--method",
            "--dpm-method",
            dest="method",
            help="ode: dopri5 | rk4 | euler | scipy-RK45 ...; dpm_solver: singlestep | multistep",
        ),
        s.add_argument("--rtol", type=float, help="ode, adaptive: relative tolerance"),
        s.add_argument("--atol", type=float, help="ode, adaptive: absolute tolerance"),
        s.add_argument("--order", type=int, help="dpm_solver: 1, 2 or 3"),
        s.add_argument("--grid", help="dpm_solver: logSNR | time_uniform | time_quadratic"),
        s.add_argument("--churn", type=float, help="heun: stochastic churn"),
        s.add_argument("--rho", type=float, help="heun: exponent of the EDM time grid (7)"),
        s.add_argument(
            "--lam", type=float, help="lambda: 0 = reverse SDE, 1 = probability-flow ODE"
        ),
        s.add_argument(
            "--eps",
            type=float,
            help="last time of the reverse process (when unset: 1e-3 for VP and sub-VP, 1e-5 "
            "for VE)",
        ),
        s.add_argument(
            "--denoise",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="finish with one noise-free (Tweedie) step",
        ),
    ]
    for a in flags:
        a.help = f"{a.help}; {_sampler_defaults(a.dest)}"
    s.set_defaults(sampler_flags=tuple(a.dest for a in flags))


def _sampler_defaults(dest: str) -> str:
    """``default: the sampler's own (pc 0.16, ...)``: defaults of the samplers taking ``dest``."""
    import inspect

    from ..samplers import SAMPLERS

    found = []
    for name, fn in SAMPLERS.items():
        p = inspect.signature(fn).parameters.get(dest)
        if p is not None and p.default not in (None, inspect.Parameter.empty):
            found.append(f"{name} {p.default}")
    return "default: the sampler's own" + (f" ({', '.join(found)})" if found else "")


# ---- parser ------------------------------------------------------------------------------------
class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless the text already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0 and action.default is False:
            return f"{text} (default: off)"
        if action.default is None or action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class _ListPresets(argparse.Action):
    """``train --list``: one line per preset (the first comment line of its YAML), then exit."""

    def __init__(self, option_strings, dest, **kw) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, **kw)  # fmt: skip

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from ..training.config import PRESET_DIR, list_presets

        names = list_presets()
        width = max(map(len, names))
        for name in names:
            lines = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()
            first = next((ln.lstrip("# ").rstrip() for ln in lines if ln.startswith("#")), "")
            print(f"{name:{width}s}  {first}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scoresde")
    except PackageNotFoundError:
        return "unknown"


def _add_common(s: argparse.ArgumentParser, device: str | None = "auto") -> None:
    """``--threads``, ``--quiet`` and (verbs that compute) ``--device`` of every verb."""
    s.add_argument(
        "--threads", type=int, metavar="N",
        help="torch threads (default: $SCORESDE_THREADS, else 1 per process for this package's "
        "small CPU models; the choice is the first line of the run)",
    )  # fmt: skip
    s.add_argument("--quiet", action="store_true",
                   help="no progress on stderr (bar, periodic lines, threads line)")  # fmt: skip
    if device == "auto":
        s.add_argument("--device", default="auto",
                       help="auto (CUDA, else MPS, else CPU) | cpu | cuda[:K] | mps")  # fmt: skip
    elif device == "config":
        s.add_argument("--device", help="auto (CUDA, else MPS, else CPU) | cpu | cuda | mps; "
                       "sets train.device (default: the config's train.device)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    p = argparse.ArgumentParser(
        prog="scoresde",
        description="Score-based generative modeling through SDEs: train, sample, likelihood.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verb_parser = functools.partial(argparse.ArgumentParser, formatter_class=_Help)
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=verb_parser)

    t = sub.add_parser("train", help="train a score model from a preset or a YAML config")
    t.add_argument(
        "--config",
        help="preset name (see --list) or path to a YAML file (with --resume: optional, the "
        "run's own config is used)",
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
        "--resume",
        action="store_true",
        help="continue the run in --workdir from its checkpoint, with its own config (--set may "
        "raise train.steps and change logging, checkpoint and sample settings)",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that --workdir holds (without it, such a folder is refused)",
    )
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    t.add_argument("--list", action=_ListPresets, help="list the presets, one line each, and exit")
    _add_common(t, device="config")
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
    s.add_argument("--seed", type=int, default=0, help="seed of chunk 0 (chunk k: seed + k)")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    _add_common(s)
    s.add_argument("--out", required=True, help="FILE.npy (or .npz); a PNG is written beside it")
    s.set_defaults(func=cmd_sample)

    lk = sub.add_parser("likelihood", help="negative log-likelihood by the probability-flow ODE")
    lk.add_argument("--workdir", required=True, help="run folder holding checkpoint.pt")
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
        help="use the first N examples (--num-examples under torchrun, which reads --n itself; "
        "default: all of them)",
    )
    lk.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="R evaluations per example, averaged before the mean and its standard error over "
        "examples: fresh dequantization noise (images) and Hutchinson probes each time",
    )
    lk.add_argument("--batch-size", dest="batch_size", type=int, default=1000,
                    help="examples per ODE solve (progress is reported per batch)")  # fmt: skip
    lk.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of dopri5")
    lk.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of dopri5")
    lk.add_argument("--eps", type=float, default=1e-5,
                    help="the ODE runs from this time to T (log p_eps is reported)")  # fmt: skip
    lk.add_argument("--seed", type=int, default=0,
                    help="seed of the dequantization noise and the Hutchinson probes")  # fmt: skip
    _add_common(lk)
    lk.add_argument("--out", help="JSON path (default: WORKDIR/likelihood.json)")
    lk.set_defaults(func=cmd_likelihood)

    d = sub.add_parser("demo", help="train on the swiss roll and draw every picture (~2 minutes)")
    d.add_argument("--out", default="runs/demo", help="folder for the run and its pictures")
    d.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    d.add_argument("--n", type=int, default=2000, help="samples per picture")
    d.add_argument("--seed", type=int, default=0, help="seed of training and sampling")
    _add_common(d, device=None)
    d.set_defaults(func=cmd_demo)

    pl = sub.add_parser("plot", help="redraw a run's training curves (loss, test bits/dim)")
    pl.add_argument("--workdir", required=True, help="run folder holding metrics.csv")
    pl.add_argument("--out", help="PNG path (default: WORKDIR/curves.png)")
    _add_common(pl, device=None)
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser("convert", help="convert an official score_sde_pytorch checkpoint")
    c.add_argument("--official", required=True, help="checkpoint .pth of the official code")
    c.add_argument("--config", required=True, help="its config as JSON")
    c.add_argument("--out", required=True, help="run folder to write")
    c.add_argument("--no-ema", action="store_true", help="take the raw weights, not the EMA")
    _add_common(c, device=None)
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="summarise a model: parameters, SDE, parameterization")
    i.add_argument("--workdir", required=True, help="run folder holding checkpoint.pt")
    _add_common(i, device=None)
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
    t.add_argument("--scheduler", default="asha", choices=SCHEDULERS,
                   help="asha: stop poor trials early at evaluations; fifo: run all")  # fmt: skip
    t.add_argument("--metric", default="eval_loss", choices=tuple(METRICS),
                   help="minimized: eval_loss (test DSM loss) or bpd (image data)")  # fmt: skip
    t.add_argument("--address", help="Ray cluster: auto | HOST:PORT (default: start Ray here)")
    t.add_argument("--workdir", default="runs/tune", help="results.csv, tune.png, best.yaml")
    t.add_argument("--cpus-per-trial", dest="cpus_per_trial", type=float, default=1.0,
                   help="Ray CPUs per trial; the trial uses that many torch threads")  # fmt: skip
    t.add_argument("--gpus-per-trial", dest="gpus_per_trial", type=float, default=None,
                   help="Ray GPUs per trial (default: 1 with a CUDA train.device)")  # fmt: skip
    t.add_argument("--seed", type=int, default=0, help="seed of the random search")
    t.add_argument("--max-concurrent", dest="max_concurrent", type=int, default=None,
                   help="at most this many trials at once (default: as cores allow)")  # fmt: skip
    _add_common(t, device="config")
    t.set_defaults(func=cmd_tune)


def _setup_run(args: argparse.Namespace) -> None:
    """Threads (``--threads``, ``$SCORESDE_THREADS`` or the default) and ``--quiet`` for this run;
    the header line saying which, written before the run's first progress output."""
    from .threads import ENV_VAR, apply_threads, resolve_threads

    threads, source = resolve_threads(getattr(args, "threads", None))
    apply_threads(threads)
    _RUN["quiet"] = bool(getattr(args, "quiet", False))
    rank = int(os.environ.get("RANK", "0"))
    _RUN["header"] = None if rank or getattr(args, "dry_run", False) else (
        f"scoresde {args.verb}: {threads} torch thread{'s' * (threads > 1)} ({source}; "
        f"--threads N or {ENV_VAR}=N to change)"
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from ..core.ode import ODEError

    args = build_parser().parse_args(argv)
    try:
        _setup_run(args)
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
