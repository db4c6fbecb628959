"""The trainer: files it writes, exact resume (in process and after SIGKILL), NaN stop, quality.

Training runs on one thread: the tiny networks here gain nothing from more, and on a shared
two-core machine competing thread pools slow every step down by an order of magnitude.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from scoresde.data import toy_mixture
from scoresde.training.checkpoint import load_checkpoint, load_model
from scoresde.training.config import apply_overrides, config_to_dict, load_config
from scoresde.training.evaluate import sample_model
from scoresde.training.loop import Run, TrainingError, setup, train
from scoresde.training.workdir import WorkdirError

TINY = [
    "model.params.hidden=16", "model.params.depth=2", "model.params.embed_dim=8",
    "data.n_train=512", "data.n_test=128", "train.batch_size=32", "train.warmup=5",
    "train.lr=1e-3", "train.tensorboard=false",
]  # fmt: skip


def tiny(*more: str, preset: str = "toy_swissroll_vp"):
    return apply_overrides(load_config(preset), [*TINY, *more])


def _rows(workdir) -> list[dict]:
    with open(workdir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]["params"]:
        assert torch.equal(a["ema"]["params"][k], b["ema"]["params"][k]), k
    for i, s in a["optimizer"]["state"].items():
        for k, v in s.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])


def test_smoke_files_metrics_samples(tmp_path):
    cfg = tiny(
        "train.steps=30", "train.log_every=10", "train.eval_every=15", "train.ckpt_every=20",
        "train.sample_every=30", "sample.steps=50", "sample.n=50",
    )  # fmt: skip
    seen = []
    out = train(cfg, tmp_path, callback=lambda step, m: seen.append(step))
    assert seen == list(range(1, 31))
    assert (
        out["step"] == 30 and math.isfinite(out["train_loss"]) and math.isfinite(out["test_loss"])
    )
    rows = _rows(tmp_path)
    assert [int(r["step"]) for r in rows] == [10, 15, 20, 30]
    assert [bool(r["test_loss"]) for r in rows] == [False, True, False, True]
    assert float(rows[-1]["test_loss"]) == pytest.approx(out["test_loss"])
    saved = load_config(str(tmp_path / "config.yaml"))
    assert saved.data.shape == [2] and saved.model.params["dim"] == 2
    state = load_checkpoint(tmp_path)
    assert state["step"] == 30 and state["config"] == config_to_dict(saved)
    assert state["standardizer"] is not None
    x = np.load(tmp_path / "samples_30.npy")
    assert x.shape == (50, 2) and np.isfinite(x).all()


def test_setup_builds_the_run_and_train_is_public(tmp_path):
    import scoresde as sd

    assert sd.train is train and "train" in sd.__all__
    run = setup(tiny("train.steps=10"), tmp_path)
    assert isinstance(run, Run) and run.start_step == 0 and run.saved_step is None
    assert run.model.training and not run.ema_model.training and not run.images
    assert run.train_x.shape == (512, 2) and run.test_x.shape == (128, 2)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "metrics.csv").is_file()
    run.close()  # releases the folder's lock; the files of a run without checkpoint stay
    train(tiny("train.steps=10"), tmp_path, overwrite=True)
    again = setup(None, tmp_path, resume=True)
    assert again.start_step == again.saved_step == 10


def test_resume_in_process_is_exact(tmp_path):
    cfg = tiny("train.steps=40", "train.ckpt_every=15", "train.log_every=5", "train.eval_every=10")
    train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "part", max_steps=25)
    assert load_checkpoint(tmp_path / "part")["step"] == 25
    train(cfg, tmp_path / "part", resume=True)
    _same_state(load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part"))
    # The same log rows: a pause writes no row of its own (all columns but the wall time).
    cols = ("step", "train_loss", "test_loss", "test_bpd", "lr")
    part, full = _rows(tmp_path / "part"), _rows(tmp_path / "full")
    assert [[r[c] for c in cols] for r in part] == [[r[c] for c in cols] for r in full]


_CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
from scoresde.training.config import config_from_dict
from scoresde.training.loop import train
cfg = config_from_dict(json.loads(sys.argv[1]))
pause = float(sys.argv[4])
train(cfg, sys.argv[2], resume=sys.argv[3] == "1", callback=lambda s, m: time.sleep(pause))
"""


def _child(cfg, workdir, resume: bool, pause: float) -> subprocess.Popen:
    args = [json.dumps(config_to_dict(cfg)), str(workdir), "1" if resume else "0", str(pause)]
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args])


