"""``scoresde evaluate``, ``scoresde features train``, ``likelihood --method`` and the
``train.bpd_method`` key, end to end on a tiny 8x8 digits run."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys

import pytest
from PIL import Image

from scoresde.app.cli import main

NET = ["--set", "model.params.channels=[4,8,8,8]", "--set", "model.params.embed_dim=8"]
TINY = [
    *NET, "--set", "train.steps=4", "--set", "train.batch_size=16", "--set", "train.warmup=2",
    "--set", "train.log_every=2", "--set", "train.eval_every=0", "--set", "train.ckpt_every=0",
    "--set", "train.sample_every=0", "--set", "train.tensorboard=false",
    "--set", "data.n_train=120", "--set", "data.n_test=40",
]  # fmt: skip
FAST = ["--sampler", "heun", "--steps", "3", "--n-test", "4", "--elbo-samples", "4", "--quiet",
        "--rtol", "1e-3", "--atol", "1e-3"]  # fmt: skip


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step digits run and, in its own data folder, a 20-step digits feature network."""
    root = tmp_path_factory.mktemp("eval")
    wd, data = root / "run", root / "data"
    data.mkdir()
    argv = ["train", "--config", "digits_vp", "--workdir", str(wd), "--quiet", *TINY]
    assert main([*argv, "--data-dir", str(data)]) == 0
    return wd, data


@pytest.fixture(scope="module")
def features(run):
    """``scoresde features train`` output (stdout) of the run's feature network."""
    _, data = run
    capture, out = pytest.MonkeyPatch(), io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        code = main(["features", "train", "--data", "digits", "--steps", "20", "--data-dir",
                     str(data), "--quiet"])  # fmt: skip
    finally:
        capture.undo()
    assert code == 0
    return out.getvalue()


def test_features_train_writes_the_file_and_prints_accuracy(run, features):
    _, data = run
    path = data / "features" / "digits-seed0.pt"
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", features).group(1))
    assert 0.0 <= accuracy <= 1.0
    sha = re.search(r"sha256 ([0-9a-f]{64})", features).group(1)
    assert f"wrote {path}" in features
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_evaluate_writes_json_and_png(run, features, tmp_path, capsys):
    wd, data = run
    out = tmp_path / "e.json"
    argv = ["evaluate", "--workdir", str(wd), "--data-dir", str(data), *FAST, "--n", "36"]
    assert main([*argv, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["fid"]["n"] == 36 and r["fid"]["floor"]["n"] == 36 and r["bpd"]["n"] == 4
    assert r["fid"]["features"]["sha256"] in features  # the network just trained scored it
    png = tmp_path / "eval_samples.png"
    with Image.open(png) as im:
        assert im.format == "PNG"
        # 36 images of 8x8 enlarged 8 times, 6 a row, 2-pixel gaps: 6 * 66 + 2 wide
        assert im.width == 6 * 66 + 2 and im.height > 6 * 66 + 2  # and a title band
    text = capsys.readouterr().out
    assert "FID (heun, NFE" in text and "floor" in text and "note:" in text
    assert f"wrote {out}" in text


def test_evaluate_default_json_beside_the_run(run, features, capsys):
    wd, data = run
    argv = ["evaluate", "--workdir", str(wd), "--data-dir", str(data), *FAST]
    assert main([*argv, "--metrics", "elbo", "--seed", "3"]) == 0
    r = json.loads((wd / "eval.json").read_text())
    assert r["metrics"] == ["elbo"] and r["seed"] == 3 and r["elbo"]["seed"] == 3
    assert "fid" not in r and not (wd / "eval_samples.png").exists()


def test_missing_feature_network_is_one_line(run, tmp_path, capsys):
    wd, _ = run
    argv = ["evaluate", "--workdir", str(wd), "--data-dir", str(tmp_path), *FAST]
    assert main(argv) == 2
    assert "scoresde features train --data digits" in _one_error_line(capsys)


def _usage_error(argv: list[str]) -> None:
    """A usage error: argparse's exit with code 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_unknown_sampler_lists_the_valid_ones(run, capsys):
    wd, _ = run
    _usage_error(["evaluate", "--workdir", str(wd), "--sampler", "eulr"])
    err = _one_error_line(capsys)
    assert "unknown sampler 'eulr'" in err and "valid: pc, ode, heun" in err


def test_unknown_metric_and_both_steps_and_nfe_are_refused(run, capsys):
    wd, _ = run
    _usage_error(["evaluate", "--workdir", str(wd), "--metrics", "bpd,fd"])
    assert "valid: bpd, elbo, fid" in _one_error_line(capsys)
    assert main(["evaluate", "--workdir", str(wd), "--steps", "3", "--nfe", "5"]) == 2
    assert "not both" in _one_error_line(capsys)


def test_likelihood_method_is_the_bound_option(run, tmp_path):
    wd, _ = run
    common = ["likelihood", "--workdir", str(wd), "--n", "3", "--elbo-samples", "4", "--quiet"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main([*common, "--method", "elbo", "--out", str(a)]) == 0
    assert main([*common, "--bound", "elbo", "--out", str(b)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra == rb and ra["bound"] == "elbo" and ra["nfe"] == 4


def test_bpd_method_is_logged_and_a_typo_refused(tmp_path, capsys):
    argv = ["train", "--config", "digits_vp", "--workdir", str(tmp_path / "r"), "--quiet", *TINY,
            "--set", "train.bpd_every=2", "--set", "train.bpd_n=4"]  # fmt: skip
    assert main([*argv, "--set", "train.bpd_method=elbo"]) == 0
    with open(tmp_path / "r" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["test_bpd"]]
    assert [r["bpd_method"] for r in rows] == ["elbo", "elbo"]
    assert main([*argv, "--overwrite", "--set", "train.bpd_metod=elbo"]) == 2
    assert "did you mean 'train.bpd_method'" in _one_error_line(capsys)


def test_inception_and_features_load_on_the_device_asked(monkeypatch, tmp_path):
    """``--inception`` / ``--features`` networks are built on the evaluation's device (they used
    to stay on the CPU whatever ``--device`` said)."""
    import argparse

    import torch

    from scoresde.app import evaluate as app_eval
    from scoresde.training import features, inception

    seen = {}

    def fake_inception(path, device):
        seen["inception"] = device
        return torch.nn.Linear(1, 1)

    class Net(torch.nn.Linear):
        def to(self, device):
            seen["features"] = device
            return self

    monkeypatch.setattr(inception, "load_inception", fake_inception)
    monkeypatch.setattr(features, "load_features", lambda path: Net(1, 1))
    meta = torch.device("meta")
    for flag in ("inception", "features"):
        args = argparse.Namespace(
            **{"inception": None, "features": None, flag: str(tmp_path / "w.pt")}
        )
        net = app_eval._features(args, meta)
        assert seen[flag] == meta and net.path == tmp_path / "w.pt"
