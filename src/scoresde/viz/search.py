"""The picture of a hyperparameter search: the final metric of every trial against each parameter.

Plain inputs only: one dict per trial holding its ``status`` (``COMPLETED``, ``STOPPED`` early by
a scheduler, ``ERROR``), a value under each parameter's name and the metric (``None`` or NaN where
there is none). matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_search"]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _positions(values: list) -> tuple[list[float], list[str] | None]:
    """x positions of parameter values: the numbers themselves, or category indices and labels."""
    if all(_finite(v) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    labels = sorted({str(v) for v in values}, key=lambda s: [str(v) for v in values].index(s))
    return [float(labels.index(str(v))) for v in values], labels


def _log_x(log: bool, x: list[float], labels: list[str] | None) -> bool:
    """Log x where asked (log-uniform keys) and for numeric values spanning two decades or more."""
    if log:
        return True
    return labels is None and min(x) > 0 and max(x) >= 100 * min(x)


def _xlim(x: list[float], log: bool) -> tuple[float, float]:
    """x limits around every trial's value, crashed ones included (8% padding)."""
    lo, hi = min(x), max(x)
    if log:
        f = (hi / lo) ** 0.08 if hi > lo else 2.0
        return lo / f, hi * f
    pad = 0.08 * (hi - lo) if hi > lo else max(0.1 * abs(lo), 0.5)
    return lo - pad, hi + pad


def _set_x_axis(ax, x: list[float], labels: list[str] | None, log: bool) -> None:
    """Scale, limits and ticks: 1, 2, 5 per decade on a log axis, category labels, or 4 bins."""
    ax.set_xscale("log" if log else "linear")
    ax.set_xlim(*_xlim(x, log))
    if log:  # labelled plainly; no labels on the minor ticks
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=15)
    elif not log:
        ax.locator_params(axis="x", nbins=4)


def _panel(ax, key: str, log: bool, rows: Sequence[Mapping[str, Any]], metric: str) -> None:
    """One parameter: finished trials filled, stopped ones hollow, crashed ones red crosses."""
    x, labels = _positions([r[key] for r in rows])
    for status, face in (("COMPLETED", "C0"), ("STOPPED", "none")):
        pts = [(xi, r[metric]) for xi, r in zip(x, rows) if r["status"] == status]
        pts = [(xi, y) for xi, y in pts if _finite(y)]
        if pts:
            ax.scatter(*zip(*pts), s=28, facecolors=face, edgecolors="C0", label=status.lower())
    bad = [xi for xi, r in zip(x, rows) if r["status"] == "ERROR"]
    if bad:  # y in axes units: a crashed trial has no metric to place it by
        ax.scatter(bad, [0.95] * len(bad), marker="x", color="C3", label="error",
                   transform=ax.get_xaxis_transform())  # fmt: skip
    _set_x_axis(ax, x, labels, _log_x(log, x, labels))
    ax.margins(y=0.15)  # room for the crosses at the top
    ax.set(xlabel=key, ylabel=metric)
    ax.grid(alpha=0.3)


def plot_search(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    metric: str,
    path: str | Path,
    log_keys: Collection[str] = (),
) -> Path:
    """The final ``metric`` of every trial against each parameter in ``keys``, one panel each.

    Numeric values are placed by value (log x for the names in ``log_keys`` and for values
    spanning two decades or more), others (lists, strings) as categories. Completed trials are
    filled markers, stopped ones hollow, crashed ones red crosses at the top of the panel.
    Writes the PNG at ``path`` and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        _panel(ax, key, key in log_keys, rows, metric)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
