"""Checkpoints: one file ``<workdir>/checkpoint.pt`` written atomically and read without unpickling.

The file is a ``torch.save`` of a dict holding tensors and primitive types only::

    {"format": "scoresde", "version": 1,
     "config": config_to_dict(cfg),        # sections sde, model, data[, train, sample]
     "model": state_dict,                  # of the ScoreModel (keys "net.*")
     "ema": {"rate", "num_updates", "params": {name: tensor}} or None,
     "step": int, "optimizer": state_dict or None,
     "rng": {"torch": ByteTensor, "data": ByteTensor}, "standardizer": {"mean", "std"} or None}

Writing goes to a temporary file in the same folder, which is flushed, fsync-ed and renamed over
the old file (``os.replace``), so a crash leaves either the old or the new checkpoint (the run's
text files, ``config.yaml`` and ``metrics.csv``, are written the same way by
:func:`write_text_atomic`). Reading uses
``torch.load(weights_only=True)``: a missing, truncated, corrupt or foreign file raises one
:class:`CheckpointError`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import typing
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from ..core.score import ScoreModel
from ..data.arrays import Standardizer
from .config import SECTIONS, Config, ConfigError, build_score_model, config_from_dict

__all__ = [
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "CHECKPOINT",
    "save_checkpoint",
    "write_text_atomic",
    "load_checkpoint",
    "checkpoint_path",
    "model_from_checkpoint",
    "load_model",
    "check_state_dict",
    "check_resumable",
]

FORMAT, VERSION = "scoresde", 1
CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not in this library's format."""


