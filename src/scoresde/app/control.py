"""The ``control`` and ``train-classifier`` verbs: controllable generation from a trained run.

``scoresde control --task inpaint|colorize|superres|class --workdir RUN`` reads inputs (the run's
test images, a folder of images or an ``.npz``), builds the observation (a mask by name or from a
PNG, the grey image, a downsampled image) and samples ``p(x | y)`` with
:func:`scoresde.sample_conditional`; ``--task class`` samples each requested class with
:func:`scoresde.classifier_guidance` and a classifier from ``train-classifier``. It writes a grid
PNG (rows: input, observation, samples) and an ``.npz`` of all arrays. Bad input (a mask of the
wrong shape, a class out of range, a classifier of another SDE or shape) is a ``ValueError``: one
line, exit 2. Sample ``j`` of input (or class) ``i`` draws from its own stream
(:class:`scoresde.samplers.SampleStreams`), so it does not depend on the other inputs or classes.

``scoresde train-classifier`` trains on a run's SDE and data (``--run``), a classifier preset's
(``--preset``, :data:`scoresde.training.classifier.CLASSIFIER_PRESETS`; ``--list``) or
``--sde`` / ``--data``; options given explicitly override the preset. A folder that holds a
classifier is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["add_parsers", "cmd_control", "cmd_train_classifier", "MASKS", "make_mask"]

TASKS = ("inpaint", "colorize", "superres", "class")


# ---- masks -----------------------------------------------------------------------------------
def _half(h: int, w: int, g: torch.Generator) -> Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:, : w // 2] = True  # the left half is observed: the right half is filled in
    return m


def _center(h: int, w: int, g: torch.Generator) -> Tensor:
    m = torch.ones(h, w, dtype=torch.bool)
    m[h // 4 : h - h // 4, w // 4 : w - w // 4] = False  # the centre square is filled in
    return m


def _random(h: int, w: int, g: torch.Generator) -> Tensor:
    return torch.rand(h, w, generator=g) < 0.25  # 25 % of the pixels observed


def _top(h: int, w: int, g: torch.Generator) -> Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[: h // 2] = True
    return m


MASKS: dict[str, Callable[[int, int, torch.Generator], Tensor]] = {
    "half": _half,
    "left": _half,
    "right": lambda h, w, g: ~_half(h, w, g),
    "top": _top,
    "bottom": lambda h, w, g: ~_top(h, w, g),
    "center": _center,
    "random": _random,
}


def make_mask(spec: str, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A boolean mask ``(1, C, H, W)`` (True = observed) by name (:data:`MASKS`) or from a PNG
    (white = observed), which must be ``H x W``."""
    C, H, W = shape
    if spec in MASKS:
        m = MASKS[spec](H, W, torch.Generator().manual_seed(seed))
    elif spec.lower().endswith(".png"):
        from PIL import Image

        a = np.asarray(Image.open(spec).convert("L"))
        if a.shape != (H, W):
            raise ValueError(f"mask {spec} is {a.shape[1]}x{a.shape[0]} but the images are {W}x{H}")
        m = torch.from_numpy(a >= 128)
    else:
        raise ValueError(f"unknown mask {spec!r}; valid: {', '.join(MASKS)} or a .png file")
    return m.expand(1, C, H, W).clone()


# ---- inputs ----------------------------------------------------------------------------------
def _inputs(source: str | None, cfg, n: int) -> Tensor:
    """``n`` uint8 images ``(n, C, H, W)``: the run's test split, a folder, or an ``.npz``."""
    from ..data import load_images

    shape = tuple(cfg.data.shape)
    if source is None:
        x, _ = load_images(cfg.data.name, "test", cfg.data.data_dir)
    elif source.endswith(".npz"):
        with np.load(source) as d:
            key = next((k for k in ("x_test", "x", "images", "x_train") if k in d), None)
            if key is None:
                raise ValueError(f"{source} holds none of x_test, x, images, x_train")
            a = d[key]
        a = a[:, None] if a.ndim == 3 else (a.transpose(0, 3, 1, 2) if a.shape[-1] in (1, 3) else a)
        x = torch.from_numpy(np.ascontiguousarray(a).astype(np.uint8))
    else:
        x = load_images(source, "test", size=shape[1:], channels=shape[0])[0]
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"input images are {tuple(x.shape[1:])} but the model's are {shape}")
    return x[:n]


