"""Vector data: toy distributions, a user's ``.npy`` / ``.csv`` file, splits and standardisation.

Toy generators take ``(n, generator=None)`` and return ``(n, D)`` tensors of the default dtype;
they are listed in ``TOY``. The 2-D sets follow FFJORD's ``toy_data`` (as used by sdeflow-light).
Three of them are Gaussian mixtures with an exact density, available as
``scoresde.GaussianMixture`` objects through :func:`toy_mixture` (``TOY_MIXTURES``).

A :class:`Standardizer` maps data to model units, ``y = (x - mean) / std``; it is stored with the
model so that samples and likelihoods come back in data units:
``log p_x(x) = log p_y(y) + log_det``.
Image data sets live in their own module; this one knows no SDE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..core.mixture import GaussianMixture

if TYPE_CHECKING:
    from ..training.config import DataConfig

__all__ = [
    "swiss_roll",
    "moons",
    "checkerboard",
    "eight_gaussians",
    "mixture_1d",
    "mixture_2d",
    "TOY",
    "TOY_MIXTURES",
    "toy_mixture",
    "load_array",
    "split",
    "Standardizer",
    "load_data",
    "images_to_model",
    "is_image_path",
    "load_image_path",
]


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _randn(*shape: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _out(x: Tensor) -> Tensor:
    return x.to(torch.get_default_dtype())


# ---- 2-D toys (FFJORD's toy_data) --------------------------------------------------------------
def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 1.0) -> Tensor:
    """Swiss roll: angle s = 1.5 pi (1 + 2u), point (s cos s, s sin s) + N(0, noise^2), all / 5."""
    s = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    x = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1)
    return _out((x + noise * _randn(n, 2, generator=generator)) / 5)


def moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> Tensor:
    """Two interleaved half circles (scikit-learn's ``make_moons``), scaled by 2 and centred."""
    theta = math.pi * _rand(n, generator)
    lower = _rand(n, generator) < 0.5
    upper_arc = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    lower_arc = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    x = torch.where(lower[:, None], lower_arc, upper_arc) + noise * _randn(
        n, 2, generator=generator
    )
    return _out(2 * x + torch.tensor([-1.0, -0.2], dtype=torch.float64))


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 checkerboard of side 2 on [-4, 4]^2 (density 1/32)."""
    x1 = 4 * _rand(n, generator) - 2
    row = 2 * torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64)
    x2 = _rand(n, generator) - row + torch.floor(x1) % 2
    return _out(2 * torch.stack([x1, x2], dim=1))


# ---- Gaussian mixtures with exact densities -----------------------------------------------------
def _mixture_1d() -> GaussianMixture:
    # The Julia seed's target: two modes at -1 and +1 with std 0.2, equal weights.
    return GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [0.2**2, 0.2**2])


def _mixture_2d() -> GaussianMixture:
    # Three unequal, correlated components: a test density with a known entropy.
    return GaussianMixture(
        weights=[0.35, 0.40, 0.25],
        means=[[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]],
        covs=[
            [[0.30, 0.20], [0.20, 0.40]],
            [[0.50, -0.30], [-0.30, 0.40]],
            [[0.2, 0.0], [0.0, 0.2]],
        ],
    )


def _eight_gaussians() -> GaussianMixture:
    # FFJORD: centres 4 (cos, sin) of multiples of 45 degrees, std 0.5, everything divided by 1.414.
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = 4 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) / 1.414
    return GaussianMixture(torch.ones(8), means, torch.full((8,), (0.5 / 1.414) ** 2))


TOY_MIXTURES: dict[str, Callable[[], GaussianMixture]] = {
    "mixture_1d": _mixture_1d,
    "mixture_2d": _mixture_2d,
    "eight_gaussians": _eight_gaussians,
}


def _pick(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def toy_mixture(name: str) -> GaussianMixture:
    """The exact ``GaussianMixture`` (float64) behind a toy data set of ``TOY_MIXTURES``."""
    return _pick(TOY_MIXTURES, name, "toy mixture")()


def mixture_1d(n: int, generator: torch.Generator | None = None) -> Tensor:
    """The 1-D two-component mixture of the Julia seed, ``(n, 1)``."""
    return _out(_mixture_1d().sample(n, generator))


def mixture_2d(n: int, generator: torch.Generator | None = None) -> Tensor:
    """The 2-D three-component mixture ``toy_mixture("mixture_2d")``, ``(n, 2)``."""
    return _out(_mixture_2d().sample(n, generator))


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Eight Gaussians on a circle of radius 2.83 (FFJORD), ``(n, 2)``."""
    return _out(_eight_gaussians().sample(n, generator))


TOY: dict[str, Callable[..., Tensor]] = {
    "swissroll": swiss_roll,
    "moons": moons,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "mixture_1d": mixture_1d,
    "mixture_2d": mixture_2d,
}


# ---- a user's file ------------------------------------------------------------------------------
def _read_csv(path: Path) -> np.ndarray:
    """Numbers separated by commas; one optional header line of column names."""
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as first:
        try:
            return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)
        except ValueError:
            raise ValueError(f"{path}: not a numeric csv ({first})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric array, got dtype {getattr(a, 'dtype', a)}")
    return a


