"""Sample-quality statistics that need no network: two-sample distances between point clouds."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["energy_distance", "sliced_wasserstein"]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Squared energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (U-statistics; 0 iff X ~ Y).

    ``x`` is ``(n, ...)`` and ``y`` is ``(m, ...)`` of equal trailing size; returns 0-d float64.
    """
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(
            f"need two clouds of >= 2 points of equal dimension, got {x.shape}, {y.shape}"
        )
    n, m = len(x), len(y)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return 2 * xy - xx - yy


def sliced_wasserstein(
    x: Tensor, y: Tensor, projections: int = 128, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced 1-Wasserstein distance over random unit directions (equal sample sizes)."""
    x, y = _flat(x), _flat(y)
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs equal shapes, got {x.shape}, {y.shape}")
    d = torch.randn(x.shape[1], projections, generator=generator, dtype=x.dtype)
    d = d / d.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ d, dim=0)
    py, _ = torch.sort(y @ d, dim=0)
    return (px - py).abs().mean()
