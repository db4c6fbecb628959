"""Typed configuration: dataclasses, YAML presets, dotted overrides, builders of SDEs and models.

A :class:`Config` has five sections (``sde``, ``model``, ``data``, ``train``, ``sample``). Presets
are YAML files shipped in ``scoresde/configs/`` (:func:`list_presets`); :func:`load_config` takes a
preset name or a YAML path, :func:`apply_overrides` applies ``section.key=value`` strings (values
parsed as YAML and checked against the field's type), and :func:`config_to_dict` /
:func:`config_from_dict` are the plain-dict form saved in checkpoints. Every problem raises one
:class:`ConfigError` naming the key, the value and the valid choices.

The data dimension: the trainer writes the data's shape into ``data.shape`` and, for networks that
take a ``dim`` argument (the MLP), ``model.params.dim`` (:func:`with_data_shape`), so a saved config
rebuilds its model with :func:`build_score_model` alone.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..core.checks import check_device_name, check_seed, did_you_mean, lookup, short
from ..core.losses import REDUCTIONS, T_SAMPLING, WEIGHTINGS
from ..core.score import LABELS, PARAMETERIZATIONS, SIGMA_DATA, ScoreModel
from ..core.sde import SDE, VESDE, VPSDE, SubVPSDE
from ..data import IMAGE_DATASETS, SCALING, TOY, is_image_path
from ..data.spec import DataConfig
from ..nets import NETS, build_net, net_params
from ..nets.params import coerce, type_name

__all__ = [
    "ConfigError",
    "SDEConfig",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "SampleConfig",
    "Config",
    "SDES",
    "sampler_kwargs",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "dump_yaml",
    "list_presets",
    "build_sde",
    "build_score_model",
    "with_data_shape",
    "PRESET_DIR",
    "SAFE_ON_RESUME",
    "resume_changes",
    "resume_config",
    "check_sampler",
    "preflight",
    "check_device",
    "check_run",
    "MAX_YAML_BYTES",
    "MAX_YAML_ALIASES",
    "EVAL_METRICS",
    "BPD_METHODS",
    "LR_SCHEDULES",
]

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"

SDES: dict[str, type[SDE]] = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": SubVPSDE}

# What scoresde.training.evaluate.evaluate computes: test bits/dim by the probability-flow ODE,
# by the ELBO, and sample quality by a feature network (FID, KID, precision / recall).
EVAL_METRICS = ("bpd", "elbo", "fid")
BPD_METHODS = ("ode", "elbo")  # how the loop's periodic test bits/dim is computed
# The learning rate after the warm-up (scoresde.training.loop.lr_at, LR_DECAYS): held, or decayed
# to train.lr_min at the last step by a half cosine or a straight line.
LR_SCHEDULES = ("constant", "cosine", "linear")


class ConfigError(ValueError):
    """A bad preset name, key or value in a configuration."""


@dataclass
class SDEConfig:
    """The forward SDE: ``name`` in ``SDES`` and the constructor arguments of each."""

    name: str = "vpsde"
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000


@dataclass
class ModelConfig:
    """Network ``name`` (``scoresde.nets.NETS``) with its ``params``, and how it becomes a score.

    ``parameterization`` is a key of :data:`scoresde.core.score.PARAMETERIZATIONS` and ``label``
    of :data:`~scoresde.core.score.LABELS`. ``sigma_data`` is EDM's sigma_d, the standard
    deviation of the data in model units (a positive number; default 0.5, EDM's value for images
    in [-1, 1]): the ``edm`` parameterization scales the network's input and output by it and the
    ``edm`` loss weighting uses it; the other parameterizations and weightings ignore it.
    """

    name: str = "mlp"
    parameterization: str = "noise"
    label: str = "t"
    params: dict = field(default_factory=dict)
    sigma_data: float = SIGMA_DATA  # EDM's sigma_d (edm parameterization and weighting)


@dataclass
class TrainConfig:
    """Optimisation (Adam, linear warm-up, gradient clipping, EMA) and the loop's periods.

    The learning rate rises linearly to ``lr`` over the first ``warmup`` updates; then
    ``lr_schedule`` (:data:`LR_SCHEDULES`) holds it (``"constant"``, the default) or decays it to
    ``lr_min`` (``0 <= lr_min <= lr``) at the last step ``steps``, by ``"cosine"``
    (lr_min + (lr - lr_min) (1 + cos(pi p)) / 2) or ``"linear"`` (lr_min + (lr - lr_min) (1 - p)),
    p the fraction of the ``steps - warmup`` post-warm-up updates done
    (:func:`scoresde.training.loop.lr_at`). The lr is a function of the step alone, so resume
    stays exact; a resume that raises ``steps`` stretches the rest of the decay to the new end.
    Periods of 0 turn evaluation, checkpoints (except the final one) or samples off.
    ``ema_rate`` is used with the paper's warm-up, ``min(rate, (1 + n) / (10 + n))``.
    ``weighting`` ``"score"``, ``"likelihood"`` (lambda = g^2) or ``"edm"`` (EDM's weight on the
    denoiser error, :mod:`scoresde.core.losses`); ``importance`` draws t uniformly in log-SNR
    with the matching weight (Song et al. 2021, "Maximum likelihood training"), the
    variance-reduced estimator of the likelihood-weighted loss. ``t_sampling`` is how t is drawn
    (:data:`scoresde.core.losses.T_SAMPLING`): ``"uniform"`` (the default: U(eps, T), or the
    log-SNR draw with ``importance``) or ``"log_normal"``, EDM's noise levels
    ln(sigma / alpha) ~ N(-1.2, 1.2^2) clipped to [eps, T], without importance weight (so not
    together with ``importance``). Image data: every ``bpd_every`` steps the EMA model's
    bits/dim of the first ``bpd_n`` test images, by the probability-flow ODE (``bpd_method:
    ode``, ~1000 network calls per image batch) or the ELBO (``elbo``, a handful of calls), an
    upper bound on the reverse SDE's bits/dim (the ODE's too only for an exact score).
    ``eval_metrics`` (names of :data:`EVAL_METRICS`) runs
    :func:`scoresde.training.evaluate.evaluate` every ``eval_every`` steps and at the end
    (``eval_<step>.json``).
    """

    steps: int = 10000
    batch_size: int = 256
    lr: float = 2e-4
    warmup: int = 500
    lr_schedule: str = "constant"  # after the warm-up: "constant", "cosine" or "linear" decay
    lr_min: float = 0.0  # the lr at the last step of a decaying lr_schedule
    grad_clip: float | None = 1.0
    ema_rate: float = 0.999
    weighting: str = "score"
    importance: bool = False
    t_sampling: str = "uniform"  # how t is drawn: "uniform" or EDM's "log_normal"
    eps: float = 1e-5
    reduce: str = "mean"
    log_every: int = 100
    eval_every: int = 1000
    ckpt_every: int = 1000
    sample_every: int = 0
    bpd_every: int = 0
    bpd_n: int = 100
    bpd_method: str = "ode"  # the periodic test bits/dim: "ode" (exact NLL) or "elbo" (bound)
    eval_metrics: list[str] = field(default_factory=list)  # evaluate() every eval_every steps
    seed: int = 0
    device: str = "cpu"
    tensorboard: bool | None = None  # None: on when installed; true: on (a note if not)
    backend: str = "auto"  # torch.distributed under torchrun: auto (gloo on CPU, nccl on CUDA)


@dataclass
class SampleConfig:
    """Sampling in training: ``sampler`` names any sampler of :data:`scoresde.samplers.SAMPLERS`.

    A field goes to the sampler when the sampler takes an option of that name (``predictor``,
    ``corrector``, ``snr``, ``corrector_steps`` for ``pc``; ``method``, ``rtol``, ``atol`` for
    ``ode``; ``steps`` and ``eps`` for most); ``None`` leaves the sampler's own default. Options
    without a field of their own (``order``, ``grid``, ``churn``, ``lam``, ...) go in ``options``.
    ``n`` is the number of samples drawn.
    """

    sampler: str = "pc"
    predictor: str = "reverse_diffusion"
    corrector: str = "langevin"
    snr: float = 0.16
    corrector_steps: int = 1
    steps: int | None = None
    eps: float | None = None
    rtol: float | None = None
    atol: float | None = None
    method: str | None = None
    n: int = 1000
    options: dict = field(default_factory=dict)


def sampler_kwargs(s: SampleConfig) -> dict:
    """The keyword options for ``samplers.sample(..., sampler=s.sampler, **options)``.

    Every field of ``s`` that the sampler takes and that is not ``None``, then ``s.options``.
    """
    from ..samplers import sampler_options

    takes = sampler_options(s.sampler)
    fields = {k: getattr(s, k) for k in _hints(SampleConfig) if k in takes}
    return {k: v for k, v in fields.items() if v is not None} | dict(s.options)


@dataclass
class Config:
    """A whole run."""

    sde: SDEConfig = field(default_factory=SDEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


SECTIONS: dict[str, type] = {
    "sde": SDEConfig,
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
}


# ---- value types ------------------------------------------------------------------------------
def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the field type ``tp`` (:func:`scoresde.nets.params.coerce`, numeric
    strings accepted as YAML writes them), or ConfigError naming key, value and type."""
    try:
        return coerce(value, tp, strings=True)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {short(value)}") from None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section_from_dict(name: str, d: Any) -> Any:
    cls = SECTIONS[name]
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"section {name!r} must be a mapping of keys to values, got {short(d)}")
    hints = _hints(cls)
    unknown = sorted(set(d) - set(hints), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key '{name}.{short(unknown[0])[1:-1]}'{did_you_mean(unknown[0], hints)}; "
            f"valid keys of {name}: {', '.join(sorted(hints))}"
        )
    return cls(**{k: _coerce(v, hints[k], f"{name}.{k}") for k, v in d.items()})