def _to_model(x: Tensor, cfg) -> Tensor:
    return x.to(torch.float32) / 255 * cfg.data.scale + cfg.data.shift


def _to_unit(x: Tensor, cfg) -> np.ndarray:
    return ((x.detach().cpu().double() - cfg.data.shift) / cfg.data.scale).clamp(0, 1).numpy()


# ---- the observation of each task ----------------------------------------------------------
def _observation(args, x: Tensor, cfg):
    """``(observation, picture of it in model space)`` for ``--task``."""
    from .. import control as sd

    shape = tuple(cfg.data.shape)
    if args.task == "inpaint":
        mask = make_mask(args.mask, shape, args.seed).to(x.device)
        grey = torch.full_like(x, 0.5 * cfg.data.scale + cfg.data.shift)
        return sd.Inpainting(x, mask.expand_as(x)), torch.where(mask, x, grey)
    if args.task == "colorize":
        if shape[0] != 3:
            raise ValueError(f"colorize needs a 3-channel (RGB) model, this run's is {shape}")
        gray = x.mean(1, keepdim=True)
        return sd.Colorization(gray), gray.expand_as(x)
    f = args.factor
    if shape[1] % f or shape[2] % f:
        raise ValueError(f"--factor {f} does not divide the image size {shape[1]}x{shape[2]}")
    small = x.reshape(len(x), shape[0], shape[1] // f, f, shape[2] // f, f).mean(dim=(3, 5))
    obs = sd.SuperResolution(small, f)
    return obs, obs.pinv(small)


def _classifier(args, model, cfg):
    """The classifier of ``--classifier``, checked against the run's SDE and data shape."""
    from ..training.classifier import load_classifier, sde_spec

    if args.classifier is None:
        raise ValueError(
            "--task class needs --classifier DIR (train one: scoresde train-classifier)"
        )
    clf, meta = load_classifier(args.classifier)
    if sde_spec(clf.sde) != sde_spec(model.sde):
        raise ValueError(f"the classifier was trained for {clf.sde!r}, the run uses {model.sde!r}")
    if list(clf.net.config.shape) != list(cfg.data.shape):
        raise ValueError(
            f"the classifier reads {tuple(clf.net.config.shape)} inputs, the run's data are "
            f"{tuple(cfg.data.shape)}"
        )
    return clf


def _grid(rows: list[np.ndarray], out: Path, title: str) -> Path:
    from ..viz.plots import image_grid

    ncol = max(len(r) for r in rows)
    return image_grid(np.concatenate(rows), out, nrow=ncol, title=title)


def _bar_total(args, steps: int) -> int:
    if args.method == "repaint" and args.task != "class":
        from ..control.projection import repaint_moves

        return len(repaint_moves(steps, args.jump, args.resample))
    return steps


def _method_options(args) -> dict:
    if args.method == "repaint":
        return dict(jump=args.jump, resample=args.resample)
    if args.method == "dps":
        return dict(zeta=args.zeta)
    return dict(snr=args.snr)


def _conditional(args, model, cfg, bar) -> tuple[list[np.ndarray], dict, int]:
    """Rows of the grid, arrays of the ``.npz`` and the NFE of an observation task."""
    from .. import control as sd
    from ..samplers import SampleStreams

    device = next(model.parameters()).device
    x_in = _to_model(_inputs(args.input, cfg, args.n), cfg).to(device)
    obs, picture = _observation(args, x_in, cfg)
    rows, nfe, n = [_to_unit(x_in, cfg), _to_unit(picture, cfg)], 0, len(x_in)
    for r in range(args.samples):  # sample r of input i: stream r * n + i
        g = SampleStreams(args.seed, range(r * n, (r + 1) * n))
        x, k = sd.sample_conditional(
            model.sde, model, tuple(x_in.shape), obs, method=args.method, steps=args.steps,
            generator=g, callback=lambda *_: bar.update(1), **_method_options(args),
        )  # fmt: skip
        rows.append(_to_unit(x, cfg))
        nfe += k
    arrays = dict(inputs=rows[0], observation=rows[1], samples=np.stack(rows[2:], 1))
    return rows, arrays, nfe


def _class_conditional(args, model, cfg, bar) -> tuple[list[np.ndarray], dict, int]:
    """One row of ``--samples`` guided samples per class."""
    from .. import control
    from ..samplers import SampleStreams, sample

    device = next(model.parameters()).device
    clf = _classifier(args, model, cfg).to(device).eval()
    K = clf.net.config.num_classes
    classes = list(range(K)) if args.classes is None else args.classes
    bad = [c for c in classes if not 0 <= c < K]
    if bad:
        raise ValueError(
            f"class index {bad[0]} out of range: the classifier has classes 0..{K - 1}"
        )
    rows, nfe, m = [], 0, args.samples
    for c in classes:  # sample j of class c: stream c * samples + j, whichever classes are drawn
        g = SampleStreams(args.seed, range(c * m, (c + 1) * m))
        guided = control.classifier_guidance(model, clf, c, args.scale)
        x, k = sample(
            model.sde, guided, (args.samples, *cfg.data.shape), sampler="pc", steps=args.steps,
            generator=g, device=device, callback=lambda *_: bar.update(1),
        )  # fmt: skip
        rows.append(_to_unit(x, cfg))
        nfe += k
    return rows, dict(classes=np.array(classes), samples=np.stack(rows)), nfe


def cmd_control(args: argparse.Namespace, progress: Callable) -> int:
    """Inpainting, colorization, super-resolution or class-conditional samples of a run."""
    from ..training.checkpoint import load_model
    from .device import pick_device

    device = pick_device(args.device)
    model, cfg, _ = load_model(args.workdir)
    model = model.to(device).eval()
    if cfg.data.shape is None or len(cfg.data.shape) != 3:
        raise ValueError(
            f"control needs a run on images (C, H, W); this one's data are {cfg.data.shape}"
        )
    args.steps = args.steps or model.sde.N
    per_call = _bar_total(args, args.steps)
    calls = len(args.classes or range(10)) if args.task == "class" else args.samples
    bar = progress(per_call * calls, f"control {args.task}")
    with torch.no_grad():
        run = _class_conditional if args.task == "class" else _conditional
        rows, arrays, nfe = run(args, model, cfg, bar)
    bar.close()
    out = Path(args.out or Path(args.workdir) / f"control_{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    what = "rows: classes" if args.task == "class" else "rows: input, observation, samples"
    png = _grid(
        rows,
        out / "grid.png",
        f"{args.task} ({'pc' if args.task == 'class' else args.method}, {args.steps} steps; "
        f"{what})",
    )
    np.savez_compressed(out / "samples.npz", **arrays)
    print(f"wrote {png} and {out / 'samples.npz'} (nfe={nfe})")
    return 0


# ---- train-classifier ----------------------------------------------------------------------
def _plot_accuracy(rows: list[dict], path: Path, title: str) -> Path:
    from ..viz.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["t"] for r in rows], [r["accuracy"] for r in rows], "o-")
    ax.set(xlabel="t", ylabel="test accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _named_sde(name: str):
    from ..training.config import SDES, SDEConfig, build_sde

    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; valid: {', '.join(SDES)}")
    return build_sde(SDEConfig(name=name))


def _classifier_source(args) -> tuple:
    """``(sde, data name, data folder, scale, shift)``: from ``--run``, else ``--preset`` (its
    score preset's SDE and data; ``--sde`` / ``--data`` given explicitly win), else ``--sde`` and
    ``--data`` (model space [0, 1])."""
    from ..training.checkpoint import load_model
    from ..training.classifier import preset_source

    if args.run is not None:
        if args.sde is not None or args.data is not None:
            raise ValueError("--run takes the SDE and data from the run: drop --sde / --data")
        model, cfg, _ = load_model(args.run)
        return model.sde, cfg.data.name, cfg.data.data_dir, cfg.data.scale, cfg.data.shift
    if args.preset is not None:
        _, sde, d = preset_source(args.preset)
        sde = sde if args.sde is None else _named_sde(args.sde)
        if args.data is None:
            return sde, d.name, d.data_dir, d.scale, d.shift
        return sde, args.data, None, 1.0, 0.0
    return _named_sde(args.sde or "vpsde"), args.data or "digits", None, 1.0, 0.0


def _classifier_data(args):
    """``(sde, x_train, y_train, x_test, y_test, data name)`` of :func:`_classifier_source`."""
    from ..data import load_images

    sde, name, data_dir, scale, shift = _classifier_source(args)
    (x, y), (xt, yt) = (load_images(name, s, data_dir) for s in ("train", "test"))
    if y is None:
        raise ValueError(f"data set {name!r} has no labels: a classifier needs y_train / y_test")
    f = lambda a: a.to(torch.float32) / 255 * scale + shift  # noqa: E731
    return sde, f(x), y, f(xt), yt, name


# the training options of train-classifier without a preset (a preset fills those not given)
CLASSIFIER_DEFAULTS = dict(steps=1500, batch_size=128, lr=2e-3, width=32, depth=2)


def _classifier_options(args) -> dict:
    """``steps, batch_size, lr, width, depth``: given on the command line, else the preset's,
    else :data:`CLASSIFIER_DEFAULTS`."""
    from ..training.classifier import preset_source

    base = dict(CLASSIFIER_DEFAULTS)
    if args.preset is not None:
        preset = preset_source(args.preset)[0]
        base = {k: getattr(preset, k) for k in base}
    given = {k: getattr(args, k) for k in base if getattr(args, k) is not None}
    return {**base, **given}


def _refuse_classifier(out: Path, overwrite: bool) -> None:
    """A folder that already holds a classifier is refused unless ``--overwrite``."""
    from ..training.classifier import CLASSIFIER_FILE

    if (out / CLASSIFIER_FILE).exists() and not overwrite:
        raise ValueError(
            f"{out / CLASSIFIER_FILE} exists: pass --overwrite to replace it, or pick another "
            "--workdir"
        )


def cmd_train_classifier(args: argparse.Namespace, progress: Callable) -> int:
    """Train a time-dependent classifier; write it with its accuracy-per-noise curve."""
    from ..training.classifier import (
        CLASSIFIER_FILE,
        accuracy_by_noise,
        save_classifier,
        train_classifier,
        write_accuracy_csv,
    )
    from .device import pick_device

    out = Path(args.workdir)
    _refuse_classifier(out, args.overwrite)
    device = pick_device(args.device)
    opts = _classifier_options(args)
    sde, x, y, xt, yt, name = _classifier_data(args)
    K = int(max(y.max(), yt.max())) + 1
    bar = progress(opts["steps"], "train-classifier")
    clf = train_classifier(
        sde, x, y, K, seed=args.seed, device=device,
        callback=lambda i, loss: bar.set(i + 1, loss=f"{loss:.3f}"), **opts,
    )  # fmt: skip
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    times = [round(0.1 * i, 1) or 0.01 for i in range(11)]
    rows = accuracy_by_noise(clf, xt[: args.n_test], yt[: args.n_test], times)
    meta = dict(data=name, preset=args.preset or "", seed=args.seed, **opts)
    save_classifier(out / CLASSIFIER_FILE, clf, meta)
    write_accuracy_csv(rows, out / "accuracy.csv")
    _plot_accuracy(rows, out / "accuracy.png", f"{name}, {type(sde).__name__}")
    for r in rows:
        print(f"t={r['t']:.2f} sigma={r['sigma']:.3g} accuracy={r['accuracy']:.3f}")
    print(f"wrote {out / CLASSIFIER_FILE}, accuracy.csv, accuracy.png")
    return 0


class _ListClassifierPresets(argparse.Action):
    """``train-classifier --list``: one line per classifier preset, then exit."""

    def __init__(self, option_strings, dest, **kw) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, **kw)  # fmt: skip

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from ..training.classifier import CLASSIFIER_PRESETS

        width = max(map(len, CLASSIFIER_PRESETS))
        for name, p in CLASSIFIER_PRESETS.items():
            print(
                f"{name:{width}s}  {p.about}; {p.steps} steps, batch {p.batch_size}, lr {p.lr:g}, "
                f"width {p.width}, depth {p.depth}"
            )
        parser.exit()


