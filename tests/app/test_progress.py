"""The progress reporter: plain lines off a terminal, a tqdm bar on one, nothing when quiet; the
command line's periodic lines for train and sample, the header line, ``--quiet``."""

from __future__ import annotations

import io
import time

import pytest

from scoresde.app import progress
from scoresde.app.cli import main
from scoresde.app.progress import Progress, format_seconds

TINY = [
    "--set", "train.steps=20", "--set", "train.batch_size=64", "--set", "train.eval_every=10",
    "--set", "train.ckpt_every=10", "--set", "train.log_every=5", "--set", "train.warmup=5",
    "--set", "data.n_train=300", "--set", "data.n_test=50", "--set", "model.params.hidden=16",
    "--set", "train.sample_every=0", "--set", "train.tensorboard=false",
]  # fmt: skip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_show_position_rate_eta_and_values():
    out = io.StringIO()
    with Progress(10, "train", unit="step", interval=0.0, stream=out, header="HEAD") as p:
        for i in range(1, 11):
            p.set(i, loss=1.0 / i)
    lines = out.getvalue().splitlines()
    assert lines[0] == "HEAD" and lines.count("HEAD") == 1
    assert lines[1].startswith("train: 1/10 step (10%)") and "step/s" in lines[1]
    assert "ETA" in lines[1] and "loss 1" in lines[1]
    assert lines[-1].startswith("train: 10/10 step (100%)") and "loss 0.1" in lines[-1]


def test_plain_lines_are_spaced_by_the_interval():
    out = io.StringIO()
    p = Progress(1000, "sample", interval=3600.0, stream=out)
    for i in range(1, 1001):
        p.set(i)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first update, then the final position at close
    assert lines[-1].startswith("sample: 1000/1000")


def test_tqdm_calls_drive_it_too():
    out = io.StringIO()
    p = Progress(5, "train", interval=0.0, stream=out)
    p.n = 3
    p.set_postfix({"train_loss": "0.5"}, refresh=False)
    p.update(0)
    p.close()
    assert "train: 3/5 it (60%)" in out.getvalue() and "train_loss 0.5" in out.getvalue()


def test_bar_on_a_terminal():
    out = _Terminal()
    with Progress(4, "train", unit="step", stream=out, header="HEAD") as p:
        for i in range(1, 5):
            time.sleep(0.12)  # tqdm redraws at most every 0.1 s
            p.set(i, loss=0.25)
    text = out.getvalue()
    assert text.startswith("HEAD\n") and "train" in text and "4/4" in text and "loss=0.25" in text


@pytest.mark.parametrize("tty", [True, False])
def test_quiet_prints_nothing(tty):
    out = _Terminal() if tty else io.StringIO()
    with Progress(3, "train", quiet=True, interval=0.0, stream=out, header="HEAD") as p:
        for i in range(1, 4):
            p.set(i, loss=1.0)
    assert out.getvalue() == ""


def test_format_seconds():
    assert format_seconds(5) == "0:05" and format_seconds(3725) == "1:02:05"
    assert format_seconds(float("nan")) == "?"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("run")
    assert main(["train", "--config", "toy_mixture_vp", "--workdir", str(wd), *TINY]) == 0
    return wd


def test_train_prints_header_then_periodic_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    argv = ["train", "--config", "toy_mixture_vp", "--workdir", str(tmp_path), *TINY]
    assert main(argv) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0].startswith("scoresde train: 1 torch thread (")
    steps = [ln for ln in err if ln.startswith("train: ")]
    assert len(steps) >= 5 and all("ETA" in ln and "step/s" in ln for ln in steps)
    assert steps[-1].startswith("train: 20/20 step (100%)") and "train_loss" in steps[-1]
    assert "train:" not in captured.out and captured.out.startswith("trained ")


@pytest.mark.parametrize("sampler, extra", [("pc", ["--steps", "30"]),
                                            ("ode", ["--method", "rk4", "--steps", "5"]),
                                            ("dpm_solver", ["--steps", "6"])])  # fmt: skip
def test_sample_reports_within_a_chunk(run, tmp_path, capsys, monkeypatch, sampler, extra):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    argv = ["sample", "--workdir", str(run), "--sampler", sampler, "--n", "20", "--device", "cpu",
            "--out", str(tmp_path / "s.npy"), *extra]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0].startswith("scoresde sample: 1 torch thread")
    lines = [ln for ln in err if ln.startswith("sample: ")]
    assert any(", t " in ln for ln in lines)  # a line from inside the chunk (a step's time)
    assert lines[-1].startswith("sample: 20/20 samples (100%)")
    assert "nfe=" in captured.out and "sample:" not in captured.out


def test_likelihood_reports_per_batch(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    argv = ["likelihood", "--workdir", str(run), "--n", "20", "--batch-size", "10",
            "--rtol", "1e-3", "--atol", "1e-3", "--device", "cpu",
            "--out", str(tmp_path / "ll.json")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("scoresde likelihood: 1 torch thread")
    assert any(ln.startswith("likelihood: 10/20 examples (50%)") for ln in err)


def test_quiet_run_prints_no_progress(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    argv = ["sample", "--workdir", str(run), "--steps", "30", "--n", "10", "--device", "cpu",
            "--out", str(tmp_path / "s.npy"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "nfe=" in captured.out
    wd = tmp_path / "q"
    argv = ["train", "--config", "toy_mixture_vp", "--workdir", str(wd), *TINY, "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("trained ")


def test_user_error_before_the_run_is_one_line(capsys, tmp_path):
    assert main(["sample", "--workdir", str(tmp_path / "none"), "--out", "x.npy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint" in err[0]