# ---- validation of names and ranges -----------------------------------------------------------
def _choice(key: str, value: str, valid, sort: bool = True) -> None:
    """ConfigError ``unknown <key> 'value' (did you mean ...); valid: a, b`` (sorted unless
    ``sort`` is false)."""
    try:
        lookup(dict.fromkeys(valid), value, key, callables=False, sort=sort)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check(key: str, ok: bool, value: Any, need: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {short(value)} is invalid; need {need}")


def _sampler_tables() -> tuple[dict, dict]:
    from ..samplers import pc as sampling

    return sampling.PREDICTORS, sampling.CORRECTORS


def _sampler_names() -> list[str]:
    from ..samplers import SAMPLERS

    return list(SAMPLERS)


def _check_sampler_options(s: SampleConfig) -> None:
    from ..samplers import sampler_options

    takes = sampler_options(s.sampler)
    for k in s.options:
        _check(
            f"sample.options.{k}",
            k in takes,
            s.options[k],
            f"an option of {s.sampler!r}: " + ", ".join(takes),
        )


def _ode_methods() -> list[str]:
    from ..core import ode

    return list(ode.METHODS)


def _image_scaling(d: DataConfig) -> None:
    """Image sets and image paths (a folder or ``.npz``): ``scale``, ``shift`` from ``centered``
    and no standardizer (else kept as given, e.g. a converted checkpoint's)."""
    if d.name in IMAGE_DATASETS or (d.path is not None and is_image_path(d.path)):
        d.scale, d.shift = SCALING[bool(d.centered)]
        d.standardize = False


def _model_params(m: ModelConfig) -> None:
    """Coerce the values of ``model.params`` to the types the network declares; an unknown key
    is refused (valid ones listed, with "did you mean"). Missing keys are left to
    :func:`build_score_model`, which names them.
    """
    spec = net_params(NETS[m.name])
    for k, v in m.params.items():
        _choice(f"model.params key of {m.name!r}:", k, spec)
        m.params[k] = _coerce(v, spec[k][0], f"model.params.{k}")


def _validate_data(d: DataConfig) -> None:
    _choice("data.name", d.name, [*TOY, *IMAGE_DATASETS, "file"])
    if d.path is not None:
        d.name = "file"  # a path wins over a toy name; say so in the saved config
    _image_scaling(d)
    _check("data.path", d.name != "file" or d.path is not None, d.path, "a .npy/.csv file path")
    _check("data.n_train", d.n_train >= 1, d.n_train, ">= 1")
    _check("data.n_test", d.n_test >= 1, d.n_test, ">= 1")
    _seed("data.seed", d.seed)
    _check("data.test_fraction", 0 < d.test_fraction < 1, d.test_fraction, "0 < value < 1")


def _validate_train(tr: TrainConfig) -> None:
    for k in ("steps", "warmup", "eval_every", "ckpt_every", "sample_every", "bpd_every"):
        _check(f"train.{k}", getattr(tr, k) >= 0, getattr(tr, k), ">= 0 (0 turns it off)")
    _check("train.batch_size", tr.batch_size >= 1, tr.batch_size, ">= 1")
    _check("train.bpd_n", tr.bpd_n >= 1, tr.bpd_n, ">= 1")
    _seed("train.seed", tr.seed)
    _check("train.log_every", tr.log_every >= 1, tr.log_every, ">= 1")
    _check("train.lr", 0 < tr.lr < math.inf, tr.lr, "a positive number")
    _choice("train.lr_schedule", tr.lr_schedule, LR_SCHEDULES, sort=False)
    _check("train.lr_min", 0 <= tr.lr_min <= tr.lr, tr.lr_min, f">= 0 and <= train.lr = {tr.lr}")
    clip = tr.grad_clip
    _check("train.grad_clip", clip is None or 0 < clip < math.inf, clip, "> 0 or null (off)")
    _check("train.ema_rate", 0 <= tr.ema_rate < 1, tr.ema_rate, "0 <= rate < 1")
    _check("train.eps", 0 < tr.eps < 1, tr.eps, "0 < eps < T = 1")
    _choice("train.weighting", tr.weighting, WEIGHTINGS)
    _choice("train.t_sampling", tr.t_sampling, T_SAMPLING)
    ok = tr.t_sampling == "uniform" or not tr.importance
    _check("train.t_sampling", ok, tr.t_sampling, "'uniform' when train.importance is true")
    _choice("train.reduce", tr.reduce, REDUCTIONS)
    _choice("train.backend", tr.backend, _backends(), sort=False)
    _choice("train.bpd_method", tr.bpd_method, BPD_METHODS, sort=False)
    for m in tr.eval_metrics:
        _choice("train.eval_metrics entry", m, EVAL_METRICS, sort=False)
    try:
        check_device_name(tr.device, "train.device")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _backends() -> tuple[str, ...]:
    from .distributed import BACKENDS

    return BACKENDS


def _seed(key: str, value: int) -> None:
    """ConfigError unless ``value`` is a seed a generator takes, in [0, 2**63)."""
    try:
        check_seed(key, value)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _validate_sample(s: SampleConfig) -> None:
    _choice("sample.sampler", s.sampler, _sampler_names())
    predictors, correctors = _sampler_tables()
    _choice("sample.predictor", s.predictor, predictors)
    _choice("sample.corrector", s.corrector, correctors)
    _check("sample.snr", s.snr > 0, s.snr, "> 0")
    _check("sample.corrector_steps", s.corrector_steps >= 0, s.corrector_steps, ">= 0")
    _check("sample.steps", s.steps is None or s.steps >= 1, s.steps, ">= 1 or null (sde.N)")
    _check("sample.eps", s.eps is None or 0 < s.eps < 1, s.eps, "0 < eps < 1 or null (default)")
    _check("sample.n", s.n >= 1, s.n, ">= 1")
    if s.sampler == "ode" and s.method is not None:
        _choice("sample.method", s.method, _ode_methods())
    _check_sampler_options(s)


def validate(cfg: Config) -> Config:
    """Check every name against its table and every number against its range; return ``cfg``.

    The values of ``model.params`` that the network declares are coerced to their types, as the
    fields of the sections are.
    """
    _choice("sde.name", cfg.sde.name, SDES)
    try:
        build_sde(cfg.sde)
    except ValueError as e:
        raise ConfigError(f"sde: {e}") from None
    m = cfg.model
    _choice("model.name", m.name, NETS)
    _choice("model.parameterization", m.parameterization, PARAMETERIZATIONS)
    _choice("model.label", m.label, LABELS)
    ok = 0 < m.sigma_data < math.inf
    _check("model.sigma_data", ok, m.sigma_data, "a positive finite number (the data's std)")
    _model_params(m)
    _validate_data(cfg.data)
    _validate_train(cfg.train)
    _validate_sample(cfg.sample)
    return cfg


# ---- dict / YAML forms --------------------------------------------------------------------------
def config_to_dict(cfg: Config) -> dict:
    """Plain dict of primitives; ``sde`` holds ``name`` and that SDE's constructor arguments."""
    out = {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}
    out["sde"] = {"name": cfg.sde.name, **{k: out["sde"][k] for k in _sde_args(cfg.sde.name)}}
    return copy.deepcopy(out)


def config_from_dict(d: dict) -> Config:
    """Inverse of :func:`config_to_dict`; missing sections and keys take their defaults."""
    if not isinstance(d, dict):
        raise ConfigError(f"a configuration must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(SECTIONS), key=str)
    if unknown:
        _choice("section", unknown[0], SECTIONS, sort=False)
    return validate(Config(**{name: _section_from_dict(name, d.get(name)) for name in SECTIONS}))


def dump_yaml(cfg: Config) -> str:
    """The configuration as YAML text (what ``--dry-run`` prints and the run folder keeps)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def list_presets() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


# A YAML document may not make a large value out of a small one: at most this many aliases
# (``*name``) and this many bytes (a config is a few hundred bytes; the "billion laughs" document
# expands its aliases exponentially when the value is copied).
MAX_YAML_ALIASES = 100
MAX_YAML_BYTES = 1 << 20


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses more than :data:`MAX_YAML_ALIASES` aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Count the aliases; ``yaml.YAMLError`` past the cap."""
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (refused)")
        return super().compose_node(parent, index)


def _yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` with the caps on aliases and size (``yaml.YAMLError`` past them)."""
    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_YAML_BYTES} bytes (refused)")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise yaml.YAMLError(f"larger than {MAX_YAML_BYTES} bytes (refused)")
        d = _yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (OSError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: cannot read YAML ({first})") from None
    return {} if d is None else d


def load_config(name_or_path: str | Path) -> Config:
    """A preset by name (:func:`list_presets`) or a YAML file by path."""
    s = str(name_or_path)
    path = Path(s)
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; give a preset name or a YAML file")
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"no such config file: {path}")
    else:
        _choice("preset", s, list_presets())
        path = PRESET_DIR / f"{s}.yaml"
    d = _read_yaml(path)  # its errors name the file
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {short(item)} must look like section.key=value")
    try:
        value = _yaml(text)
    except yaml.YAMLError as e:
        if "refused" in str(e):
            raise ConfigError(f"override of {short(key)}: YAML {e}") from None
        value = text
    return key.strip().split("."), value


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A new config with ``section.key=value`` overrides (``model.params.NAME=value`` too)."""
    d = config_to_dict(cfg)
    d["sde"] = dataclasses.asdict(cfg.sde)  # keep every SDE field so that sde.name can change
    for item in overrides:
        parts, value = _parse_override(item)
        section = parts[0]
        if section not in SECTIONS:
            _choice("section", section, SECTIONS, sort=False)
        if len(parts) == 3 and parts[:2] == ["model", "params"]:
            d["model"]["params"][parts[2]] = value
            continue
        if len(parts) != 2 or parts[1] not in _hints(SECTIONS[section]):
            hints = _hints(SECTIONS[section])
            near = did_you_mean(".".join(parts[1:]), hints).replace("'", f"'{section}.", 1)
            keys = ", ".join(sorted(hints))
            raise ConfigError(
                f"unknown key {short('.'.join(parts))}{near}; valid keys of {section}: {keys}"
            )
        d[section][parts[1]] = value
    return config_from_dict(d)


# ---- builders -----------------------------------------------------------------------------------
def _sde_args(name: str) -> list[str]:
    return list(inspect.signature(SDES[name]).parameters)


def build_sde(cfg: SDEConfig) -> SDE:
    """The SDE named ``cfg.name`` built from its constructor arguments."""
    _choice("sde.name", cfg.name, SDES)
    return SDES[cfg.name](**{k: getattr(cfg, k) for k in _sde_args(cfg.name)})


def _net_accepts(name: str, arg: str) -> bool:
    return arg in net_params(NETS[name])


def with_data_shape(cfg: Config, shape: tuple[int, ...] | list[int]) -> Config:
    """A copy with ``data.shape`` set, and ``model.params.dim`` for a network taking ``dim``."""
    cfg = copy.deepcopy(cfg)
    cfg.data.shape = [int(s) for s in shape]
    if _net_accepts(cfg.model.name, "dim"):
        D = math.prod(cfg.data.shape)
        dim = cfg.model.params.setdefault("dim", D)
        if dim != D:
            raise ConfigError(f"model.params.dim is {dim} but the data has {D} entries per example")
    return cfg


def build_score_model(cfg: Config) -> ScoreModel:
    """``ScoreModel(build_net(model.name, model.params), build_sde(sde), ...)`` on the CPU, with
    ``model.parameterization``, ``model.label`` and ``model.sigma_data``."""
    try:
        net = build_net(cfg.model.name, dict(cfg.model.params))
    except (TypeError, ValueError) as e:
        hint = ""
        if "dim" in str(e) and _net_accepts(cfg.model.name, "dim"):
            hint = " (set model.params.dim, or train, which fills it in from the data)"
        raise ConfigError(f"model.params {short(cfg.model.params)}: {e}{hint}") from None
    m = cfg.model
    return ScoreModel(net, build_sde(cfg.sde), m.parameterization, m.label, m.sigma_data)


# ---- resume: what may change --------------------------------------------------------------------
# Keys that leave the training trajectory as it is (periods of logging, evaluation, checkpoints,
# samples; where the data live; the process-group backend), so a resumed run may change them.
# Any sample.* key is safe too (samples use their own generator). train.steps extends a run.
SAFE_ON_RESUME = frozenset(
    {"train.steps", "train.log_every", "train.eval_every", "train.ckpt_every",
     "train.sample_every", "train.bpd_every", "train.bpd_n", "train.tensorboard",
     "train.backend", "data.data_dir", "train.bpd_method", "train.eval_metrics"}
)  # fmt: skip


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (nested dicts such as ``model.params`` too)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix == "sample." and k == "options"):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _safe(key: str) -> bool:
    return key in SAFE_ON_RESUME or key.startswith("sample.")


def resume_changes(saved: Config, cfg: Config) -> list[str]:
    """The changes ``saved -> cfg`` that a resumed run may make, as ``"key: old -> new"``.

    ``saved`` is the checkpoint's config, ``cfg`` the one asked for (its data shape and
    ``model.params.dim`` are taken from ``saved`` when unset: the trainer fills them in).

    Raises:
        ConfigError: ``cfg`` differs from ``saved`` in a key that changes the training itself
            (the SDE, the model, the data, the optimisation, the seed); all such keys named.
    """
    if cfg.data.shape is None and saved.data.shape is not None:
        cfg = with_data_shape(cfg, saved.data.shape)
    old, new = _flat(config_to_dict(saved)), _flat(config_to_dict(cfg))
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    refused = [k for k in diff if not _safe(k)]
    if refused:
        shown = "; ".join(f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in refused[:4])
        more = f" (and {len(refused) - 4} more)" if len(refused) > 4 else ""
        raise ConfigError(
            f"resume keeps the run's own config, but {', '.join(refused)} "
            f"{'differs' if len(refused) == 1 else 'differ'} from the "
            f"checkpoint ({shown}{more}); only train.steps, the logging, evaluation, checkpoint "
            "and sample periods, sample.* and data.data_dir may change (start a new run to "
            "change the others)"
        )
    return [f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in diff]


def resume_config(saved: Config, cfg: Config | None) -> tuple[Config, list[str]]:
    """``(the config to resume with, the changes made)``: ``saved`` when ``cfg`` is None, else
    ``cfg`` once :func:`resume_changes` accepted it (with the saved data shape filled in)."""
    if cfg is None:
        return copy.deepcopy(saved), []
    changes = resume_changes(saved, cfg)
    if cfg.data.shape is None and saved.data.shape is not None:
        cfg = with_data_shape(cfg, saved.data.shape)
    return copy.deepcopy(cfg), changes


# ---- pre-flight: what can fail later is checked before the first step -------------------------
class _Probe(Exception):
    """Raised by the probe's score function: the sampler passed its checks and began to run."""


def _probe_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    raise _Probe


def check_sampler(cfg: Config) -> None:
    """Run every check the sampler of ``cfg.sample`` makes before its first score evaluation
    (names, options, eps, steps, the discrete chain of PC sampling) on one sample of
    ``cfg.data.shape``; no network is evaluated. Raises one :class:`ConfigError`."""
    from ..samplers import sample

    shape = (1, *(cfg.data.shape or [1]))
    try:
        options = sampler_kwargs(cfg.sample)
        sample(build_sde(cfg.sde), _probe_score, shape, cfg.sample.sampler, **options)
    except _Probe:
        return
    except (ValueError, TypeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"sample: the sampler {cfg.sample.sampler!r} of this config cannot run: {first}"
        ) from None


def preflight(cfg: Config) -> None:
    """Everything about ``cfg`` that can fail during training, checked before it starts: the
    device exists, and (with ``train.sample_every > 0``) the sampler can run at the data's
    shape (:func:`check_sampler`). Raises one :class:`ConfigError`."""
    check_device(cfg.train.device)
    if cfg.train.sample_every > 0:
        check_sampler(cfg)


def check_device(name: str, what: str = "train.device") -> torch.device:
    """The device ``name`` (``cpu``, ``cuda[:K]``, ``mps``) if this build and machine have it;
    one :class:`ConfigError` naming ``what`` otherwise (unknown names listed, "did you mean")."""
    try:
        check_device_name(name, what)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{what}: {name!r} but no CUDA GPU is available (use cpu)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what}: {name!r} but this machine has {count} CUDA GPU(s)")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ConfigError(f"{what}: {name!r} but MPS is not available here (use cpu)")
    return device


def check_run(cfg: Config, data: bool = True) -> Config:
    """What :func:`scoresde.training.loop.train` checks before it writes anything, without
    writing: the device, the data (with ``data``: read and checked, as training reads them), the
    model built at the data's shape and the sampler (:func:`preflight`); returns ``cfg`` with the
    data shape filled in. Raises ``ValueError`` (a :class:`ConfigError` for the config)."""
    from ..data import load_data
    from .distributed import check_batch, world_size

    check_device(cfg.train.device)
    check_batch(cfg.train.batch_size, world_size())
    if data:
        train_x, _, _ = load_data(cfg.data)
        if train_x.dtype == torch.uint8 and cfg.data.scale is None:
            raise ValueError("uint8 images need an image data set in data.name (for scale, shift)")
        cfg = with_data_shape(cfg, tuple(train_x.shape[1:]))
    if cfg.data.shape is not None:
        build_score_model(cfg)
    preflight(cfg)
    return cfg
