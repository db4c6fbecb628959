"""The ``scoresde`` command line: each verb parses, builds, calls, prints. No mathematics here.

Verbs: ``train``, ``sample``, ``likelihood``, ``demo``, ``plot``, ``convert``, ``info``, ``tune``,
``control`` and ``train-classifier`` (in :mod:`.control`), ``evaluate`` and ``features`` (in
:mod:`.evaluate`).
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
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .argtypes import int_at_least as _int_at_least
from .argtypes import real as _real
from .argtypes import seed as _seed

__all__ = ["main", "build_parser"]

SAMPLE_SUFFIXES = (".npz", ".npy", ".png")  # what `scoresde sample --out FILE` writes


class RandomSeed(int):
    """A seed that ``--seed random`` chose; the verb prints it as ``seed=N`` (see
    :func:`_resolve_seed`), so that the call can be repeated with ``--seed N``."""


def _seed_or_random(text: str) -> int:
    """An argparse ``type``: a seed (:func:`_seed`), or ``random`` for a fresh one."""
    if text.strip().lower() == "random":
        import secrets

        return RandomSeed(secrets.randbits(31))
    try:
        return _seed(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (or 'random')") from None


_seed_or_random.__name__ = "seed"


def _resolve_seed(seed: int, d=None) -> int:
    """``seed`` as a plain int. A ``--seed random`` one is rank 0's (given to every process under
    torchrun), printed on stdout as ``seed=N`` by rank 0 before the work."""
    if not isinstance(seed, RandomSeed):
        return int(seed)
    if d is not None and d.active:
        from ..training import distributed

        seed = int(distributed.all_reduce(torch.tensor(seed if d.is_main else 0), d, "sum"))
    if d is None or d.is_main:
        print(f"seed={seed}", flush=True)
    return int(seed)


def _pick_device(name: str) -> torch.device:
    """``--device`` (:func:`scoresde.app.device.pick_device`)."""
    from .device import pick_device

    return pick_device(name)


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
    """The run's config: the preset or file, ``--data-dir`` / ``--data``, then every ``--set``;
    a relative ``data.path`` / ``data.data_dir`` (from any of them) made absolute, so the run's
    ``config.yaml`` finds its data from any folder (a resume, ``scoresde likelihood``)."""
    from ..training.config import apply_overrides, load_config

    sets = [*_device_set(getattr(args, "device", None)), *args.set]  # --set has the last word
    if args.data_dir:  # JSON strings are YAML strings: the path is never read as a number
        sets.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.data:
        sets.append(f"data.path={json.dumps(args.data)}")
    cfg = apply_overrides(load_config(args.config), sets)  # an image folder / .npz: its scaling
    paths = {k: getattr(cfg.data, k) for k in ("path", "data_dir")}
    absolute = [f"data.{k}={json.dumps(_absolute(v))}" for k, v in paths.items() if v]
    return apply_overrides(cfg, absolute) if absolute else cfg


def _absolute(path: str) -> str:
    """``path`` (``~`` expanded) as an absolute path, from the current folder."""
    return os.path.abspath(os.path.expanduser(str(path)))


def _note_tensorboard(cfg, main_rank: bool) -> None:
    """One line on stderr (rank 0) when ``train.tensorboard`` is true but not installed."""
    from ..training.loop import tensorboard_note

    note = tensorboard_note(cfg)
    if note and main_rank:
        print(f"scoresde train: {note}", file=sys.stderr)


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


def _train_run(args: argparse.Namespace):
    """``(config, saved config or None, its step, the changes)`` of ``train``: the preset or
    file with its overrides, or on ``--resume`` the run's own config (checked to resume)."""
    from ..training.config import apply_overrides, check_device, resume_changes
    from ..training.workdir import saved_run

    if args.config is None and not args.resume:
        raise ValueError("--config is needed (a preset or a YAML file) unless --resume is given")
    if args.resume and args.config is None:  # the run's own config, then --data-dir/--data/--set
        saved, step = saved_run(args.workdir)
        sets = list(args.set)
        sets += [f"data.data_dir={json.dumps(_absolute(args.data_dir))}"] if args.data_dir else []
        sets += [f"data.path={json.dumps(_absolute(args.data))}"] if args.data else []
        cfg = apply_overrides(saved, sets)
    else:
        cfg = _train_config(args)
        saved, step = saved_run(args.workdir) if args.resume else (None, 0)
    changes = resume_changes(saved, cfg) if saved is not None else []
    check_device(cfg.train.device)  # before a process group or a tensor is put on it
    return cfg, saved, step, changes


