"""Vector data: a user's ``.npy`` / ``.csv`` file, random splits and standardisation.

A :class:`Standardizer` maps data to model units, ``y = (x - mean) / std``; it is stored with the
model so that samples and likelihoods come back in data units:
``log p_x(x) = log p_y(y) + log_det``. This module knows no SDE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_array", "split", "Standardizer"]


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
    if np.iscomplexobj(a):
        raise ValueError(f"{path}: complex values ({a.dtype}); data must be real numbers")
    return a


_READERS = {".npy": _read_npy, ".csv": _read_csv}


def load_array(path: str | Path) -> Tensor:
    """Read an ``(N, D)`` data set from ``.npy`` or ``.csv`` (a 1-D array is N points in 1-D).

    Raises ``ValueError`` with the file name for a missing file, another extension, a non-numeric
    or non-UTF-8 csv, an array that is not (N,) or (N, D), fewer than 2 rows, complex values,
    NaN / inf entries, or values too large for the default dtype.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None and not path.exists():
        raise ValueError(f"{path}: no such data file or folder")
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
    x = torch.from_numpy(a.astype(np.float64)).to(torch.get_default_dtype())
    if not bool(torch.isfinite(x).all()):  # finite in float64, too large for the default dtype
        big = float(np.abs(a).max())
        raise ValueError(
            f"{path}: values overflow {x.dtype} (largest magnitude {big:.3g}); rescale the data"
        )
    return x


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
    def from_state_dict(
        cls, state: dict[str, Tensor], shape: tuple[int, ...] | list[int] | None = None
    ) -> Standardizer:
        """Inverse of :meth:`state_dict`; with ``shape``, the statistics must have that shape
        (the data's shape per example)."""
        if not isinstance(state, dict) or set(state) != {"mean", "std"}:
            keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"a standardizer state needs keys mean and std, got {keys}")
        if not all(isinstance(v, Tensor) and v.is_floating_point() for v in state.values()):
            raise ValueError("a standardizer's mean and std must be floating tensors")
        st = cls(state["mean"], state["std"])
        if shape is not None and tuple(st.mean.shape) != tuple(shape):
            raise ValueError(
                f"the standardizer has shape {tuple(st.mean.shape)} but the data have shape "
                f"{tuple(shape)} per example"
            )
        return st

    def __repr__(self) -> str:
        return f"Standardizer(mean={self.mean.tolist()}, std={self.std.tolist()})"
