"""The one set of boundary checks: every sampler, the likelihood and the loss call these.

Each raises ``ValueError`` with one line that names the argument, the value and what is valid.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["lookup", "did_you_mean", "short"]


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message never repeats a large value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(name: Any, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""`` when none is close."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def lookup(table: Mapping[str, Any], name: Any, what: str) -> Any:
    """``table[name]``; a callable ``name`` is returned as it is (a user's own step or sampler).

    Raises ``ValueError``: ``unknown <what> 'name'; valid: a, b, c`` (with "did you mean").
    """
    if callable(name) and not isinstance(name, str):
        return name
    if not isinstance(name, str) or name not in table:
        raise ValueError(
            f"unknown {what} {short(name)}{did_you_mean(name, table)}; valid: {', '.join(table)}"
        )
    return table[name]
