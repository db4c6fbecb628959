"""The learning-rate schedule: warm-up, then constant, cosine or linear decay to ``train.lr_min``.

Closed forms at the end of the warm-up, along the decay and at the last step; ``constant`` is the
old warm-up-then-constant rule bit for bit; the config checks its names and ranges; the loop logs
the schedule's values and a paused, resumed cosine run ends as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from scoresde.training.checkpoint import load_checkpoint
from scoresde.training.config import (
    LR_SCHEDULES,
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    resume_changes,
)
from scoresde.training.loop import LR_DECAYS, lr_at, train

LR, LR_MIN, WARMUP, STEPS = 2e-3, 1e-4, 10, 110  # 100 post-warm-up updates: p = k / 100
# The two sides of each closed form below are the same few float64 operations in another order;
# each rounds by at most half an ulp, so they agree to a few ulps of the value: 4 ulps.
ULPS = 4 * 2.0**-52


def _old_lr_at(step: int, lr: float, warmup: int) -> float:
    """The rule before schedules existed: linear warm-up, then constant."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


def _lr(schedule: str, step: int) -> float:
    return lr_at(step, LR, WARMUP, schedule, LR_MIN, STEPS)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=ULPS, abs_tol=0.0)


# ---- closed forms ------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_warmup_is_linear_and_ends_at_lr(schedule):
    for step in range(WARMUP):
        assert _close(_lr(schedule, step), LR * (step + 1) / WARMUP), step
    assert _lr(schedule, WARMUP - 1) == LR  # the warm-up's last update: lr itself


def test_cosine_closed_form_along_the_decay():
    # update k after the warm-up (step = WARMUP - 1 + k) has p = k / 100
    cosine = lambda p: LR_MIN + (LR - LR_MIN) * (1 + math.cos(math.pi * p)) / 2  # noqa: E731
    for k in (1, 25, 50, 75, 99):
        assert _close(_lr("cosine", WARMUP - 1 + k), cosine(k / 100)), k
    assert _close(_lr("cosine", WARMUP - 1 + 50), (LR + LR_MIN) / 2)  # mid-way: the mean
    quarter = LR_MIN + (LR - LR_MIN) * (2 + math.sqrt(2)) / 4  # (1 + cos(pi / 4)) / 2
    assert _close(_lr("cosine", WARMUP - 1 + 25), quarter)
    # the last step: cos(pi) is -1.0 exactly in float64, so lr_min exactly
    assert _lr("cosine", STEPS - 1) == LR_MIN


def test_linear_closed_form_along_the_decay():
    for k in (1, 25, 50, 75, 99):
        expected = LR_MIN + (LR - LR_MIN) * (1 - k / 100)
        assert _close(_lr("linear", WARMUP - 1 + k), expected), k
    assert _close(_lr("linear", WARMUP - 1 + 50), (LR + LR_MIN) / 2)
    assert _lr("linear", STEPS - 1) == LR_MIN  # (lr - lr_min) * 0: lr_min exactly


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_is_monotone_and_stays_in_range(schedule):
    lrs = [_lr(schedule, s) for s in range(STEPS + 20)]  # and 20 updates past the end
    warm, decay = lrs[:WARMUP], lrs[WARMUP - 1 : STEPS]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly: every update lowers it
    assert all(LR_MIN <= v <= LR for v in lrs)
    assert lrs[STEPS:] == [LR_MIN] * 20  # past the last step it stays at lr_min


def test_lr_min_zero_and_no_warmup():
    assert lr_at(0, 1.0, 0, "linear", 0.0, 4) == 0.75  # p = 1/4 at the first update
    assert lr_at(3, 1.0, 0, "linear", 0.0, 4) == 0.0
    assert lr_at(1, 1.0, 0, "cosine", 0.0, 4) == 0.5  # p = 1/2: (1 + cos(pi/2)) / 2 rounds to 1/2
    # steps <= warmup: the run ends inside the warm-up, which is unchanged
    assert [lr_at(s, 1.0, 8, "cosine", 0.0, 4) for s in range(4)] == [0.125, 0.25, 0.375, 0.5]


