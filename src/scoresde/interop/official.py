"""Load and convert checkpoints of the official score_sde_pytorch code (Song et al. 2021).

An official checkpoint is ``{'model', 'ema', 'optimizer', 'step'}``: ``model`` is the state dict
of ``nn.DataParallel(net)`` (keys prefixed ``module.``), ``ema['shadow_params']`` a list of tensors,
one per parameter with ``requires_grad=True`` in ``parameters()`` order. Its configuration (the
``ml_collections`` config as JSON, or the same as a dict) names the SDE (``training.sde``), the
network (``model.name`` and fields) and the data range (``data.centered``).

How the official ``get_score_fn`` turns the network into a score, and its adapters here
(``scoresde.core.score.LABELS`` / ``PARAMETERIZATIONS``):

=========================  ==============================  ===========  ==================
official setting           network input label              ``label``    ``parameterization``
=========================  ==============================  ===========  ==================
VE, continuous             sigma(t)                         sigma        score (NCSN++ with
                                                                         scale_by_sigma divides)
VP, continuous             999 t = (N - 1) t, N = 1000      timestep     noise: -o / std(t)
sub-VP (always continuous) 999 t                            timestep     noise: -o / std(t)
VP, discrete (DDPM)        (N - 1) t, a float               timestep     noise_ddpm:
                                                                         -o / sqrt(1 - abar_i)
=========================  ==============================  ===========  ==================

(The official code writes the continuous VP label as ``999 * t`` whatever N is; with N = 1000, as
in every official config, that is the ``timestep`` label. Other N, and VE discrete training, whose
label is the SMLD index ``round((1 - t)(N - 1))``, are refused with a clear error.)
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import did_you_mean, short
from ..core.score import ScoreModel
from ..core.sde import SDE, VESDE, VPSDE, SubVPSDE
from ..data.transforms import SCALING
from ..nets import DDPM, NETS, NCSNpp, ScoreNet
from ..training.checkpoint import CHECKPOINT, CheckpointError, check_state_dict, save_checkpoint
from ..training.config import ConfigError, config_from_dict, config_to_dict

__all__ = [
    # the networks: official checkpoints load into NCSNpp / DDPM; ScoreNet is the U-Net of the
    # official tutorial notebook
    "NCSNpp",
    "DDPM",
    "ScoreNet",
    "CheckpointError",
    "load_official",
    "convert_official",
    "model_summary",
    "official_net",
    "official_sde",
    "official_adapters",
]

# Official ``model.name`` -> our network name.
OFFICIAL_NETS = {"ncsnpp": "ncsnpp", "ddpm": "ddpm"}

# Model-config keys that are not architecture: the SDE's (read by official_sde) and EMA's.
_NON_ARCH = {"name", "ema_rate", "beta_min", "beta_max"}
# Keys whose only supported value is the one every official config uses.
_FIXED = {"normalization": "GroupNorm", "conv_size": 3, "attention_type": "ddpm"}
# Keys the official DDPM class reads nowhere (its 'conditional' branches are identical).
_IGNORED = {"ddpm": {"conditional", "embedding_type"}, "ncsnpp": set()}
_DATA_KEYS = ("image_size", "num_channels", "centered")
_HINT = "another architecture, or other model flags in the official config?"


def _read_config(config: str | Path | Mapping) -> dict:
    """The official config as a dict, from a JSON file or a mapping; sections checked."""
    if isinstance(config, (str, Path)):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, ValueError) as e:  # missing file, bad JSON, not text
            raise CheckpointError(f"cannot read the official config {config}: {e}") from None
    if not isinstance(config, Mapping):
        raise CheckpointError(f"an official config must be a mapping, got {type(config).__name__}")
    missing = [s for s in ("model", "data", "training") if not isinstance(config.get(s), Mapping)]
    if missing:
        raise CheckpointError(f"official config lacks the section(s) {', '.join(missing)}")
    return dict(config)


def official_net(config: Mapping) -> nn.Module:
    """Our network for an official config: ``NCSNpp`` or ``DDPM`` with the config's fields.

    Raises:
        CheckpointError: an unsupported ``model.name``, an unknown architecture flag, or a
            supported flag with a value this library does not implement.
    """
    config = _read_config(config)
    model, data = dict(config["model"]), config["data"]
    name = model.get("name")
    if name not in OFFICIAL_NETS:
        raise CheckpointError(
            f"official model.name {short(name)} is not supported{did_you_mean(name, OFFICIAL_NETS)}"
            f"; supported: {', '.join(OFFICIAL_NETS)}"
        )
    cls = NETS[OFFICIAL_NETS[name]]
    arch = {f.name for f in fields(cls.Config)}
    for key, value in _FIXED.items():
        if key in model and model[key] != value:
            raise CheckpointError(f"model.{key}={model[key]!r} is not supported (only {value!r})")
    unknown = sorted(set(model) - arch - _NON_ARCH - set(_FIXED) - _IGNORED[name])
    if unknown:
        known = sorted(arch | _NON_ARCH | set(_FIXED))
        raise CheckpointError(
            f"unknown architecture flag(s) model.{', model.'.join(unknown)} for official "
            f"{name!r}{did_you_mean(unknown[0], known)}; known: {', '.join(known)}"
        )
    params = {k: v for k, v in model.items() if k in arch}
    params.update({k: data[k] for k in _DATA_KEYS if k in data})
    if name == "ncsnpp" and params.get("embedding_type", "fourier") == "fourier":
        if not config["training"].get("continuous", True):
            raise CheckpointError("Fourier embeddings need continuous training (official assert)")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"official config does not build a {name!r} network: {e}") from None


def official_sde(config: Mapping) -> SDE:
    """The SDE of an official config: ``training.sde``, ``model``'s constants, N = num_scales."""
    config = _read_config(config)
    name, m = str(config["training"].get("sde", "")).lower(), config["model"]
    N = int(m.get("num_scales", 1000))
    try:
        if name == "vesde":
            return VESDE(m["sigma_min"], m["sigma_max"], N)
        if name in ("vpsde", "subvpsde"):
            return (VPSDE if name == "vpsde" else SubVPSDE)(m["beta_min"], m["beta_max"], N)
    except KeyError as e:
        raise CheckpointError(f"official config lacks model.{e.args[0]} for {name}") from None
    valid = ("vesde", "vpsde", "subvpsde")
    raise CheckpointError(
        f"official training.sde {short(name)} is not supported{did_you_mean(name, valid)}; "
        f"valid: {', '.join(valid)}"
    )