_READERS = {".npy": _read_npy, ".csv": _read_csv}


def load_array(path: str | Path) -> Tensor:
    """Read an ``(N, D)`` data set from ``.npy`` or ``.csv`` (a 1-D array is N points in 1-D).

    Raises ``ValueError`` with the file name for a missing file, another extension, a non-numeric
    csv, an array that is not (N,) or (N, D), fewer than 2 rows, or NaN / inf entries.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"{path}: unsupported data file type; use one of {', '.join(_READERS)} for vectors, "
            "or a folder of PNG/JPEG images or an .npz of images (x_train, x_test)"
        )
    if not path.is_file():
        raise ValueError(f"{path}: no such data file")
    a = reader(path)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{path}: expected an array of shape (N, D), got shape {a.shape}")
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise ValueError(f"{path}: need at least 2 rows and 1 column, got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{path}: {int(bad.sum())} NaN/inf entries (first in row {row})")
    return torch.from_numpy(a.astype(np.float64)).to(torch.get_default_dtype())


def split(
    x: Tensor, test_fraction: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random split into ``(train, test)`` with ``round(N * test_fraction)`` test rows."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    n = x.shape[0]
    n_test = round(n * test_fraction)
    if test_fraction > 0 and (n_test < 1 or n_test >= n):
        raise ValueError(f"cannot split {n} rows with test_fraction={test_fraction}")
    perm = torch.randperm(n, generator=generator).to(x.device)
    return x[perm[n_test:]], x[perm[:n_test]]


class Standardizer:
    """Affine map to model units ``y = (x - mean) / std``, statistics per feature."""

    def __init__(self, mean: Tensor, std: Tensor):
        mean, std = torch.as_tensor(mean), torch.as_tensor(std)
        if mean.shape != std.shape:
            raise ValueError(f"mean and std must have one shape, got {mean.shape}, {std.shape}")
        if not (std > 0).all() or not torch.isfinite(std).all():
            raise ValueError("std must be finite and > 0 in every feature (a constant column?)")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        """Mean and (unbiased) std of every feature of ``x`` ``(N, ...)``."""
        return cls(x.mean(dim=0), x.std(dim=0))

    def forward(self, x: Tensor) -> Tensor:
        """Data units -> model units."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, y: Tensor) -> Tensor:
        """Model units -> data units."""
        return y * self.std.to(y) + self.mean.to(y)

    def log_det(self) -> Tensor:
        """``log |dy/dx| = -sum log std`` (a scalar): ``log p_x(x) = log p_y(y) + log_det``."""
        return -torch.log(self.std).sum()

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only, safe for ``torch.load(weights_only=True)``."""
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> Standardizer:
        """Inverse of :meth:`state_dict`."""
        if not isinstance(state, dict) or set(state) != {"mean", "std"}:
            raise ValueError(f"a standardizer state needs keys mean and std, got {state!r}")
        return cls(state["mean"], state["std"])

    def __repr__(self) -> str:
        return f"Standardizer(mean={self.mean.tolist()}, std={self.std.tolist()})"


def load_data(cfg: DataConfig) -> tuple[Tensor, Tensor, Standardizer | None]:
    """Train and test tensors in data units, and a standardizer fitted on the train split.

    The standardizer is ``None`` if ``cfg.standardize`` is false; the trainer applies its
    ``forward``. ``cfg.path`` (a ``.npy`` / ``.csv`` file) wins over ``cfg.name``: its rows are
    split with ``cfg.test_fraction``. A toy set draws ``n_train + n_test`` points. Both use
    ``cfg.seed``. An image set (``scoresde.images.IMAGE_DATASETS``) gives the first ``n_train``
    / ``n_test`` images of its splits as uint8 ``(N, C, H, W)`` and no standardizer: the trainer
    dequantizes every batch into model space (:func:`images_to_model`). So does a ``cfg.path``
    that is an image folder or an ``.npz`` of images (:func:`is_image_path`), read at
    ``cfg.shape`` (:func:`load_image_path`); a folder without ``train/`` and ``test/``
    subfolders is split with ``cfg.test_fraction``.
    """
    from .images import IMAGE_DATASETS

    if cfg.path is None and cfg.name in IMAGE_DATASETS:
        return (*_load_image_splits(cfg), None)
    if cfg.path is not None and is_image_path(cfg.path):
        return (*_load_image_path_splits(cfg), None)
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.path is not None:
        train, test = split(load_array(cfg.path), cfg.test_fraction, g)
    else:
        x = _pick(TOY, cfg.name, "toy data set")(cfg.n_train + cfg.n_test, generator=g)
        train, test = x[: cfg.n_train], x[cfg.n_train :]
    return train, test, Standardizer.fit(train) if cfg.standardize else None


def _load_image_splits(cfg: DataConfig) -> tuple[Tensor, Tensor]:
    """The first ``n_train`` / ``n_test`` uint8 images of a set, checked against ``cfg.shape``."""
    from .images import check_images, load_images

    train, _ = load_images(cfg.name, "train", cfg.data_dir)
    test, _ = load_images(cfg.name, "test", cfg.data_dir)
    if cfg.shape is not None:
        check_images(train, cfg.shape)
    return train[: cfg.n_train], test[: cfg.n_test]


# ---- a user's images: a folder of PNG/JPEG files or an .npz ----------------------------------
def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` holds images (a folder, or an ``.npz`` archive) rather than vectors."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".npz"


def _image_shape(shape: list[int] | tuple[int, ...] | None, path: str | Path) -> tuple[int, ...]:
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"{path}: image data needs data.shape = [C, H, W] (an image preset sets it), "
            f"got {shape!r}"
        )
    return tuple(int(s) for s in shape)


def load_image_path(path: str | Path, shape: list[int] | tuple[int, ...], split: str) -> Tensor:
    """uint8 images ``(N, C, H, W)`` with ``(C, H, W) = shape`` from a folder or an ``.npz``.

    A folder: every PNG/JPEG under it (under its ``train/`` or ``test/`` subfolder if that
    exists), converted to C channels and resized to H x W. An ``.npz``: its ``x_<split>`` array,
    which must have the shape already (:func:`scoresde.images.load_image_npz`).
    """
    from .images import load_image_npz, load_images

    c, h, w = _image_shape(shape, path)
    p = Path(path)
    if p.is_dir():
        return load_images(p, split, size=(h, w), channels=c)[0]
    if p.suffix.lower() != ".npz":
        raise ValueError(f"{p}: images come as a folder of PNG/JPEG files or an .npz archive")
    if not p.is_file():
        raise ValueError(f"{p}: no such image file")
    return load_image_npz(p, split, (c, h, w))[0]


def _load_image_path_splits(cfg: DataConfig) -> tuple[Tensor, Tensor]:
    """Train / test images of ``cfg.path``: its own splits, else a seeded ``test_fraction`` cut."""
    p = Path(cfg.path)
    if p.is_dir() and not ((p / "train").is_dir() and (p / "test").is_dir()):
        x = load_image_path(p, cfg.shape, "train")
        train, test = split(x, cfg.test_fraction, torch.Generator().manual_seed(cfg.seed))
    else:
        train = load_image_path(p, cfg.shape, "train")
        test = load_image_path(p, cfg.shape, "test")
    return train[: cfg.n_train], test[: cfg.n_test]


def images_to_model(
    x: Tensor, cfg: DataConfig, generator: torch.Generator | None = None, flip: bool = False
) -> Tensor:
    """uint8 images -> model space ``scale * u + shift`` with ``u = (x + U[0,1)) / 256``.

    ``flip`` mirrors each image left-right with probability 1/2 first. All randomness comes
    from ``generator``; the result is float32 on ``x``'s device.
    """
    from .images import random_hflip
    from .transforms import dequantize

    if flip:
        x = random_hflip(x, generator)
    return dequantize(x.to(torch.float32), generator) * cfg.scale + cfg.shift
