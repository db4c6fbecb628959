"""Download of the named image data sets, only when asked, each file checked by its MD5.

MNIST and Fashion-MNIST come as gzip IDX files (the MD5 of the decompressed bytes is checked, so
re-gzipped mirrors are accepted), CIFAR-10 as the python-batches archive (its MD5 checked).
Without a network every attempt fails into one :class:`~scoresde.data.images.DataError` that says
which files to place where by hand.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..core.checks import lookup
from .datasets import CIFAR_BATCHES, CIFAR_FOLDER, IMAGE_DATASETS, data_roots
from .images import DataError, DatasetNotFound, _find_plain_or_gz, _read_maybe_gzip

__all__ = ["IDX_MD5", "CIFAR_ARCHIVE", "SOURCES", "download", "ensure_downloaded"]


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


TINTED_FROM = {"colour_digits": "digits", "colour_mnist": "mnist"}  # data/colour.py


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
    lookup(IMAGE_DATASETS, name, "data set", callables=False, sort=True)
    name = TINTED_FROM.get(name, name)  # a coloured set needs the files of its grey one
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
    lookup(IMAGE_DATASETS, name, "data set", callables=False, sort=True)
    roots = data_roots(data_dir)
    try:
        IMAGE_DATASETS[name].load("test", roots)
        return None
    except DatasetNotFound:
        pass
    return download(name, roots[0], sources=sources, timeout=timeout)
