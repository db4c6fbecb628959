"""The feature network of sample-quality metrics: training, the cached file, features of images.

FID, KID and precision / recall (:mod:`scoresde.core.metrics`) compare feature vectors; here
they come from a :class:`scoresde.nets.features.FeatureNet` trained to classify the data set's
own training split (Inception features fit natural photographs, not 28x28 digits). A metric is
only comparable between runs scored by the same network, so the weights are cached once per data
set and seed at :func:`features_path` (``<data root>/features/<dataset>-seed<seed>.pt``, beside
the data it was trained on) with a JSON record next to it (``.json`` in place of ``.pt``) that
holds the file's sha256, the test accuracy and the network's arguments. :func:`load_features`
refuses a file whose checksum does not match. Training is deterministic on the CPU: a seed gives
bit-identical weights (same torch build and thread count).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..core.checks import lookup
from ..data.datasets import IMAGE_DATASETS, data_roots, load_images
from ..data.images import DatasetNotFound
from ..data.transforms import to_float
from ..nets.features import FeatureNet
from .checkpoint import _atomic_write, write_text_atomic

__all__ = [
    "FeatureInfo",
    "FEATURE_STEPS",
    "features_path",
    "train_features",
    "load_features",
    "image_features",
]

# Default training steps (batches of BATCH_SIZE) per data set. Seed 0, one thread on 2 shared,
# loaded CPU cores (wall time, test accuracy on the whole test split): mnist 1000 steps, 217 s
# (75 s of CPU), 0.989; fashion_mnist 2000 steps, 270 s (140 s of CPU), 0.915; digits 600 steps,
# 15 s, 0.949 (282 of the last 297 digits).
FEATURE_STEPS: dict[str, int] = {
    "mnist": 1000,
    "colour_mnist": 1000,
    "fashion_mnist": 2000,
    "digits": 600,
    "colour_digits": 600,
}
DEFAULT_STEPS = 1000
BATCH_SIZE = 128
LR = 2e-3
TRAIN_COMMAND = "scoresde features train --data {dataset}"


@dataclass
class FeatureInfo:
    """What :func:`train_features` wrote: the weights file and its JSON record's fields."""

    path: Path
    sha256: str
    dataset: str
    seed: int
    steps: int
    accuracy: float
    config: dict
    seconds: float


def _dataset(name: str) -> str:
    """``name`` if it is a named image data set, else a ValueError listing the valid names."""
    lookup(IMAGE_DATASETS, name, "data set", callables=False)
    return name


def _data_root(dataset: str, data_dir: str | Path | None) -> Path:
    """The root that holds ``dataset`` (the search of :mod:`scoresde.data.datasets`); for a set
    that needs no folder (the 8x8 digits), ``data_dir`` or else the first existing root."""
    load = IMAGE_DATASETS[dataset].load
    roots = data_roots(data_dir)
    try:
        load("test", [])
    except DatasetNotFound:
        pass
    else:  # found without any folder
        return next((r for r in roots if r.is_dir()), roots[0])
    for root in roots:
        try:
            load("test", [root])
        except DatasetNotFound:
            continue
        return root
    load("test", roots)  # raises the loader's one-line message: where it looked, what it needs
    raise AssertionError("unreachable")


def features_path(dataset: str, seed: int = 0, data_dir: str | Path | None = None) -> Path:
    """``<root>/features/<dataset>-seed<seed>.pt``, ``root`` the data directory where
    ``dataset`` is found (``data_dir``, else ``$SCORESDE_DATA``, else ``./data``,
    ``../shared/data``); for the 8x8 digits, which ship with scikit-learn, ``data_dir`` or the
    first existing default root. Raises the data set's DatasetNotFound where it is nowhere."""
    _dataset(dataset)
    return _data_root(dataset, data_dir) / "features" / f"{dataset}-seed{int(seed)}.pt"


def _meta_path(path: Path) -> Path:
    """The JSON record beside a weights file."""
    return path.with_suffix(".json")