def cmd_train(args: argparse.Namespace) -> int:
    """``scoresde train``: resolve the config, train with a progress bar, print the result.

    ``--resume`` continues the run with its own config (``--config`` optional; ``--set`` may
    change train.steps and the keys safe to change, which are listed). SIGINT / SIGTERM save a
    checkpoint, say so on stderr and exit with 130 / 143. ``--dry-run`` makes every check that
    training makes before its first file (:func:`~scoresde.training.config.check_run`).
    """
    from ..training.config import check_run, dump_yaml
    from ..training.loop import Interrupted, train
    from ..training.workdir import refuse

    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun rank 0 reports for all
    cfg, saved, step, changes = _train_run(args)
    if main_rank:  # what would lose a run, before any data are read or fetched
        refuse(args.workdir, args.resume, args.overwrite)
    if args.dry_run:  # every check of train, nothing written (--download: nothing fetched)
        check_run(cfg, data=not args.download)
        print(dump_yaml(cfg), end="")
        return 0
    if args.download:
        print(_download(cfg))
    _note_tensorboard(cfg, main_rank)
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
    """``scoresde sample``: draw ``--n`` samples in chunks, write ``--out`` (rank 0), print each
    file written and the NFE."""
    from ..training.evaluate import draw_samples

    out, kind = _sample_target(args.out)  # a wrong --out fails before the work
    d, model, cfg, standardizer = _load_run(args.workdir, args.device, ema=not args.no_ema)
    seed = _resolve_seed(args.seed, d)
    options, shape, t0 = _sampler_options(args), _data_shape(cfg), time.perf_counter()
    options, fit = _grid_choice(args, model, shape, options, seed, d.device)
    bar = _progress(args.n, "sample", unit="samples")
    on_chunk, on_step = _sample_progress(bar, model.sde, args.n, args.chunk, options.get("eps"))
    try:
        x, nfe = draw_samples(
            model, shape, args.n, sampler=args.sampler, chunk=args.chunk, seed=seed, dist=d,
            callback=on_chunk, step_callback=on_step, **options,
        )  # fmt: skip
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    if not d.is_main:  # rank 0 writes
        return 0
    x = _to_data_units(x.cpu(), cfg, standardizer)
    title = _sample_title(args, nfe, kind)
    print("\n".join(_save_samples(x, out, kind, title)))
    if fit is not None:
        print(_save_grid(fit, out, kind))
    chunks = -(-args.n // args.chunk)
    split = f" ({chunks} chunks, {d.world} processes)" if d.active else ""
    print(f"sampler={args.sampler} nfe={nfe} time={wall:.2f}s{split}")
    return 0


def _grid_choice(args, model, shape, options: dict, seed: int, device):
    """``(options, fit record or None)``: ``--grid optimised`` fitted here, ``--grid FILE.json``
    read; any other ``--grid`` stays a name for the sampler."""
    from .grid import FITTED, check_fit, fitted_grid_options, read_grid

    if args.grid == FITTED:
        check_fit(args.sampler, args.grid_warmup)
        if not args.quiet:
            print(f"fitting a time grid to {args.sampler} on {args.grid_warmup} warm-up draws "
                  "(a teacher solve, then at most 300 runs of the sampler on them)",
                  file=sys.stderr, flush=True)  # fmt: skip
        return fitted_grid_options(model, shape, args.sampler, options, warmup=args.grid_warmup,
                                   seed=seed, device=device)  # fmt: skip
    if args.grid is not None and args.grid.lower().endswith(".json"):
        if "grid" not in options:
            raise ValueError(f"--grid {args.grid}: --sampler {args.sampler} takes no time grid")
        return {**options, "grid": read_grid(args.grid)}, None
    return options, None


def _save_grid(fit: dict, out: Path, kind: str) -> str:
    """Write the fitted grid's JSON beside the samples (atomically); the line saying so."""
    from ..training.checkpoint import write_text_atomic
    from .grid import grid_path

    path = grid_path(out, kind)
    write_text_atomic(path, json.dumps(fit, indent=1) + "\n")
    how = f"{fit['steps']} steps fitted to {fit['sampler']} on {fit['warmup']} warm-up draws"
    return f"wrote {path} (a grid of {how} in {fit['seconds']:.1f}s; reuse: --grid {path})"


def _sample_target(out: str) -> tuple[Path, str]:
    """``(path, kind)`` of ``--out``: kind ``"dir"`` (a trailing slash or an existing folder)
    or the file's suffix, one of :data:`SAMPLE_SUFFIXES` (any other: ValueError)."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        return path, "dir"
    if path.suffix.lower() not in SAMPLE_SUFFIXES:
        got = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise ValueError(
            f"--out {out} has {got}; valid: FILE.npz, FILE.npy, FILE.png (a picture) or DIR/ "
            "(a folder: one PNG per image and samples.npz)"
        )
    return path, path.suffix.lower()


def _sample_title(args: argparse.Namespace, nfe: int, kind: str) -> str:
    """The title of a sample picture: sampler, NFE and the checkpoint's training step."""
    if kind not in ("dir", ".png"):
        return ""
    from ..training.checkpoint import load_checkpoint

    step = load_checkpoint(args.workdir).get("step")  # read again only for a picture
    return f"{args.sampler} sampler, NFE {nfe}" + (f", step {step}" if step is not None else "")


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
    the run's test split; its first ``n`` examples (a note on stderr if there are fewer).

    Data of another shape than the model's are refused, never broadcast."""
    from ..data import IMAGE_DATASETS, is_image_path, load_array, load_data, load_image_path

    want = _data_shape(cfg)
    if path and is_image_path(path):
        x = load_image_path(path, cfg.data.shape, "test")
    elif path:
        x = load_array(path)
    elif len(want) == 3 and cfg.data.path is None and cfg.data.name not in IMAGE_DATASETS:
        raise ValueError(
            f"this model takes images of shape {list(want)} and its run names no data set of "
            "them (a converted checkpoint?): give --data, a folder of PNG/JPEG files or an "
            ".npz holding x_test"
        )
    else:
        _, x, _ = load_data(cfg.data)
    where = path or f"the run's test split ({cfg.data.path or cfg.data.name})"
    if tuple(x.shape[1:]) != want:
        raise ValueError(
            f"{where} has examples of shape {tuple(x.shape[1:])} but the model takes {want}"
        )
    if n is not None and n > len(x):
        print(f"scoresde likelihood: note: --n {n}, but {where} holds {len(x)} examples; "
              f"using all {len(x)}", file=sys.stderr)  # fmt: skip
    return x if n is None else x[:n]


def _how(result: dict, args: argparse.Namespace) -> str:
    """How the NLL was computed, in words: the ODE's divergence, or the ELBO's samples."""
    if result["bound"] == "elbo":
        k = args.elbo_samples
        return f"the ELBO of {k} stratified draws per example, a bound on the reverse SDE's NLL"
    return f"{result['divergence']} divergence"


def cmd_likelihood(args: argparse.Namespace) -> int:
    """``scoresde likelihood``: NLL (and bits/dim of images) of a data set; JSON from rank 0."""
    from ..training.checkpoint import write_text_atomic
    from ..training.evaluate import dataset_nll
    from ..training.workdir import writing

    d, model, cfg, standardizer = _load_run(args.workdir, args.device)
    x = _likelihood_data(args.data, cfg, args.n)
    bar = _progress(len(x) * args.repeats, "likelihood", unit="examples")
    try:
        nll = dataset_nll(
            model, x, cfg.data, standardizer, divergence=args.divergence, repeats=args.repeats,
            batch_size=args.batch_size, rtol=args.rtol, atol=args.atol, eps=args.eps,
            seed=_resolve_seed(args.seed, d), dist=d, callback=_advance(bar), bound=args.bound,
            elbo_samples=args.elbo_samples,
        )  # fmt: skip
    finally:
        bar.close()
    if not d.is_main:  # rank 0 writes
        return 0
    result = nll.summary()
    out = Path(args.out) if args.out else Path(args.workdir) / "likelihood.json"
    with writing(out):  # a full disk: one line naming the file, and the old file kept
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(
        f"nll = {result['nll']:.4f} ± {result['se']:.4f} nats "
        f"({result['nll_per_dim']:.4f} per dim, median {result['median']:.4f}, "
        f"n={result['n']}, {_how(result, args)}); wrote {out}"
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
    """``scoresde plot``: one picture of a run (:func:`scoresde.app.plot.plot_run`)."""
    from .plot import plot_run

    _announce()
    out = plot_run(args.workdir, args.what, args.out, n=args.n, seed=args.seed)
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


def _save_samples(x: torch.Tensor, out: Path, kind: str, title: str = "") -> list[str]:
    """Write the samples ``x`` (data units, on the CPU) as ``kind`` (:func:`_sample_target`);
    one ``wrote ...`` line per thing written.

    ``.npz``: key ``samples``; ``.npy``: the array; ``.png``: a picture (images: a grid of the
    first 64, each enlarged to at least 64 pixels; vectors: a scatter, 1-D: a histogram); a
    folder: ``000000.png``, ... (one 8-bit PNG per image) and ``samples.npz``, or for vectors
    ``samples.npz`` and ``samples.png``. Image samples are pixels in [0, 1], ``(N, C, H, W)``.
    """
    arr, what = x.numpy(), f"{len(x)} samples of shape {tuple(x.shape[1:])}"
    if kind == "dir":
        out.mkdir(parents=True, exist_ok=True)
        lines = _save_image_files(arr, out) if arr.ndim == 4 else []
        lines += _save_samples(x, out / "samples.npz", ".npz")
        return lines + (
            [] if arr.ndim == 4 else _save_samples(x, out / "samples.png", ".png", title)
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".png":
        return [f"wrote {out} ({_sample_picture(arr, out, title)})"]
    with open(out, "wb") as f:  # a file object: numpy appends no suffix of its own
        np.savez(f, samples=arr) if kind == ".npz" else np.save(f, arr)
    return [f"wrote {out} ({what}{', key samples' if kind == '.npz' else ''})"]


def _sample_picture(arr: np.ndarray, out: Path, title: str) -> str:
    """Draw ``arr`` at ``out`` (a grid of images, else a scatter / histogram); what it shows."""
    from ..viz import plots

    if arr.ndim == 4:
        plots.image_grid(arr[:64], out, title=title)
        return f"a grid of {min(len(arr), 64)} of the {len(arr)} images"
    plots.clouds({f"{len(arr)} samples": arr}, out, title=title)
    if arr.ndim == 2 and arr.shape[1] > 2:
        return f"a scatter of coordinates 0 and 1 of the {len(arr)} samples"
    return f"a {'scatter' if arr.ndim == 2 and arr.shape[1] == 2 else 'histogram'} of the samples"


def _save_image_files(arr: np.ndarray, out: Path) -> list[str]:
    """One 8-bit PNG per image of ``arr`` (``(N, C, H, W)`` in [0, 1]): ``out/000000.png``, ..."""
    from PIL import Image

    from ..data import from_model

    pixels = from_model(torch.from_numpy(arr)).numpy().transpose(0, 2, 3, 1)  # floor(256 u)
    for i, p in enumerate(pixels):
        Image.fromarray(p[:, :, 0] if p.shape[2] == 1 else p).save(out / f"{i:06d}.png")
    last = out / f"{len(arr) - 1:06d}.png"
    return [
        f"wrote {len(arr)} images {out / '000000.png'} ... {last} ({arr.shape[2]}x{arr.shape[3]})"
    ]


_GRID_HELP = (
    "the time grid: logSNR | time_uniform | time_quadratic | edm (dpm_solver, unipc, deis, "
    "ipndm, lms); optimised: fitted to the model and the sampler (--grid-warmup draws; sample "
    "writes it as JSON beside --out); FILE.json: such a fitted grid"
)


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
        s.add_argument("--snr", type=_real(0, True), help="pc: the corrector's signal-to-noise"),
        s.add_argument(
            "--corrector-steps",
            dest="corrector_steps",
            type=_int_at_least(0),
            help="pc: corrector iterations per step",
        ),
        s.add_argument(
            "--steps",
            type=_int_at_least(1),
            help="number of steps (pc: the SDE's N when unset; ode fixed grid, heun, dpm_solver)",
        ),
        s.add_argument(
            "--method",
            "--dpm-method",
            dest="method",
            help="ode: dopri5 | rk4 | euler | scipy-RK45 ...; dpm_solver: singlestep | multistep",
        ),
        s.add_argument("--rtol", type=_real(0), help="ode, adaptive: relative tolerance"),
        s.add_argument("--atol", type=_real(0), help="ode, adaptive: absolute tolerance"),
        s.add_argument("--order", type=_int_at_least(1), help="1, 2, 3 (lms, ipndm: 1-4)"),
        s.add_argument("--variant", help="unipc: bh1 | bh2"),
        s.add_argument("--eta", type=_real(0), help="dpm_solver_sde: noise (0: the ODE)"),
        s.add_argument("--grid", help=_GRID_HELP),
        s.add_argument("--churn", type=_real(0), help="heun: stochastic churn"),
        s.add_argument("--rho", type=_real(0, True), help="heun: exponent of the EDM grid (7)"),
        s.add_argument(
            "--lam", type=float, help="lambda: 0 = reverse SDE, 1 = probability-flow ODE"
        ),
        s.add_argument(
            "--eps",
            type=_real(0, strict=True),
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
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``scoresde VERB: error: ...`` with exit
    code 2 (the usage is printed by ``--help`` only), and whose ``choices`` are checked as every
    other name is: the valid ones listed, with "did you mean"."""

    def error(self, message: str) -> typing.NoReturn:
        """Print one line and exit with 2."""
        first = message.strip().splitlines()[0] if message.strip() else "bad arguments"
        self.exit(2, f"{self.prog}: error: {first}\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        from ..core.checks import lookup

        if action.choices is None or value in action.choices:
            return
        what = "verb" if isinstance(action, argparse._SubParsersAction) else action.dest
        try:
            lookup(dict.fromkeys(action.choices), value, what.replace("_", " "), callables=False)
        except ValueError as e:
            raise argparse.ArgumentError(action, str(e)) from None


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
    p = _Parser(
        prog="scoresde",
        description="Score-based generative modeling through SDEs: train, sample, likelihood.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verb_parser = functools.partial(_Parser, formatter_class=_Help)
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
        type=_int_at_least(1),
        default=1000,
        help="number of samples (under torchrun write --num-samples: torchrun's own parser "
        "takes --n for an abbreviation of its options)",
    )
    s.add_argument(
        "--chunk",
        type=_int_at_least(1),
        default=1000,
        help="samples per sampler call (memory and speed); chunks are dealt to the processes "
        "under torchrun. The samples do not depend on it",
    )
    s.add_argument(
        "--seed", type=_seed_or_random, default=0,
        help="sample i draws all its noise from its own stream of this seed, so the samples do "
        "not depend on --chunk or the number of processes; 'random': a fresh seed, printed as "
        "seed=N",
    )  # fmt: skip
    s.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    s.add_argument(
        "--grid-warmup", type=_int_at_least(2), default=128, metavar="M",
        help="--grid optimised: prior draws the grid is fitted on (a seed stream apart from the "
        "samples')",
    )  # fmt: skip
    _add_common(s)
    s.add_argument(
        "--out", required=True,
        help="FILE.npz (key samples; images: pixels in [0, 1], N x C x H x W), FILE.npy, "
        "FILE.png (a picture: image grid, or scatter) or DIR/ (a folder: 000000.png ... one per "
        "image and samples.npz; vectors: samples.npz and samples.png); exactly that is written",
    )  # fmt: skip
    s.set_defaults(func=cmd_sample)

    lk = sub.add_parser("likelihood", help="negative log-likelihood by the probability-flow ODE")
    lk.add_argument("--workdir", required=True, help="run folder holding checkpoint.pt")
    lk.add_argument(
        "--data",
        help="FILE.npy or .csv, or images (a FOLDER of PNG/JPEG, or FILE.npz with x_test) "
        "for an image model; default: the run's test split",
    )
    lk.add_argument(
        "--method",
        "--bound",
        dest="bound",
        choices=("ode", "elbo"),
        default="ode",
        help="ode: the probability-flow likelihood; elbo: the reverse SDE's evidence lower bound "
        "(an upper bound on that model's NLL, no ODE solve); --bound is the same option",
    )
    lk.add_argument(
        "--elbo-samples",
        dest="elbo_samples",
        type=_int_at_least(1),
        default=16,
        help="--method elbo: Monte Carlo draws of (t, noise) per example, averaged (times "
        "stratified: draw k in the k-th of K equal parts)",
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
        type=_int_at_least(1),
        help="use the first N examples (--num-examples under torchrun, which reads --n itself; "
        "default: all of them)",
    )
    lk.add_argument(
        "--repeats",
        type=_int_at_least(1),
        default=1,
        help="R evaluations per example, averaged before the mean and its standard error over "
        "examples: fresh dequantization noise (images) and Hutchinson probes each time",
    )
    lk.add_argument("--batch-size", dest="batch_size", type=_int_at_least(1), default=1000,
                    help="examples per ODE solve (progress is reported per batch)")  # fmt: skip
    lk.add_argument("--rtol", type=_real(0), default=1e-5, help="relative tolerance of dopri5")
    lk.add_argument("--atol", type=_real(0), default=1e-5, help="absolute tolerance of dopri5")
    lk.add_argument("--eps", type=_real(0, strict=True), default=1e-5,
                    help="the ODE runs from this time to T (log p_eps is reported)")  # fmt: skip
    lk.add_argument("--seed", type=_seed_or_random, default=0,
                    help="seed of the dequantization noise and the Hutchinson probes; 'random': "
                    "a fresh one, printed as seed=N")  # fmt: skip
    _add_common(lk)
    lk.add_argument("--out", help="JSON path (default: WORKDIR/likelihood.json)")
    lk.set_defaults(func=cmd_likelihood)

    d = sub.add_parser("demo", help="train on the swiss roll and draw every picture (~2 minutes)")
    d.add_argument("--out", default="runs/demo", help="folder for the run and its pictures")
    d.add_argument("--steps", type=_int_at_least(1), help="training steps (default: the preset's)")
    d.add_argument("--n", type=_int_at_least(1), default=2000, help="samples per picture")
    d.add_argument("--seed", type=_seed, default=0, help="seed of training and sampling")
    _add_common(d, device=None)
    d.set_defaults(func=cmd_demo)

    from . import plot

    pl = sub.add_parser("plot", help="draw a run's curves, paths, score field, density, animation")
    pl.add_argument("--workdir", required=True, help="run folder (metrics.csv, checkpoint.pt)")
    pl.add_argument("--what", default="curves", choices=plot.WHAT,
                    help="curves: losses (any run); the others need a 1-D or 2-D run: "
                    "trajectories (noise -> data paths), field (score and log p_t), density "
                    "(learned vs data), animation (the density during training)")  # fmt: skip
    pl.add_argument("--out", help="file to write (default: WORKDIR/curves.png, trajectories.png, "
                    "field.png, density.png, density.gif)")  # fmt: skip
    pl.add_argument("--n", type=int, default=1000, help="paths drawn / held-out points shown")
    pl.add_argument("--seed", type=int, default=0, help="seed of the paths")
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
    from .control import add_parsers as add_control_parsers  # control, train-classifier

    add_control_parsers(sub, _progress, _add_common)
    from .evaluate import add_parsers as add_evaluate_parsers  # evaluate, features

    add_evaluate_parsers(sub, _progress, _add_common)
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

    try:  # a usage error: one line, exit 2 (_Parser.error); --help, --list: exit 0
        args = build_parser().parse_args(argv)
    except SystemExit:
        if _flush_stdout():
            raise
        return BROKEN_PIPE
    except BrokenPipeError:  # --list or --help into a closed pipe
        _quiet_stdout()
        return BROKEN_PIPE
    try:
        _setup_run(args)
        code = args.func(args)
        return code if _flush_stdout() else BROKEN_PIPE
    except BrokenPipeError:  # the reader of stdout went away (``scoresde ... | head``)
        _quiet_stdout()
        return BROKEN_PIPE
    except (ValueError, OSError, ODEError) as e:
        print(f"scoresde {args.verb}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scoresde {args.verb}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    """The first line of an error's message; an ``OSError`` as ``path: reason``."""
    if isinstance(e, OSError) and e.strerror:
        where = e.filename if e.filename is not None else ""
        return f"{where}: {e.strerror}" if where else f"{e.strerror}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


BROKEN_PIPE = 141  # 128 + SIGPIPE: how the shell reports a writer that its pipe ended


def _flush_stdout() -> bool:
    """Flush stdout; ``False`` (and stdout quietened) if its reader went away."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return False
    return True


def _quiet_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush of a closed pipe
    writes no second error."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured in a test)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
