"""Test bits/dim during image training, the curves PNG, ``scoresde plot`` and the time budget."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from PIL import Image

from scoresde.app.cli import main
from scoresde.data import images_to_model, load_data
from scoresde.training.checkpoint import load_model
from scoresde.training.config import config_from_dict
from scoresde.training.evaluate import mean_test_bpd
from scoresde.training.loop import train


def _digits_cfg(steps: int, **train_kw):
    net = {"num_channels": 1, "channels": [4, 8, 8, 8], "embed_dim": 8}
    net |= {"embedding": "positional", "padded": True}
    tr = {"steps": steps, "batch_size": 16, "lr": 1e-3, "warmup": 5, "log_every": 1}
    tr |= {"eval_every": 3, "tensorboard": False, **train_kw}
    return config_from_dict(
        {
            "sde": {"name": "vpsde"},
            "model": {"name": "unet_tutorial", "parameterization": "noise", "params": net},
            "data": {"name": "digits", "n_train": 200, "n_test": 40, "shape": [1, 8, 8]},
            "train": tr,
            "sample": {"n": 4},
        }
    )


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits_bpd")
    cfg = _digits_cfg(6, bpd_every=3, bpd_n=8)
    train(cfg, workdir)
    return workdir


def test_bpd_logged_at_its_period(run):
    rows = {int(r["step"]): r for r in _rows(run / "metrics.csv")}
    assert set(rows) == set(range(1, 7))
    with_bpd = sorted(s for s, r in rows.items() if r["test_bpd"])
    assert with_bpd == [3, 6]
    for s in with_bpd:
        # bits/dim of 8-bit data under a proper density on [0, 1): finite and positive; an
        # untrained model sits far above 0 and, being close to a Gaussian, below ~2 * 8 bits.
        assert 0.0 < float(rows[s]["test_bpd"]) < 16.0


def test_logged_bpd_is_the_ema_model_on_the_fixed_test_images(run):
    """Recomputing from the final checkpoint's EMA weights gives the step-6 value."""
    model, cfg, _ = load_model(run, ema=True)
    _, test, _ = load_data(cfg.data)
    g = torch.Generator().manual_seed(cfg.train.seed + 1)  # train's evaluation seed offset
    y = images_to_model(test, cfg.data, g)[: cfg.train.bpd_n]
    again = mean_test_bpd(model.eval(), y, cfg)
    logged = float(_rows(run / "metrics.csv")[-1]["test_bpd"])
    # Same weights, images, probe and solver: equal up to float32 round-off in the ODE solve.
    assert again == pytest.approx(logged, rel=1e-4)


def test_curves_png_written_and_redrawn_by_cli(run, capsys):
    first = Image.open(run / "curves.png")
    assert first.size[0] > 100 and first.size[1] > 100
    out = run / "again.png"
    assert main(["plot", "--workdir", str(run), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    img = Image.open(out).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 50  # something is drawn, not a blank canvas


def test_plot_of_a_folder_without_metrics_is_one_clear_error(tmp_path, capsys):
    assert main(["plot", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "metrics.csv" in err and "Traceback" not in err


def test_time_budget_stops_with_checkpoint(tmp_path):
    result = train(_digits_cfg(50), tmp_path, max_seconds=0.0)
    assert result["step"] == 1  # the budget is checked after every update
    assert math.isfinite(result["test_loss"])
    _, cfg, _ = load_model(tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file() and cfg.train.steps == 50


def test_api_training_on_an_image_folder(tmp_path):
    """``data.path`` = a folder of PNGs: validation sets the pixel scaling, training runs."""
    import numpy as np

    from scoresde.training.config import apply_overrides, load_config

    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = apply_overrides(load_config("digits_vp"), [f"data.path={folder}", "train.batch_size=8"])
    assert (cfg.data.scale, cfg.data.shift, cfg.data.standardize) == (1.0, 0.0, False)
    result = train(cfg, tmp_path / "run", max_steps=2)
    assert result["step"] == 2 and math.isfinite(result["test_loss"])


def test_bpd_between_evaluations_uses_the_current_ema(tmp_path):
    """bits/dim at a step that is no evaluation step: the EMA weights of that step, not stale.

    Run A logs bits/dim at step 2 (eval_every 3); run B, identical but ending at step 2, must log
    the same value there (the runs are deterministic)."""
    kw = {"bpd_every": 2, "bpd_n": 4, "log_every": 100}
    train(_digits_cfg(4, **kw), tmp_path / "a")
    train(_digits_cfg(2, **kw), tmp_path / "b")
    a = {int(r["step"]): r["test_bpd"] for r in _rows(tmp_path / "a" / "metrics.csv")}
    b = {int(r["step"]): r["test_bpd"] for r in _rows(tmp_path / "b" / "metrics.csv")}
    assert sorted(a) == [2, 3, 4] and a[2] and not a[3]
    assert float(a[2]) == pytest.approx(float(b[2]), rel=1e-6)
