"""The one set of boundary checks: every sampler, the likelihood and the loss call these.

Each raises ``ValueError`` with one line that names the argument, the value and what is valid.
:class:`CheckedScore` is the one wrapper around a user's ``score_fn``: it counts evaluations and
checks every output without a host synchronisation per call (see its docstring).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from .sde import SDE

__all__ = [
    "lookup",
    "did_you_mean",
    "short",
    "default_eps",
    "check_eps",
    "check_int",
    "check_range",
    "check_finite",
    "check_shape",
    "check_seed",
    "check_device_name",
    "start_state",
    "check_score_output",
    "CheckedScore",
]


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message never repeats a large value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(name: Any, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""`` when none is close.

    Names are compared ignoring case (``logsnr`` finds ``logSNR``).
    """
    if not isinstance(name, str):
        return ""
    by_lower = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def lookup(
    table: Mapping[str, Any],
    name: Any,
    what: str,
    *,
    callables: bool = True,
    sort: bool = False,
) -> Any:
    """``table[name]``; with ``callables``, a callable ``name`` is returned as it is (a user's own
    step or sampler).

    Raises ``ValueError``: ``unknown <what> 'name'; valid: a, b, c`` (with "did you mean"), the
    valid names in table order, or sorted with ``sort``.
    """
    if callables and callable(name) and not isinstance(name, str):
        return name
    if not isinstance(name, str) or name not in table:
        valid = sorted(table) if sort else list(table)
        raise ValueError(
            f"unknown {what} {short(name)}{did_you_mean(name, table)}; valid: {', '.join(valid)}"
        )
    return table[name]


# ---- numbers -------------------------------------------------------------------------------------
def default_eps(sde: SDE) -> float:
    """The paper's final time of sampling: 1e-5 for VE, 1e-3 for VP / sub-VP.

    Told apart by the prior: VP and sub-VP end at N(0, I) (``prior_std == 1``), VE at
    N(0, sigma_max^2) with sigma_max != 1.
    """
    return 1e-5 if sde.prior_std != 1 else 1e-3


def _real(name: str, value: Any) -> float:
    """``float(value)`` for a real number (not a bool); ``ValueError`` otherwise."""
    try:
        if isinstance(value, bool | str | complex):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a real number, got {short(value)}") from None


def check_eps(sde: SDE, eps: float | None, *, default: bool = True) -> float:
    """The smallest time ``eps`` as a float, with ``0 < eps < T``.

    ``eps=None`` means :func:`default_eps` where ``default`` is true (the samplers); the
    likelihood and the loss take an explicit float (``default=False``).
    """
    if eps is None and default:
        return default_eps(sde)
    value = _real("eps", eps)
    if not 0 < value < sde.T:
        raise ValueError(f"eps must satisfy 0 < eps < T={sde.T}, got {short(eps)}")
    return value


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int, which must be a whole number ``>= low`` (not a bool)."""
    try:
        ok = not isinstance(value, bool | str) and int(value) == value and value >= low
    except (TypeError, ValueError, RuntimeError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {low}, got {short(value)}")
    return int(value)


def check_range(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a float inside the interval from ``low`` to ``high`` (each end open or closed).

    The message reads ``need rtol > 0, got 0.0`` for a half line, ``lam must lie in [0, 1], got
    1.5`` for a bounded interval.
    """
    v = _real(name, value)
    above = v > low if open_low else v >= low
    below = v < high if open_high else v <= high
    if above and below:
        return v
    if high == math.inf:
        raise ValueError(f"need {name} {'>' if open_low else '>='} {low:g}, got {short(value)}")
    ends = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    raise ValueError(f"{name} must lie in {ends}, got {short(value)}")


def check_finite(v: Tensor, what: str) -> None:
    """Raise ``ValueError`` if the tensor ``v`` has a NaN or an infinity (one host sync)."""
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{what} contains NaN or inf")


def check_seed(name: str, value: Any) -> int:
    """``value`` as a seed of ``torch.Generator.manual_seed``: a whole number in [0, 2**63)."""
    try:
        ok = not isinstance(value, bool | str) and int(value) == value and 0 <= value < 2**63
    except (TypeError, ValueError, RuntimeError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {short(value)}")
    return int(value)


DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device_name(name: Any, what: str = "device") -> str:
    """``name`` if it is ``cpu``, ``mps``, ``cuda`` or ``cuda:K``; ``ValueError`` naming the valid
    ones (with "did you mean") otherwise. Whether the device exists here is not checked."""
    kind, sep, index = name.partition(":") if isinstance(name, str) else ("", "", "")
    lookup(dict.fromkeys(DEVICE_TYPES), kind if kind in DEVICE_TYPES else name, what)
    if sep and (kind != "cuda" or not index.isdigit()):
        raise ValueError(f"{what} {short(name)} is not a device; valid: cpu, cuda, cuda:K, mps")
    return name


def check_shape(shape: Any, what: str = "shape") -> tuple[int, ...]:
    """``shape`` as a tuple ``(B, ...)`` of whole numbers >= 1: a batch of at least one example.

    ``shape=()`` (no batch dimension) and empty batches are refused.
    """
    try:
        dims = tuple(shape)
        ok = len(dims) >= 1 and all(not isinstance(d, bool) and int(d) == d >= 1 for d in dims)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"{what} must be (B, ...) with every size >= 1 (a batch of at least one example), "
            f"got {short(shape)}"
        )
    return tuple(int(d) for d in dims)


