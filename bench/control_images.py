"""Controllable generation on images: inpainting and class-conditional grids, judged by a clean
classifier.

A trained image run (``--workdir``) and a time-dependent classifier for its SDE
(``--classifier``, from ``scoresde train-classifier``) are scored by a *clean* classifier, the
:class:`scoresde.nets.features.FeatureNet` of the run's data set (``--clean``; default the cached
one of :func:`scoresde.training.features.load_features`), which has never seen a sample.

1. Inpainting: the first ``--inputs`` test images with their right half hidden (the ``half``
   mask of ``scoresde control``: the left half observed), ``--samples`` samples of each by every
   method of ``--methods`` (:func:`scoresde.sample_conditional`: ``pc`` projection, ``repaint``
   with jump 5 and 3 resamplings, ``dps`` with step size 1). Does the filled-in half keep the
   digit? Reference rows: ``input`` (the test images themselves) and ``mean_fill`` (the hidden
   half filled with the mean training image).
2. Class-conditional: ``--per-class`` samples of each class at every guidance scale of
   ``--scales`` (:func:`scoresde.classifier_guidance`, PC sampler; scale 0 is the unguided model,
   whose accuracy is chance, about 0.1); with ``--fast SAMPLER`` the same again by that sampler
   of :data:`scoresde.SAMPLERS` in ``--fast-steps`` steps (e.g. ``dpm_solver``, 20).

Sample ``j`` of input (class) ``i`` draws from its own stream (``j * inputs + i``, resp.
``i * per_class + j``, as ``scoresde control`` numbers them); every method (scale) uses the same
streams, so their differences are not those of the noise.

Columns, inpainting: ``acc`` the clean classifier's accuracy of the (8-bit quantised) samples
against the input's true label; ``mse_hid`` mean squared error of the hidden half against the
true image (pixels in [0, 1]); ``obs_err`` max ``|x - y|`` over the observed pixels in model
units (0 for the noiseless mask: the observation is kept exactly); NFE (score evaluations of one
batch of all samples), wall seconds. Class-conditional: ``acc`` accuracy against the requested
class (overall; ``per_class`` in the JSON and the last column), ``conf`` the clean classifier's
mean probability of the requested class, NFE, seconds (``sampler``, ``steps``: how drawn).

Writes grid PNGs to ``--out`` (``<data>_inpaint_<method>.png``: rows input, observation,
samples; ``<data>_class_scale<s>.png``, ``<data>_class_<fast>_scale<s>.png``: row = class) and
``bench/results/control_images_<data>.json``; prints a table.
Run: ``.venv/bin/python bench/control_images.py --workdir runs/digits_ctl
--classifier runs/digits_ctl/clf [--clean FILE.pt] [--steps N] [--threads 2]``. The default
``--steps`` (80) keeps an MNIST run with the other defaults (mnist_vp; 8 inputs x 4 samples,
methods pc repaint; 8 per class, scales 0 1 2) to about 15 minutes on 2 CPU cores: measured
there (shared with a training job) per sampler step, pc inpainting 1.7 s, repaint 2.3 s, the
unguided class batch 1.3 s and each guided one 2.7 s, 10.7 s in all. The DDPM chain of the VP
SDE needs more steps than ``beta_max`` (20).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

import scoresde as sd
from scoresde.app.control import _classifier, _grid, _to_model, _to_unit, make_mask
from scoresde.core.score import ScoreModel
from scoresde.data import load_images
from scoresde.nets.features import FeatureNet
from scoresde.samplers import SampleStreams
from scoresde.training.checkpoint import load_model, write_text_atomic
from scoresde.training.classifier import TimeClassifier
from scoresde.training.config import Config
from scoresde.training.evaluate import samples_to_images
from scoresde.training.features import load_features

RESULTS = Path(__file__).resolve().parent / "results"
METHODS: dict[str, dict] = {
    "pc": dict(snr=0.16),
    "repaint": dict(jump=5, resample=3),
    "dps": dict(zeta=1.0),
}
DEFAULT_STEPS = 80  # MNIST: about 10.7 s a step with the other defaults (see the docstring)


@torch.no_grad()
def judge(net: FeatureNet, x01: Tensor, batch: int = 500) -> Tensor:
    """Class probabilities ``(n, K)`` of the clean classifier for images in [0, 1]."""
    out = [torch.softmax(net(x01[i : i + batch]), 1) for i in range(0, len(x01), batch)]
    return torch.cat(out)


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose most probable class is the label."""
    return float((probs.argmax(1) == labels).double().mean())