# ---- parsers -------------------------------------------------------------------------------
def add_parsers(sub, progress: Callable, add_common: Callable) -> None:
    """Register ``control`` and ``train-classifier`` on the sub-parser set ``sub``."""
    from functools import partial

    c = sub.add_parser(
        "control", help="inpaint, colorize, super-resolve or class-condition samples"
    )
    c.add_argument("--task", required=True, choices=TASKS, help="what to condition on")
    c.add_argument("--workdir", required=True, help="trained run folder (checkpoint.pt)")
    c.add_argument("--input", help="images: a folder or an .npz (default: the run's test split)")
    c.add_argument("--n", type=int, default=8, help="number of input images")
    c.add_argument("--samples", type=int, default=2, help="samples per input (per class for class)")
    c.add_argument(
        "--mask", default="half", help=f"inpaint: {' | '.join(MASKS)} | FILE.png (white = observed)"
    )
    c.add_argument("--factor", type=int, default=2, help="superres: average-pooling factor")
    c.add_argument(
        "--method", default="pc", choices=("pc", "dps", "repaint"), help="conditional sampler"
    )
    c.add_argument("--steps", type=int, help="steps (default: the SDE's N)")
    c.add_argument("--snr", type=float, default=0.16, help="pc: Langevin signal-to-noise ratio")
    c.add_argument("--jump", type=int, default=10, help="repaint: jump length")
    c.add_argument("--resample", type=int, default=10, help="repaint: resamplings per jump")
    c.add_argument("--zeta", type=float, default=1.0, help="dps: step size")
    c.add_argument("--classifier", help="class: folder or file from train-classifier")
    c.add_argument(
        "--class",
        dest="classes",
        type=int,
        action="append",
        help="class: class index (repeatable; default all)",
    )
    c.add_argument("--scale", type=float, default=1.0, help="class: guidance scale")
    c.add_argument("--seed", type=int, default=0, help="seed of the inputs, masks and samples")
    c.add_argument("--out", help="output folder (default: WORKDIR/control_TASK)")
    add_common(c)
    c.set_defaults(func=partial(cmd_control, progress=progress))
    _add_train_classifier(sub, progress, add_common)


