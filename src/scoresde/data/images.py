"""Image data sets as ``uint8`` tensors ``(N, C, H, W)``, and the maps to and from model space.

Named data sets (:data:`IMAGE_DATASETS`): ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` read
from a data directory, and ``"digits"`` (scikit-learn's 8x8 digits, shipped inside scikit-learn).
Anything else given to :func:`load_images` is a folder of PNG/JPEG images.

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
``(N, H, W)`` (one channel) or ``(N, H, W, C)``. Nothing is downloaded unless :func:`download` is
called. Model space: ``y = scale * u + shift`` with ``u`` in [0, 1] (:data:`SCALING`). This module
knows no SDE.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import struct
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .transforms import dequantize

__all__ = [
    "DataError",
    "DatasetNotFound",
    "ImageDataset",
    "IMAGE_DATASETS",
    "ENV_VAR",
    "DEFAULT_DIRS",
    "data_roots",
    "load_images",
    "load_image_folder",
    "read_idx",
    "load_image_npz",
    "read_cifar_batch",
    "download",
    "ensure_downloaded",
    "SCALING",
    "to_float",
    "from_model",
    "random_hflip",
    "dequantize",
    "check_images",
    "ImageBatches",
]

ENV_VAR = "SCORESDE_DATA"
DEFAULT_DIRS = ("data", os.path.join("..", "shared", "data"))
SPLITS = ("train", "test")


class DataError(ValueError):
    """A data file is unreadable or malformed, or images do not fit what is expected."""


class DatasetNotFound(DataError):
    """A named data set is in none of the places searched; the message lists them and the files."""


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


def _load_npz(path: Path, split: str, shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Read ``x_<split>``, ``y_<split>`` from a named set's ``.npz`` (labels required)."""
    x, y = load_image_npz(path, split, shape, labels=True)
    return x, y


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
}


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


# ---- download (only when asked) ----------------------------------------------------------------
# MD5 of the decompressed official IDX files (checked against ../shared/data/README.md and against
# the bytes rebuilt from its .npz files in the tests), so re-gzipped mirrors are accepted too.
IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
CIFAR_ARCHIVE = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
SOURCES = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}


def _fetch(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest`` (through a ``.part`` file); return the MD5 of the bytes."""
    part = dest.with_name(dest.name + ".part")
    md5 = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                md5.update(chunk)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return md5.hexdigest()


def _download_idx(name: str, folder: Path, sources: Sequence[str], timeout: float) -> list[str]:
    failures = []
    for file, want in IDX_MD5[name].items():
        if _find_plain_or_gz(folder, file) is not None:
            continue
        dest = folder / f"{file}.gz"
        for base in sources:
            try:
                _fetch(base + f"{file}.gz", dest, timeout)
                got = hashlib.md5(_read_maybe_gzip(dest)).hexdigest()
            except (OSError, DataError) as e:  # urllib.error.URLError and timeouts are OSErrors
                failures.append(f"{base}{file}.gz: {e}")
                continue
            if got == want:
                break
            dest.unlink()
            failures.append(f"{base}{file}.gz: MD5 {got} of the IDX data, expected {want}")
        else:
            return failures
    return []


def _download_cifar(folder: Path, sources: Sequence[str], timeout: float) -> list[str]:
    if all((folder / CIFAR_FOLDER / b).is_file() for b in sum(CIFAR_BATCHES.values(), ())):
        return []
    archive, want = CIFAR_ARCHIVE
    failures = []
    for base in sources:
        try:
            got = _fetch(base + archive, folder / archive, timeout)
        except OSError as e:
            failures.append(f"{base}{archive}: {e}")
            continue
        try:
            if got != want:
                failures.append(f"{base}{archive}: MD5 {got}, expected {want}")
                continue
            with tarfile.open(folder / archive) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith(CIFAR_FOLDER + "/")]
                tar.extractall(folder, members=members, filter="data")
            return []
        finally:
            (folder / archive).unlink(missing_ok=True)
    return failures


def download(
    name: str, data_dir: str | Path, *, sources: Sequence[str] | None = None, timeout: float = 10.0
) -> Path:
    """Fetch a named data set from its official sources into ``data_dir``; return that directory.

    MNIST goes to ``data_dir/mnist/``, Fashion-MNIST to ``data_dir/fashion_mnist/`` (gzip IDX
    files, each checked by the MD5 of its decompressed bytes), CIFAR-10 to
    ``data_dir/cifar-10-batches-py/`` (archive MD5 checked); files already there are kept.
    ``sources`` replaces the base URLs tried in turn (:data:`SOURCES`). ``digits`` needs nothing.
    Without a network this raises one :class:`DataError`: its first line says so and which files
    to place where by hand, the next lines list each attempt.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(IMAGE_DATASETS)}")
    root = Path(data_dir)
    if name == "digits":
        return root
    sources = tuple(SOURCES[name] if sources is None else sources)
    folder = root / name if name in IDX_MD5 else root
    folder.mkdir(parents=True, exist_ok=True)
    if name in IDX_MD5:
        failures = _download_idx(name, folder, sources, timeout)
    else:
        failures = _download_cifar(folder, sources, timeout)
    if failures:
        raise DataError(
            f"could not download {name!r} (no network, or its sources are unreachable): place "
            f"{IMAGE_DATASETS[name].needs} in {root} by hand instead.\nTried:\n  "
            + "\n  ".join(failures)
        )
    return root