def test_constant_is_the_old_rule_bit_for_bit():
    for lr in (2e-4, 1e-3, 3e-3, 0.1, 1.0):
        for warmup in (0, 1, 7, 500, 5000):
            for step in (0, 1, 5, 6, 7, 499, 500, 501, 4999, 10**6):
                old = _old_lr_at(step, lr, warmup)
                assert lr_at(step, lr, warmup) == old
                assert lr_at(step, lr, warmup, "constant", 0.5 * lr, 1000) == old
                assert lr_at(step, lr, warmup, "constant", 0.0, None) == old


# ---- errors ------------------------------------------------------------------------------------
def test_lr_at_errors():
    with pytest.raises(ValueError, match="unknown lr schedule 'cosin'.*cosine.*valid: constant"):
        lr_at(0, 1e-3, 0, "cosin")
    with pytest.raises(ValueError, match="needs steps"):
        lr_at(10, 1e-3, 5, "cosine")
    assert lr_at(3, 1e-3, 5, "cosine") == 1e-3 * 4 / 5  # the warm-up needs no steps


def test_config_fields_defaults_and_names():
    tr = Config().train
    assert (tr.lr_schedule, tr.lr_min) == ("constant", 0.0)
    assert set(LR_DECAYS) == set(LR_SCHEDULES)  # the config's names are the loop's table
    cfg = apply_overrides(load_config("toy_swissroll_vp"), ["train.lr_schedule=cosine",
                                                           "train.lr_min=1e-5"])  # fmt: skip
    assert (cfg.train.lr_schedule, cfg.train.lr_min) == ("cosine", 1e-5)
    # a checkpoint's config written before the fields existed: the old behaviour
    d = config_to_dict(Config())
    del d["train"]["lr_schedule"], d["train"]["lr_min"]
    assert config_from_dict(d).train.lr_schedule == "constant"


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lr_schedule=cosin", ["train.lr_schedule", "'cosin'", "constant, cosine, linear"]),
        ("train.lr_schedule=step", ["train.lr_schedule", "valid: constant, cosine, linear"]),
        ("train.lr_min=-1e-6", ["train.lr_min", ">= 0 and <= train.lr"]),
        ("train.lr_min=1", ["train.lr_min", "<= train.lr = 0.0002"]),
        ("train.lr_min=.nan", ["train.lr_min", "nan"]),
    ],
)
def test_config_errors(override, words):
    base = apply_overrides(Config(), ["train.lr=2e-4"])
    with pytest.raises(ConfigError) as e:
        apply_overrides(base, [override])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_resume_refuses_another_schedule():
    saved = apply_overrides(Config(), ["train.lr_schedule=cosine"])
    for change in ("train.lr_schedule=linear", "train.lr_min=1e-5"):
        with pytest.raises(ConfigError, match=change.split("=")[0]):
            resume_changes(saved, apply_overrides(saved, [change]))


# ---- in the loop ---------------------------------------------------------------------------------
TINY = [
    "model.params.hidden=16", "model.params.depth=2", "model.params.embed_dim=8",
    "data.n_train=256", "data.n_test=64", "train.batch_size=32", "train.warmup=5",
    "train.lr=1e-3", "train.tensorboard=false", "train.steps=40", "train.ckpt_every=15",
    "train.log_every=1", "train.eval_every=0", "train.lr_schedule=cosine", "train.lr_min=1e-4",
]  # fmt: skip


def _rows(workdir) -> list[dict]:
    with open(workdir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_loop_logs_the_schedule_and_resumes_exactly(tmp_path):
    cfg = apply_overrides(load_config("toy_swissroll_vp"), TINY)
    train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "part", max_steps=25)  # a pause mid-decay, then resume
    train(cfg, tmp_path / "part", resume=True)
    # The row of step s holds the lr of update s - 1 (0-based): the schedule's own values.
    rows = _rows(tmp_path / "full")
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    for r in rows:
        assert float(r["lr"]) == lr_at(int(r["step"]) - 1, 1e-3, 5, "cosine", 1e-4, 40)
    assert float(rows[-1]["lr"]) == 1e-4 and float(rows[4]["lr"]) == 1e-3
    full, part = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    assert full["step"] == part["step"] == 40
    for k, v in full["model"].items():
        assert torch.equal(v, part["model"][k]), k
    for k, v in full["ema"]["params"].items():
        assert torch.equal(v, part["ema"]["params"][k]), k
    assert [r["lr"] for r in _rows(tmp_path / "part")] == [r["lr"] for r in rows]