def _add_train_classifier(sub, progress: Callable, add_common: Callable) -> None:
    from functools import partial

    from ..training.classifier import CLASSIFIER_PRESETS

    t = sub.add_parser("train-classifier", help="train a time-dependent classifier for guidance")
    t.add_argument(
        "--workdir", required=True, help="output folder: classifier.pt, accuracy.csv/.png"
    )
    t.add_argument(
        "--preset", help=f"training recipe ({', '.join(CLASSIFIER_PRESETS)}; see --list) with "
        "its score preset's SDE and data; options given here override it",
    )  # fmt: skip
    t.add_argument("--run", help="score-model run whose SDE and data (and model space) to use")
    t.add_argument("--data", help="labelled data set (without --run; default digits)")
    t.add_argument("--sde", help="vpsde | subvpsde | vesde (without --run; default vpsde)")
    d = CLASSIFIER_DEFAULTS
    t.add_argument("--steps", type=int, help=f"training steps (default {d['steps']})")
    t.add_argument("--batch-size", dest="batch_size", type=int,
                   help=f"batch size (default {d['batch_size']})")  # fmt: skip
    t.add_argument("--lr", type=float, help=f"Adam learning rate (default {d['lr']:g})")
    t.add_argument("--width", type=int,
                   help=f"channels (images) or units (vectors) (default {d['width']})")  # fmt: skip
    t.add_argument("--depth", type=int, help=f"number of blocks (default {d['depth']})")
    t.add_argument(
        "--n-test", dest="n_test", type=int, default=2000, help="test images for the curve"
    )
    t.add_argument("--seed", type=int, default=0, help="seed of the training run")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the classifier that --workdir holds (else refused)")  # fmt: skip
    t.add_argument("--list", action=_ListClassifierPresets,
                   help="list the classifier presets, one line each, and exit")  # fmt: skip
    add_common(t)
    t.set_defaults(func=partial(cmd_train_classifier, progress=progress))
