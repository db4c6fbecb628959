"""``evaluate``: one evaluation for the command line, the loop and the benchmarks.

The FID of the result is checked against the closed form computed here with numpy and scipy
(``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``), on features taken here from the same
network, so the test checks which images were compared (N, train against test or samples) and
the formula, not only that a number came out.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from scoresde.core.likelihood import elbo
from scoresde.data import images_to_model, load_data
from scoresde.nets.features import FeatureNet
from scoresde.training.config import build_score_model, config_from_dict, with_data_shape
from scoresde.training.evaluate import (
    FLOOR_NOTE,
    dataset_nll,
    evaluate,
    samples_to_images,
    steps_for_nfe,
)
from scoresde.training.features import image_features
from scoresde.training.loop import train

N = 24  # samples for FID, and as many test images for its floor
FAST = {"rtol": 1e-3, "atol": 1e-3, "elbo_samples": 4}


def _digits_cfg(**train_kw):
    net = {"num_channels": 1, "channels": [4, 8, 8, 8], "embed_dim": 8}
    net |= {"embedding": "positional", "padded": True}
    tr = {"steps": 4, "batch_size": 16, "warmup": 2, "log_every": 2, "eval_every": 2}
    tr |= {"ckpt_every": 0, "tensorboard": False, **train_kw}
    return config_from_dict(
        {
            "sde": {"name": "vpsde"},
            "model": {"name": "unet_tutorial", "parameterization": "noise", "params": net},
            "data": {"name": "digits", "n_train": 120, "n_test": 30, "shape": [1, 8, 8]},
            "train": tr,
            "sample": {"sampler": "heun", "steps": 3, "n": 8},
        }
    )


@pytest.fixture(scope="module")
def setting():
    """An untrained tiny digits model (evaluate needs no training), its data, a feature net."""
    cfg = _digits_cfg()
    torch.manual_seed(0)
    model = build_score_model(cfg).eval()
    x_train, x_test, _ = load_data(cfg.data)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = FeatureNet(channels=1, size=8, classes=10, width=4, features=16).eval()
    return model, cfg, x_train, x_test, net


def _run(setting, **kw) -> dict:
    model, cfg, x_train, x_test, net = setting
    kw = {"n": N, "n_test": 6, "sampler": "heun", "steps": 3, "features": net, **FAST, **kw}
    return evaluate(model, cfg, x_test, x_train=x_train, **kw)


@pytest.fixture(scope="module")
def result(setting) -> dict:
    return _run(setting, return_samples=True)


def _fid_closed_form(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance of two Gaussians fitted to feature sets (numpy / scipy)."""
    a, b = a.numpy(), b.numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))


def test_every_part_records_its_n_seed_and_time(result):
    assert result["metrics"] == ["bpd", "elbo", "fid"] and result["seed"] == 0
    for part in ("bpd", "elbo"):
        p = result[part]
        assert p["n"] == 6 and p["seed"] == 0 and p["seconds"] > 0 and p["nfe"] > 0
        assert {"bpd", "bpd_se", "bpd_median", "nll", "se", "median"} <= set(p)
    assert result["bpd"]["method"] == "ode" and result["elbo"]["method"] == "elbo"
    f = result["fid"]
    assert f["n"] == N and f["seed"] == 0 and f["floor"]["n"] == N and f["floor"]["seed"] == 0
    assert {"fid", "kid", "kid_se", "precision", "recall"} <= set(f) & set(f["floor"])
    assert set(f["seconds"]) == {"sampling", "features", "metrics", "total"}
    assert f["sampler"] == "heun" and f["options"] == {"steps": 3} and f["nfe"] > 0
    assert FLOOR_NOTE in result["notes"] and f["note"] == FLOOR_NOTE
    json.dumps({k: v for k, v in result.items() if k != "samples"})  # JSON-ready


