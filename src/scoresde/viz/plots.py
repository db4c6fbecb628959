"""Pictures: sample clouds, trajectories, score fields, densities, training curves, animations,
image grids.

Every function takes plain arrays (data units) and a path, writes one file and
returns the path. matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "limits",
    "clouds",
    "trajectories",
    "field_and_density",
    "density",
    "training_curves",
    "animate_clouds",
    "animate_density",
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
    the points of ``arrays``, widened by ``pad`` times its size on each side (1-D points: the
    same range twice)."""
    a = np.concatenate([np.asarray(x)[:, :2] for x in arrays])
    lo, hi = np.percentile(a, 0.5, axis=0), np.percentile(a, 99.5, axis=0)
    span = hi - lo
    lo, hi = lo - pad * span, hi + pad * span
    return lo[0], hi[0], lo[-1], hi[-1]


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


def _colour_by_time(times: np.ndarray):
    """``(norm, cmap)``: time on a log scale (the frames are evenly spaced in log-SNR, which at
    small t is close to evenly spaced in log t)."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    return LogNorm(times.min(), times.max()), colormaps["viridis"]


def _segments(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``(len - 1, 2, 2)`` line segments between consecutive points ``(xs[i], ys[i])``."""
    pts = np.stack([xs, ys], -1)
    return np.stack([pts[:-1], pts[1:]], 1)


def _draw_paths(ax, p: np.ndarray, times: np.ndarray, pick: np.ndarray, norm, cmap) -> None:
    """The picked paths of ``p`` ``(frames, n, D)`` as lines coloured by t, ends marked."""
    from matplotlib.collections import LineCollection

    mid = np.sqrt(times[1:] * times[:-1])  # segment colour: the geometric mean time
    one = p.shape[2] == 1
    if not one:
        ax.scatter(*p[-1, :, :2].T, s=2, color="#9DB4D3", linewidths=0, label="all end points")
    for i in pick:
        xs, ys = (times, p[:, i, 0]) if one else (p[:, i, 0], p[:, i, 1])
        lc = LineCollection(_segments(xs, ys), cmap=cmap, norm=norm, lw=1.1, alpha=0.9)
        lc.set_array(mid)
        ax.add_collection(lc)
    sx, sy = (times[[0]].repeat(len(pick)), p[0, pick, 0]) if one else p[0, pick, :2].T
    ex, ey = (times[[-1]].repeat(len(pick)), p[-1, pick, 0]) if one else p[-1, pick, :2].T
    ax.scatter(sx, sy, s=28, facecolors="white", edgecolors="k", lw=0.8, zorder=3,
               label=f"start (t = {times[0]:g})")  # fmt: skip
    ax.scatter(ex, ey, s=16, color="k", zorder=3, label=f"end (t = {times[-1]:g})")


def _path_box(arrays: dict[str, np.ndarray], pick: np.ndarray) -> tuple[float, ...]:
    """:func:`limits` of every point of the paths, widened to hold the drawn paths whole."""
    box = limits(*(p.reshape(-1, p.shape[2]) for p in arrays.values()), pad=0.05)
    drawn = np.concatenate([p[:, pick].reshape(-1, p.shape[2]) for p in arrays.values()])
    lo, hi = drawn.min(0), drawn.max(0)
    lo, hi = lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)
    return min(box[0], lo[0]), max(box[1], hi[0]), min(box[2], lo[-1]), max(box[3], hi[-1])