def official_adapters(config: Mapping, continuous: bool | None = None) -> tuple[str, str]:
    """``(label, parameterization)`` reproducing the official ``get_score_fn`` (table above).

    Args:
        config: the official config.
        continuous: override ``training.continuous`` (the official ``get_score_fn`` argument).
    """
    config = _read_config(config)
    sde = str(config["training"].get("sde", "")).lower()
    if continuous is None:
        continuous = bool(config["training"].get("continuous", True))
    N = int(config["model"].get("num_scales", 1000))
    if sde == "vesde":
        if not continuous:
            raise CheckpointError(
                "VE models trained with training.continuous=False take the SMLD index "
                "round((1 - t)(N - 1)) as label, which this library does not provide"
            )
        return "sigma", "score"
    if sde == "vpsde" and not continuous:
        return "timestep", "noise_ddpm"
    if N != 1000:
        raise CheckpointError(
            f"official continuous VP / sub-VP models take the label 999 t; with num_scales={N} "
            "the 'timestep' label (N - 1) t differs"
        )
    return "timestep", "noise"


# ---- reading an official checkpoint -----------------------------------------------------------
_READ_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError)


def _read_checkpoint(path: str | Path) -> dict:
    """``torch.load`` an official checkpoint safely; every failure is one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no official checkpoint at {path}")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        if zipfile.is_zipfile(path):  # a complete torch file whose objects weights_only refused
            raise CheckpointError(
                f"{path} refused: holds Python objects other than tensors and plain data "
                "(never unpickled); save the official state dicts with torch.save again"
            ) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{path} is truncated, corrupt or not a torch file ({first})"
        ) from None
    except _READ_ERRORS as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{path} is truncated, corrupt or not a torch file ({first})"
        ) from None
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, Mapping) or not all(isinstance(v, Tensor) for v in model.values()):
        raise CheckpointError(
            f"{path} is not a score_sde_pytorch checkpoint (no 'model' state dict of tensors)"
        )
    return ckpt


def _strip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove the ``module.`` prefix that ``nn.DataParallel`` adds."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def _drop_unused_dense(state: dict[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """Official unconditional NCSN++ still builds (unused) ``Dense_0`` layers; ours has none."""
    if getattr(getattr(net, "config", None), "conditional", True):
        return state
    own = net.state_dict()
    return {k: v for k, v in state.items() if k in own or ".Dense_0." not in k}


def _ema_params(ckpt: dict, state: dict[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """Map the positional EMA shadow list onto parameter names.

    The official list follows ``parameters()`` with ``requires_grad=True``: the state-dict order of
    the checkpoint's ``model`` (``state``, all of its keys) without buffers and frozen parameters
    (the Fourier ``W``). Entries for keys our network lacks (unused ``Dense_0``) are dropped.
    """
    ema = ckpt.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if not isinstance(shadow, (list, tuple)):
        raise CheckpointError("checkpoint has no 'ema' entry with 'shadow_params'; use ema=False")
    frozen = {k for k, p in net.named_parameters() if not p.requires_grad}
    frozen |= {k for k, _ in net.named_buffers()}
    order = [k for k in state if k not in frozen]
    if len(order) != len(shadow):
        raise CheckpointError(
            f"EMA holds {len(shadow)} shadow parameters but the model has {len(order)} trainable"
        )
    bad = [
        k for k, s in zip(order, shadow) if not isinstance(s, Tensor) or s.shape != state[k].shape
    ]
    if bad:
        raise CheckpointError(f"EMA shadow parameters mis-shaped for {', '.join(bad[:8])}")
    trainable = {k for k, p in net.named_parameters() if p.requires_grad}
    return {k: s for k, s in zip(order, shadow) if k in trainable}


def _load_net(ckpt: dict, config: dict, ema: bool) -> tuple[nn.Module, dict[str, Tensor] | None]:
    """Our net with the checkpoint's ``model`` weights, and the EMA weights by name (or None)."""
    net = official_net(config)
    official = _strip(ckpt["model"])
    state = _drop_unused_dense(official, net)
    check_state_dict(state, net.state_dict(), "the official checkpoint's 'model' weights", _HINT)
    net.load_state_dict(state, strict=True)
    return net, (_ema_params(ckpt, official, net) if ema else None)


