"""The one check of plain-dict values (from YAML, JSON or a command line) against type hints.

:func:`coerce` serves both the network options of :func:`scoresde.nets.build_net` and every
field of the configuration dataclasses (``scoresde.training.config``), so a value means the same
wherever it is written. It lives here, in the lowest layer that needs it: networks may import
nothing above them, and the configuration layer may import networks.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from typing import Any

from torch import nn

__all__ = ["net_params", "coerce", "type_name", "EMPTY"]

EMPTY = inspect.Parameter.empty
"""The default of a parameter that has none (it must be given)."""


def net_params(cls: type[nn.Module]) -> dict[str, tuple[Any, Any]]:
    """``{name: (type hint, default or EMPTY)}`` of a network's parameters.

    From the class's ``Config`` dataclass if it has one, else from its constructor signature.
    """
    config = getattr(cls, "Config", None)
    if config is not None and dataclasses.is_dataclass(config):
        hints = typing.get_type_hints(config)
        return {
            f.name: (hints[f.name], f.default if f.default is not dataclasses.MISSING else EMPTY)
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


def type_name(hint: Any) -> str:
    """A type hint as a message shows it: ``int``, ``float or null``, ``tuple[int, ...]``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is None and isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _as_number(value: Any, strings: bool) -> float | None:
    """A real number, with ``strings`` also from a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if strings and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _union(value: Any, hint: Any, strings: bool) -> Any:
    """``None`` for an optional hint, else the value coerced to its one other member.

    A union of several non-null types takes the value as it is.
    """
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    inner = [a for a in args if a is not type(None)]
    return coerce(value, inner[0], strings=strings) if len(inner) == 1 else value


def coerce(value: Any, hint: Any, *, strings: bool = False) -> Any:
    """``value`` converted to the type ``hint``; ``TypeError`` ``expected <type>, got <value>``.

    ``float`` takes a real number; ``int`` a whole number (``2.0`` too); with ``strings`` both
    also take a numeric string (PyYAML reads ``1e-3`` and ``2e3`` as strings). ``bool`` and
    ``str`` take only themselves; ``list[T]`` and ``tuple[T, ...]`` a list or tuple, each item
    coerced, returned as a list; ``dict`` a dict; ``X | None`` also ``None``. Any other hint takes
    the value as it is.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _union(value, hint, strings)
    ok, out = True, value
    if hint is float:
        num = _as_number(value, strings)
        ok, out = num is not None, None if num is None else float(num)
    elif hint is int:
        num = _as_number(value, strings)
        ok = num is not None and math.isfinite(num) and float(num).is_integer()
        out = int(num) if ok else value
    elif hint is bool or hint is str:
        ok = isinstance(value, hint)
    elif origin in (list, tuple):
        args = typing.get_args(hint)
        ok = isinstance(value, list | tuple)
        item = args[0] if args else Any
        out = [coerce(v, item, strings=strings) for v in value] if ok else value
    elif hint is dict:
        ok = isinstance(value, dict)
        out = dict(value) if ok else value
    if not ok:
        raise TypeError(f"expected {type_name(hint)}, got {value!r}")
    return out
