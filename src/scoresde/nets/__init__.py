"""Raw score networks ``net(x, noise_label) -> tensor``; they know no SDE.

``NETS`` maps a name to a network class; :func:`build_net` builds one from a plain dict of
parameters, checking every key and type against the class's ``Config`` dataclass (or, for a class
without one, its constructor signature).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any

from torch import nn

from .ddpm import DDPM, DDPMConfig
from .mlp import MLP
from .ncsnpp import NCSNpp, NCSNppConfig
from .unet_tutorial import ScoreNet, UNetTutorialConfig

__all__ = [
    "NETS",
    "build_net",
    "net_params",
    "NCSNpp",
    "NCSNppConfig",
    "DDPM",
    "DDPMConfig",
    "ScoreNet",
    "UNetTutorialConfig",
]

NETS: dict[str, type[nn.Module]] = {
    "ncsnpp": NCSNpp,
    "ddpm": DDPM,
    "unet_tutorial": ScoreNet,
    "mlp": MLP,
}

_EMPTY = inspect.Parameter.empty


def net_params(cls: type[nn.Module]) -> dict[str, tuple[Any, Any]]:
    """``{name: (type hint, default or inspect.Parameter.empty)}`` of a network's parameters."""
    config = getattr(cls, "Config", None)
    if config is not None and dataclasses.is_dataclass(config):
        hints = typing.get_type_hints(config)
        return {
            f.name: (hints[f.name], f.default if f.default is not dataclasses.MISSING else _EMPTY)
            for f in dataclasses.fields(config)
        }
    hints = typing.get_type_hints(cls.__init__)
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: (hints.get(p.name, Any), p.default)
        for p in list(sig.parameters.values())[1:]
        if p.kind in kinds
    }


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from a YAML/JSON dict) fits the type hint ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        item = args[0] if args else Any
        return all(_type_ok(v, item) for v in value)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is None and isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def build_net(name: str, params: dict | None = None) -> nn.Module:
    """Build the network ``NETS[name]`` from a plain dict of constructor parameters.

    Raises:
        ValueError: unknown network name (the valid ones are listed), unknown parameter (the valid
            keys are listed), a parameter of the wrong type, or a value the network rejects.
    """
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; valid: {', '.join(sorted(NETS))}")
    cls, params = NETS[name], dict(params or {})
    spec = net_params(cls)
    for key, value in params.items():
        if key not in spec:
            raise ValueError(
                f"unknown parameter {key!r} for network {name!r}; valid: {', '.join(spec)}"
            )
        if not _type_ok(value, spec[key][0]):
            raise ValueError(
                f"parameter {key!r} of network {name!r} must be {_hint_name(spec[key][0])}, "
                f"got {value!r}"
            )
    missing = [k for k, (_, default) in spec.items() if default is _EMPTY and k not in params]
    if missing:
        raise ValueError(f"network {name!r} needs parameter(s) {', '.join(missing)}")
    return cls(**params)
