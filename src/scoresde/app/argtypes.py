"""Argument types of the command line (argparse ``type=`` callables), shared by its verbs.

Each parses one option's text or raises ``argparse.ArgumentTypeError`` with a one-line message
(the offending text shortened); its ``__name__`` is what argparse names in that message.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["int_at_least", "real", "seed", "short"]


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {short(text)}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def real(low: float, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number ``>= low`` (``> low`` with ``strict``)."""
    need = f"{'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be a number {need}, got {short(text)}")
        return value

    parse.__name__ = f"number {need}"
    return parse


def seed(text: str) -> int:
    """An argparse ``type``: a seed, a whole number in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {short(text)}")
    return value


def short(text: str) -> str:
    """``text`` cut to a readable length for a message."""
    from ..core.checks import short as cut

    return cut(text)
