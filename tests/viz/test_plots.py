"""Every picture of ``viz/plots.py`` is a valid PNG or GIF of the size its figure asks for."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scoresde.viz import plots

DPI = 110  # plots._save
RNG = np.random.default_rng(0)


def _png(path, inches: tuple[float, float]) -> Image.Image:
    im = Image.open(path)
    im.verify()  # a whole, readable file
    im = Image.open(path)
    assert im.format == "PNG"
    w, h = (round(v * DPI) for v in inches)
    assert abs(im.size[0] - w) <= 1 and abs(im.size[1] - h) <= 1, (im.size, (w, h))
    return im


def _gif(path, frames: int, size: tuple[int, int]) -> Image.Image:
    im = Image.open(path)
    assert im.format == "GIF" and im.n_frames == frames
    assert im.size == size
    return im


def _paths(dim: int, frames: int = 12, n: int = 50) -> np.ndarray:
    walk = RNG.normal(size=(frames, n, dim)).cumsum(0) * 0.1
    return walk[::-1].copy()  # ends near 0


def _grid(dim: int, g: int = 24) -> list[np.ndarray]:
    return [np.linspace(-3, 3, g) for _ in range(dim)]


def _gauss(axes: list[np.ndarray], scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, log_density)`` of N(0, scale^2 I) on the grid."""
    mesh = np.stack(np.meshgrid(*axes), -1) if len(axes) == 2 else axes[0]
    logp = -0.5 * (mesh**2).reshape(*mesh.shape[: len(axes)], -1).sum(-1) / scale**2
    return -mesh / scale**2, logp - len(axes) * np.log(np.sqrt(2 * np.pi) * scale)


@pytest.mark.parametrize("dim", [1, 2])
def test_trajectories(tmp_path, dim):
    times = np.geomspace(1.0, 1e-3, 12)
    paths = {"a": _paths(dim), "b": _paths(dim)}
    out = plots.trajectories(paths, tmp_path / "t.png", times, n_lines=5, title="paths")
    _png(out, (4.8 * 2 + 1.2, 4.6))


@pytest.mark.parametrize("dim", [1, 2])
def test_field_and_density(tmp_path, dim):
    axes, times = _grid(dim), (0.01, 0.1, 0.5)
    pairs = [_gauss(axes, s) for s in (0.5, 1.0, 1.5)]
    scores, logs = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    out = plots.field_and_density(axes, scores, logs, times, tmp_path / "f.png", arrows=8)
    _png(out, (11.0, 4.0) if dim == 1 else (2.9 * 3 + 1.6, 6.4))


@pytest.mark.parametrize("dim, exact", [(1, False), (1, True), (2, False), (2, True)])
def test_density(tmp_path, dim, exact):
    axes = _grid(dim)
    _, logp = _gauss(axes)
    data = RNG.normal(size=(300, dim))
    out = plots.density(axes, logp, data, tmp_path / "d.png", 1e-3, logp if exact else None)
    _png(out, (7.0, 4.2) if dim == 1 else (4.0 * (2 + exact) + 1.2, 4.0))


def test_density_keeps_a_spike_from_flattening_the_data(tmp_path):
    """A poor model's spike (200) goes off the top: the y range stays near the data's (0.4)."""
    import matplotlib.pyplot as plt

    from scoresde.viz.plots import _density_1d

    x = np.linspace(-3, 3, 200)
    spike = np.where(np.abs(x) < 0.02, np.log(200.0), -30.0)
    fig, ax = plt.subplots()
    _density_1d(ax, x, spike, RNG.normal(size=(500, 1)), 1e-3, None)
    assert 0.4 < ax.get_ylim()[1] < 1.5
    plt.close(fig)


@pytest.mark.parametrize("bpd", [False, True])
def test_training_curves(tmp_path, bpd):
    rows = ["step,train_loss,test_loss,test_bpd,lr,time"]
    rows += [f"{s},{1 / s},{1.1 / s},{8 - s / 100 if bpd else ''},0.001,{s}" for s in (10, 20, 30)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    out = plots.training_curves(tmp_path / "metrics.csv", tmp_path / "c.png", bpd_n=64)
    _png(out, (9.0, 3.6))


def test_training_curves_of_no_rows(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,train_loss\n")
    with pytest.raises(ValueError, match="no rows"):
        plots.training_curves(tmp_path / "metrics.csv", tmp_path / "c.png")


def test_animate_clouds(tmp_path):
    frames = _paths(2, frames=5)
    out = plots.animate_clouds(frames, tmp_path / "a.gif", labels=list("abcde"), size=3.0)
    _gif(out, 5, (300, 300))


@pytest.mark.parametrize("dim", [1, 2])
def test_animate_density(tmp_path, dim):
    axes = _grid(dim)
    logs = np.stack([_gauss(axes, s)[1] for s in (2.0, 1.0, 0.7)])
    out = plots.animate_density(axes, logs, [10, 20, 30], tmp_path / "d.gif",
                                RNG.normal(size=(200, dim)), 1e-3)  # fmt: skip
    _gif(out, 3, (700, 420) if dim == 1 else (920, 400))