def test_images(cfg: Config, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` test images (uint8 ``(n, C, H, W)``) of the run's data set and labels."""
    x, y = load_images(cfg.data.name, "test", cfg.data.data_dir)
    if y is None:
        raise ValueError(f"data set {cfg.data.name!r} has no labels: nothing to judge against")
    if len(x) < n:
        raise ValueError(f"--inputs {n}: the test split holds only {len(x)} images")
    return x[:n], y[:n]


def mean_image(cfg: Config) -> Tensor:
    """The mean training image ``(1, C, H, W)``, pixels in [0, 1]."""
    x, _ = load_images(cfg.data.name, "train", cfg.data.data_dir)
    return x.double().mean(0, keepdim=True).float() / 255


def references(
    net: FeatureNet, x8: Tensor, labels: Tensor, mask: Tensor, mean01: Tensor
) -> list[dict]:
    """The rows ``input`` (the test images) and ``mean_fill`` (hidden half = mean image)."""
    x01 = x8.float() / 255
    filled = torch.where(mask, x01, mean01)
    rows = []
    for name, img in (("input", x01), ("mean_fill", filled)):
        mse = float(((img - x01)[~mask.expand_as(x01)] ** 2).mean())
        acc = accuracy(judge(net, img), labels)
        rows.append(dict(method=name, acc=acc, mse_hid=mse, obs_err=0.0, nfe=0, seconds=0.0))
    return rows


def inpaint(
    model: ScoreModel,
    cfg: Config,
    net: FeatureNet,
    x8: Tensor,
    labels: Tensor,
    method: str,
    a: argparse.Namespace,
) -> tuple[dict, list]:
    """``--samples`` inpaintings of every input by ``method``: its row and the grid's rows."""
    n, m = len(x8), a.samples
    y = _to_model(x8, cfg).repeat(m, 1, 1, 1)  # row r * n + i: sample r of input i
    mask = make_mask("half", tuple(cfg.data.shape), a.seed).expand_as(y)
    obs = sd.Inpainting(y, mask)
    t0 = time.perf_counter()
    with torch.no_grad():  # DPS enables the gradient it needs itself
        x, nfe = sd.sample_conditional(
            model.sde, model, tuple(y.shape), obs, method=method, steps=a.steps,
            generator=SampleStreams(a.seed, range(n * m)), **METHODS[method],
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    x01 = samples_to_images(x, cfg.data)
    truth = (x8.float() / 255).repeat(m, 1, 1, 1)
    row = dict(
        method=method,
        acc=accuracy(judge(net, x01), labels.repeat(m)),
        mse_hid=float(((x01 - truth)[~mask] ** 2).mean()),
        obs_err=float((x - y)[mask].abs().max()),
        nfe=nfe,
        seconds=seconds,
    )
    grey = torch.full_like(y[:n], 0.5 * cfg.data.scale + cfg.data.shift)
    picture = torch.where(mask[:n], y[:n], grey)
    grid = [_to_unit(y[:n], cfg), _to_unit(picture, cfg)]
    grid += [x01[r * n : (r + 1) * n].numpy() for r in range(m)]
    return row, grid


def class_conditional(
    model: ScoreModel,
    cfg: Config,
    net: FeatureNet,
    clf: TimeClassifier,
    scale: float,
    a: argparse.Namespace,
    sampler: str = "pc",
    steps: int | None = None,
) -> tuple[dict, list]:
    """``--per-class`` guided samples of every class at ``scale`` by ``sampler`` in ``steps``
    (default ``--steps``): its row and the grid's rows."""
    K, m = clf.net.config.num_classes, a.per_class
    labels = torch.arange(K).repeat_interleave(m)  # row c * m + j: sample j of class c
    score = model if scale == 0 else sd.classifier_guidance(model, clf, labels, scale)
    t0 = time.perf_counter()
    with torch.no_grad():  # the guidance takes its classifier gradient itself
        x, nfe = sd.sample(
            model.sde, score, (K * m, *cfg.data.shape), sampler=sampler, steps=steps or a.steps,
            generator=SampleStreams(a.seed, range(K * m)),
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    x01 = samples_to_images(x, cfg.data)
    probs = judge(net, x01)
    hit = (probs.argmax(1) == labels).double().reshape(K, m)
    row = dict(
        sampler=sampler,
        steps=steps or a.steps,
        scale=scale,
        acc=float(hit.mean()),
        conf=float(probs.gather(1, labels[:, None]).mean()),
        per_class=[round(float(v), 4) for v in hit.mean(1)],
        nfe=nfe,
        seconds=seconds,
    )
    return row, [x01[c * m : (c + 1) * m].numpy() for c in range(K)]


def print_tables(inp: list[dict], cls: list[dict]) -> None:
    """The inpainting and class-conditional tables."""
    print(f"{'inpaint':10s} {'acc':>6s} {'mse_hid':>8s} {'obs_err':>8s} {'nfe':>6s} {'s':>7s}")
    for r in inp:
        print(
            f"{r['method']:10s} {r['acc']:6.3f} {r['mse_hid']:8.4f} {r['obs_err']:8.1e} "
            f"{r['nfe']:6d} {r['seconds']:7.1f}"
        )
    head = f"{'sampler':12s} {'steps':>5s} {'scale':>5s} {'acc':>6s} {'conf':>6s} {'nfe':>6s}"
    print(f"{head} {'s':>7s}  per-class accuracy")
    for r in cls:
        per = " ".join(f"{v:.2f}" for v in r["per_class"])
        print(
            f"{r['sampler']:12s} {r['steps']:5d} {r['scale']:5g} {r['acc']:6.3f} "
            f"{r['conf']:6.3f} {r['nfe']:6d} {r['seconds']:7.1f}  {per}"
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="trained image run (checkpoint.pt)")
    p.add_argument("--classifier", required=True, help="time-dependent classifier file or dir")
    p.add_argument("--clean", help="FeatureNet .pt that judges (default: the cached one)")
    p.add_argument("--inputs", type=int, default=8, help="test images to inpaint")
    p.add_argument("--samples", type=int, default=4, help="inpaintings per input")
    p.add_argument("--per-class", dest="per_class", type=int, default=8)
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    p.add_argument("--methods", nargs="+", default=["pc", "repaint"], choices=list(METHODS))
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="sampler steps")
    p.add_argument("--fast", choices=list(sd.SAMPLERS), help="class: also this sampler")
    p.add_argument("--fast-steps", dest="fast_steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "control_images"), help="folder for PNGs")
    p.add_argument("--json", help="results file (default: bench/results/control_images_DATA.json)")
    a = p.parse_args(argv)
    for k in ("inputs", "samples", "per_class", "steps", "fast_steps", "threads"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(a, k)}")
    if min(a.scales) < 0:
        p.error(f"--scales must be >= 0, got {min(a.scales):g}")
    return a


def load(a: argparse.Namespace) -> tuple[ScoreModel, Config, FeatureNet, TimeClassifier]:
    """``(score model, config, clean classifier, time-dependent classifier)`` of the options."""
    model, cfg, _ = load_model(a.workdir)
    if cfg.data.shape is None or len(cfg.data.shape) != 3:
        raise ValueError(f"{a.workdir} is not a run on images: its data are {cfg.data.shape}")
    net = load_features(dataset=cfg.data.name, data_dir=cfg.data.data_dir, path=a.clean)
    clf = _classifier(SimpleNamespace(classifier=a.classifier), model, cfg)
    return model.eval(), cfg, net, clf


def run_inpainting(
    a: argparse.Namespace, model: ScoreModel, cfg: Config, net: FeatureNet, out: Path
) -> list[dict]:
    """The reference rows and one row (and grid PNG) per method of ``--methods``."""
    name = cfg.data.name
    x8, labels = test_images(cfg, a.inputs)
    mask = make_mask("half", tuple(cfg.data.shape), a.seed)
    rows = references(net, x8, labels, mask, mean_image(cfg))
    for method in a.methods:
        row, grid = inpaint(model, cfg, net, x8, labels, method, a)
        rows.append(row)
        title = f"{name} inpaint, {method}, {a.steps} steps (rows: input, observation, samples)"
        _grid(grid, out / f"{name}_inpaint_{method}.png", title)
        print(f"inpaint {method}: acc {row['acc']:.3f} ({row['seconds']:.0f} s)", flush=True)
    return rows


def run_classes(
    a: argparse.Namespace,
    model: ScoreModel,
    cfg: Config,
    net: FeatureNet,
    clf: TimeClassifier,
    out: Path,
) -> list[dict]:
    """One row (and grid PNG) per guidance scale, by PC and by ``--fast`` where given."""
    name, rows = cfg.data.name, []
    runs = [("pc", a.steps)] + ([(a.fast, a.fast_steps)] if a.fast else [])
    for sampler, steps in runs:
        for scale in a.scales:
            row, grid = class_conditional(model, cfg, net, clf, scale, a, sampler, steps)
            rows.append(row)
            what = f"{name} classifier guidance, scale {scale:g}, {sampler} {steps} steps"
            tag = "" if sampler == "pc" else f"{sampler}_"
            _grid(grid, out / f"{name}_class_{tag}scale{scale:g}.png", f"{what} (row = class)")
            print(f"class {sampler} scale {scale:g}: acc {row['acc']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run both halves, write the PNGs and the JSON, print the tables."""
    a = parse(argv)
    torch.set_num_threads(a.threads)
    model, cfg, net, clf = load(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    inp = run_inpainting(a, model, cfg, net, out)
    cls = run_classes(a, model, cfg, net, clf, out)
    print_tables(inp, cls)
    meta = dict(vars(a))
    meta.update(data=cfg.data.name, mask="half (left observed)", method_options=METHODS)
    meta.update(torch=torch.__version__, machine=platform.machine())
    path = Path(a.json or RESULTS / f"control_images_{cfg.data.name}.json")
    write_text_atomic(path, json.dumps(dict(meta=meta, inpaint=inp, classes=cls), indent=1))
    print(f"wrote {path} and the PNGs in {out}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:  # bad input: one line, exit status 2
        print(f"error: {e}")
        raise SystemExit(2) from None
