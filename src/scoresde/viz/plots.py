"""Pictures: sample clouds, trajectories, score fields, loss curves, animations, image grids.

Every function takes plain arrays (or callables returning tensors) and a path, writes one file and
returns the path. matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "limits",
    "clouds",
    "trajectories",
    "field_and_density",
    "loss_curves",
    "training_curves",
    "animate_clouds",
    "image_grid",
]

_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def limits(*arrays: np.ndarray, pad: float = 0.1) -> tuple[float, float, float, float]:
    """``(x_lo, x_hi, y_lo, y_hi)``: the 0.5-99.5 percentile box of the first two coordinates of
    the points of ``arrays``, widened by ``pad`` times its size on each side."""
    a = np.concatenate([np.asarray(x)[:, :2] for x in arrays])
    lo, hi = np.percentile(a, 0.5, axis=0), np.percentile(a, 99.5, axis=0)
    span = hi - lo
    lo, hi = lo - pad * span, hi + pad * span
    return lo[0], hi[0], lo[1], hi[1]


def clouds(panels: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """One panel per named point cloud: a scatter for 2-D data, a histogram for 1-D data."""
    plt = _plt()
    arrays = {k: np.asarray(v).reshape(len(v), -1) for k, v in panels.items()}
    dim = next(iter(arrays.values())).shape[1]
    fig, axes = plt.subplots(1, len(arrays), figsize=(3.4 * len(arrays), 3.4), squeeze=False)
    if dim >= 2:
        box = limits(*arrays.values())
    else:
        lo = min(np.percentile(a, 0.5) for a in arrays.values())
        hi = max(np.percentile(a, 99.5) for a in arrays.values())
        bins = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 80)
    for ax, (name, a), c in zip(axes[0], arrays.items(), _COLORS * 3):
        if dim >= 2:
            ax.scatter(a[:, 0], a[:, 1], s=2, alpha=0.5, color=c, linewidths=0)
            ax.set_xlim(*box[:2])
            ax.set_ylim(*box[2:])
            ax.set_aspect("equal")
        else:
            ax.hist(a[:, 0], bins=bins, density=True, color=c, alpha=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def trajectories(
    paths: dict[str, np.ndarray], path: str | Path, n_lines: int = 60, title: str = ""
) -> Path:
    """Paths of points from noise to data, one panel each: ``paths[name]`` is ``(steps, n, 2)``.

    A random subset of ``n_lines`` paths is drawn as lines over the cloud of all end points
    (sdeflow-light's Figure 5 for lambda = 0 and lambda = 1).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(paths), figsize=(4.2 * len(paths), 4.2), squeeze=False)
    box = limits(*(p[-1] for p in paths.values()), *(p[0] for p in paths.values()))
    for ax, (name, p) in zip(axes[0], paths.items()):
        p = np.asarray(p)
        ax.scatter(p[0, :, 0], p[0, :, 1], s=2, color="#BBBBBB", linewidths=0, label="start (t=T)")
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=2, color="#4C72B0", linewidths=0, label="end")
        for i in range(min(n_lines, p.shape[1])):
            ax.plot(p[:, i, 0], p[:, i, 1], lw=0.6, alpha=0.7, color="#DD8452")
        ax.set_xlim(*box[:2])
        ax.set_ylim(*box[2:])
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=7, markerscale=4)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def field_and_density(
    score: Callable[[np.ndarray, float], np.ndarray],
    log_density: Callable[[np.ndarray, float], np.ndarray],
    times: Sequence[float],
    box: tuple[float, float, float, float],
    path: str | Path,
    grid: int = 48,
    arrows: int = 20,
) -> Path:
    """For each t: the score field as arrows (top row) and the log-density as an image (bottom row).

    ``score(points, t)`` and ``log_density(points, t)`` take ``(M, 2)`` arrays.
    """
    plt = _plt()
    fig, axes = plt.subplots(2, len(times), figsize=(3.0 * len(times), 6.0), squeeze=False)
    xs, ys = np.linspace(box[0], box[1], arrows), np.linspace(box[2], box[3], arrows)
    A = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    xd, yd = np.linspace(box[0], box[1], grid), np.linspace(box[2], box[3], grid)
    G = np.stack(np.meshgrid(xd, yd), -1).reshape(-1, 2)
    for j, t in enumerate(times):
        s = score(A, t)
        norm = np.linalg.norm(s, axis=1, keepdims=True)
        u = s / np.maximum(norm, 1e-12)
        ax = axes[0][j]
        ax.quiver(A[:, 0], A[:, 1], u[:, 0], u[:, 1], np.log1p(norm[:, 0]), cmap="viridis")
        ax.set_title(f"score, t={t:g}", fontsize=10)
        ld = log_density(G, t).reshape(grid, grid)
        ax = axes[1][j]
        ax.imshow(np.exp(ld), origin="lower", extent=box, cmap="magma", aspect="auto")
        ax.set_title(f"density, t={t:g}", fontsize=10)
        for a in (axes[0][j], axes[1][j]):
            a.set_xlim(*box[:2])
            a.set_ylim(*box[2:])
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    return _save(fig, path)


