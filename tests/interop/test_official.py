"""Official score_sde_pytorch checkpoints: exact network outputs, scores and likelihoods against the
reference data of ``shared/testdata/score_sde_pytorch`` (its README says how each file was made),
strict key mapping, clear errors for broken files, conversion to our format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TESTDATA, require

import scoresde as sd
from scoresde.interop.official import (
    CheckpointError,
    convert_official,
    load_official,
    model_summary,
    official_net,
)
from scoresde.nets import NCSNpp
from scoresde.training.checkpoint import model_from_checkpoint
from scoresde.training.config import Config, config_from_dict, config_to_dict

SMALL = [
    "ve_ncsnpp_continuous_small",
    "vp_ddpmpp_continuous_small",
    "subvp_ddpmpp_continuous_small",
    "vp_ddpm_small",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions run many times slower with 2 threads than with 1 on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def files(name: str):
    return require(TESTDATA / f"{name}.pth"), require(TESTDATA / f"{name}_config.json")


def io(name: str) -> dict[str, torch.Tensor]:
    data = np.load(require(TESTDATA / f"{name}_io.npz"))
    return {k: torch.from_numpy(data[k]) for k in data.files}


def assert_per_sample_close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> float:
    """The README's CPU tier: |ours - ref| <= rtol |ref| + 1e-4 max|ref|, per sample.

    The official float32 code itself is within 0.19 of this tier of its float64 run; a bias-only
    fake network misses it by ~950x and the other weight set (model vs EMA) by >= 487x. Returns the
    worst ratio error / tolerance.
    """
    worst = 0.0
    for o, r in zip(ours, ref):
        tol = rtol * r.abs() + 1e-4 * r.abs().max()
        worst = max(worst, float(((o - r).abs() / tol).max()))
    assert worst <= 1.0, f"worst error / tolerance = {worst:.3g}"
    return worst


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("ema", [False, True])
def test_official_net_out_and_score(name, ema):
    ckpt, config = files(name)
    d, suffix = io(name), "_ema" if ema else ""
    model = load_official(ckpt, config, ema=ema)
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model.noise_label(d["t"]), d["labels"], rtol=1e-6, atol=0)
        net_out = model.net(d["x"], d["labels"])
        score = model.score_fn(d["x"], d["t"])
    assert_per_sample_close(net_out, d["net_out" + suffix])
    assert_per_sample_close(score, d["score" + suffix])
    # the test tells the two weight sets apart
    other = "" if ema else "_ema"
    with pytest.raises(AssertionError):
        assert_per_sample_close(net_out, d["net_out" + other])


@pytest.mark.parametrize("ema", [False, True])
def test_official_ddpm_with_continuous_labels(ema):
    """The same DDPM checkpoint scored as a continuous VP model (official ``continuous=True``)."""
    ckpt, config = files("vp_ddpm_small")
    d, suffix = io("vp_ddpm_small"), "_ema" if ema else ""
    model = load_official(ckpt, config, ema=ema, continuous=True)
    assert (model.label, model.parameterization) == ("timestep", "noise")
    with torch.no_grad():
        torch.testing.assert_close(model.noise_label(d["t"]), d["labels_continuous_true"])
        net_out = model.net(d["x"], d["labels_continuous_true"])
        score = model.score_fn(d["x"], d["t"])
    assert_per_sample_close(net_out, d["net_out_continuous_true" + suffix])
    assert_per_sample_close(score, d["score_continuous_true" + suffix])


@pytest.mark.parametrize("name", SMALL)
def test_keys_and_ema_order_match_the_official_lists(name):
    """Same keys, shapes and order as the official state dict; trainable parameters in the order
    of the official EMA list (state-dict order without buffers and the frozen Fourier W)."""
    _, config = files(name)
    keys = json.loads(require(TESTDATA / f"{name}_keys.json").read_text())
    net = official_net(json.loads(config.read_text()))
    ours = [[f"module.{k}", list(v.shape)] for k, v in net.state_dict().items()]
    assert ours == keys
    frozen = {"module.sigmas", "module.all_modules.0.W"}
    trainable = [f"module.{k}" for k, p in net.named_parameters() if p.requires_grad]
    assert trainable == [k for k, _ in keys if k not in frozen]


def test_full_size_ncsnpp_keys_map_one_to_one():
    config = json.loads(require(TESTDATA / "ve_ncsnpp_continuous_full_config.json").read_text())
    keys = json.loads(require(TESTDATA / "ve_ncsnpp_continuous_full_keys.json").read_text())
    with torch.device("meta"):  # 63M parameters: shapes only, no memory
        net = official_net(config)
    assert isinstance(net, NCSNpp)
    ours = [[f"module.{k}", list(v.shape)] for k, v in net.state_dict().items()]
    assert len(ours) == len(keys) == 572
    assert ours == keys
    assert sum(v.numel() for v in net.state_dict().values()) == 62_759_915


# ---- the likelihood of the official code (README section 4) ------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("centered", [False, True])
def test_official_likelihood_with_scipy_rk45(centered):
    """bpd, z and nfe of the official ``likelihood_fn`` (RK45 at rtol = atol = 1e-5, eps 1e-5,
    the stored Rademacher probe) on the VP DDPM++ 'model' weights (README section 4).

    Tolerances. [0, 1] data: the README measured that a drift change of ~1e-7 (relative; 1 vs 4
    threads) moves z by 2.6e-5 and bpd by 3.8e-6 at the same nfe. Our network differs from the
    official float32 output by up to 1e-6 of its max (equivalent ops in another order), 10x more,
    so z may move by ~3e-4 (measured 3.6e-4) and bpd by ~4e-5: z atol 1e-3, bpd atol 2e-4.
    Centered data: our float32 run equals our float64 run to 6e-5 in z, and both differ from the
    stored result by 2.9e-2 in z and 1.8e-3 in bpd at the same nfe. The cause is not identified
    (the official float32 std formula does not reproduce it). It is of the size of the solver's
    own error: ours and the stored run are equally far from an rtol = atol = 1e-6 solve (1.6e-2
    and 1.4e-2 in z), and changing only the probe, which leaves the z-ODE itself unchanged,
    moves z by up to 3.5e-2 at the same nfe through the step-size control. So the README's tier
    for a different but equivalent computation applies: z atol 5e-2, bpd atol 1e-2. Both tiers
    fail a bias-only fake (1.09 in z, 0.43 bpd) and the EMA weights (measured: 0.70 in z,
    0.11 bpd on centered data).
    """
    z_atol, bpd_atol = (5e-2, 1e-2) if centered else (1e-3, 2e-4)
    lik = pytest.importorskip("scoresde.core.likelihood")
    ref = np.load(require(TESTDATA / "likelihood_vp_ddpmpp.npz"))
    prefix = "centered_" if centered else ""
    x = torch.from_numpy(ref["centered_data" if centered else "data"])
    model = load_official(*files("vp_ddpmpp_continuous_small"), ema=False)
    with torch.no_grad():
        logp, z, nfe = lik.log_likelihood(
            model.sde,
            model.score_fn,
            x,
            divergence="rademacher",
            rtol=1e-5,
            atol=1e-5,
            eps=1e-5,
            method="scipy-RK45",
            noise=torch.from_numpy(ref["epsilon"]),
        )
    # model space y = scale * u + shift: [0, 1] data as is (scale 1), centered 2u - 1 (scale 2)
    bpd = lik.bits_per_dim(logp, x.shape, scale=2.0 if centered else 1.0)
    assert nfe == int(ref[prefix + "nfe"])
    torch.testing.assert_close(z, torch.from_numpy(ref[prefix + "z"]), rtol=0, atol=z_atol)
    torch.testing.assert_close(
        bpd.double(), torch.from_numpy(ref[prefix + "bpd"]).double(), rtol=0, atol=bpd_atol
    )


# ---- broken inputs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vp_ckpt() -> dict:
    ckpt, _ = files("vp_ddpmpp_continuous_small")
    return torch.load(ckpt, weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def vp_config() -> dict:
    return json.loads(files("vp_ddpmpp_continuous_small")[1].read_text())


def _save(tmp_path, ckpt: dict):
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    return path


def test_renamed_key_is_reported_missing_and_unexpected(tmp_path, vp_ckpt, vp_config):
    model = dict(vp_ckpt["model"])
    model["module.all_modules.3.Conv_9.weight"] = model.pop("module.all_modules.3.Conv_0.weight")
    path = _save(tmp_path, {**vp_ckpt, "model": model})
    with pytest.raises(
        CheckpointError,
        match=r"1 missing: all_modules\.3\.Conv_0\.weight.*"
        r"1 unexpected: all_modules\.3\.Conv_9\.weight",
    ):
        load_official(path, vp_config)


def test_reshaped_tensor_is_reported_with_both_shapes(tmp_path, vp_ckpt, vp_config):
    model = dict(vp_ckpt["model"])
    model["module.all_modules.6.NIN_0.W"] = model["module.all_modules.6.NIN_0.W"].t()[:16]
    path = _save(tmp_path, {**vp_ckpt, "model": model})
    with pytest.raises(
        CheckpointError, match=r"1 shape-mismatched: .*NIN_0\.W \(16, 32\) vs \(32, 32\)"
    ):
        load_official(path, vp_config)


def test_bad_ema_list_is_reported(tmp_path, vp_ckpt, vp_config):
    shadow = list(vp_ckpt["ema"]["shadow_params"])[:-1]
    path = _save(tmp_path, {**vp_ckpt, "ema": {**vp_ckpt["ema"], "shadow_params": shadow}})
    with pytest.raises(CheckpointError, match="211 shadow parameters .* 212 trainable"):
        load_official(path, vp_config)
    load_official(path, vp_config, ema=False)  # the raw weights are still fine


@pytest.mark.parametrize(
    "change,match",
    [
        ({"fir_type": "fancy"}, "unknown architecture flag.*model.fir_type"),
        ({"normalization": "InstanceNorm"}, "normalization.*not supported"),
        ({"name": "ncsnv2"}, "ncsnv2.*supported: ncsnpp, ddpm"),
        ({"progressive": "sideways"}, "progressive"),
    ],
)
def test_unknown_or_unsupported_config_flags(change, match, vp_config):
    config = {**vp_config, "model": {**vp_config["model"], **change}}
    ckpt, _ = files("vp_ddpmpp_continuous_small")
    with pytest.raises(CheckpointError, match=match):
        load_official(ckpt, config)


def test_unsupported_training_settings(vp_config):
    ckpt, _ = files("vp_ddpmpp_continuous_small")
    ve_discrete = {
        **vp_config,
        "training": {**vp_config["training"], "sde": "vesde", "continuous": False},
    }
    with pytest.raises(CheckpointError, match="SMLD index"):
        load_official(ckpt, ve_discrete)
    with pytest.raises(CheckpointError, match="valid: vesde, vpsde, subvpsde"):
        load_official(ckpt, {**vp_config, "training": {**vp_config["training"], "sde": "bridge"}})
    with pytest.raises(CheckpointError, match="section"):
        load_official(ckpt, {"model": vp_config["model"]})


def test_truncated_corrupt_and_foreign_files(tmp_path, vp_config):
    ckpt, config = files("vp_ddpmpp_continuous_small")
    raw = ckpt.read_bytes()
    cases = {
        "truncated.pth": raw[: len(raw) // 2],
        "zeros.pth": bytes(1000),
        "text.pth": config.read_bytes(),
    }
    for fname, content in cases.items():
        (tmp_path / fname).write_bytes(content)
        with pytest.raises(CheckpointError, match="truncated, corrupt or not a torch file"):
            load_official(tmp_path / fname, vp_config)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a score_sde_pytorch checkpoint"):
        load_official(tmp_path / "other.pth", vp_config)
    with pytest.raises(CheckpointError, match="no official checkpoint"):
        load_official(tmp_path / "absent.pth", vp_config)
    with pytest.raises(CheckpointError, match="cannot read the official config"):
        load_official(ckpt, tmp_path / "truncated.pth")
    assert issubclass(CheckpointError, ValueError)


def test_unconditional_official_checkpoint_drops_its_unused_dense_layers(
    tmp_path, vp_ckpt, vp_config
):
    """Official NCSN++ builds Dense_0 layers even when unconditional (and never uses them); the
    loader drops exactly those and still maps the EMA list by position."""
    config = {**vp_config, "model": {**vp_config["model"], "conditional": False}}
    # the unconditional official net has no embedding MLP (all_modules.0/1); renumber the rest
    model = {}
    for k, v in vp_ckpt["model"].items():
        if k.startswith(("module.all_modules.0.", "module.all_modules.1.")):
            continue
        parts = k.split(".")
        if parts[1] == "all_modules":
            parts[2] = str(int(parts[2]) - 2)
        model[".".join(parts)] = v
    order = [k for k in vp_ckpt["model"] if k != "module.sigmas"]
    shadow = [
        s
        for k, s in zip(order, vp_ckpt["ema"]["shadow_params"])
        if not k.startswith(("module.all_modules.0.", "module.all_modules.1."))
    ]
    path = _save(tmp_path, {**vp_ckpt, "model": model, "ema": {"shadow_params": shadow}})
    net = load_official(path, config).net
    assert any(".Dense_0." in k for k in model)
    assert not any(".Dense_0." in k for k in net.state_dict())
    own = dict(net.named_parameters())
    ema_by_name = dict(zip([k for k in model if k != "module.sigmas"], shadow))
    for name, p in own.items():
        assert torch.equal(p, ema_by_name[f"module.{name}"])


# ---- conversion ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ve_ncsnpp_continuous_small", "vp_ddpm_small"])
def test_convert_official_round_trip(tmp_path, name):
    ckpt, config = files(name)
    path = convert_official(ckpt, config, tmp_path / "run")
    assert path == tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True, map_location="cpu")  # no pickled objects
    assert state["format"] == "scoresde" and state["version"] == 1 and state["step"] == 10
    cfg = state["config"]
    official = json.loads(config.read_text())
    centered = official["data"]["centered"]
    assert {k: cfg["data"][k] for k in ("shape", "scale", "shift", "centered")} == {
        "shape": [3, 16, 16],
        "scale": 2.0 if centered else 1.0,
        "shift": -1.0 if centered else 0.0,
        "centered": centered,
    }
    assert config_to_dict(config_from_dict(cfg)) == cfg  # a whole, valid Config
    assert cfg["sde"]["name"] == official["training"]["sde"] and cfg["sde"]["N"] == 1000
    assert cfg["model"]["name"] == official["model"]["name"]
    d = io(name)
    for ema, suffix in [(True, "_ema"), (False, "")]:
        model = model_from_checkpoint(state, ema=ema)
        with torch.no_grad():
            assert_per_sample_close(model.score_fn(d["x"], d["t"]), d["score" + suffix])
    no_ema = torch.load(
        convert_official(ckpt, config, tmp_path / "raw", ema=False), weights_only=True
    )
    assert no_ema["ema"] is None


@pytest.mark.parametrize("name", ["ve_ncsnpp_continuous_small", "vp_ddpm_small"])
def test_load_model_of_a_converted_checkpoint_returns_a_config(tmp_path, name):
    """``scoresde.load_model`` gives a Config for a converted checkpoint: the official SDE and
    network, the image shape and the model space of ``data.centered``, no standardizer."""
    ckpt, config = files(name)
    official = json.loads(config.read_text())
    centered = official["data"]["centered"]
    model, cfg, standardizer = sd.load_model(convert_official(ckpt, config, tmp_path))
    assert isinstance(cfg, Config) and standardizer is None
    assert (
        cfg.sde.name == official["training"]["sde"] and cfg.model.name == official["model"]["name"]
    )
    assert cfg.data.shape == [3, 16, 16] and cfg.data.centered == centered
    assert (cfg.data.scale, cfg.data.shift) == ((2.0, -1.0) if centered else (1.0, 0.0))
    assert (cfg.model.label, cfg.model.parameterization) == (model.label, model.parameterization)
    d = io(name)
    with torch.no_grad():
        assert_per_sample_close(model.score_fn(d["x"], d["t"]), d["score_ema"])


def test_model_summary_names_count_sde_and_adapters():
    model = load_official(*files("ve_ncsnpp_continuous_small"))
    text = model_summary(model)
    n = sum(p.numel() for p in model.net.parameters())
    assert n == 324_827 - 1000  # the README's count includes the 1000 sigmas of the buffer
    for part in (
        f"{n:,} parameters",
        "ncsnpp",
        "VESDE",
        "parameterization: score",
        "label: sigma",
        "all_modules.25",
        "GaussianFourierProjection",
    ):
        assert part in text