# ---- states and scores ---------------------------------------------------------------------------
def start_state(
    sde: SDE,
    shape: tuple[int, ...] | None,
    z: Tensor | None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    what: str = "z",
) -> Tensor:
    """The state a solve starts from: a prior draw of ``shape``, or the given ``z`` (checked).

    ``z`` (named ``what`` in messages) must be a finite floating ``(B, ...)`` tensor of ``shape``
    where both are given; then ``device`` and ``dtype`` follow ``z``.
    """
    if z is None:
        if shape is None:
            raise ValueError(f"give the sample shape or a starting {what}")
        return sde.prior_sampling(check_shape(shape), generator, device, dtype)
    if not isinstance(z, Tensor) or z.ndim < 1 or not z.is_floating_point():
        raise ValueError(
            f"{what} must be a floating (B, ...) tensor, got "
            f"{getattr(z, 'dtype', type(z).__name__)} {tuple(getattr(z, 'shape', ()))}"
        )
    check_shape(z.shape, what + ".shape")
    if shape is not None and tuple(z.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(z.shape)} but shape={tuple(shape)}")
    check_finite(z, what)
    return z


def check_score_output(s: Any, x: Tensor) -> Tensor:
    """``s`` if it is a floating tensor shaped like ``x``; ``ValueError`` otherwise (no sync)."""
    if not isinstance(s, Tensor) or s.shape != x.shape or not s.is_floating_point():
        got = f"{s.dtype} {tuple(s.shape)}" if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(
            f"score_fn must return a floating tensor shaped like x {tuple(x.shape)}, got {got}"
        )
    return s


class CheckedScore:
    """``score_fn(x, t)`` counted and checked; one per sampler or likelihood solve.

    Every output must be a floating tensor shaped like ``x`` (complex and integer dtypes are
    refused). The first output is checked for NaN / inf at once, so a broken ``score_fn`` fails
    before any work. Of later outputs only the minimum and maximum are kept, on their device (one
    ``aminmax`` reduction per call, no host synchronisation: a NaN propagates into both and an
    infinity becomes one of them, so both are finite exactly when every element is), read once
    every :attr:`CHECK_EVERY` evaluations (so a solve that a NaN would keep running, an adaptive
    step size stuck at zero, still stops) and by :meth:`finish`, called once at the end of the
    solve, which raises if any output was non-finite. Used as a context manager, it also turns an
    error that a non-finite score caused later (a solver's step-size underflow) into that one
    ``ValueError``. ``nfe`` counts the evaluations.
    """

    CHECK_EVERY = 64  # evaluations between two reads of the extremes (one host sync each)

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor]):
        self.score_fn, self.nfe = score_fn, 0
        self._extremes: list[Tensor] = []  # (min, max) of the outputs not yet read

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The checked score at ``(x, t)``."""
        s = check_score_output(self.score_fn(x, t), x)
        if self.nfe == 0:
            if not bool(torch.isfinite(s).all()):
                at = float(torch.as_tensor(t).reshape(-1)[0])
                raise ValueError(f"score_fn returned NaN or inf at its first call (t={at:g})")
        elif s.numel():
            self._extremes.extend(torch.aminmax(s.detach()))  # detached: keeps no graph alive
        self.nfe += 1
        if self.nfe % self.CHECK_EVERY == 0:
            self._raise_if_non_finite()
        return s

    def _raise_if_non_finite(self, cause: BaseException | None = None) -> None:
        """Read the extremes gathered since the last read (one reduction, one host sync)."""
        if not self._extremes or bool(torch.isfinite(torch.stack(self._extremes)).all()):
            self._extremes = []  # every output so far was finite: nothing left to keep
            return
        raise ValueError(
            f"score_fn returned NaN or inf at some step; {self.nfe} evaluations were made "
            "(check the model, or use a larger eps or a finer grid)"
        ) from cause

    def finish(self) -> int:
        """Raise ``ValueError`` if any evaluation returned NaN / inf; otherwise return ``nfe``."""
        self._raise_if_non_finite()
        return self.nfe

    def __enter__(self) -> CheckedScore:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        """An error raised inside a ``with`` block (an ODE solver's step size underflow, say) is
        reported as the NaN / inf score that caused it, where there was one."""
        if isinstance(error, Exception):
            self._raise_if_non_finite(error)
        return False