def trajectories(
    paths: dict[str, np.ndarray],
    path: str | Path,
    times: Sequence[float],
    n_lines: int = 8,
    title: str = "",
    seed: int = 0,
) -> Path:
    """Paths from noise (t = T) to data (small t), one panel per name, in data units.

    ``paths[name]`` is ``(frames, n, D)`` with D = 1 or 2 and ``times`` the ``(frames,)`` times of
    the frames. ``n_lines`` randomly chosen paths are drawn as lines coloured by t (one colour
    bar), their start marked by an open circle and their end by a dot; 2-D panels also show the
    cloud of all end points; 1-D panels draw x against t (log scale, T on the left).
    """
    plt = _plt()
    times = np.asarray(times, dtype=np.float64)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in paths.items()}
    first = next(iter(arrays.values()))
    one = first.shape[2] == 1
    norm, cmap = _colour_by_time(times)
    pick = np.random.default_rng(seed).permutation(first.shape[1])[:n_lines]
    fig, axes = plt.subplots(
        1, len(arrays), figsize=(4.8 * len(arrays) + 1.2, 4.6), squeeze=False, layout="constrained"
    )
    box = _path_box(arrays, pick)
    for ax, (name, p) in zip(axes[0], arrays.items()):
        _draw_paths(ax, p, times, pick, norm, cmap)
        if one:
            ax.set(xscale="log", xlim=(times.max() * 1.3, times.min() / 1.3), xlabel="t")
            ax.set(ylim=box[:2], ylabel="x (data units)")
        else:
            ax.set(xlim=box[:2], ylim=box[2:], xlabel="x₁ (data units)", ylabel="x₂ (data units)")
            ax.set_aspect("equal")
        ax.set_title(f"{name}: {len(pick)} of {p.shape[1]} paths", fontsize=10)
    axes[0][0].legend(loc="best", fontsize=7, markerscale=1.5, framealpha=0.8)
    fig.colorbar(_mappable(norm, cmap), ax=axes[0].tolist(), label="t (time of the SDE)")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _mappable(norm, cmap):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def _log_range(values: np.ndarray, span: float) -> tuple[float, float]:
    """A shared colour range for log-densities: the ``span`` nats below the largest value."""
    top = float(np.nanmax(values))
    return top - span, top


def _extent(axes: Sequence[np.ndarray]) -> tuple[float, float, float, float]:
    return float(axes[0][0]), float(axes[0][-1]), float(axes[1][0]), float(axes[1][-1])


