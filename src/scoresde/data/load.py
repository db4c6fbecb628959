"""One entry point for a run's data, :func:`load_data`, and the reading of a user's images.

Vectors (a toy set or a user's ``.npy`` / ``.csv``) come back in data units with a fitted
:class:`~scoresde.data.arrays.Standardizer`; images (a named set, a folder of PNG/JPEG files or
an ``.npz``) as uint8 ``(N, C, H, W)`` that the trainer maps to model space batch by batch
(:func:`scoresde.data.transforms.images_to_model`). This module knows no SDE.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..core.checks import lookup
from .arrays import Standardizer, load_array, split
from .datasets import IMAGE_DATASETS, load_images
from .images import load_image_npz
from .spec import DataConfig
from .toy import TOY
from .transforms import check_images

__all__ = ["load_data", "is_image_path", "load_image_path"]


def load_data(cfg: DataConfig) -> tuple[Tensor, Tensor, Standardizer | None]:
    """Train and test tensors in data units, and a standardizer fitted on the train split.

    The standardizer is ``None`` if ``cfg.standardize`` is false; the trainer applies its
    ``forward``. ``cfg.path`` (a ``.npy`` / ``.csv`` file) wins over ``cfg.name``: its rows are
    split with ``cfg.test_fraction``. A toy set draws ``n_train + n_test`` points. Both use
    ``cfg.seed``. An image set (``scoresde.data.IMAGE_DATASETS``) gives the first ``n_train``
    / ``n_test`` images of its splits as uint8 ``(N, C, H, W)`` and no standardizer: the trainer
    dequantizes every batch into model space (:func:`images_to_model`). So does a ``cfg.path``
    that is an image folder or an ``.npz`` of images (:func:`is_image_path`), read at
    ``cfg.shape`` (:func:`load_image_path`); a folder without ``train/`` and ``test/``
    subfolders is split with ``cfg.test_fraction``.
    """
    if cfg.path is None and cfg.name in IMAGE_DATASETS:
        return (*_load_image_splits(cfg), None)
    if cfg.path is not None and is_image_path(cfg.path):
        return (*_load_image_path_splits(cfg), None)
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.path is not None:
        train, test = split(load_array(cfg.path), cfg.test_fraction, g)
    else:
        toy = lookup(TOY, cfg.name, "toy data set", callables=False, sort=True)
        x = toy(cfg.n_train + cfg.n_test, generator=g)
        train, test = x[: cfg.n_train], x[cfg.n_train :]
    if len(train) < 2:
        raise ValueError(
            f"{cfg.path or cfg.name}: the training split has {len(train)} row(s); training needs "
            "at least 2 (more rows, a smaller data.test_fraction or a larger data.n_train)"
        )
    return train, test, Standardizer.fit(train) if cfg.standardize else None


def _load_image_splits(cfg: DataConfig) -> tuple[Tensor, Tensor]:
    """The first ``n_train`` / ``n_test`` uint8 images of a set, checked against ``cfg.shape``."""
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
    which must have the shape already (:func:`scoresde.data.images.load_image_npz`).
    """
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