def load_official(
    ckpt_path: str | Path,
    config: str | Path | Mapping,
    ema: bool = True,
    continuous: bool | None = None,
) -> ScoreModel:
    """A :class:`ScoreModel` whose ``score_fn(x, t)`` is the official score of a checkpoint.

    Args:
        ckpt_path: an official ``checkpoint_N.pth``.
        config: the official config as a JSON file, or as a dict.
        ema: load the EMA weights (what the official evaluation samples with); else ``model``.
        continuous: override ``training.continuous`` (how labels and scores are formed).

    Returns:
        The model on the CPU in eval mode (dropout off).

    Raises:
        CheckpointError: (a ValueError) for a missing, truncated or foreign file, an unsupported
            or unknown config setting, or weights whose keys / shapes do not fit.
    """
    config = _read_config(config)
    label, parameterization = official_adapters(config, continuous)
    sde = official_sde(config)
    net, ema_params = _load_net(_read_checkpoint(ckpt_path), config, ema)
    if ema_params is not None:
        own = dict(net.named_parameters())
        with torch.no_grad():
            for k, v in ema_params.items():
                own[k].copy_(v)
    return ScoreModel(net, sde, parameterization, label).eval()


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _converted_config(
    config: dict, sde: SDE, net: nn.Module, label: str, parameterization: str
) -> dict:
    """The resolved :class:`~scoresde.training.config.Config` of a converted checkpoint, as a dict.

    Data: the network's image shape, and its model space from ``data.centered``
    (``y = scale * u + shift``, ``u`` the pixels in [0, 1]); no standardizer.
    """
    c = net.config
    scale, shift = SCALING[bool(c.centered)]
    d = {
        "sde": {"name": str(config["training"]["sde"]).lower(), **sde.config()},
        "model": {
            "name": next(k for k, cls in NETS.items() if type(net) is cls),
            "parameterization": parameterization,
            "label": label,
            "params": {k: _plain(v) for k, v in asdict(c).items()},
        },
        "data": {
            "shape": [c.num_channels, c.image_size, c.image_size],
            "scale": scale,
            "shift": shift,
            "centered": bool(c.centered),
            "standardize": False,
        },
    }
    try:
        return config_to_dict(config_from_dict(d))
    except ConfigError as e:
        raise CheckpointError(f"the converted configuration is invalid: {e}") from None