def _field_2d(fig, grid, axes, scores, log_densities, times, arrows: int) -> None:
    """Top row: unit arrows coloured by the score's length (one log scale); bottom: log p_t."""
    from matplotlib.colors import LogNorm

    k = max(1, len(axes[0]) // arrows)
    X, Y = np.meshgrid(axes[0][k // 2 :: k], axes[1][k // 2 :: k])
    S = scores[:, k // 2 :: k, k // 2 :: k]
    h = min(X[0, 1] - X[0, 0], Y[1, 0] - Y[0, 0])  # arrows: 0.8 of their spacing, data units
    length = np.linalg.norm(S, axis=-1)
    norm = LogNorm(*np.percentile(length, [1, 99]).clip(1e-6))
    lo, hi = _log_range(log_densities, 10.0)
    for j, t in enumerate(times):
        u = S[j] / np.maximum(length[j], 1e-12)[..., None]
        q = grid[0][j].quiver(X, Y, u[..., 0] * h, u[..., 1] * h, length[j], cmap="viridis",
                              norm=norm, angles="xy", scale_units="xy", scale=1.25,
                              pivot="mid", width=0.006)  # fmt: skip
        grid[0][j].set_title(f"score, t = {t:g}", fontsize=10)
        im = grid[1][j].imshow(log_densities[j], origin="lower", extent=_extent(axes),
                               cmap="magma", vmin=lo, vmax=hi, aspect="auto",
                               interpolation="bilinear")  # fmt: skip
        grid[1][j].set_title(f"log p_t, t = {t:g}", fontsize=10)
        for a in (grid[0][j], grid[1][j]):
            a.set(xlim=_extent(axes)[:2], ylim=_extent(axes)[2:], xlabel="x₁")
    grid[0][0].set_ylabel("x₂ (data units)")
    grid[1][0].set_ylabel("x₂ (data units)")
    fig.colorbar(q, ax=grid[0].tolist(), label="|∇ log p_t| (1 / data unit)", shrink=0.9)
    fig.colorbar(im, ax=grid[1].tolist(), label="log p_t (nats)", shrink=0.9)


def _field_1d(fig, grid, x, scores, log_densities, times) -> None:
    """Left: s(x, t) against x, one line per t; right: p_t(x); coloured by t (one bar)."""
    norm, cmap = _colour_by_time(np.asarray(times, dtype=np.float64))
    for j, t in enumerate(times):
        c = cmap(norm(t))
        grid[0][0].plot(x, scores[j], color=c, lw=1.3)
        grid[0][1].plot(x, np.exp(log_densities[j]), color=c, lw=1.3)
    lim = np.percentile(np.abs(scores), 95) * 1.5
    grid[0][0].set(ylim=(-lim, lim), xlabel="x (data units)", ylabel="s(x, t) = ∂ₓ log p_t(x)")
    grid[0][0].axhline(0, color="k", lw=0.5)
    grid[0][0].set_title("learned score", fontsize=10)
    grid[0][1].set(xlabel="x (data units)", ylabel="p_t(x)")
    grid[0][1].set_title("density from the score (integrated)", fontsize=10)
    fig.colorbar(_mappable(norm, cmap), ax=grid[0].tolist(), label="t")


def field_and_density(
    axes: Sequence[np.ndarray],
    scores: np.ndarray,
    log_densities: np.ndarray,
    times: Sequence[float],
    path: str | Path,
    arrows: int = 24,
) -> Path:
    """The learned score field and the log-density it gives, at each of ``times``, data units.

    2-D (``axes = (x1 values, x2 values)``, ``scores (K, G2, G1, 2)``, ``log_densities
    (K, G2, G1)``): arrows on a grid of about ``arrows`` per side show the direction of the score
    (unit length), their colour its length on one log scale for all panels; below, log p_t on one
    shared colour scale. 1-D (``axes = (x values,)``, ``scores`` and ``log_densities (K, G)``):
    the score curves and the densities, one line per t.
    """
    plt = _plt()
    K, one = len(times), len(axes) == 1
    rows, cols = (1, 2) if one else (2, K)
    size = (11.0, 4.0) if one else (2.9 * K + 1.6, 6.4)
    fig, grid = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    scores, log_densities = np.asarray(scores), np.asarray(log_densities)
    if one:
        _field_1d(fig, grid, axes[0], scores, log_densities, times)
    else:
        _field_2d(fig, grid, axes, scores, log_densities, times, arrows)
        fig.suptitle(
            "arrows: direction of the learned score ∇ₓ log p_t(x), towards higher density "
            "(unit length; colour: its length)",
            fontsize=10,
        )
    return _save(fig, path)


def _kde(data: np.ndarray):
    """The data's Gaussian kernel density estimate with half Scott's bandwidth, which blurs thin
    or well separated structures (the swiss roll's arms, the modes of a mixture) less."""
    from scipy.stats import gaussian_kde

    return gaussian_kde(data.T, bw_method=lambda k: 0.5 * k.scotts_factor())


def _kde_2d(data: np.ndarray, axes: Sequence[np.ndarray]) -> np.ndarray:
    """Log of the data's kernel density estimate on the grid, ``(G2, G1)`` (rows along x2)."""
    X, Y = np.meshgrid(axes[0], axes[1])
    return _kde(data[:, :2]).logpdf(np.stack([X.ravel(), Y.ravel()])).reshape(X.shape)


def _top_1d(x: np.ndarray, log_densities: np.ndarray, data: np.ndarray) -> float:
    """The y range of 1-D density plots: the learned densities' peak, at most 2.5 times the
    data's (a spike of a poor model goes off the top)."""
    peak = float(_kde(data[:, :1])(x).max())
    return 1.08 * max(peak, min(float(np.nanmax(np.exp(log_densities))), 2.5 * peak))


def _density_1d(ax, x, log_density, data, t, exact, top: float | None = None):
    """Data histogram and KDE, the model's density (and the exact one) against x; returns the
    model's line."""
    ax.hist(data[:, 0], bins=60, range=(x[0], x[-1]), density=True, color="#BBBBBB",
            label=f"data histogram (n = {len(data)})")  # fmt: skip
    ax.plot(x, _kde(data[:, :1])(x), "--", color="#55A868", lw=1.3, label="data KDE")
    if exact is not None:
        ax.plot(x, np.exp(exact), ":", color="k", lw=1.3, label="exact p_0")
    (line,) = ax.plot(x, np.exp(log_density), color="#C44E52", lw=1.6,
                      label=f"model: probability-flow p_t, t = {t:g}")  # fmt: skip
    top = _top_1d(x, log_density, data) if top is None else top
    ax.set(xlabel="x (data units)", ylabel="density", xlim=(x[0], x[-1]), ylim=(0, top))
    ax.legend(fontsize=8, loc="upper right")
    return line


def _density_2d(fig, row, axes, log_density, data, t, exact, scale_with=None):
    """Data KDE, the model's (and the exact) log-densities side by side on one colour scale
    (which also spans ``scale_with``); returns the model's image."""
    panels = [(f"data: kernel density estimate, n = {len(data)}", _kde_2d(data, axes)),
              (f"model: probability-flow log p_t, t = {t:g}", log_density)]  # fmt: skip
    if exact is not None:
        panels.append(("exact log p_0", exact))
    values = [p.ravel() for _, p in panels] + [np.ravel([] if scale_with is None else scale_with)]
    lo, hi = _log_range(np.concatenate(values), 10.0)
    images = []
    for ax, (name, img) in zip(row, panels):
        im = ax.imshow(img, origin="lower", extent=_extent(axes), cmap="magma", vmin=lo,
                       vmax=hi, aspect="auto", interpolation="bilinear")  # fmt: skip
        images.append(im)
        ax.set_title(name, fontsize=10)
        ax.set(xlabel="x₁ (data units)")
    row[0].set_ylabel("x₂ (data units)")
    fig.colorbar(images[0], ax=list(row), label="log density (nats)", shrink=0.9)
    return images[1]


def density(
    axes: Sequence[np.ndarray],
    log_density: np.ndarray,
    data: np.ndarray,
    path: str | Path,
    t: float,
    exact: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """The model's density at a small ``t`` (``log_density`` on the grid of ``axes``) against
    the data's.

    1-D: the data's histogram and KDE, the model's density (and ``exact``, the known density,
    when given). 2-D: log-densities side by side on one colour scale: the data's kernel density
    estimate, the model's (and the exact one). ``data`` is ``(n, D)`` in data units.
    """
    plt = _plt()
    data, one = np.asarray(data, dtype=np.float64).reshape(len(data), -1), len(axes) == 1
    cols = 1 if one else 2 + (exact is not None)
    size = (7.0, 4.2) if one else (4.0 * cols + 1.2, 4.0)
    fig, grid = plt.subplots(1, cols, figsize=size, squeeze=False, layout="constrained")
    if one:
        _density_1d(grid[0][0], axes[0], np.asarray(log_density), data, t, exact)
    else:
        _density_2d(fig, grid[0], axes, np.asarray(log_density), data, t, exact)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _column(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
    return np.array(pts).T if pts else (np.empty(0), np.empty(0))


def training_curves(metrics_csv: str | Path, path: str | Path, bpd_n: int | None = None) -> Path:
    """The training log's curves: train and test DSM loss in one panel, test bits/dim beside.

    Reads the ``metrics.csv`` that :func:`scoresde.training.loop.train` writes; the bits/dim panel
    is drawn when the column holds values (image runs with ``train.bpd_every``) and names the
    number of test images ``bpd_n`` it was measured on.
    """
    plt = _plt()
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{metrics_csv} holds no rows yet")
    bpd = _column(rows, "test_bpd")
    fig, axes = plt.subplots(1, 1 + bool(bpd[0].size), figsize=(9.0, 3.6), squeeze=False)
    ax = axes[0, 0]
    for key, label in (("train_loss", "train (online model)"), ("test_loss", "test (EMA model)")):
        s, v = _column(rows, key)
        if s.size:
            ax.plot(s, v, lw=1.2, marker="." if s.size < 40 else None, label=label)
    ax.set(title="denoising score matching loss", xlabel="training step")
    ax.set_ylabel("loss per example")
    losses = [float(r[k]) for r in rows for k in ("train_loss", "test_loss") if r.get(k)]
    if losses and min(losses) > 0 and max(losses) > 10 * min(losses):
        ax.set_yscale("log")  # the first steps are orders of magnitude above the rest
    ax.legend(fontsize=8)
    if bpd[0].size:
        n = "" if bpd_n is None else f", n = {bpd_n} images"
        axes[0, 1].plot(*bpd, lw=1.2, marker=".", color="C2")
        axes[0, 1].set(title=f"test bits/dim (EMA model{n})", xlabel="training step")
        axes[0, 1].set_ylabel("bits/dim")
    for a in axes[0]:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _frame(fig):
    """The figure as it is drawn now, as one palette image (the figure stays open)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    return Image.open(buf).convert("RGB").convert("P", palette=Image.ADAPTIVE)


def _freeze(fig) -> None:
    """Lay the figure out once (constrained), then keep that layout for every frame."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


def _save_gif(images: list, path: str | Path, ms: int, hold: int) -> Path:
    """An endlessly looping GIF; the first and the last frame are shown ``hold`` times longer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [ms] * len(images)
    durations[0], durations[-1] = ms * hold, ms * hold
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def animate_clouds(
    frames: np.ndarray,
    path: str | Path,
    labels: Sequence[str] | None = None,
    ms: int = 90,
    size: float = 5.6,
) -> Path:
    """An animated GIF of a 2-D point cloud moving: ``frames`` is ``(K, n, 2)`` (data units),
    ``size`` inches at 100 dots per inch; the first and last frames are held longer."""
    plt = _plt()
    frames = np.asarray(frames)
    box = limits(frames[0], frames[-1], pad=0.05)
    fig, ax = plt.subplots(figsize=(size, size), layout="constrained")
    cloud = ax.scatter(frames[0][:, 0], frames[0][:, 1], s=3, color="#4C72B0", linewidths=0,
                       alpha=0.7)  # fmt: skip
    ax.set(xlim=box[:2], ylim=box[2:], xlabel="x₁ (data units)", ylabel="x₂ (data units)")
    ax.set_aspect("equal")
    title = ax.set_title(labels[0] if labels is not None else "", fontsize=11)
    _freeze(fig)
    images = []
    for k, f in enumerate(frames):
        cloud.set_offsets(f[:, :2])
        title.set_text(labels[k] if labels is not None else "")
        images.append(_frame(fig))
    plt.close(fig)
    return _save_gif(images, path, ms, hold=12)


def animate_density(
    axes: Sequence[np.ndarray],
    log_densities: np.ndarray,
    steps: Sequence[int],
    path: str | Path,
    data: np.ndarray,
    t: float,
    ms: int = 500,
) -> Path:
    """A GIF of the model's density during training: one frame per snapshot ``(K, G)`` (1-D) or
    ``(K, G2, G1)`` (2-D) at training ``steps``, beside the data (histogram and KDE in 1-D, KDE
    in 2-D), on fixed axes and one colour scale."""
    plt = _plt()
    data = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    logs, images = np.asarray(log_densities, dtype=np.float64), []
    if len(axes) == 1:
        fig, ax = plt.subplots(figsize=(7.0, 4.2), layout="constrained")
        top = _top_1d(axes[0], logs, data)
        model = _density_1d(ax, axes[0], logs[0], data, t, None, top)
        show = lambda k: model.set_ydata(np.exp(logs[k]))
    else:
        fig, row = plt.subplots(1, 2, figsize=(9.2, 4.0), layout="constrained")
        model = _density_2d(fig, row, axes, logs[0], data, t, None, logs)
        show = lambda k: model.set_data(logs[k])
    label = lambda step: f"training step {int(step)} of {int(steps[-1])}: the model's density"
    title = fig.suptitle(label(steps[-1]), fontsize=11)  # laid out with the longest label
    _freeze(fig)
    for k, step in enumerate(steps):
        show(k)
        title.set_text(label(step))
        images.append(_frame(fig))
    plt.close(fig)
    return _save_gif(images, path, ms, hold=4)


def image_grid(
    images: np.ndarray,
    path: str | Path,
    nrow: int | None = None,
    pad: int = 2,
    title: str = "",
    min_size: int = 64,
) -> Path:
    """Save ``(B, C, H, W)`` images with values in [0, 1] as one PNG grid.

    Each image is enlarged by nearest neighbour (whole pixels, no smoothing) to at least
    ``min_size`` pixels a side, so that small images (8x8 digits) stay readable; ``title`` is
    written in a band above the grid.
    """
    from PIL import Image

    x = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"image_grid needs (B, 1|3, H, W) images, got {x.shape}")
    k = max(1, -(-min_size // min(x.shape[2:])))  # the enlargement factor, a whole number
    x = x.repeat(k, axis=2).repeat(k, axis=3)
    B, C, H, W = x.shape
    nrow = nrow or int(np.ceil(np.sqrt(B)))
    ncol = int(np.ceil(B / nrow))
    canvas = np.ones((C, ncol * (H + pad) + pad, nrow * (W + pad) + pad))
    for i in range(B):
        r, c = divmod(i, nrow)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        canvas[:, top : top + H, left : left + W] = x[i]
    arr = (canvas.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(arr[:, :, 0] if C == 1 else arr)
    if title:
        picture = _titled(picture, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def _titled(picture, title: str):
    """``picture`` (a PIL image) below a white band holding ``title`` in black."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    _, _, right, bottom = ImageDraw.Draw(picture).textbbox((0, 0), title, font=font)
    band = bottom + 8
    out = Image.new(picture.mode, (max(picture.width, right + 8), picture.height + band), "white")
    out.paste(picture, (0, band))
    ImageDraw.Draw(out).text((4, 4), title, fill="black", font=font)
    return out


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
