"""Coloured digits: grey digit images tinted into RGB, for colorization on CPU.

Each image becomes ``rgb = (1 - a) * background + a * ink`` with ``a`` the grey value in [0, 1],
the ink of a random hue (saturation 0.85, value 1) and the background of another random hue
(the ink's plus a half turn plus U(-1/4, 1/4); saturation 0.6, value 0.25). So the grey channel
keeps the digit and the colour is what a colorizer must guess. The colours are drawn from a
numpy generator seeded by ``seed`` plus the split (0 train, 1 test): the same seed gives the same
images. Named sets (see :data:`scoresde.data.datasets.IMAGE_DATASETS`): ``colour_digits``
(scikit-learn's 8x8 digits, (3, 8, 8)) and ``colour_mnist`` (MNIST, (3, 28, 28)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["hsv_to_rgb", "tint", "load_tinted", "COLOUR_SEED"]

COLOUR_SEED = 0
Loader = Callable[[str, Sequence[Path]], tuple[Tensor, Tensor]]


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] -> RGB in [0, 1], shape ``(*h.shape, 3)`` (the standard hexcone map)."""
    k = np.stack([5.0, 3.0, 1.0], axis=-1)  # the R, G, B offsets on the colour wheel
    p = (k + 6.0 * h[..., None]) % 6.0
    ramp = np.clip(np.minimum(p, 4.0 - p), 0.0, 1.0)
    return v[..., None] - v[..., None] * s[..., None] * ramp


def tint(gray: np.ndarray, seed: int) -> np.ndarray:
    """uint8 grey images ``(N, H, W)`` -> uint8 RGB ``(N, 3, H, W)`` with random ink and
    background colours (module docstring), drawn from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    n = len(gray)
    h_ink = rng.random(n)
    h_bg = (h_ink + 0.5 + rng.uniform(-0.25, 0.25, n)) % 1.0
    ink = hsv_to_rgb(h_ink, np.full(n, 0.85), np.ones(n))  # (N, 3)
    bg = hsv_to_rgb(h_bg, np.full(n, 0.6), np.full(n, 0.25))
    a = gray.astype(np.float64)[:, None] / 255.0  # (N, 1, H, W)
    rgb = (1 - a) * bg[:, :, None, None] + a * ink[:, :, None, None]
    return np.rint(rgb * 255).astype(np.uint8)


def load_tinted(
    split: str, roots: Sequence[Path], *, base: Loader, seed: int = COLOUR_SEED
) -> tuple[Tensor, Tensor]:
    """The split of the one-channel set ``base`` (a loader of the data-set table), tinted."""
    x, y = base(split, roots)
    rgb = tint(x[:, 0].numpy(), seed + (0 if split == "train" else 1))
    return torch.from_numpy(rgb), y