def _ema_state(ckpt: dict, config: dict, ema_params: dict[str, Tensor] | None) -> dict | None:
    """The EMA entry of a converted checkpoint: rate, update count, weights by model key."""
    if ema_params is None:
        return None
    rate = float(config["model"].get("ema_rate", 0.9999))
    updates = int(ckpt["ema"].get("num_updates", 0) or 0)
    params = {f"net.{k}": v.clone() for k, v in ema_params.items()}
    return {"rate": rate, "num_updates": updates, "params": params}


def convert_official(
    ckpt_path: str | Path, config: str | Path | Mapping, out_dir: str | Path, ema: bool = True
) -> Path:
    """Convert an official checkpoint to this library's format, ``<out_dir>/checkpoint.pt``.

    The file holds the resolved config (every section of
    :class:`~scoresde.training.config.Config`; ``data`` gives the image shape and the model space
    ``scale``, ``shift`` of ``data.centered``), the ``model`` weights (keys ``net.*`` of the
    :class:`ScoreModel`), the EMA weights by name (``None`` with ``ema=False``) and the step;
    tensors and primitives only, written atomically.

    Returns:
        The path of the written checkpoint.
    """
    config = _read_config(config)
    label, parameterization = official_adapters(config)
    sde = official_sde(config)
    ckpt = _read_checkpoint(ckpt_path)
    net, ema_params = _load_net(ckpt, config, ema)
    state = {
        "config": _converted_config(config, sde, net, label, parameterization),
        "model": ScoreModel(net, sde, parameterization, label).state_dict(),
        "ema": _ema_state(ckpt, config, ema_params),
        "step": int(ckpt.get("step", 0)),
        "optimizer": None,
    }
    path = Path(out_dir) / CHECKPOINT
    save_checkpoint(path, state)
    return path


def model_summary(score_model: ScoreModel) -> str:
    """Parameter count, a per-block table of shapes, the SDE, parameterization and label."""
    net = score_model.net
    params = list(net.named_parameters())
    n_all = sum(p.numel() for _, p in params)
    n_train = sum(p.numel() for _, p in params if p.requires_grad)
    name = next((k for k, cls in NETS.items() if type(net) is cls), type(net).__name__)
    lines = [
        f"network: {name} ({type(net).__name__}), {n_all:,} parameters ({n_train:,} trainable)",
        f"sde: {score_model.sde!r}",
        f"parameterization: {score_model.parameterization}, label: {score_model.label}",
    ]
    cfg = getattr(net, "config", None)
    if hasattr(cfg, "num_channels") and hasattr(cfg, "image_size"):
        lines.append(f"input: {cfg.num_channels} x {cfg.image_size} x {cfg.image_size}")
    lines.append("blocks:")
    for block, module in _blocks(net):
        shapes = [f"{k}{list(p.shape)}" for k, p in module.named_parameters()]
        count = sum(p.numel() for p in module.parameters())
        shown = " ".join(shapes) if len(shapes) <= 4 else f"{len(shapes)} tensors"
        lines.append(f"  {block:<18} {type(module).__name__:<26} {count:>10,}  {shown}")
    return "\n".join(lines)


def _blocks(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's children, with ModuleLists expanded one level; parameter-free ones skipped."""
    out = []
    for name, child in net.named_children():
        items = child.named_children() if isinstance(child, nn.ModuleList) else [("", child)]
        for sub, module in items:
            if any(True for _ in module.parameters()):
                out.append((f"{name}.{sub}" if sub else name, module))
    return out
