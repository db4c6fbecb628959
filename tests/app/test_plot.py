"""``scoresde plot --what ...`` on tiny 1-D and 2-D runs, the frame times of the flow animation,
and the density snapshots the training loop keeps (``density.npz``), across resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_sde
from PIL import Image

from scoresde.app.cli import main
from scoresde.app.plot import PICTURE, WHAT, flow_paths, frame_times
from scoresde.core.checks import default_eps
from scoresde.training.density import SNAPSHOT, read_snapshots

TINY = [
    "--set", "train.batch_size=32", "--set", "train.eval_every=10", "--set", "train.ckpt_every=10",
    "--set", "train.log_every=10", "--set", "train.warmup=2", "--set", "data.n_train=200",
    "--set", "data.n_test=100", "--set", "model.params.hidden=8", "--set", "model.params.depth=2",
    "--set", "model.params.embed_dim=8", "--quiet",
]  # fmt: skip
PRESETS = {1: "toy_1d_mixture_subvp", 2: "toy_swissroll_vp"}


CONSTANT_LR = ["--set", "train.lr_schedule=constant"]


def _train(dim: int, workdir, steps: int, *extra: str) -> int:
    argv = ["train", "--config", PRESETS[dim], "--workdir", str(workdir), *TINY]
    return main([*argv, "--set", f"train.steps={steps}", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny 1-D and 2-D runs of 20 steps (evaluations, hence snapshots, at 10 and 20)."""
    out = {}
    for dim in (1, 2):
        out[dim] = tmp_path_factory.mktemp(f"run{dim}d")
        assert _train(dim, out[dim], 20) == 0
    return out


# ---- frame times -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_frame_times_are_evenly_spaced_in_log_snr(name):
    sde = make_sde(name)
    t = frame_times(sde, 60)
    assert t.shape == (60,) and t.dtype == torch.float64
    assert t[0] == sde.T and t[-1] == pytest.approx(default_eps(sde))
    assert (t[1:] < t[:-1]).all()
    gaps = torch.diff(sde.log_snr(t))
    assert torch.allclose(gaps, gaps.mean().expand_as(gaps), rtol=1e-9, atol=1e-12)


def test_flow_paths_are_recorded_at_the_frame_times(runs):
    from scoresde.training.checkpoint import load_model

    model, _, _ = load_model(runs[2])
    g = torch.Generator().manual_seed(0)
    times, paths = flow_paths(model, 7, 2, lam=1.0, frames=9, substeps=3, generator=g)
    assert paths.shape == (9, 7, 2) and torch.isfinite(paths).all()
    assert np.allclose(times, frame_times(model.sde, 9).numpy(), rtol=1e-6)


# ---- plot --what -------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("what", WHAT)
def test_plot_each_picture(runs, dim, what, tmp_path, capsys):
    out = tmp_path / PICTURE[what]
    argv = ["plot", "--workdir", str(runs[dim]), "--what", what, "--out", str(out), "--n", "40"]
    assert main([*argv, "--quiet"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    im = Image.open(out)
    assert im.format == ("GIF" if what == "animation" else "PNG") and min(im.size) > 300
    if what == "animation":
        assert im.n_frames == 2  # the snapshots of steps 10 and 20


def test_plot_defaults_to_the_curves_in_the_run_folder(runs, capsys):
    assert main(["plot", "--workdir", str(runs[1]), "--quiet"]) == 0
    assert (runs[1] / "curves.png").is_file()


def test_plot_of_an_image_run_draws_curves_only(tmp_path, capsys):
    g = np.random.default_rng(0)
    x = g.integers(0, 256, size=(30, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x_train=x[:24], x_test=x[24:])
    run = tmp_path / "run"
    argv = ["train", "--config", "digits_vp", "--workdir", str(run), "--data",
            str(tmp_path / "mine.npz"), "--set", "train.steps=1", "--set", "train.batch_size=8",
            "--set", "model.params.channels=[4, 8, 8, 8]", "--set", "model.params.embed_dim=8",
            "--set", "train.tensorboard=false", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert not (run / SNAPSHOT).exists()
    capsys.readouterr()
    assert main(["plot", "--workdir", str(run), "--what", "field", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "1-D or 2-D run" in err and "--what curves" in err
    assert main(["plot", "--workdir", str(run), "--what", "curves", "--quiet"]) == 0


def test_plot_without_snapshots_or_metrics_is_one_line(runs, tmp_path, capsys):
    (runs[1] / SNAPSHOT).rename(tmp_path / SNAPSHOT)
    try:
        assert main(["plot", "--workdir", str(runs[1]), "--what", "animation", "--quiet"]) == 2
        assert "no density.npz" in capsys.readouterr().err
    finally:
        (tmp_path / SNAPSHOT).rename(runs[1] / SNAPSHOT)
    assert main(["plot", "--workdir", str(tmp_path), "--quiet"]) == 2
    assert "no metrics.csv" in capsys.readouterr().err


# ---- density snapshots -------------------------------------------------------------------------
def test_snapshots_grow_with_evaluations_and_survive_resume(tmp_path):
    # a constant lr: the run resumed to 40 steps must equal an uninterrupted one (a decaying
    # schedule depends on train.steps)
    run = tmp_path / "run"
    assert _train(1, run, 20, *CONSTANT_LR) == 0
    first = read_snapshots(run / SNAPSHOT)
    assert first["steps"].tolist() == [10, 20] and first["log_density"].shape == (2, 200)
    assert np.isfinite(first["log_density"]).all()
    assert _train(1, run, 40, "--resume", *CONSTANT_LR) == 0
    resumed = read_snapshots(run / SNAPSHOT)
    assert resumed["steps"].tolist() == [10, 20, 30, 40]
    assert np.array_equal(resumed["log_density"][:2], first["log_density"])
    assert np.array_equal(resumed["x0"], first["x0"])
    # an uninterrupted run keeps the same snapshots (exact resume)
    assert _train(1, tmp_path / "whole", 40, *CONSTANT_LR) == 0
    whole = read_snapshots(tmp_path / "whole" / SNAPSHOT)
    assert np.allclose(whole["log_density"], resumed["log_density"], atol=1e-5)
    # overwrite starts the file afresh
    assert _train(1, run, 10, "--overwrite") == 0
    assert read_snapshots(run / SNAPSHOT)["steps"].tolist() == [10]


def test_snapshots_of_a_2d_run(runs):
    snap = read_snapshots(runs[2] / SNAPSHOT)
    assert snap["steps"].tolist() == [10, 20]
    assert snap["log_density"].shape == (2, 40, 40) and snap["x1"].shape == (40,)
