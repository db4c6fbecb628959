"""Image readers: ``uint8`` tensors ``(N, C, H, W)`` from the files image data sets come in.

- an ``.npz`` holding ``x_train``, ``x_test`` (and optionally ``y_train``, ``y_test``), images as
  ``(N, H, W)`` (one channel) or ``(N, H, W, C)`` (:func:`load_image_npz`; pickles refused);
- IDX files of the MNIST family, plain or gzip (:func:`read_idx`);
- CIFAR-10 python batches, read by an unpickler that rebuilds numpy arrays and nothing else
  (:func:`read_cifar_batch`);
- a folder of PNG/JPEG images, converted and resized (:func:`load_image_folder`).

Every malformed file raises one :class:`DataError` naming it. Which files make up a named data
set, and where they are searched, is :mod:`scoresde.data.datasets`.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DataError",
    "DatasetNotFound",
    "SPLITS",
    "IDX_IMAGES",
    "IDX_LABELS",
    "read_idx",
    "load_image_npz",
    "read_cifar_batch",
    "IMAGE_SUFFIXES",
    "load_image_folder",
]

SPLITS = ("train", "test")


class DataError(ValueError):
    """A data file is unreadable or malformed, or images do not fit what is expected."""


class DatasetNotFound(DataError):
    """A named data set is in none of the places searched; the message lists them and the files."""


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# ---- arrays -> tensors -------------------------------------------------------------------------
def _to_tensors(
    x: np.ndarray, y: np.ndarray | None, shape: tuple[int, int, int], source: object
) -> tuple[Tensor, Tensor | None]:
    """Check uint8 images of ``shape`` (C, H, W) given as (N, H, W) or (N, H, W, C); labels (N,)."""
    if x.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8, got {x.dtype}")
    c, h, w = shape
    if x.shape[1:] not in ((h, w, c), (h, w) if c == 1 else None):
        raise DataError(
            f"{source}: images of shape {x.shape}, expected (N, {h}, {w}, {c}) for the preset's "
            f"(C, H, W) = {tuple(shape)}: use a preset for this data, or images of that shape"
        )
    x = x.reshape(len(x), h, w, c).transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x)
    xt = torch.from_numpy(x if x.flags.writeable else x.copy())
    if y is None:
        return xt, None
    y = np.asarray(y)
    if y.shape != (len(x),) or y.dtype.kind not in "iu":
        raise DataError(
            f"{source}: labels of shape {y.shape} ({y.dtype}), expected ({len(x)},) ints"
        )
    return xt, torch.from_numpy(y.astype(np.int64))


def load_image_npz(
    path: str | Path, split: str, shape: Sequence[int], labels: bool = False
) -> tuple[Tensor, Tensor | None]:
    """uint8 images ``(N, C, H, W)`` of ``shape`` (C, H, W) from ``x_<split>`` of an ``.npz``.

    The file holds ``x_train`` / ``x_test`` as ``(N, H, W)`` (one channel) or ``(N, H, W, C)``
    uint8, and optionally ``y_train`` / ``y_test`` integer labels (required if ``labels``);
    without them the labels are ``None``. Pickled objects are refused. An array of another
    shape raises one :class:`DataError` naming both shapes.
    """
    _check_split(split)
    path = Path(path)
    keys = (f"x_{split}", f"y_{split}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single array, not an .npz archive of x_train, x_test")
        with archive as d:
            need = keys if labels else keys[:1]
            missing = [k for k in need if k not in d.files]
            if missing:
                raise DataError(f"{path}: no array {missing} (holds {sorted(d.files)})")
            x = d[keys[0]]
            y = d[keys[1]] if keys[1] in d.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read {path}: {e}") from e
    return _to_tensors(x, y, tuple(shape), path)


# ---- MNIST family: IDX files -------------------------------------------------------------------
IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions (N, rows, cols)
IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension (N,)
_IDX_NDIM = {IDX_IMAGES: 3, IDX_LABELS: 1}


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # the gzip magic
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from e


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an IDX file (plain or gzip) whose header must carry ``magic``; ``uint8`` array.

    Header: the 4-byte big-endian magic (``0x00000803`` images, ``0x00000801`` labels), then one
    big-endian 4-byte size per dimension; the data must hold exactly their product in bytes.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    got = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if got != magic:
        found = "no magic" if got is None else f"IDX magic 0x{got:08x}"
        raise DataError(f"{path}: {found}, expected 0x{magic:08x}")
    ndim = _IDX_NDIM[magic]
    head = 4 * (1 + ndim)
    if len(data) < head:
        raise DataError(f"{path}: {len(data)} bytes, shorter than its IDX header ({head} bytes)")
    got, *dims = struct.unpack(f">{1 + ndim}I", data[:head])
    if len(data) - head != math.prod(dims):
        raise DataError(
            f"{path}: header sizes {tuple(dims)} need {math.prod(dims)} bytes of "
            f"data, the file holds {len(data) - head}"
        )
    return np.frombuffer(data, np.uint8, offset=head).reshape(dims)


def _idx_names(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_plain_or_gz(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


# ---- CIFAR-10: python pickles, read without running code ---------------------------------------
def _numpy_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 1.26
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for dicts, lists, bytes, str, ints and numpy arrays only.

    A pickle may name any importable callable and call it on load; this one resolves only the
    three names that rebuild an ndarray and refuses every other global.
    """

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(
            f"refused to load the global {module}.{name}: a CIFAR-10 batch holds only dicts, "
            "lists, bytes, str and numpy arrays, and a pickle that names other callables can run "
            "code on load"
        )


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (``(N, 3, 32, 32)`` uint8, ``(N,)`` int64), read safely."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e}") from e
    if not isinstance(d, dict):
        raise DataError(f"{path}: a CIFAR-10 batch is a dict, got {type(d).__name__}")
    data, labels = (np.asarray(d.get(k.encode(), d.get(k))) for k in ("data", "labels"))
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or labels.shape != (len(data),)
        or labels.dtype.kind not in "iu"
    ):
        raise DataError(f"{path}: expected b'data' (N, 3072) uint8 and N integer b'labels'")
    # each row: 1024 red, then 1024 green, then 1024 blue values, each plane row-major 32 x 32
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


# ---- image folders -----------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_MODES = {1: "L", 3: "RGB"}


def _read_image(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DataError(f"image {path} has {im.mode} pixels; only 8-bit images are read")
            im = im.convert(mode)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            return np.asarray(im)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def load_image_folder(path: str | Path, size: int | tuple[int, int], channels: int) -> Tensor:
    """Every PNG/JPEG under ``path`` (recursively, sorted paths) as ``(N, channels, H, W)`` uint8.

    Images are converted to grayscale (``channels=1``) or RGB (3; alpha dropped) and resized
    (bicubic, antialiased) to ``size`` (an int for square images, or ``(H, W)``).
    """
    if channels not in _MODES:
        raise ValueError(f"channels must be one of {sorted(_MODES)}, got {channels!r}")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetNotFound(f"no PNG/JPEG images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    x = np.stack([_read_image(f, (h, w), _MODES[channels]).reshape(h, w, channels) for f in files])
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
