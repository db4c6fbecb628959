"""Time-dependent classifiers for classifier guidance: training, accuracy per noise level, files.

:class:`TimeClassifier` turns a raw :class:`scoresde.nets.classifier.NoiseClassifier` into
``log p_t(k | x_t)`` for one SDE: the input is scaled by ``c_in(t) = 1 / sqrt(alpha(t)^2 +
sigma(t)^2)`` (unit variance for unit-variance data, so VE inputs of std 50 do not saturate the
network) and the label is ``t``. :func:`train_classifier` minimises the cross-entropy on
``x_t = alpha(t) x_0 + sigma(t) z`` with ``t ~ U(eps, T)``, the same perturbation as the score's
training. :func:`accuracy_by_noise` measures test accuracy at fixed times (the curve written as
CSV and PNG by the command line). Checkpoints are plain tensors and data (``weights_only``),
written atomically. :data:`CLASSIFIER_PRESETS` are training recipes named after the score presets
whose SDE and data they share (:func:`preset_source`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..core.checks import lookup
from ..core.sde import SDE, bcast
from ..nets.classifier import NoiseClassifier, NoiseClassifierConfig
from .checkpoint import CheckpointError, save_checkpoint, write_text_atomic
from .config import SDES, DataConfig, build_sde, load_config

__all__ = [
    "TimeClassifier",
    "train_classifier",
    "accuracy_by_noise",
    "write_accuracy_csv",
    "save_classifier",
    "load_classifier",
    "sde_spec",
    "CLASSIFIER_FILE",
    "ClassifierPreset",
    "CLASSIFIER_PRESETS",
    "preset_source",
]

CLASSIFIER_FILE = "classifier.pt"
KIND = "scoresde-classifier"


@dataclass(frozen=True)
class ClassifierPreset:
    """A classifier's training recipe; the SDE and data are those of the score preset ``score``
    (so the classifier fits the runs trained from it)."""

    score: str
    steps: int
    batch_size: int
    lr: float
    width: int
    depth: int
    about: str = ""


# Measured on 2 shared CPU cores under load (wall time; accuracy on the test split: all 297
# digits, the first 1,000 MNIST images); the README's control section shows the digits run.
CLASSIFIER_PRESETS: dict[str, ClassifierPreset] = {
    "digits_vp": ClassifierPreset(
        "digits_vp", steps=1500, batch_size=128, lr=2e-3, width=32, depth=2,
        about="8x8 digits, VP SDE of digits_vp (66 s; test accuracy 0.91 at t = 0.01)",
    ),
    "mnist_vp": ClassifierPreset(
        "mnist_vp", steps=1500, batch_size=64, lr=2e-3, width=32, depth=3,
        about="MNIST 28x28, VP SDE of mnist_vp (5 min; accuracy 0.84 at t = 0.01, in [0, 1] space)",
    ),
}  # fmt: skip


def preset_source(name: str) -> tuple[ClassifierPreset, SDE, DataConfig]:
    """``(preset, SDE, data config)`` of the classifier preset ``name``: the SDE and the data
    section (name, folder, model-space ``scale`` / ``shift``) of its score preset."""
    preset = lookup(CLASSIFIER_PRESETS, name, "classifier preset", callables=False)
    cfg = load_config(preset.score)
    return preset, build_sde(cfg.sde), cfg.data


class TimeClassifier(nn.Module):
    """``log p_t(k | x)`` of a noise-conditional network for the SDE ``sde``."""

    def __init__(self, net: NoiseClassifier, sde: SDE):
        super().__init__()
        self.net, self.sde = net, sde

    def logits(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits ``(B, K)`` at times ``t`` ``(B,)``."""
        c_in = torch.rsqrt(self.sde.alpha(t) ** 2 + self.sde.sigma(t) ** 2)
        return self.net(x * bcast(c_in, x).to(x), t)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``log_softmax`` of the logits: ``(B, K)`` log-probabilities (the guidance's
        ``log_prob_fn``)."""
        t = t if isinstance(t, Tensor) and t.ndim else torch.full(x.shape[:1], float(t)).to(x)
        return torch.log_softmax(self.logits(x, t), dim=1)

    log_prob = forward


def train_classifier(
    sde: SDE,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    eps: float = 1e-5,
    seed: int = 0,
    net: NoiseClassifier | None = None,
    callback: Callable[[int, float], None] | None = None,
    device: torch.device | str | None = None,
    **net_params,
) -> TimeClassifier:
    """Train a :class:`TimeClassifier` on model-space data ``x`` ``(N, ...)`` with labels ``y``.

    Adam at ``lr`` with cosine decay, ``steps`` minibatches of ``batch_size``; each draws
    ``t ~ U(eps, T)`` per example and ``x_t`` by the SDE's marginal. ``net_params`` go to a new
    :class:`NoiseClassifier` (unless ``net`` is given). ``callback(step, loss)`` every step.
    The network trains on ``device`` (default: the device of ``x``); minibatches, times and
    noise are drawn on the CPU from one seeded generator, so a seed gives the same batches on
    every device.
    """
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got {int(y.min())}..{int(y.max())}"
        )
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = torch.device(device) if device is not None else x.device
    if net is None:
        net = NoiseClassifier(tuple(x.shape[1:]), num_classes, **net_params)
    clf = TimeClassifier(net, sde).to(device)
    x, y = x.cpu(), y.cpu()
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    clf.train()
    for step in range(steps):
        idx = torch.randint(len(x), (batch_size,), generator=g)
        x0, lab = x[idx], y[idx]
        t = eps + (sde.T - eps) * torch.rand(batch_size, generator=g)
        mean, std = sde.marginal_prob(x0, t)
        xt = mean + bcast(std, x0) * torch.randn(x0.shape, generator=g)
        xt, t, lab = xt.to(device), t.to(device), lab.to(device)
        loss = nn.functional.cross_entropy(clf.logits(xt, t), lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step, float(loss.detach()))
    return clf.eval()


@torch.no_grad()
def accuracy_by_noise(
    clf: TimeClassifier, x: Tensor, y: Tensor, times: list[float], seed: int = 1, batch: int = 512
) -> list[dict]:
    """Accuracy on ``(x, y)`` after perturbing to each time in ``times``: rows
    ``{t, sigma, snr_db, accuracy}`` (``snr_db = 20 log10(alpha / sigma)``). The noise is drawn
    on the CPU; the classifier runs on its own device."""
    g = torch.Generator().manual_seed(seed)
    device = next(clf.parameters()).device
    x, y = x.cpu(), y.cpu()
    rows = []
    for t in times:
        correct = 0
        for i in range(0, len(x), batch):
            x0 = x[i : i + batch]
            tt = torch.full((len(x0),), float(t))
            mean, std = clf.sde.marginal_prob(x0, tt)
            xt = mean + bcast(std, x0) * torch.randn(x0.shape, generator=g)
            pred = clf.logits(xt.to(device), tt.to(device)).argmax(1).cpu()
            correct += int((pred == y[i : i + batch]).sum())
        a, s = float(clf.sde.alpha(torch.tensor(t))), float(clf.sde.sigma(torch.tensor(t)))
        rows.append(dict(t=t, sigma=s, snr_db=20 * math.log10(a / s), accuracy=correct / len(x)))
    return rows


def write_accuracy_csv(rows: list[dict], path: str | Path) -> Path:
    """The accuracy curve as CSV (columns ``t, sigma, snr_db, accuracy``), written atomically."""
    path = Path(path)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return path


def sde_spec(sde: SDE) -> dict:
    """``{"name": <SDES key>, **constructor arguments}``: enough to rebuild and compare SDEs."""
    names = [k for k, cls in SDES.items() if type(sde) is cls]
    if not names:
        raise ValueError(f"no SDE name for {type(sde).__name__}")
    return {"name": names[0], **sde.config()}


def save_classifier(path: str | Path, clf: TimeClassifier, meta: dict | None = None) -> Path:
    """Write ``clf`` (network config, SDE, weights on the CPU) and plain ``meta`` to ``path``,
    atomically (a temporary file renamed over ``path``: a crash leaves the old file or the new)."""
    path = Path(path)
    cfg = asdict(clf.net.config)
    cfg["shape"] = list(cfg["shape"])
    state = dict(kind=KIND, net=cfg, sde=sde_spec(clf.sde), meta=dict(meta or {}))
    weights = {k: v.detach().cpu() for k, v in clf.net.state_dict().items()}
    save_checkpoint(path, {**state, "state_dict": weights})
    return path


def load_classifier(path: str | Path) -> tuple[TimeClassifier, dict]:
    """``(classifier, meta)`` from a file or a folder holding :data:`CLASSIFIER_FILE`."""
    path = Path(path)
    if path.is_dir():
        path = path / CLASSIFIER_FILE
    if not path.is_file():
        raise CheckpointError(f"no classifier at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(
            f"{path} is not a scoresde classifier (train one: scoresde train-classifier)"
        )
    spec = dict(state["sde"])
    sde = SDES[spec.pop("name")](**spec)
    net_cfg = NoiseClassifierConfig(**state["net"])
    net = NoiseClassifier(**{**asdict(net_cfg), "shape": tuple(net_cfg.shape)})
    net.load_state_dict(state["state_dict"])
    return TimeClassifier(net, sde).eval(), dict(state["meta"])
