"""Named image data sets (:data:`IMAGE_DATASETS`) and where they are found.

``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` are read from a data directory, ``"digits"``
(scikit-learn's 8x8 digits) from inside scikit-learn. Anything else given to :func:`load_images`
is a folder of PNG/JPEG images.

Where named data sets live (the first that applies gives the list of roots searched, in order):

1. the ``data_dir`` argument;
2. the ``SCORESDE_DATA`` environment variable (one directory, or several joined by ``os.pathsep``);
3. ``./data`` and ``../shared/data``, relative to the current directory.

In each root, the first complete set of files wins:

- ``mnist``: ``mnist.npz``; else the IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each plain
  or ``.gz``) in ``mnist/``, ``MNIST/raw/``, then the root itself;
- ``fashion_mnist``: ``fashion_mnist.npz``; else the same IDX names in ``fashion_mnist/``,
  ``fashion-mnist/``, ``FashionMNIST/raw/``, then the root itself (flat IDX files cannot say
  which of the two data sets they hold: keep them in the subfolders when both are present);
- ``cifar10``: ``cifar10.npz``; else the python batches ``cifar-10-batches-py/data_batch_1..5``
  and ``test_batch``.

An ``.npz`` holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` (``uint8``), images as
``(N, H, W)`` (one channel) or ``(N, H, W, C)``. Nothing is downloaded unless
:func:`scoresde.data.download.download` is called.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .colour import load_tinted
from .images import (
    IDX_IMAGES,
    IDX_LABELS,
    DataError,
    DatasetNotFound,
    _check_split,
    _find_plain_or_gz,
    _idx_names,
    _to_tensors,
    load_image_folder,
    load_image_npz,
    read_cifar_batch,
    read_idx,
)

__all__ = [
    "ImageDataset",
    "IMAGE_DATASETS",
    "ENV_VAR",
    "DEFAULT_DIRS",
    "CIFAR_FOLDER",
    "CIFAR_BATCHES",
    "data_roots",
    "load_images",
]

ENV_VAR = "SCORESDE_DATA"
DEFAULT_DIRS = ("data", os.path.join("..", "shared", "data"))


# ---- where named data sets live --------------------------------------------------------------
def data_roots(data_dir: str | Path | None = None) -> list[Path]:
    """Roots searched for named data sets: ``data_dir``, else ``$SCORESDE_DATA``, else defaults.

    ``$SCORESDE_DATA`` may hold several directories joined by ``os.pathsep``; the defaults
    (:data:`DEFAULT_DIRS`) are taken relative to the current directory.
    """
    if data_dir is not None:
        return [Path(data_dir)]
    env = os.environ.get(ENV_VAR, "")
    if env.strip():
        return [Path(p) for p in env.split(os.pathsep) if p.strip()]
    return [Path(os.path.abspath(d)) for d in DEFAULT_DIRS]


def _not_found(name: str, roots: Sequence[Path], needs: str) -> DatasetNotFound:
    """One line (a command line shows only the first): where it looked, what it needs, what next."""
    where = ", ".join(f"{r}{'' if r.is_dir() else ' (does not exist)'}" for r in roots)
    return DatasetNotFound(
        f"data set {name!r} not found; looked in {where}. It needs {needs}. "
        f"Point data_dir (--data-dir) or ${ENV_VAR} at a directory holding them, "
        f"or try download({name!r}, DIR) (--download) where there is a network."
    )


def _load_npz(path: Path, split: str, shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Read ``x_<split>``, ``y_<split>`` from a named set's ``.npz`` (labels required)."""
    x, y = load_image_npz(path, split, shape, labels=True)
    return x, y


def _load_mnist_family(
    split: str, roots: Sequence[Path], *, name: str, subdirs: tuple[str, ...]
) -> tuple[Tensor, Tensor]:
    """``<name>.npz`` in a root, else the four IDX files in ``subdirs`` of it ("" = the root)."""
    shape = IMAGE_DATASETS[name].shape
    for root in roots:
        if (root / f"{name}.npz").is_file():
            return _load_npz(root / f"{name}.npz", split, shape)
        for sub in subdirs:
            images, labels = (_find_plain_or_gz(root / sub, n) for n in _idx_names(split))
            if images is not None and labels is not None:
                x, y = read_idx(images, IDX_IMAGES), read_idx(labels, IDX_LABELS)
                if len(x) != len(y):
                    raise DataError(f"{images} holds {len(x)} images but {labels} {len(y)} labels")
                return _to_tensors(x, y, shape, images)
    raise _not_found(name, roots, IMAGE_DATASETS[name].needs)


CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_FOLDER = "cifar-10-batches-py"


