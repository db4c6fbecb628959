"""``scoresde train-classifier``: presets, explicit options over the preset, refusing a folder
that holds a classifier, ``--device``, and the atomic write of ``classifier.pt``."""

from __future__ import annotations

import pytest
import torch

from scoresde.app.cli import main
from scoresde.training.classifier import (
    CLASSIFIER_PRESETS,
    load_classifier,
    preset_source,
    save_classifier,
)
from scoresde.training.config import build_sde, load_config

pytest.importorskip("sklearn")

TINY = ["--steps", "2", "--width", "8", "--batch-size", "8", "--n-test", "20", "--quiet"]


def _train(workdir, *extra: str) -> int:
    return main(["train-classifier", "--workdir", str(workdir), *TINY, *extra])


@pytest.mark.parametrize("name", sorted(CLASSIFIER_PRESETS))
def test_presets_share_the_sde_and_data_of_their_score_preset(name):
    preset, sde, data = preset_source(name)
    score = load_config(preset.score)
    assert sde.config() == build_sde(score.sde).config() and data.name == score.data.name
    assert preset.steps > 0 and preset.batch_size > 0 and preset.lr > 0


def test_preset_run_with_overrides(tmp_path, capsys):
    assert _train(tmp_path, "--preset", "digits_vp", "--device", "cpu") == 0
    assert (tmp_path / "accuracy.csv").read_text().startswith("t,sigma,snr_db,accuracy")
    clf, meta = load_classifier(tmp_path)
    preset = CLASSIFIER_PRESETS["digits_vp"]
    assert meta["preset"] == "digits_vp" and meta["steps"] == 2 and meta["width"] == 8
    assert meta["lr"] == preset.lr and meta["depth"] == preset.depth  # the preset's
    assert clf.sde.config() == preset_source("digits_vp")[1].config()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    with pytest.raises(SystemExit) as e:
        main(["train-classifier", "--workdir", str(tmp_path), "--list"])
    assert e.value.code == 0 and "digits_vp" in capsys.readouterr().out


def test_refuses_a_folder_with_a_classifier_unless_overwrite(tmp_path, capsys):
    assert _train(tmp_path, "--seed", "1") == 0
    before = (tmp_path / "classifier.pt").read_bytes()
    capsys.readouterr()
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0], err
    assert (tmp_path / "classifier.pt").read_bytes() == before
    assert _train(tmp_path, "--overwrite") == 0
    assert load_classifier(tmp_path)[1]["seed"] == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "gpu0"], "device"),
        (["--preset", "digit_vp"], "did you mean"),
        (["--run", "nowhere", "--sde", "vesde"], "--run takes the SDE"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, extra, message):
    assert _train(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "classifier.pt").exists()


def test_failed_write_keeps_the_old_classifier(tmp_path, monkeypatch):
    assert _train(tmp_path) == 0
    clf, meta = load_classifier(tmp_path)

    def broken(obj, f, *a, **k):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_classifier(tmp_path / "classifier.pt", clf, {"data": "other"})
    monkeypatch.undo()
    assert load_classifier(tmp_path)[1] == meta and not list(tmp_path.glob(".*.tmp"))
