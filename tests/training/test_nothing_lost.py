"""Nothing lost: one process per run folder, no run replaced by accident, resume with the run's own
config, atomic files, checkpoints on SIGINT / SIGTERM, clear write errors, checks before step 1.

CLI cases run ``python -m scoresde train`` in a subprocess (or ``main`` in process where a write
is made to fail) and assert the exit code, one stderr line naming the problem, no traceback, and
that no file was written or destroyed.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scoresde.app.cli import main
from scoresde.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scoresde.training.config import ConfigError, apply_overrides, config_to_dict, load_config
from scoresde.training.loop import Interrupted, train
from scoresde.training.workdir import LOCK, WorkdirError, WorkdirLock

PRESET = "toy_mixture_vp"
TINY = [
    "model.params.hidden=16", "train.tensorboard=false", "data.n_train=512", "data.n_test=128",
    "train.batch_size=32", "train.warmup=5", "train.log_every=10", "train.eval_every=20",
    "train.ckpt_every=10",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SCORESDE_THREADS": "1"}
COLUMNS = ("step", "train_loss", "test_loss", "test_bpd", "lr")  # all but the wall time


def tiny(*more: str):
    return apply_overrides(load_config(PRESET), [*TINY, *more])


def _sets(*more: str) -> list[str]:
    return [a for s in (*TINY, *more) for a in ("--set", s)]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "scoresde", "train", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (what must not change)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _rows(workdir: Path) -> list[list[str]]:
    with open(workdir / "metrics.csv", newline="") as f:
        return [[r[c] for c in COLUMNS] for r in csv.DictReader(f)]


_SLOW = """
import json, sys, time, torch
torch.set_num_threads(1)
from scoresde.training.config import config_from_dict
from scoresde.training.loop import train
cfg = config_from_dict(json.loads(sys.argv[1]))
train(cfg, sys.argv[2], callback=lambda s, m: time.sleep(0.05))
"""


def test_a_second_process_on_a_locked_workdir_stops_at_once(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-c", _SLOW, json.dumps(config_to_dict(tiny("train.steps=150"))), run],
        env=ENV,
    )
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists():  # the first holds the lock before its first file
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = _cli("--config", PRESET, "--workdir", str(run), *_sets("train.steps=5"))
    assert first.poll() is None  # refused while the first still trains
    assert second.returncode == 2
    line = _one_line(second.stderr)
    assert "another process" in line and f"pid {first.pid}" in line and LOCK in line
    assert first.wait(timeout=120) == 0  # the first finishes untouched
    assert load_checkpoint(run)["step"] == 150
    assert [int(r[0]) for r in _rows(run)] == list(range(10, 151, 10))
    with pytest.raises(WorkdirError, match="already holds a run at step 150"):
        train(tiny("train.steps=5"), run)  # the lock died with the process; the run is still there


def test_the_lock_is_exclusive_within_a_process_and_released(tmp_path):
    lock = WorkdirLock(tmp_path)
    with pytest.raises(WorkdirError, match=f"pid {os.getpid()}"):
        train(tiny("train.steps=2"), tmp_path)
    lock.release()
    assert train(tiny("train.steps=2"), tmp_path)["step"] == 2


def test_an_existing_run_is_refused_unchanged_then_overwritten(tmp_path):
    run = tmp_path / "run"
    train(tiny("train.steps=20", "train.sample_every=20", "sample.n=8"), run)
    before = _files(run)
    assert "samples_20.npy" in before
    out = _cli("--config", PRESET, "--workdir", str(run), *_sets("train.steps=5"))
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "already holds a run at step 20" in line and "--resume" in line and "--overwrite" in line
    assert _files(run) == before
    with pytest.raises(WorkdirError, match="at step 20"):
        train(tiny("train.steps=5"), run)
    assert _files(run) == before
    out = _cli("--config", PRESET, "--workdir", str(run), "--overwrite", *_sets("train.steps=5"))
    assert out.returncode == 0 and out.stderr == ""
    assert load_checkpoint(run)["step"] == 5 and not (run / "samples_20.npy").exists()


def test_resume_needs_no_config_and_lists_the_safe_changes(tmp_path):
    run = tmp_path / "run"
    train(tiny("train.steps=20"), run)
    out = _cli("--resume", "--workdir", str(run), "--set", "train.steps=30",
               "--set", "train.log_every=5")  # fmt: skip
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert f"resuming {run} at step 20 of 30" in out.stdout
    assert "changed train.log_every: 10 -> 5" in out.stdout
    assert load_checkpoint(run)["step"] == 30
    assert load_config(str(run / "config.yaml")).train.log_every == 5
    assert [int(r[0]) for r in _rows(run)] == [10, 20, 25, 30]


def test_resume_with_a_differing_set_is_refused_naming_the_key(tmp_path):
    run = tmp_path / "run"
    train(tiny("train.steps=10"), run)
    before = _files(run)
    out = _cli("--resume", "--workdir", str(run), "--set", "train.lr=0.5",
               "--set", "train.steps=20")  # fmt: skip
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "train.lr" in line and "train.steps" not in line.split("differ")[0]
    assert _files(run) == before
    with pytest.raises(ConfigError, match="model.params.hidden"):
        train(tiny("train.steps=20", "model.params.hidden=8"), run, resume=True)
    assert _files(run) == before


def test_resume_in_python_refuses_a_checkpoint_that_cannot_continue(tmp_path):
    """``train(resume=True)`` makes the CLI's checks: a checkpoint without optimizer or RNG state
    (a converted one, or one cut short) is refused with one CheckpointError, and nothing written."""
    run = tmp_path / "run"
    train(tiny("train.steps=10"), run)
    for entry, needle in (("optimizer", "no optimizer state"), ("rng", "no RNG state")):
        state = load_checkpoint(run)
        del state[entry]
        save_checkpoint(run / "checkpoint.pt", state)
        before = _files(run)
        with pytest.raises(CheckpointError, match=needle):
            train(None, run, resume=True, max_steps=20)
        assert _files(run) == before


def test_resume_on_an_empty_or_missing_folder_says_so(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        out = _cli("--resume", "--workdir", str(folder))
        assert out.returncode == 2
        line = _one_line(out.stderr)
        assert "nothing to resume" in line and str(folder / "checkpoint.pt") in line
    assert list(empty.iterdir()) == [] and not (tmp_path / "missing").exists()
    with pytest.raises(WorkdirError, match="nothing to resume"):
        train(tiny("train.steps=3"), empty, resume=True)
    assert list(empty.iterdir()) == []


def test_paused_and_resumed_metrics_equal_the_uninterrupted_run(tmp_path):
    """A pause at step 25 (between log rows, 5 updates into a sum) and a resume: the same rows,
    test losses included, and the same final state."""
    cfg = tiny("train.steps=40", "train.ckpt_every=15")
    train(cfg, tmp_path / "full")
    out = train(cfg, tmp_path / "part", max_steps=25)
    assert out["step"] == 25 and "test_loss" in out
    assert [int(r[0]) for r in _rows(tmp_path / "part")] == [10, 20]  # a pause adds no row
    train(None, tmp_path / "part", resume=True)
    assert _rows(tmp_path / "part") == _rows(tmp_path / "full")
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_signal_in_the_python_api_saves_then_raises(tmp_path):
    def kill_at_7(step: int, metrics: dict) -> None:
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny("train.steps=30")
    before = signal.getsignal(signal.SIGTERM)  # another library (Ray) may have set its own
    with pytest.raises(Interrupted) as e:
        train(cfg, tmp_path / "part", callback=kill_at_7)
    assert e.value.step == 7 and e.value.exit_code == 143 and "SIGTERM" in str(e.value)
    assert load_checkpoint(tmp_path / "part")["step"] == 7
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    train(None, tmp_path / "part", resume=True)
    train(cfg, tmp_path / "full")
    assert _rows(tmp_path / "part") == _rows(tmp_path / "full")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_at_the_step_reached(tmp_path, sig):
    run = tmp_path / "run"
    args = ("--config", PRESET, "--workdir", str(run), *_sets("train.steps=1000000"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoresde", "train", "--quiet", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    line = _one_line(err)
    assert signal.Signals(sig).name in line and str(run / "checkpoint.pt") in line
    step = load_checkpoint(run)["step"]
    assert f"step {step} " in line and 10 <= step < 1000000
    assert not list(run.glob(".*.tmp"))


def test_a_workdir_that_is_a_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "not_a_folder"
    path.write_text("mine")
    out = _cli("--config", PRESET, "--workdir", str(path), *_sets("train.steps=3"))
    assert out.returncode == 2
    assert str(path) in _one_line(out.stderr) and path.read_text() == "mine"


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_save, calls = torch.save, []

    def full_disk(obj, f, *a, **k):
        calls.append(1)
        if len(calls) > 1:  # the checkpoint of step 10 is written, the next one is not
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    argv = ["train", "--quiet", "--config", PRESET, "--workdir", str(run)]
    assert main([*argv, *_sets("train.steps=30")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write {run / 'checkpoint.pt'}: No space left on device" in line
    assert "step 10" in line
    assert load_checkpoint(run)["step"] == 10 and not list(run.glob(".*.tmp"))
    assert [int(r[0]) for r in _rows(run)] == [10, 20]


def test_a_pc_sampler_that_cannot_run_is_refused_before_the_first_step(tmp_path):
    bad = ("train.sample_every=1000", "sample.sampler=pc", "sample.steps=10")  # beta_max 20 > N
    out = _cli("--config", PRESET, "--workdir", str(tmp_path / "run"), *_sets(*bad))
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "sample" in line and "steps=10" in line and "N > beta_max" in line
    assert not (tmp_path / "run").exists()
    steps = []
    with pytest.raises(ConfigError, match="cannot run"):
        train(tiny(*bad), tmp_path / "api", callback=lambda s, m: steps.append(s))
    assert steps == [] and not (tmp_path / "api").exists()
