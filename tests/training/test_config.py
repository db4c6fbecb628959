"""Presets, dotted overrides, dict round trips, builders, and one clear ConfigError per mistake."""

from __future__ import annotations

import pytest
import torch

import scoresde as sd
from scoresde.training.config import (
    Config,
    ConfigError,
    apply_overrides,
    build_score_model,
    build_sde,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    list_presets,
    load_config,
    with_data_shape,
)

REQUIRED = {"toy_swissroll_vp", "toy_mixture_ve", "toy_1d_mixture_subvp", "toy_mixture_vp"}


def test_presets_load_and_build():
    assert REQUIRED <= set(list_presets())
    for name in list_presets():
        cfg = load_config(name)
        shape = cfg.data.shape or [1 if cfg.data.name == "mixture_1d" else 2]
        model = build_score_model(with_data_shape(cfg, tuple(shape)))
        x = torch.randn(4, *shape)
        assert model(x, torch.rand(4)).shape == x.shape


def test_yaml_path_and_round_trip(tmp_path):
    cfg = apply_overrides(load_config("toy_mixture_ve"), ["train.steps=7", "model.params.depth=2"])
    path = tmp_path / "run.yaml"
    path.write_text(dump_yaml(cfg))
    again = load_config(str(path))
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_sde_section_holds_constructor_args_only():
    d = config_to_dict(load_config("toy_mixture_ve"))
    assert d["sde"] == {"name": "vesde", "sigma_min": 0.01, "sigma_max": 10.0, "N": 1000}
    sde = build_sde(load_config("toy_mixture_ve").sde)
    assert isinstance(sde, sd.VESDE) and sde.sigma_max == 10.0
    assert isinstance(build_sde(load_config("toy_1d_mixture_subvp").sde), sd.SubVPSDE)


def test_missing_sections_take_defaults():
    # Converted official checkpoints carry only some sections.
    cfg = config_from_dict({"sde": {"name": "vesde", "sigma_max": 20.0}, "model": {"name": "mlp"}})
    assert cfg.sde.sigma_max == 20.0 and cfg.train == Config().train


def test_overrides_parse_and_convert():
    cfg = apply_overrides(
        Config(),
        ["train.lr=1e-3", "train.steps=2e3", "train.grad_clip=null", "sample.steps=100",
         "data.standardize=false", "sde.name=vesde", "model.params.hidden=32"],
    )  # fmt: skip
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 2000 and isinstance(cfg.train.steps, int)
    assert cfg.train.grad_clip is None and cfg.sample.steps == 100
    assert cfg.data.standardize is False and cfg.model.params == {"hidden": 32}
    assert isinstance(build_sde(cfg.sde), sd.VESDE)


@pytest.mark.parametrize(
    "override,words",
    [
        ("train.stepz=3", ["train.stepz", "steps", "batch_size"]),
        ("trian.steps=3", ["trian", "train, sample"]),
        ("train.steps", ["section.key=value"]),
        ("train.steps=abc", ["train.steps", "abc", "int"]),
        ("train.steps=2.5", ["train.steps", "2.5", "int"]),
        ("train.lr=-1", ["train.lr", "-1", "positive"]),
        ("data.standardize=3", ["data.standardize", "3", "bool"]),
        ("sde.name=vpsd", ["sde.name", "vpsd", "subvpsde, vesde, vpsde"]),
        ("train.weighting=elbo", ["train.weighting", "likelihood, score"]),
        ("model.parameterization=eps", ["model.parameterization", "noise", "score"]),
        ("model.label=time", ["model.label", "sigma", "timestep"]),
        ("model.name=resnet", ["model.name", "mlp"]),
        ("sample.sampler=ddim", ["sample.sampler", "dpm_solver", "ode", "pc"]),
        ("sample.predictor=heun", ["sample.predictor", "reverse_diffusion"]),
        ("data.name=spiral", ["data.name", "swissroll", "file"]),
        ("sde.beta_max=0.01", ["sde", "beta_max"]),
        ("train.device=gpu0", ["train.device", "gpu0"]),
        ("data.name=file", ["data.path"]),
    ],
)
def test_bad_overrides_name_key_value_and_choices(override, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(load_config("toy_swissroll_vp"), [override])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_unknown_preset_lists_presets(tmp_path):
    with pytest.raises(ConfigError, match="toy_swissroll_vp") as e:
        load_config("toy_swisroll")
    assert "unknown preset" in str(e.value)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: [1, 2}\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(bad))
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config(str(bad))


def test_model_dimension_from_data():
    cfg = load_config("toy_swissroll_vp")
    with pytest.raises(ConfigError, match="dim"):
        build_score_model(cfg)
    assert with_data_shape(cfg, (2,)).model.params["dim"] == 2
    with pytest.raises(ConfigError, match="3 entries"):
        with_data_shape(apply_overrides(cfg, ["model.params.dim=2"]), (3,))
    with pytest.raises(ConfigError, match="widht"):
        build_score_model(apply_overrides(cfg, ["model.params.widht=3", "model.params.dim=2"]))


def test_model_params_are_read_with_the_one_value_checker():
    """``model.params`` values go through the checker of ``build_net``, naming the key; numbers
    written as YAML reads them (``1e-1`` is a string there) are accepted as in every section."""
    with pytest.raises(ConfigError, match=r"model\.params\.nf: expected int, got 8\.5"):
        apply_overrides(Config(), ["model.name=ncsnpp", "model.params.nf=8.5"])
    cfg = apply_overrides(Config(), ["model.params.fourier_scale=1e-1", "model.params.depth=2.0"])
    assert cfg.model.params == {"fourier_scale": 0.1, "depth": 2}
    assert isinstance(cfg.model.params["depth"], int)


def test_data_section_is_the_data_layers_dataclass():
    from scoresde.data import DataConfig
    from scoresde.training import config

    assert config.DataConfig is DataConfig and config.SECTIONS["data"] is DataConfig