def checkpoint_path(workdir_or_file: str | Path) -> Path:
    """``<workdir>/checkpoint.pt`` for a folder, the path itself for a file."""
    p = Path(workdir_or_file)
    return p / CHECKPOINT if p.is_dir() else p


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a temporary file beside ``path``, flushed, fsync-ed and renamed over
    ``path``; on any error the temporary file is removed and the old ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically write ``state`` (plus ``format`` and ``version``) to ``path``."""
    full = {"format": FORMAT, "version": VERSION, **state}
    _atomic_write(Path(path), lambda f: torch.save(full, f))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Atomically replace the text file ``path`` (UTF-8), as :func:`save_checkpoint` does."""
    data = text.encode("utf-8")
    _atomic_write(Path(path), lambda f: f.write(data))


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Bytes that are no torch file make the legacy unpickler fail in many ways (EOFError,
# IndexError, KeyError, struct.error, ...): whatever reading raises means a corrupt file.
_READ_ERRORS = (Exception,)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (a file, or a workdir holding ``checkpoint.pt``) onto the CPU."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # junk draws torch's "pickle protocol" warnings first
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # a complete torch file whose objects weights_only refused
            raise CheckpointError(
                f"{path} holds Python objects other than tensors and plain data; refused "
                "(never unpickled): not a scoresde checkpoint"
            ) from None
        raise CheckpointError(f"{path} is truncated, corrupt or not a torch file") from None
    except _READ_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is truncated, corrupt or not a torch file ({first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a {FORMAT} checkpoint (no format={FORMAT!r} entry); "
            "official checkpoints must be converted first"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has version {state.get('version')}, this library reads {VERSION}"
        )
    missing = [k for k in ("config", "model") if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks the entries {missing}")
    return state


# Keys of the data section that sampling and likelihoods need: the shape and the model space.
_DATA_KEEP = ("shape", "scale", "shift", "centered")


def _known_keys(d: dict) -> dict:
    """The sections and keys of ``d`` that :class:`Config` has; official image keys mapped.

    A data section written before :class:`~scoresde.data.DataConfig` had a key may hold
    ``image_size`` and ``num_channels`` (the official names): they become ``shape``.
    """
    out = {}
    for name, cls in SECTIONS.items():
        section = d.get(name)
        if not isinstance(section, Mapping):
            continue
        section = dict(section)
        if name == "data" and "shape" not in section and "image_size" in section:
            size = section["image_size"]
            section["shape"] = [section.get("num_channels", 3), size, size]
        fields = typing.get_type_hints(cls)
        out[name] = {k: v for k, v in section.items() if k in fields}
    return out


def _config(d: Any) -> Config:
    """The checkpoint's config as a :class:`Config`, whatever version of this library wrote it.

    Foreign sections and keys are dropped (official data keys mapped, :func:`_known_keys`); if
    what is left still does not validate, only ``sde``, ``model`` and the data keys sampling and
    likelihoods need (shape, scale, shift, centered) are kept.
    """
    if not isinstance(d, Mapping):
        raise CheckpointError(f"checkpoint config is a {type(d).__name__}, not a mapping")
    try:
        return config_from_dict(dict(d))
    except ConfigError:
        known = _known_keys(d)
    try:
        return config_from_dict(known)
    except ConfigError:
        data = {k: v for k, v in known.get("data", {}).items() if k in _DATA_KEEP}
        essential = {"sde": known.get("sde"), "model": known.get("model"), "data": data}
    try:
        return config_from_dict(essential)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config is not a valid configuration: {e}") from None


def _listed(keys: list[str], few: int = 4) -> str:
    return ", ".join(keys[:few]) + (f", ... ({len(keys) - few} more)" if len(keys) > few else "")


def check_state_dict(
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    what: str,
    hint: str = "another architecture or other model.params?",
) -> None:
    """Raise one :class:`CheckpointError` unless ``state`` has exactly the keys and shapes of
    ``expected`` (a model's ``state_dict()``, or its named parameters for EMA weights).

    The one check of weights against a model, for this library's checkpoints and official ones
    alike. The one-line message (``what`` and ``hint`` begin it) counts and names a few of each
    kind of mismatch: keys the model needs that ``state`` lacks (missing), keys it has that the
    model does not (unexpected), and keys of both with other shapes (checkpoint shape vs model
    shape). Never loads anything partially.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    kinds = (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes))
    problems = [f"{len(keys)} {kind}: {_listed(keys)}" for kind, keys in kinds if keys]
    if problems:
        raise CheckpointError(f"{what} do not fit this model ({hint}): " + "; ".join(problems))


# Parameter names of earlier versions of this library -> today's (``Combine.Conv`` became
# ``Combine.Conv_0``, the official name); applied only where the model expects the new name.
_RENAMED = ((".Conv.", ".Conv_0."),)


def _renamed(state: Mapping[str, Tensor], expected: Mapping[str, Any]) -> dict[str, Tensor]:
    """``state`` with the former names of :data:`_RENAMED` changed where ``expected`` (a model's
    keys) has the new name and not the old one; every other key as it is."""
    out = {}
    for k, v in state.items():
        new = k
        for old, now in _RENAMED:
            cand = k.replace(old, now)
            if cand != k and k not in expected and cand in expected and cand not in state:
                new = cand
        out[new] = v
    return out


def _ema_params(averaged: Any) -> Mapping[str, Tensor]:
    """The EMA weights of a checkpoint's ``ema`` entry; one :class:`CheckpointError` if the entry
    is not ``{"params": {name: tensor}, ...}``."""
    params = averaged.get("params") if isinstance(averaged, Mapping) else None
    if not isinstance(params, Mapping) or not all(isinstance(v, Tensor) for v in params.values()):
        got = sorted(map(str, averaged)) if isinstance(averaged, Mapping) else type(averaged)
        raise CheckpointError(
            f"the checkpoint's ema entry has no 'params' dict of tensors (got {got}); "
            "use the raw weights (--no-ema) or another checkpoint"
        )
    return params


def check_resumable(state: dict, path: str | Path = CHECKPOINT) -> None:
    """Raise one :class:`CheckpointError` unless the loaded checkpoint ``state`` can continue its
    run: a config that validates, weights and EMA weights that fit its model (the checks of
    :func:`model_from_checkpoint`, as sampling makes them), the optimizer state, the step and
    the RNG states (``rng.torch``, ``rng.data``: uint8 tensors). Converted official checkpoints,
    which have no optimizer state, cannot be resumed."""
    try:
        config_from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config is not valid: {e}") from None
    if not isinstance(state.get("ema"), Mapping):
        raise CheckpointError(f"{path} has no EMA state (entry 'ema'); it cannot be resumed")
    model_from_checkpoint(state, ema=True)
    rng = state.get("rng")
    rngs = [rng.get(k) for k in ("torch", "data")] if isinstance(rng, Mapping) else [None]
    if not all(isinstance(r, Tensor) and r.dtype == torch.uint8 for r in rngs):
        raise CheckpointError(
            f"{path} has no RNG state (entry 'rng' with uint8 tensors 'torch' and 'data'); "
            "it cannot be resumed exactly"
        )
    if not isinstance(state.get("optimizer"), Mapping):
        raise CheckpointError(
            f"{path} has no optimizer state (entry 'optimizer'), as a converted checkpoint; "
            "it cannot be resumed (train a new run from it instead)"
        )
    try:
        cfg = config_from_dict(state["config"])
        st = state.get("standardizer")
        _ = None if st is None else Standardizer.from_state_dict(st, cfg.data.shape)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: entry 'step' must be an integer >= 0, got {step!r:.60}")


def model_from_checkpoint(
    state: dict, ema: bool = True, config: Config | None = None
) -> ScoreModel:
    """Rebuild the ScoreModel of a loaded checkpoint; with ``ema`` its EMA weights if present.

    Only the ``sde`` and ``model`` config sections are used, so converted official checkpoints
    (whose ``data`` section differs) load too. ``config`` builds the model of that config
    instead of the checkpoint's and loads the weights into it; weights of another architecture
    raise one :class:`CheckpointError` listing missing, unexpected and shape-mismatched keys.
    """
    if config is None:
        d = state["config"]
        if not isinstance(d, Mapping):
            raise CheckpointError(f"the checkpoint's config is a {type(d).__name__}, not a mapping")
        try:
            config = config_from_dict({"sde": d.get("sde"), "model": d.get("model")})
            model = build_score_model(config)
        except ConfigError as e:
            raise CheckpointError(f"the checkpoint's config cannot build a model: {e}") from None
    else:
        model = build_score_model(config)
    weights = state["model"]
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"checkpoint weights are a {type(weights).__name__}, not a dict")
    weights = _renamed(weights, model.state_dict())
    check_state_dict(weights, model.state_dict(), "the checkpoint's weights")
    averaged = state.get("ema") if ema else None
    try:
        model.load_state_dict(weights)
        if averaged is not None:
            params = _ema_params(averaged)
            own = dict(model.named_parameters())  # the EMA averages the trainable ones only
            params = _renamed(params, own)
            trainable = {k: v for k, v in own.items() if v.requires_grad}
            check_state_dict(params, trainable, "the checkpoint's EMA weights")
            with torch.no_grad():
                for name, v in params.items():
                    own[name].copy_(v)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint weights do not fit the model: {first}") from None
    return model.eval()


def load_model(
    workdir: str | Path, ema: bool = True, config: Config | None = None
) -> tuple[ScoreModel, Config, Standardizer | None]:
    """``(score model, config, standardizer)`` from ``<workdir>/checkpoint.pt`` (or a file path).

    The model is on the CPU in eval mode, with the EMA weights unless ``ema=False``. The config is
    always a :class:`Config`; for a checkpoint written with foreign keys (an older converted one)
    those are mapped or dropped, keeping the data shape and model space (:func:`_config`). Samples
    in model units map back to data units with ``standardizer.inverse`` (``None``: no scaling).
    ``config``: build this config's model instead of the checkpoint's (see
    :func:`model_from_checkpoint`); the returned config is still the checkpoint's.
    """
    state = load_checkpoint(workdir)
    model = model_from_checkpoint(state, ema, config)
    cfg = _config(state["config"])
    st = state.get("standardizer")
    try:
        standardizer = None if st is None else Standardizer.from_state_dict(st, cfg.data.shape)
    except ValueError as e:
        raise CheckpointError(f"{checkpoint_path(workdir)}: {e}") from None
    return model, cfg, standardizer
