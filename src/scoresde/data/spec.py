"""What data a run uses: the ``data`` section of a configuration, a plain dataclass.

It lives here, beside the loaders that read it, so that the data layer needs nothing from the
training layer; ``scoresde.training.config`` builds its :class:`~scoresde.training.config.Config`
from it and re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """A toy set by ``name`` (``scoresde.data.TOY``), an image set by ``name``
    (``scoresde.data.IMAGE_DATASETS``) or a user's ``.npy`` / ``.csv`` at ``path``.

    A ``path`` wins over a ``name`` (validation sets ``name`` to ``"file"``); ``n_train`` and
    ``n_test`` size toy sets and take the first images of each image split, ``test_fraction``
    splits a file; ``shape`` is filled in from the data (a preset that sets it rejects data of
    another shape). Images: ``data_dir`` says where named sets live, ``centered`` picks model space
    [-1, 1] instead of [0, 1], ``flip`` mirrors training images at random; ``scale`` and ``shift``
    (model space ``y = scale * u + shift``, ``u`` in [0, 1]) are derived from ``centered``, and
    ``standardize`` is turned off.
    """

    name: str = "swissroll"
    path: str | None = None
    n_train: int = 10000
    n_test: int = 2000
    test_fraction: float = 0.1
    standardize: bool = True
    seed: int = 0
    shape: list[int] | None = None
    data_dir: str | None = None
    centered: bool = False
    flip: bool = False
    scale: float | None = None
    shift: float | None = None