def loss_curves(metrics_csv: str | Path, path: str | Path, keys: Sequence[str] = ()) -> Path:
    """Plot the numeric columns of a ``metrics.csv`` (first column: step), one panel each."""
    plt = _plt()
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{metrics_csv} holds no rows")
    keys = list(keys) or [k for k in rows[0] if k not in ("step", "time", "lr")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(float(r["step"]), float(r[k])) for r in rows if r.get(k) not in (None, "", "nan")]
        if pts:
            s, v = np.array(pts).T
            ax.plot(s, v, lw=1.2, marker="." if len(s) < 40 else None)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _column(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
    return np.array(pts).T if pts else (np.empty(0), np.empty(0))


def training_curves(metrics_csv: str | Path, path: str | Path) -> Path:
    """The training log's curves: train and test DSM loss in one panel, test bits/dim beside.

    Reads the ``metrics.csv`` that :func:`scoresde.training.loop.train` writes; the bits/dim panel
    is drawn when the column holds values (image runs with ``train.bpd_every``).
    """
    plt = _plt()
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{metrics_csv} holds no rows yet")
    bpd = _column(rows, "test_bpd")
    fig, axes = plt.subplots(1, 1 + bool(bpd[0].size), figsize=(9.0, 3.4), squeeze=False)
    ax = axes[0, 0]
    for key, label in (("train_loss", "train DSM"), ("test_loss", "test DSM (EMA)")):
        s, v = _column(rows, key)
        if s.size:
            ax.plot(s, v, lw=1.2, marker="." if s.size < 40 else None, label=label)
    ax.set(title="denoising score matching loss", xlabel="step")
    losses = [float(r[k]) for r in rows for k in ("train_loss", "test_loss") if r.get(k)]
    if losses and min(losses) > 0 and max(losses) > 10 * min(losses):
        ax.set_yscale("log")  # the first steps are orders of magnitude above the rest
    ax.legend(fontsize=8)
    if bpd[0].size:
        axes[0, 1].plot(*bpd, lw=1.2, marker=".", color="C2")
        axes[0, 1].set(title="test bits/dim (EMA)", xlabel="step")
    for a in axes[0]:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def animate_clouds(
    frames: np.ndarray, path: str | Path, labels: Sequence[str] | None = None, ms: int = 80
) -> Path:
    """An animated GIF of a point cloud moving: ``frames`` is ``(K, n, 2)``."""
    from PIL import Image

    plt = _plt()
    frames = np.asarray(frames)
    box = limits(frames[0], frames[-1])
    images = []
    for k, f in enumerate(frames):
        fig, ax = plt.subplots(figsize=(3.6, 3.6), dpi=80)
        ax.scatter(f[:, 0], f[:, 1], s=2, color="#4C72B0", linewidths=0)
        ax.set_xlim(*box[:2])
        ax.set_ylim(*box[2:])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ax.set_title(labels[k], fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        buf.seek(0)
        images.append(Image.open(buf).convert("P", palette=Image.ADAPTIVE))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [ms] * (len(images) - 1) + [ms * 15]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def image_grid(images: np.ndarray, path: str | Path, nrow: int | None = None, pad: int = 2) -> Path:
    """Save ``(B, C, H, W)`` images with values in [0, 1] as one PNG grid."""
    from PIL import Image

    x = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"image_grid needs (B, 1|3, H, W) images, got {x.shape}")
    B, C, H, W = x.shape
    nrow = nrow or int(np.ceil(np.sqrt(B)))
    ncol = int(np.ceil(B / nrow))
    canvas = np.ones((C, ncol * (H + pad) + pad, nrow * (W + pad) + pad))
    for i in range(B):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) :][
            :, :, :W
        ] = x[i]
    arr = (canvas.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[:, :, 0] if C == 1 else arr).save(path)
    return path


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