def ensure_downloaded(
    name: str,
    data_dir: str | Path | None = None,
    *,
    sources: Sequence[str] | None = None,
    timeout: float = 10.0,
) -> Path | None:
    """Download a named set unless it is found already; the folder written to, or ``None``.

    The set is looked for as :func:`load_images` would (``data_dir``, else ``$SCORESDE_DATA``,
    else the defaults); if absent, :func:`download` fetches it into ``data_dir``, else into the
    first of those roots, where :func:`load_images` then finds it.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(IMAGE_DATASETS)}")
    roots = data_roots(data_dir)
    try:
        IMAGE_DATASETS[name].load("test", roots)
        return None
    except DatasetNotFound:
        pass
    return download(name, roots[0], sources=sources, timeout=timeout)


# ---- model space -------------------------------------------------------------------------------
SCALING = {False: (1.0, 0.0), True: (2.0, -1.0)}
"""``centered -> (scale, shift)``: model space ``y = scale * u + shift``, ``u`` in [0, 1]."""


def to_float(x: Tensor, centered: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images -> model space: ``u = x / 255`` in [0, 1], then ``scale * u + shift``."""
    if x.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {x.dtype}")
    scale, shift = SCALING[bool(centered)]
    return x.to(dtype) / 255 * scale + shift


def from_model(y: Tensor, centered: bool = False) -> Tensor:
    """Model space -> uint8: ``u = (y - shift) / scale``, pixel ``floor(256 u)`` clipped to 0..255.

    ``floor(256 u)`` is the dequantization cell ``[k/256, (k+1)/256)`` that holds ``u``. Since
    ``k/255`` lies in cell ``k`` at least 1/65280 from its edges (255/255 = 1 is clipped to 255),
    far beyond float32 round-off, this inverts :func:`to_float` exactly, centered or not. It
    inverts :func:`dequantize` exactly for ``centered=False``; centered, ``2u - 1`` may round a
    draw at a cell's upper edge onto the edge.
    """
    scale, shift = SCALING[bool(centered)]
    u = (y.to(torch.promote_types(y.dtype, torch.float32)) - shift) / scale
    return torch.floor(u * 256).clamp(0, 255).to(torch.uint8)


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image of ``x`` (B, ..., W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


def check_images(x: Tensor, shape: Sequence[int]) -> None:
    """Raise a :class:`DataError` unless ``x`` is (N, C, H, W) with (C, H, W) == ``shape``."""
    got = tuple(x.shape[1:]) if x.ndim == 4 else tuple(x.shape)
    want = tuple(shape)
    if got != want:
        raise DataError(
            f"images of shape (C, H, W) = {got}, but the preset expects {want}: use images of "
            f"{want[1]}x{want[2]} pixels with {want[0]} channel(s) (an image folder is resized "
            "and converted to the preset's size and channels), or a preset for this data"
        )


class ImageBatches:
    """Endless shuffled batches of uint8 images, flipped and dequantized on the fly.

    Every epoch draws a permutation from the batches' own generator and cuts it into full
    batches of ``batch_size`` (the last ``N mod batch_size`` images of that epoch are skipped).
    A batch is mapped to model space ``scale * u + shift`` (:data:`SCALING`) with
    ``u = (x + U) / 256`` (``dequantize=True``) or ``u = x / 255``; it is float32 on the images'
    device. ``state_dict()`` / ``load_state_dict()`` resume the exact same stream.
    """

    def __init__(
        self,
        x: Tensor,
        batch_size: int,
        labels: Tensor | None = None,
        *,
        centered: bool = False,
        flip: bool = False,
        dequantize: bool = True,
        seed: int = 0,
    ):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if not 1 <= batch_size <= len(x):
            raise ValueError(
                f"batch_size must be in [1, {len(x)}] (the image count), got {batch_size}"
            )
        if labels is not None and labels.shape != (len(x),):
            raise ValueError(f"labels must have shape ({len(x)},), got {tuple(labels.shape)}")
        self.x, self.labels, self.batch_size = x, labels, batch_size
        self.centered, self.flip, self.dequantize = bool(centered), flip, dequantize
        self.generator = torch.Generator(device=x.device).manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long, device=x.device)
        self.pos, self.epoch = 0, 0

    def __iter__(self) -> ImageBatches:
        return self

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.x) // self.batch_size

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        if self.pos + self.batch_size > len(self.perm):
            self.perm = torch.randperm(len(self.x), generator=self.generator, device=self.x.device)
            self.pos, self.epoch = 0, self.epoch + 1
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        xb = self.x[idx]
        if self.flip:
            xb = random_hflip(xb, self.generator)
        if self.dequantize:
            scale, shift = SCALING[self.centered]
            y = dequantize(xb.to(torch.float32), self.generator) * scale + shift
        else:
            y = to_float(xb, self.centered)
        return y, None if self.labels is None else self.labels[idx]

    def state_dict(self) -> dict:
        """Generator state, the current permutation, the position in it and the epoch count."""
        return {
            "generator": self.generator.get_state(),
            "perm": self.perm.cpu(),
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; the next batch is the one that would have come."""
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].to(self.x.device)
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])
