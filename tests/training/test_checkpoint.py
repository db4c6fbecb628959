"""Checkpoint files (atomic writes, safe loading, clear errors), load_model, and the EMA rule."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.data import Standardizer
from scoresde.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from scoresde.training.config import Config, build_score_model, config_to_dict, with_data_shape
from scoresde.training.ema import EMA

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _model_state():
    cfg = with_data_shape(Config(), (2,))
    cfg.model.params.update(hidden=16, depth=2)
    torch.manual_seed(0)
    model = build_score_model(cfg)
    ema = EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    st = Standardizer(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0]))
    state = {
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "step": 3,
        "optimizer": None,
        "rng": {"torch": torch.get_rng_state()},
        "standardizer": st.state_dict(),
    }
    return model, ema, st, state


def test_round_trip_and_no_temp_files(tmp_path):
    model, ema, _, state = _model_state()
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
    back = load_checkpoint(tmp_path)  # a workdir or the file itself
    assert back["format"] == "scoresde" and back["version"] == 1 and back["step"] == 3
    assert all(torch.equal(back["model"][k], v) for k, v in model.state_dict().items())
    assert back["config"] == state["config"]


def test_failed_write_keeps_old_checkpoint(tmp_path):
    _, _, _, state = _model_state()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        save_checkpoint(path, {**state, "bad": lambda: 0})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.pt"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bad_files_raise_one_clear_error(tmp_path):
    _, _, _, state = _model_state()
    good = tmp_path / "good.pt"
    save_checkpoint(good, state)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    torch.save({**state, "format": "scoresde", "version": 99}, tmp_path / "future.pt")
    marker = tmp_path / "pwned"
    torch.save({"format": "scoresde", "x": _Evil(str(marker))}, tmp_path / "evil.pt")
    cases = {
        "missing.pt": "no checkpoint",
        "trunc.pt": "truncated, corrupt",
        "junk.pt": "truncated, corrupt",
        "foreign.pt": "not a scoresde checkpoint",
        "future.pt": "version 99",
        "evil.pt": "other than tensors",
    }
    for name, words in cases.items():
        with pytest.raises(CheckpointError, match=words):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()  # weights_only never ran the pickled code


def test_load_model_ema_and_standardizer(tmp_path):
    model, ema, st, state = _model_state()
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    m_ema, cfg, st2 = load_model(tmp_path)
    m_raw, _, _ = load_model(tmp_path, ema=False)
    assert isinstance(cfg, Config) and cfg.model.params["dim"] == 2
    assert torch.equal(st2.mean, st.mean) and torch.equal(st2.std, st.std)
    for name, p in m_raw.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name])
        assert torch.equal(dict(m_ema.named_parameters())[name], ema.params[name])
    assert not torch.equal(ema.params["net.out.weight"], model.net.out.weight)


def test_load_model_with_foreign_data_section(tmp_path):
    # Converted official checkpoints carry only sde/model/data, with image data keys.
    _, _, _, state = _model_state()
    cfg = state["config"]
    data = {"shape": [2], "scale": 2.0, "shift": -1.0, "centered": True}
    small = {"config": {"sde": cfg["sde"], "model": cfg["model"], "data": data},
             "model": state["model"], "ema": None}  # fmt: skip
    save_checkpoint(tmp_path / "checkpoint.pt", small)
    model, cfg2, st = load_model(tmp_path)
    assert isinstance(cfg2, Config) and st is None
    d = dataclasses.asdict(cfg2.data)
    assert {k: d[k] for k in data} == data
    x = torch.randn(3, 2)
    assert model(x, torch.rand(3)).shape == x.shape
    small["model"] = {k: v[:1] for k, v in state["model"].items()}
    save_checkpoint(tmp_path / "checkpoint.pt", small)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "data, extra, want",
    [
        # keys DataConfig never had are dropped; shape, scale, shift, centered kept
        ({"shape": [2], "scale": 2.0, "shift": -1.0, "centered": True, "dataset": "CIFAR10",
          "random_flip": True}, {}, {"shape": [2], "scale": 2.0, "shift": -1.0}),
        # the official image keys become the shape
        ({"image_size": 4, "num_channels": 1, "scale": 1.0, "shift": 0.0}, {},
         {"shape": [1, 4, 4], "scale": 1.0, "shift": 0.0}),
        # a section that no longer validates is dropped; the data the model needs stays
        ({"name": "spiral", "shape": [2], "scale": 2.0, "shift": -1.0}, {"sample": {"n": 0}},
         {"shape": [2], "scale": 2.0, "shift": -1.0}),
    ],
    ids=["foreign keys", "official keys", "invalid values"],
)  # fmt: skip
def test_load_model_always_returns_a_config(tmp_path, data, extra, want):
    """Checkpoints written before this library had a key still give a Config, never a dict."""
    _, _, _, state = _model_state()
    cfg = state["config"]
    config = {"sde": cfg["sde"], "model": cfg["model"], "data": data, "extra": 1, **extra}
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "config": config, "standardizer": None})
    model, cfg2, st = load_model(tmp_path)
    assert isinstance(cfg2, Config) and st is None
    assert {k: getattr(cfg2.data, k) for k in want} == want
    assert cfg2.model.params == cfg["model"]["params"]


def test_checkpoint_written_before_the_layered_package_loads():
    """``tests/fixtures/toy_checkpoint_v1.pt`` (an MLP trained on mixture_2d, written by the flat
    package) loads through ``scoresde.load_model`` and gives its recorded scores and
    standardizer (``toy_checkpoint_v1.json``)."""
    ref = json.loads((FIXTURES / "toy_checkpoint_v1.json").read_text())
    model, cfg, st = sd.load_model(FIXTURES / "toy_checkpoint_v1.pt")
    assert isinstance(cfg, Config) and cfg.data.name == "mixture_2d" and cfg.data.shape == [2]
    assert cfg.model.name == "mlp" and cfg.sde.name == "vpsde"
    x, t = torch.tensor(ref["x"]), torch.tensor(ref["t"])
    with torch.no_grad():
        score = model.score_fn(x, t)
    torch.testing.assert_close(score, torch.tensor(ref["score"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(st.mean, torch.tensor(ref["std_mean"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(st.std, torch.tensor(ref["std_std"]), rtol=0, atol=1e-6)


def test_ema_follows_the_warmup_rule():
    # Scalar parameter fed the values v_n: s_n = d_n s_{n-1} + (1 - d_n) v_n,
    # d_n = min(rate, (1 + n) / (10 + n)), recomputed here in float64.
    lin = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(0.5)
    ema, s = EMA(lin, 0.95), 0.5
    for n in range(1, 200):
        v = float(n % 7) - 3.0
        with torch.no_grad():
            lin.weight.fill_(v)
        d = min(0.95, (1 + n) / (10 + n))
        assert ema.decay() == d
        ema.update(lin)
        s = d * s + (1 - d) * v
        assert abs(ema.params["weight"].item() - s) < 1e-12
    other = nn.Linear(1, 1, bias=False).double()
    ema2 = EMA(other, 0.5)
    ema2.load_state_dict(ema.state_dict())
    assert ema2.num_updates == 199 and ema2.rate == 0.95
    ema2.copy_to(other)
    assert other.weight.item() == ema.params["weight"].item()
    with pytest.raises(ValueError, match="rate"):
        EMA(lin, 1.0)
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(2, 1), 0.9).load_state_dict(ema.state_dict())


def test_random_bytes_always_give_a_checkpoint_error(tmp_path):
    """Junk makes torch's unpickler fail in many ways (EOFError, IndexError, ...): one error."""
    import random

    rng = random.Random(0)
    path = tmp_path / "junk.pt"
    for _ in range(300):
        path.write_bytes(rng.randbytes(rng.choice((1, 7, 64, 4096))))
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(path)