@torch.no_grad()
def _accuracy(net: FeatureNet, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Fraction of uint8 images ``x`` that ``net`` classifies as ``y``."""
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = net(to_float(x[i : i + batch_size])).argmax(1)
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / len(x)


def _fit(
    net: FeatureNet,
    x: Tensor,
    y: Tensor,
    steps: int,
    seed: int,
    callback: Callable[[int, int], None] | None,
) -> None:
    """Adam with cosine decay on the cross-entropy, minibatches from seeded epoch shuffles."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    net.train()
    order, pos = torch.randperm(len(x), generator=g), 0
    for step in range(steps):
        if pos + BATCH_SIZE > len(x):
            order, pos = torch.randperm(len(x), generator=g), 0
        idx = order[pos : pos + BATCH_SIZE]
        pos += BATCH_SIZE
        loss = nn.functional.cross_entropy(net(to_float(x[idx])), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step + 1, steps)
    net.eval()


def _save(net: FeatureNet, path: Path, meta: dict) -> str:
    """Write the float32 state_dict to ``path`` and ``meta`` + its sha256 beside it, both
    atomically (weights first: a record never names a file that is not complete)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().float() for k, v in net.state_dict().items()}, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    _atomic_write(path, lambda f: f.write(data))
    write_text_atomic(_meta_path(path), json.dumps({"sha256": sha, **meta}, indent=2) + "\n")
    return sha


def train_features(
    dataset: str,
    seed: int = 0,
    data_dir: str | Path | None = None,
    steps: int | None = None,
    out: str | Path | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> FeatureInfo:
    """Train a :class:`FeatureNet` on ``dataset``'s training split and cache it.

    Adam (learning rate 2e-3, cosine decay) on the cross-entropy, batches of 128 from seeded
    shuffles; the weights start from ``seed`` too (the global random state is left as it was).
    ``steps`` defaults to :data:`FEATURE_STEPS` (else 1000, about 2 epochs of MNIST). Writes
    the weights to ``out`` (default :func:`features_path`) and the JSON record beside it, both
    atomically; ``callback(done, total)`` after every step. Runs on the CPU.
    """
    _dataset(dataset)
    steps = FEATURE_STEPS.get(dataset, DEFAULT_STEPS) if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    path = Path(out) if out is not None else features_path(dataset, seed, data_dir)
    start = time.perf_counter()
    x, y = load_images(dataset, "train", data_dir)
    x_test, y_test = load_images(dataset, "test", data_dir)
    c, h, _ = IMAGE_DATASETS[dataset].shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(channels=c, size=h, classes=IMAGE_DATASETS[dataset].num_classes)
    _fit(net, x, y, steps, seed, callback)
    accuracy = _accuracy(net, x_test, y_test)
    seconds = time.perf_counter() - start
    meta = dict(dataset=dataset, seed=int(seed), steps=steps, accuracy=accuracy)
    meta.update(config=net.config(), seconds=round(seconds, 3))
    sha = _save(net, path, meta)
    return FeatureInfo(path=path, sha256=sha, **meta)


def _command(dataset: str | None, seed: int, data_dir: str | Path | None) -> str:
    """The command line that writes the cached network of ``dataset`` and ``seed``."""
    cmd = TRAIN_COMMAND.format(dataset=dataset or "NAME")
    if seed:
        cmd += f" --seed {seed}"
    if data_dir is not None:
        cmd += f" --data-dir {data_dir}"
    return cmd


def _read_meta(path: Path, command: str) -> dict:
    """The JSON record of the weights file ``path`` (one-line errors when absent or unreadable)."""
    meta_path = _meta_path(path)
    if not meta_path.is_file():
        raise ValueError(
            f"feature network {path} has no record {meta_path.name} (its sha256); "
            f"delete it and run `{command}`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{meta_path} is unreadable ({e}); delete it and run `{command}`") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{meta_path} is not a feature network record; run `{command}`")
    return meta


def load_features(
    dataset: str | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
) -> FeatureNet:
    """The cached feature network of ``dataset`` and ``seed`` (or the file ``path``), in eval
    mode on the CPU.

    Raises:
        FileNotFoundError: no such file; the message names the command that writes it.
        ValueError: the file's sha256 differs from its JSON record (changed or corrupted), the
            record is missing, or it was trained on another data set than ``dataset``.
    """
    if path is None and dataset is None:
        raise ValueError("load_features needs a data set name or a path")
    if dataset is not None:
        _dataset(dataset)
    path = Path(path) if path is not None else features_path(dataset, seed, data_dir)
    command = _command(dataset, seed, data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no feature network at {path}; create it with `{command}`")
    meta = _read_meta(path, command)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != meta.get("sha256"):
        raise ValueError(
            f"{path} was changed or corrupted (sha256 {sha[:12]}..., its record says "
            f"{str(meta.get('sha256'))[:12]}...); delete it and run `{command}`"
        )
    if dataset is not None and meta.get("dataset") != dataset:
        raise ValueError(f"{path} was trained on {meta.get('dataset')!r}, not {dataset!r}")
    try:
        net = FeatureNet(**meta["config"])
        net.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} does not match its record's network ({first}); delete it and run `{command}`"
        ) from e
    return net.eval()


@torch.no_grad()
def image_features(net: FeatureNet, images01: Tensor, batch_size: int = 500) -> Tensor:
    """Features ``(n, F)`` float64 on the CPU of images ``(n, C, H, W)`` with values in [0, 1],
    computed in batches of ``batch_size`` on the network's device, without gradients."""
    if not isinstance(images01, Tensor) or not images01.is_floating_point():
        kind = images01.dtype if isinstance(images01, Tensor) else type(images01).__name__
        raise ValueError(f"images01 must be a float tensor with values in [0, 1], got {kind}")
    if images01.numel() and not (images01.min() >= 0 and images01.max() <= 1):
        raise ValueError(
            "images01 must hold values in [0, 1] (map model space back and clamp first), got "
            f"{float(images01.min()):.3g}..{float(images01.max()):.3g}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    param = next(net.parameters())
    out = [
        net.features(images01[i : i + batch_size].to(param)).double().cpu()
        for i in range(0, len(images01), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, net.num_features, dtype=torch.float64)
