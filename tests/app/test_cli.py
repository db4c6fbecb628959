"""The command line end to end: train -> sample -> likelihood, convert/info, demo, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TESTDATA, require

from scoresde.app.cli import main

TINY = [
    "--set", "train.steps=30", "--set", "train.batch_size=64", "--set", "train.eval_every=15",
    "--set", "train.ckpt_every=15", "--set", "train.log_every=5", "--set", "train.warmup=5",
    "--set", "data.n_train=500", "--set", "data.n_test=100", "--set", "model.params.hidden=16",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained toy model (30 steps): enough to exercise every verb."""
    wd = tmp_path_factory.mktemp("run")
    assert main(["train", "--config", "toy_mixture_vp", "--workdir", str(wd), *TINY]) == 0
    return wd


def test_train_writes_run_folder(run):
    assert (run / "checkpoint.pt").is_file()
    assert (run / "config.yaml").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step") and len(rows) > 2


@pytest.mark.parametrize(
    "sampler, extra",
    [
        ("pc", ["--steps", "50"]),
        ("ode", ["--method", "rk4", "--steps", "10"]),
        ("heun", ["--steps", "8"]),
        ("dpm_solver", ["--steps", "9", "--order", "3"]),
        ("dpm_solver", ["--steps", "9", "--order", "2", "--dpm-method", "multistep"]),
    ],
)
def test_sample_writes_npy_and_png(run, tmp_path, sampler, extra, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", "--workdir", str(run), "--sampler", sampler, "--n", "64",
                 "--out", str(out), "--device", "cpu", *extra]) == 0  # fmt: skip
    x = np.load(out)
    assert x.shape == (64, 2) and np.isfinite(x).all()
    assert not out.with_suffix(".png").exists()  # exactly --out (a picture: --out FILE.png)
    assert "nfe=" in capsys.readouterr().out


def test_sample_is_reproducible_by_seed(run, tmp_path):
    a, b, c = (tmp_path / f"{k}.npy" for k in "abc")
    common = ["sample", "--workdir", str(run), "--steps", "40", "--n", "16", "--device", "cpu"]
    assert main([*common, "--seed", "3", "--out", str(a)]) == 0
    assert main([*common, "--seed", "3", "--out", str(b)]) == 0
    assert main([*common, "--seed", "4", "--out", str(c)]) == 0
    assert np.array_equal(np.load(a), np.load(b))
    assert not np.array_equal(np.load(a), np.load(c))


def test_sampler_flags_read_the_one_table(run, tmp_path, capsys):
    from scoresde.samplers import SAMPLERS

    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "{" + ",".join(SAMPLERS) + "}" in capsys.readouterr().out
    common = ["sample", "--workdir", str(run), "--sampler", "dpm_solver", "--steps", "6",
              "--order", "2", "--n", "8", "--device", "cpu"]  # fmt: skip
    a, b, c, d = (tmp_path / f"{k}.npy" for k in "abcd")
    assert main([*common, "--dpm-method", "multistep", "--out", str(a)]) == 0
    assert main([*common, "--method", "multistep", "--out", str(b)]) == 0
    assert main([*common, "--out", str(c)]) == 0  # the sampler's own default: singlestep
    # a flag the chosen sampler does not take is not passed to it (--lam is the lambda family's)
    assert main([*common, "--lam", "0.5", "--out", str(d)]) == 0
    assert np.array_equal(np.load(a), np.load(b))
    assert not np.array_equal(np.load(a), np.load(c))
    assert np.array_equal(np.load(c), np.load(d))


def test_likelihood_json(run, tmp_path):
    out = tmp_path / "ll.json"
    assert main(["likelihood", "--workdir", str(run), "--n", "50", "--out", str(out),
                 "--device", "cpu", "--rtol", "1e-3", "--atol", "1e-3"]) == 0  # fmt: skip
    r = json.loads(out.read_text())
    assert r["n"] == 50 and np.isfinite(r["nll"]) and r["se"] > 0
    assert r["nll_per_dim"] == pytest.approx(r["nll"] / 2)


def test_dry_run_prints_resolved_config(capsys):
    assert (
        main(["train", "--config", "toy_swissroll_vp", "--dry-run", "--set", "train.lr=1e-3"]) == 0
    )
    text = capsys.readouterr().out
    assert "lr: 0.001" in text and "sde:" in text


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--config", "no_such_preset", "--dry-run"], "toy_swissroll_vp"),
        (["train", "--config", "toy_swissroll_vp", "--set", "train.stepz=3", "--dry-run"], "stepz"),
        (["train", "--config", "toy_swissroll_vp", "--set", "sde.name=foo", "--dry-run"], "vpsde"),
        (["train", "--config", "toy_swissroll_vp", "--data", "/nonexistent.npy", "--workdir", "X"],
         "nonexistent"),
        (["sample", "--workdir", "/nonexistent", "--out", "x.npy"], "checkpoint"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_malformed_data_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n3,oops\n")
    argv = ["train", "--config", "toy_swissroll_vp", "--data", str(bad),
            "--workdir", str(tmp_path / "w")]  # fmt: skip
    assert main(argv) == 2
    assert "bad.csv" in capsys.readouterr().err


def test_corrupt_checkpoint(run, tmp_path, capsys):
    wd = tmp_path / "broken"
    wd.mkdir()
    data = (run / "checkpoint.pt").read_bytes()
    (wd / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["sample", "--workdir", str(wd), "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err.lower() and len(err.strip().splitlines()) == 1


def test_convert_then_info_and_sample(tmp_path, capsys):
    ckpt = require(TESTDATA / "vp_ddpmpp_continuous_small.pth")
    cfg = TESTDATA / "vp_ddpmpp_continuous_small_config.json"
    out = tmp_path / "conv"
    assert main(["convert", "--official", str(ckpt), "--config", str(cfg), "--out", str(out)]) == 0
    assert main(["info", "--workdir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "VPSDE" in text and "noise" in text
    npz = tmp_path / "img.npz"
    argv = ["sample", "--workdir", str(out), "--sampler", "dpm_solver", "--steps", "4",
            "--order", "2", "--n", "4", "--out", str(npz), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    x = np.load(npz)["samples"]
    assert x.shape == (4, 3, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert sorted(p.name for p in tmp_path.glob("img.*")) == ["img.npz"]  # exactly --out


def test_demo_reduced(tmp_path):
    from scoresde.app.demo import run_demo

    out = tmp_path / "demo"
    m = run_demo(out, steps=60, n=200)
    pictures = ("samples.png", "trajectories.png", "field.png", "flow.gif", "curves.png",
                "density.png", "density.gif")  # fmt: skip
    for name in pictures:
        assert (out / name).stat().st_size > 1000, name
    assert not (out / "loss.png").exists()  # one curves.png, written by the training loop
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_nll"] == pytest.approx(m["test_nll"])
    assert np.isfinite(saved["test_nll"]) and saved["test_nll_se"] > 0
    assert saved["nfe_pc"] == 1000  # the preset's reverse diffusion, N steps, no corrector
    assert saved["energy_distance_pc"] >= 0  # a 60-step model is far from the data
