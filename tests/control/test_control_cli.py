"""``scoresde control`` and ``scoresde train-classifier`` end to end on tiny runs (a few steps)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scoresde.app.cli import main

pytest.importorskip("sklearn")

QUICK = ["--set", "train.tensorboard=false", "--set", "train.sample_every=0", "--quiet"]
TINY = ["--set", "model.params.channels=[4, 8, 8, 8]", "--set", "model.params.embed_dim=8"]
FEW = ["--set", "sample.predictor=euler_maruyama", "--set", "sample.corrector=none"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A digits run and a colour-digits run trained 2 steps, and a classifier trained 2 steps."""
    root = tmp_path_factory.mktemp("control")
    for preset, name in (("digits_vp", "digits"), ("colour_digits_vp", "colour")):
        args = ["train", "--config", preset, "--workdir", str(root / name), *QUICK, *TINY, *FEW]
        assert main([*args, "--set", "train.steps=2", "--set", "train.batch_size=8"]) == 0
    clf = ["train-classifier", "--workdir", str(root / "clf"), "--steps", "2", "--width", "8"]
    assert main([*clf, "--batch-size", "8", "--n-test", "20", "--quiet"]) == 0
    return root


def _control(root, run: str, *extra: str) -> int:
    base = ["control", "--workdir", str(root / run), "--n", "2", "--samples", "1", "--quiet"]
    return main([*base, "--steps", "25", "--out", str(root / "out"), *extra])


@pytest.mark.parametrize(
    "run, args",
    [
        ("digits", ["--task", "inpaint", "--mask", "center"]),
        ("digits", ["--task", "superres", "--factor", "2", "--method", "dps", "--zeta", "0.1"]),
        ("colour", ["--task", "colorize", "--method", "repaint", "--jump", "5", "--resample", "2"]),
    ],
)
def test_observation_tasks(runs, run, args):
    assert _control(runs, run, *args) == 0
    d = np.load(runs / "out" / "samples.npz")
    assert d["samples"].shape[:2] == (2, 1) and (runs / "out" / "grid.png").is_file()
    if "inpaint" in args:  # observed pixels equal the input (the border around the centre)
        assert np.array_equal(d["samples"][:, 0, :, 0], d["inputs"][:, :, 0])


def test_class_task_and_accuracy_curve(runs):
    assert (runs / "clf" / "accuracy.csv").read_text().startswith("t,sigma,snr_db,accuracy")
    assert (runs / "clf" / "accuracy.png").is_file()
    clf = ["--classifier", str(runs / "clf")]
    # two samples per class: the tiny U-Net's GroupNorm needs more than one value per group
    args = ["--task", "class", *clf, "--class", "3", "--class", "7", "--samples", "2"]
    assert _control(runs, "digits", *args) == 0
    assert np.load(runs / "out" / "samples.npz")["samples"].shape == (2, 2, 1, 8, 8)


def test_bad_inputs_exit_2(runs, tmp_path, capsys):
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "m.png")
    clf = ["--classifier", str(runs / "clf")]
    cases = [
        ("digits", ["--task", "inpaint", "--mask", str(tmp_path / "m.png")], "5x5"),
        ("digits", ["--task", "inpaint", "--mask", "moon"], "unknown mask"),
        ("digits", ["--task", "class", *clf, "--class", "10"], "out of range"),
        ("colour", ["--task", "class", *clf], "reads (1, 8, 8) inputs"),
        ("digits", ["--task", "colorize"], "3-channel"),
        ("digits", ["--task", "superres", "--factor", "3"], "does not divide"),
    ]
    for run, args, message in cases:
        assert _control(runs, run, *args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