def test_resume_after_sigkill_is_exact(tmp_path):
    steps = 300  # checkpoints between log rows: the running loss sums are resumed too
    cfg = tiny(f"train.steps={steps}", "train.ckpt_every=30", "train.log_every=20")
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _child(cfg, full, False, 0.0).wait(timeout=120) == 0
    # A slow run (10 ms pause per step): kill it once a mid-run checkpoint exists.
    proc = _child(cfg, killed, False, 0.01)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    step = load_checkpoint(killed)["step"]
    assert 0 < step < steps
    assert _child(cfg, killed, True, 0.0).wait(timeout=120) == 0
    _same_state(load_checkpoint(full), load_checkpoint(killed))
    cols = ("step", "train_loss", "test_loss", "lr")
    same = [[r[c] for c in cols] for r in _rows(full)]
    assert [[r[c] for c in cols] for r in _rows(killed)] == same


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    # lr = 1e30 without clipping: Adam's first update sets weights to about +-1e30, so the second
    # loss overflows float32; the checkpoint of step 1 (finite) must be the one kept.
    cfg = tiny("train.lr=1e30", "train.warmup=0", "train.grad_clip=null", "train.steps=5",
               "train.log_every=1", "train.ckpt_every=1")  # fmt: skip
    with pytest.raises(TrainingError, match="at step 2") as e:
        train(cfg, tmp_path)
    assert "step 1" in str(e.value)
    assert load_checkpoint(tmp_path)["step"] == 1


def test_resume_needs_a_checkpoint_and_cfg_none_needs_one(tmp_path):
    with pytest.raises(WorkdirError, match="nothing to resume"):
        train(tiny("train.steps=3"), tmp_path / "a", resume=True)
    assert not (tmp_path / "a").exists()
    assert train(tiny("train.steps=3"), tmp_path / "a")["step"] == 3
    out = train(None, tmp_path / "a", resume=True)  # finished: nothing left to do
    assert out["step"] == 3 and math.isfinite(out["test_loss"])
    with pytest.raises(ValueError, match="needs a Config"):
        train(None, tmp_path / "b")
    with pytest.raises(ValueError, match="exclude each other"):
        train(None, tmp_path / "a", resume=True, overwrite=True)


@pytest.mark.slow
def test_quality_on_gaussian_mixture(tmp_path):
    """About a minute of training on ``mixture_2d`` (exact density p), then two gaps to the entropy.

    Stated margins (nats): the EMA model's probability-flow samples have E_q[log p] within 0.35 of
    -H(p), and the ODE likelihood of 500 held-out points within 0.15 of the true log-density of
    the same points (paired; the estimate of KL(p || q) must also not be below 0 beyond noise).
    Both margins are quality targets: this run measured gaps of about 0.21 and 0.03 (3000 steps),
    a model after 100 steps misses both by far. Each bound is widened by 3 standard errors of its
    Monte Carlo estimate (n = 2000 samples, 500 points; the entropy itself from 2e5 exact draws).
    """
    from scoresde.core.likelihood import log_likelihood

    cfg = apply_overrides(
        load_config("toy_mixture_vp"),
        ["train.steps=3000", "train.batch_size=256", "train.log_every=500",
         "train.eval_every=1000", "train.tensorboard=false"],
    )  # fmt: skip
    train(cfg, tmp_path)
    model, cfg, st = load_model(tmp_path)
    gm = toy_mixture("mixture_2d")
    lp_true = gm.log_prob(gm.sample(200_000, torch.Generator().manual_seed(9)))
    H, se_H = -lp_true.mean().item(), lp_true.std().item() / math.sqrt(lp_true.numel())

    x, _ = sample_model(model, cfg.sample, (2000, 2), torch.Generator().manual_seed(1))
    lp_samples = gm.log_prob(st.inverse(x).double())
    se = math.hypot(lp_samples.std().item() / math.sqrt(2000), se_H)
    assert abs(lp_samples.mean().item() + H) < 0.35 + 3 * se

    from scoresde.data import load_data

    _, test, _ = load_data(cfg.data)  # held out, data units
    test = test[:500]
    with torch.no_grad():
        logp, _, _ = log_likelihood(model.sde, model, st.forward(test), "exact", eps=1e-5)
    logp = logp.double() + st.log_det().double()  # log p_x = log p_y + log|dy/dx|
    gap = gm.log_prob(test.double()) - logp  # per point; the mean estimates KL(p || q)
    se_gap = gap.std().item() / math.sqrt(gap.numel())
    assert -3 * se_gap < gap.mean().item() < 0.15 + 3 * se_gap
    nll_se = math.hypot(logp.std().item() / math.sqrt(500), se_H)
    assert abs(-logp.mean().item() - H) < 0.15 + 3 * nll_se + 3 * se_gap