def _load_cifar10(split: str, roots: Sequence[Path]) -> tuple[Tensor, Tensor]:
    """``cifar10.npz`` (HWC images) in a root, else the python batches ``cifar-10-batches-py/``."""
    shape = IMAGE_DATASETS["cifar10"].shape
    for root in roots:
        if (root / "cifar10.npz").is_file():
            return _load_npz(root / "cifar10.npz", split, shape)
        files = [root / CIFAR_FOLDER / b for b in CIFAR_BATCHES[split]]
        if all(f.is_file() for f in files):
            parts = [read_cifar_batch(f) for f in files]
            x = np.concatenate([p[0] for p in parts])
            return torch.from_numpy(x), torch.from_numpy(np.concatenate([p[1] for p in parts]))
    raise _not_found("cifar10", roots, IMAGE_DATASETS["cifar10"].needs)


# ---- scikit-learn's 8x8 digits -----------------------------------------------------------------
DIGITS_TEST = 297  # the last 297 of the 1,797 images are the test split, the first 1,500 train


def _load_digits(split: str, roots: Sequence[Path]) -> tuple[Tensor, Tensor]:
    """The 8x8 digits (values 0..16) as uint8 round(v * 255 / 16); no file outside scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetNotFound(
            "the 8x8 digits ship inside scikit-learn, which is not installed: "
            "pip install 'scoresde[data]'"
        ) from e
    d = load_digits()
    x = np.rint(d.images * (255 / 16)).astype(np.uint8)  # 255/16 and v * 15.9375 are exact
    cut = len(x) - DIGITS_TEST
    part = slice(0, cut) if split == "train" else slice(cut, None)
    return _to_tensors(x[part], d.target[part], (1, 8, 8), "sklearn digits")


# ---- the name table ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageDataset:
    """A named image data set: image shape (C, H, W), class count, loader, files it needs."""

    shape: tuple[int, int, int]
    num_classes: int
    load: Callable[[str, Sequence[Path]], tuple[Tensor, Tensor]]
    needs: str


def _mnist_needs(name: str, subdirs: tuple[str, ...]) -> str:
    where = ", ".join(f"{s}/" if s else "the directory itself" for s in subdirs)
    return (
        f"{name}.npz (x_train, y_train, x_test, y_test), or the IDX files "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        f"t10k-labels-idx1-ubyte (plain or .gz) in {where}"
    )


_MNIST_DIRS = ("mnist", os.path.join("MNIST", "raw"), "")
_FASHION_DIRS = ("fashion_mnist", "fashion-mnist", os.path.join("FashionMNIST", "raw"), "")

IMAGE_DATASETS: dict[str, ImageDataset] = {
    "mnist": ImageDataset(
        (1, 28, 28),
        10,
        partial(_load_mnist_family, name="mnist", subdirs=_MNIST_DIRS),
        _mnist_needs("mnist", _MNIST_DIRS),
    ),
    "fashion_mnist": ImageDataset(
        (1, 28, 28),
        10,
        partial(_load_mnist_family, name="fashion_mnist", subdirs=_FASHION_DIRS),
        _mnist_needs("fashion_mnist", _FASHION_DIRS),
    ),
    "cifar10": ImageDataset(
        (3, 32, 32),
        10,
        _load_cifar10,
        "cifar10.npz (x_train (N, 32, 32, 3), y_train, x_test, y_test), or "
        f"{CIFAR_FOLDER}/ with data_batch_1 .. data_batch_5 and test_batch",
    ),
    "digits": ImageDataset((1, 8, 8), 10, _load_digits, "scikit-learn (pip install scikit-learn)"),
    # the digits tinted with random ink and background colours (data/colour.py): colorization
    "colour_digits": ImageDataset(
        (3, 8, 8), 10, partial(load_tinted, base=_load_digits), "scikit-learn (8x8 digits)"
    ),
}
IMAGE_DATASETS["colour_mnist"] = ImageDataset(
    (3, 28, 28),
    10,
    partial(load_tinted, base=IMAGE_DATASETS["mnist"].load),
    IMAGE_DATASETS["mnist"].needs,
)


# ---- the entry point ---------------------------------------------------------------------------
def load_images(
    name_or_path: str | Path,
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64 (``None`` for a folder).

    ``name_or_path``: a name in :data:`IMAGE_DATASETS` (searched as the module docstring says)
    or a folder of PNG/JPEG images, read with :func:`load_image_folder` (``size`` and
    ``channels`` required); a folder with a ``train/`` or ``test/`` subfolder reads the one
    named by ``split``, else the whole folder for either split.
    """
    _check_split(split)
    if isinstance(name_or_path, str) and name_or_path in IMAGE_DATASETS:
        return IMAGE_DATASETS[name_or_path].load(split, data_roots(data_dir))
    folder = Path(name_or_path)
    if not folder.is_dir():
        raise DatasetNotFound(
            f"{str(name_or_path)!r} is neither a data set name {sorted(IMAGE_DATASETS)} "
            "nor a folder of PNG/JPEG images"
        )
    if size is None or channels is None:
        raise ValueError(f"an image folder ({folder}) needs size and channels (the preset's)")
    if (folder / split).is_dir():
        folder = folder / split
    return load_image_folder(folder, size, channels), None