class _Watched(torch.nn.Module):
    """A score model that records whether autograd was on at each call."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.sde, self.grad_on = model, model.sde, []

    def score_fn(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.grad_on.append(torch.is_grad_enabled())
        return self.model.score_fn(y, t)


def test_elbo_part_is_sd_elbo_of_the_dequantized_images_and_keeps_no_graph(setting):
    # (The ELBO bounds the reverse SDE's NLL, not the ODE's: no order between the two parts is
    # asserted; tests/core/test_elbo.py has a score for which the ELBO lies above the ODE.)
    model, cfg, _, x_test, _ = setting
    watched = _Watched(model)
    nll = dataset_nll(watched, x_test[:6], cfg.data, bound="elbo", elbo_samples=3, seed=5)
    assert watched.grad_on == [False] * 3  # no graph of 3 draws kept (23.8 GB at 1000 draws)
    y = images_to_model(x_test[:6], cfg.data, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, nfe = elbo(
            model.sde, model.score_fn, y, 3, generator=torch.Generator().manual_seed(5)
        )
    assert nll.bound == "elbo" and nll.nfe == nfe == 3
    assert torch.allclose(nll.nll, -expected.double(), rtol=1e-6, atol=0)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # dead ReLU features: rank-deficient
def test_floor_is_the_fid_of_n_test_images_against_the_training_set(setting, result):
    _, _, x_train, x_test, net = setting
    ref = image_features(net, x_train.float() / 255)
    real = image_features(net, x_test[:N].float() / 255)
    floor = result["fid"]["floor"]["fid"]
    assert floor >= 0
    assert floor == pytest.approx(_fid_closed_form(ref, real), rel=1e-6, abs=1e-9)
    assert result["fid"]["n_train"] == len(x_train)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_sample_fid_is_that_of_the_returned_samples(setting, result):
    _, _, x_train, _, net = setting
    x = result["samples"]
    assert x.shape == (N, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x * 255, (x * 255).round())  # 8-bit values, as real images take
    ref = image_features(net, x_train.float() / 255)
    fid = result["fid"]["fid"]
    assert math.isfinite(fid)
    assert fid == pytest.approx(_fid_closed_form(ref, image_features(net, x)), rel=1e-6)
    assert fid > result["fid"]["floor"]["fid"]  # an untrained model is far from the data


def _numbers(r: dict) -> list:
    keys = ("bpd", "bpd_se", "fid", "kid", "kid_se", "precision", "recall")
    return [p.get(k) for p in (r["bpd"], r["elbo"], r["fid"], r["fid"]["floor"]) for k in keys]


def test_same_seed_same_numbers_other_seed_other_samples(setting, result):
    again = _run(setting)
    assert _numbers(again) == _numbers(result)
    other = _run(setting, seed=1, metrics=("fid",))
    assert other["fid"]["fid"] != result["fid"]["fid"] and other["fid"]["seed"] == 1


def test_samples_to_images_is_the_pixel_of_the_cell():
    cfg = _digits_cfg().data
    k = torch.arange(256, dtype=torch.float32)
    for scale, shift in ((1.0, 0.0), (2.0, -1.0)):
        cfg.scale, cfg.shift = scale, shift
        x = shift + scale * (k + 0.5) / 256  # the middle of dequantization cell k
        assert torch.equal(samples_to_images(x, cfg) * 255, k)
        outside = torch.tensor([shift - scale, shift + 2 * scale])
        assert samples_to_images(outside, cfg).tolist() == [0.0, 1.0]


def test_steps_for_nfe_matches_the_evaluations_per_step(setting):
    sde, shape = setting[0].sde, (1, 8, 8)
    assert steps_for_nfe(sde, "ode", 37, shape, {"method": "euler"}) == 37  # one per step
    assert steps_for_nfe(sde, "pc", 100, shape) == 50  # predictor + one corrector step
    assert steps_for_nfe(sde, "pc", 101, shape, {"corrector": "none"}) == 101
    with pytest.raises(ValueError, match="adaptive"):
        steps_for_nfe(sde, "ode", 200, shape)  # dopri5: its steps do not set its nfe


def test_bad_inputs_are_one_line_value_errors(setting):
    with pytest.raises(ValueError, match="valid: bpd, elbo, fid"):
        _run(setting, metrics=("bpd", "fd"))
    with pytest.raises(ValueError, match="valid: pc, ode"):
        _run(setting, sampler="euler", metrics=("fid",))
    with pytest.raises(ValueError, match="n <= 30"):
        _run(setting, n=31, metrics=("fid",))


def test_vector_data_get_the_nll_and_a_note():
    cfg = config_from_dict(
        {
            "sde": {"name": "vpsde"},
            "model": {"name": "mlp", "params": {"hidden": 8}},
            "data": {"name": "swissroll", "n_train": 50, "n_test": 10},
        }
    )
    _, x_test, standardizer = load_data(cfg.data)
    cfg = with_data_shape(cfg, (2,))
    model = build_score_model(cfg).eval()
    r = evaluate(model, cfg, x_test, standardizer=standardizer, **FAST)
    assert "fid" not in r and any("need images" in note for note in r["notes"])
    assert r["bpd"]["n"] == 10 and "bpd" not in r["bpd"] and math.isfinite(r["bpd"]["nll"])
    assert r["elbo"]["n"] == 10 and math.isfinite(r["elbo"]["nll"]) and r["elbo"]["se"] > 0


def test_the_loop_evaluates_train_eval_metrics(tmp_path):
    cfg = _digits_cfg(eval_metrics=["elbo"], bpd_every=2, bpd_n=4, bpd_method="elbo")
    train(cfg, tmp_path)
    for step in (2, 4):
        r = json.loads((tmp_path / f"eval_{step}.json").read_text())
        assert r["step"] == step and r["metrics"] == ["elbo"] and r["elbo"]["n"] == 4
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].endswith("bpd_method") and rows[-1].endswith(",elbo")


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_precomputed_reference_features_replace_those_of_x_train(setting, result):
    _, _, x_train, x_test, net = setting
    own = _run(setting, metrics=("fid",), reference=image_features(net, x_train.float() / 255))
    keys = ("fid", "kid", "kid_se", "precision", "recall")
    for part in ("fid", "floor"):  # the same numbers as with the features computed inside
        got, want = (r["fid"] if part == "fid" else r["fid"]["floor"] for r in (own, result))
        assert [got[k] for k in keys] == [want[k] for k in keys]
    mirrored = image_features(net, x_train.flip(-1).float() / 255)  # another reference set
    other = _run(setting, metrics=("fid",), reference=mirrored)["fid"]
    real = image_features(net, x_test[:N].float() / 255)
    assert other["floor"]["fid"] == pytest.approx(_fid_closed_form(mirrored, real), rel=1e-6)
    assert other["floor"]["fid"] != pytest.approx(result["fid"]["floor"]["fid"], rel=1e-3)
    with pytest.raises(ValueError, match="reference must be the features"):
        _run(setting, metrics=("fid",), reference=mirrored[:-1])
