"""The ``evaluate`` and ``features`` verbs: one evaluation of a trained run, and the feature
network that FID, KID and precision / recall of the MNIST family read.

``scoresde evaluate --workdir RUN`` calls :func:`scoresde.training.evaluate.evaluate` on the run's
EMA model and data: test bits/dim by the probability-flow ODE and by the ELBO, and for images
FID, KID and precision / recall of ``--n`` samples beside their floor (as many test images
against the same training features). It writes ``RUN/eval.json`` (or ``--out``) and
``RUN/eval_samples.png``, and prints a short table. Without ``--sampler`` the run's own sample
section (sampler and options) draws the samples.

``scoresde features train --data mnist`` trains the small classifier whose features those
metrics use (:func:`scoresde.training.features.train_features`) and prints its test accuracy,
file and SHA-256. A missing feature network, a bad name or file is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .argtypes import int_at_least, seed

if TYPE_CHECKING:
    import torch

_POSITIVE = int_at_least(1)

__all__ = ["add_parsers", "cmd_evaluate", "cmd_features_train", "format_table"]

PARTS = {"bpd": "test bits/dim (ODE)", "elbo": "test bits/dim (ELBO)", "samples": "samples",
         "neighbours": "k-NN radii of the training features"}  # fmt: skip
UNITS = {"bpd": "examples", "elbo": "examples", "samples": "samples", "neighbours": "rows"}


class _Bars:
    """``callback(part, done, total)`` of :func:`~scoresde.training.evaluate.evaluate` as one
    progress bar per part (the command line's reporter), each closed when the next begins."""

    def __init__(self, progress: Callable) -> None:
        self.progress, self.part, self.bar = progress, None, None

    def __call__(self, part: str, done: int, total: int) -> None:
        if part != self.part:
            self.close()
            self.part = part
            self.bar = self.progress(total, f"evaluate {PARTS.get(part, part)}", UNITS.get(part))
        self.bar.set(done)

    def close(self) -> None:
        """Close the open bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _metrics(text: str) -> tuple[str, ...]:
    """``--metrics bpd,elbo,fid``: the names, each checked (unknown: the valid ones listed)."""
    from ..core.checks import lookup
    from ..training.config import EVAL_METRICS

    names = tuple(m.strip() for m in text.split(",") if m.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"no metric named; valid: {', '.join(EVAL_METRICS)}")
    for m in names:
        try:
            lookup(dict.fromkeys(EVAL_METRICS), m, "metric", callables=False)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


_metrics.__name__ = "metrics"


def _features(args: argparse.Namespace, device: torch.device | str = "cpu"):
    """The feature network that ``--features`` / ``--inception`` name, on ``device`` (None: the
    run's own)."""
    if args.features and args.inception:
        raise ValueError("give --features or --inception, not both")
    if args.inception:
        from ..training.evaluate import tag_features
        from ..training.inception import load_inception

        return tag_features(load_inception(args.inception, device=device), args.inception)
    if args.features:
        from ..training.evaluate import tag_features
        from ..training.features import load_features

        return tag_features(load_features(path=args.features).to(device), args.features)
    return None


def _sampling(args: argparse.Namespace, cfg) -> tuple[str, dict]:
    """``(sampler, options)``: ``--sampler`` with ``--eps``, else the run's sample section."""
    from ..training.config import sampler_kwargs

    eps = {} if args.eps is None else {"eps": args.eps}
    if args.sampler is None:
        options = sampler_kwargs(cfg.sample)
        if args.steps is not None or args.nfe is not None:
            options.pop("steps", None)
        return cfg.sample.sampler, options | eps
    return args.sampler, eps


def cmd_evaluate(args: argparse.Namespace, progress: Callable) -> int:
    """``scoresde evaluate``: evaluate a run, write ``eval.json`` and the sample grid, print."""
    from ..data import load_data
    from ..training.checkpoint import load_model
    from ..training.evaluate import evaluate
    from .device import pick_device

    if args.steps is not None and args.nfe is not None:
        raise ValueError("give --steps or --nfe, not both")
    device = pick_device(args.device)
    model, cfg, standardizer = load_model(args.workdir, ema=True)
    if args.data_dir:
        cfg.data.data_dir = str(Path(args.data_dir).expanduser().resolve())
    features = _features(args, device) if "fid" in args.metrics else None
    x_train, x_test, _ = load_data(cfg.data)
    sampler, options = _sampling(args, cfg)
    bars = _Bars(progress)
    try:
        result = evaluate(
            model.to(device).eval(), cfg, x_test, x_train=x_train, standardizer=standardizer,
            metrics=args.metrics, n=args.n, n_test=args.n_test, sampler=sampler,
            steps=args.steps, nfe=args.nfe, options=options, seed=args.seed, features=features,
            elbo_samples=args.elbo_samples, rtol=args.rtol, atol=args.atol, chunk=args.chunk,
            callback=bars, return_samples=True,
        )  # fmt: skip
    finally:
        bars.close()
    samples = result.pop("samples", None)
    result = {"workdir": str(args.workdir), **result}
    print("\n".join(_write(args, result, samples)))
    print("\n".join(format_table(result)))
    return 0


def _write(args: argparse.Namespace, result: dict, samples) -> list[str]:
    """Write ``eval.json`` and (images) ``eval_samples.png``; one ``wrote ...`` line each."""
    from ..training.checkpoint import write_text_atomic
    from ..training.workdir import writing
    from ..viz.plots import image_grid

    out = Path(args.out) if args.out else Path(args.workdir) / "eval.json"
    lines = []
    if samples is not None:
        png = out.with_name("eval_samples.png") if args.out else out.parent / "eval_samples.png"
        f = result["fid"]
        title = f"{f['sampler']} sampler, NFE {f['nfe']}, FID {f['fid']:.3g} (n={f['n']})"
        with writing(png):
            image_grid(samples[:64].numpy(), png, title=title)
        lines.append(
            f"wrote {png} (a grid of {min(len(samples), 64)} of the {len(samples)} samples)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out):
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return [f"wrote {out}", *lines]


def _pm(mean: float, se: float) -> str:
    return f"{mean:.4g} ± {se:.2g}" if math.isfinite(se) else f"{mean:.4g}"


def format_table(result: dict) -> list[str]:
    """The short table ``scoresde evaluate`` prints: each metric with its N, seed and seconds,
    the FID part beside its floor; then the notes."""
    rows = [("metric", "value", "floor", "N", "seed", "seconds")]
    for m in ("bpd", "elbo"):
        if m in result:
            p = result[m]
            name = f"{'bits/dim' if 'bpd' in p else 'NLL (nats)'} ({p['method']})"
            value = _pm(p["bpd"], p["bpd_se"]) if "bpd" in p else _pm(p["nll"], p["se"])
            rows.append((name, value, "", str(p["n"]), str(p["seed"]), f"{p['seconds']:.1f}"))
    if "fid" in result:
        p, fl = result["fid"], result["fid"]["floor"]
        n, seed, sec = str(p["n"]), str(p["seed"]), f"{p['seconds']['total']:.1f}"
        rows += [
            (f"FID ({p['sampler']}, NFE {p['nfe']})", f"{p['fid']:.4g}", f"{fl['fid']:.4g}", n,
             seed, sec),
            ("KID", _pm(p["kid"], p["kid_se"]), _pm(fl["kid"], fl["kid_se"]), n, seed, ""),
            ("precision / recall", f"{p['precision']:.3f} / {p['recall']:.3f}",
             f"{fl['precision']:.3f} / {fl['recall']:.3f}", n, seed, ""),
        ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines + [f"note: {note}" for note in result.get("notes", [])]


def cmd_features_train(args: argparse.Namespace, progress: Callable) -> int:
    """``scoresde features train``: train the feature network of a data set, print its test
    accuracy, file and SHA-256."""
    from ..training.features import train_features

    bar = progress(args.steps or 0, f"features train {args.data}")

    def on_step(step: int, total: int, *rest) -> None:
        bar.total = total
        bar.set(step)

    try:
        info = train_features(
            args.data, seed=args.seed, data_dir=args.data_dir, steps=args.steps, out=args.out,
            callback=on_step,
        )  # fmt: skip
    finally:
        bar.close()
    print(
        f"trained the {args.data} feature network in {info.seconds:.1f} s ({info.steps} steps, "
        f"seed {info.seed}): test accuracy {info.accuracy:.4f}"
    )
    print(f"wrote {info.path} (sha256 {info.sha256})")
    return 0


def add_parsers(sub, progress: Callable, add_common: Callable) -> None:
    """Register ``evaluate`` and ``features`` (action ``train``) on the sub-parser set ``sub``."""
    from functools import partial

    from ..samplers import SAMPLERS

    e = sub.add_parser("evaluate", help="bits/dim (ODE, ELBO) and FID / KID / precision-recall")
    arg = e.add_argument
    arg("--workdir", required=True, help="run folder holding checkpoint.pt")
    arg("--sampler", choices=list(SAMPLERS), metavar="NAME",
        help=f"sampler of the FID samples: {', '.join(SAMPLERS)} (default: the run's sample "
        "section, sampler and options)")  # fmt: skip
    arg("--steps", type=_POSITIVE, metavar="K", help="sampler steps (default: the sampler's own)")
    arg("--nfe", type=_POSITIVE, metavar="K", help="instead of --steps: the most steps within K "
        "score evaluations (fixed-step samplers; default: none)")  # fmt: skip
    arg("--eps", type=float, help="last time of sampling (default: the paper's)")
    arg("--n", type=_POSITIVE, metavar="N", help="samples for FID, and as many test images for "
        "its floor (default: the test images, at most 1000)")  # fmt: skip
    arg("--n-test", dest="n_test", type=_POSITIVE, metavar="M",
        help="test examples of the bits/dim (default: all)")  # fmt: skip
    arg("--metrics", type=_metrics, default=("bpd", "elbo", "fid"), metavar="LIST",
        help="comma-separated: bpd (ODE), elbo, fid (with KID and precision / recall; images "
        "only) (default: bpd,elbo,fid)")  # fmt: skip
    arg("--elbo-samples", dest="elbo_samples", type=_POSITIVE, default=16, metavar="K",
        help="ELBO draws of (t, noise) per example, stratified in t")  # fmt: skip
    arg("--rtol", type=float, default=1e-5, help="bpd: relative tolerance of the ODE's dopri5")
    arg("--atol", type=float, default=1e-5, help="bpd: absolute tolerance of the ODE's dopri5")
    arg("--chunk", type=_POSITIVE, default=1000, metavar="N", help="samples per sampler call")
    arg("--seed", type=seed, default=0, metavar="S", help="seed of every part (dequantization, "
        "probes, ELBO draws, samples, KID subsets)")  # fmt: skip
    arg("--features", metavar="FILE", help="feature network file from `scoresde features "
        "train` (default: the one for the run's data set)")  # fmt: skip
    arg("--inception", metavar="FILE", help="FID Inception-v3 weights for RGB runs (default: "
        "looked for under the data roots)")  # fmt: skip
    arg("--data-dir", dest="data_dir", metavar="DIR", help="where data sets and feature "
        "networks live (default: the run's data.data_dir)")  # fmt: skip
    arg("--out", metavar="FILE", help="JSON path (default: WORKDIR/eval.json; the PNG beside it)")
    add_common(e)
    e.set_defaults(func=partial(cmd_evaluate, progress=progress))
    _add_features(sub, progress, add_common)


def _add_features(sub, progress: Callable, add_common: Callable) -> None:
    from functools import partial

    f = sub.add_parser(
        "features", help="the feature network of FID / KID for the MNIST family",
        description="Actions: train. Each takes --threads and --quiet; see `scoresde features "
        "train --help` for its options and their defaults.",
    )  # fmt: skip
    actions = f.add_subparsers(
        dest="action", metavar="ACTION", required=True,
        parser_class=partial(type(f), formatter_class=f.formatter_class),
        help="train: fit the classifier and write its file",
    )  # fmt: skip
    t = actions.add_parser("train", help="train the feature network of a data set")
    arg = t.add_argument
    arg("--data", required=True, choices=("mnist", "fashion_mnist", "digits"), help="the data set")
    arg("--seed", type=seed, default=0, help="seed of the training")
    arg("--steps", type=_POSITIVE, metavar="K", help="training steps (default: the data set's)")
    arg("--data-dir", dest="data_dir", metavar="DIR",
        help="where the data live and the file goes (default: the data roots)")  # fmt: skip
    arg("--out", metavar="FILE", help="file to write (default: the data set's features path)")
    add_common(t, device=None)
    t.set_defaults(func=partial(cmd_features_train, progress=progress))
