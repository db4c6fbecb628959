"""Image data: every source (npz, IDX, CIFAR pickles, digits, folders), errors, scaling, batches."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from conftest import DATA, require
from PIL import Image

import scoresde as sd
from scoresde import data as im
from scoresde.data.transforms import dequantize as likelihood_dequantize

# Class counts and first labels from ../shared/data/README.md.
MNIST_FAMILY = {
    "mnist": dict(
        first_train=[5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
        first_test=[7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
        train_counts=[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        test_counts=[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
        train_mean=33.318,
    ),
    "fashion_mnist": dict(
        first_train=[9, 0, 0, 3, 0, 2, 7, 2, 5, 5],
        first_test=None,
        train_counts=[6000] * 10,
        test_counts=[1000] * 10,
        train_mean=72.940,
    ),
}


@functools.cache
def _npz_arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(require(DATA / f"{name}.npz")) as d:
        return {k: d[k] for k in d.files}


# ---- MNIST family ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MNIST_FAMILY))
def test_mnist_family_from_npz(name):
    ref = MNIST_FAMILY[name]
    require(DATA / f"{name}.npz")
    x, y = im.load_images(name, "train", data_dir=DATA)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert y[:10].tolist() == ref["first_train"]
    assert torch.bincount(y, minlength=10).tolist() == ref["train_counts"]
    # The README gives the train pixel mean to 3 decimals: it must agree to half a unit of that.
    assert abs(x.double().mean().item() - ref["train_mean"]) <= 5e-4
    xt, yt = im.load_images(name, "test", data_dir=DATA)
    assert xt.shape == (10000, 1, 28, 28)
    assert torch.bincount(yt, minlength=10).tolist() == ref["test_counts"]
    if ref["first_test"] is not None:
        assert yt[:10].tolist() == ref["first_test"]


def _idx_bytes(x: np.ndarray, y: np.ndarray) -> tuple[bytes, bytes]:
    """IDX files as the official format defines them: big-endian magic and sizes, then bytes."""
    images = struct.pack(">IIII", 0x00000803, *x.shape) + x.tobytes()
    labels = struct.pack(">II", 0x00000801, len(y)) + y.tobytes()
    return images, labels


@pytest.mark.parametrize("name", sorted(MNIST_FAMILY))
def test_idx_md5_table_matches_the_npz(name):
    # The download checks rely on these MD5s; the npz rebuilds the official raw files exactly.
    d = _npz_arrays(name)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _idx_bytes(d[f"x_{split}"], d[f"y_{split}"])
        assert hashlib.md5(images).hexdigest() == im.IDX_MD5[name][f"{prefix}-images-idx3-ubyte"]
        assert hashlib.md5(labels).hexdigest() == im.IDX_MD5[name][f"{prefix}-labels-idx1-ubyte"]


@pytest.mark.parametrize(
    "name, sub, gz",
    [
        ("mnist", "mnist", True),
        ("mnist", "", False),
        ("fashion_mnist", "fashion-mnist", True),
        ("fashion_mnist", "fashion_mnist", False),
        ("fashion_mnist", "", True),
    ],
)
def test_mnist_family_from_idx_files(tmp_path, name, sub, gz):
    d = _npz_arrays(name)
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    images, labels = _idx_bytes(d["x_test"], d["y_test"])
    for fname, data in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if gz:
            (folder / f"{fname}.gz").write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (folder / fname).write_bytes(data)
    x, y = im.load_images(name, "test", data_dir=tmp_path)
    assert torch.equal(x, torch.from_numpy(d["x_test"])[:, None])
    assert torch.equal(y, torch.from_numpy(d["y_test"]).long())
    with pytest.raises(im.DatasetNotFound):  # the train files are not there
        im.load_images(name, "train", data_dir=tmp_path)


def test_idx_header_errors(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    images, labels = _idx_bytes(x, np.array([1, 2], dtype=np.uint8))
    good = tmp_path / "good"
    good.write_bytes(images)
    assert np.array_equal(im.read_idx(good, im.IDX_IMAGES), x)
    (tmp_path / "swapped").write_bytes(labels)
    with pytest.raises(im.DataError, match="magic 0x00000801, expected 0x00000803"):
        im.read_idx(tmp_path / "swapped", im.IDX_IMAGES)
    (tmp_path / "short").write_bytes(images[:-1])
    with pytest.raises(im.DataError, match=r"sizes \(2, 3, 4\) need 24 bytes.*holds 23"):
        im.read_idx(tmp_path / "short", im.IDX_IMAGES)
    (tmp_path / "tiny").write_bytes(images[:6])
    with pytest.raises(im.DataError, match="shorter than its IDX header"):
        im.read_idx(tmp_path / "tiny", im.IDX_IMAGES)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(images)[:20])
    with pytest.raises(im.DataError, match="corrupt gzip"):
        im.read_idx(tmp_path / "bad.gz", im.IDX_IMAGES)
    # images and labels of different counts
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(x, np.zeros(3, np.uint8))[1])
    with pytest.raises(im.DataError, match="holds 2 images but .* 3 labels"):
        im.load_images("mnist", "test", data_dir=tmp_path)


# ---- CIFAR-10 ----------------------------------------------------------------------------------
def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the official (Python 2) CIFAR-10 files are, opcode by opcode.

    Protocol 2, str as SHORT_BINSTRING/BINSTRING, the array rebuilt by
    numpy.core.multiarray._reconstruct(ndarray, (0,), 'b') with dtype('u1', 0, 1) in its state.
    """

    def s(b: bytes) -> bytes:  # SHORT_BINSTRING or BINSTRING
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b

    def i4(v: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", v)

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + i4(0)
        + b"\x85"
        + s(b"b")
        + b"\x87R("  # TUPLE3 REDUCE MARK
        + i4(1)
        + i4(data.shape[0])
        + i4(data.shape[1])
        + b"\x86"  # version, shape
        + b"cnumpy\ndtype\n"
        + s(b"u1")
        + i4(0)
        + i4(1)
        + b"\x87R"
        + b"("
        + i4(3)
        + s(b"|")
        + b"NNN"
        + i4(-1)
        + i4(-1)
        + i4(0)
        + b"tb"  # dtype state
        + b"\x89"
        + s(data.tobytes())
        + b"tb"  # not Fortran order, raw bytes; TUPLE BUILD
    )
    label_list = b"](" + b"".join(i4(v) for v in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + label_list + b"u."


def _write_cifar_batches(folder, x_hwc: np.ndarray, y: np.ndarray, writer) -> None:
    """Split 12 images into data_batch_1..5 (2 each) and test_batch (2), rows R, G, B planes."""
    rows = x_hwc.transpose(0, 3, 1, 2).reshape(len(x_hwc), 3072)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, fname in enumerate(names):
        part = slice(2 * k, 2 * k + 2)
        (folder / fname).write_bytes(writer(rows[part], y[part].tolist()))


def _py3_batch(data, labels):
    return pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": labels}, protocol=4)


@pytest.mark.parametrize("writer", [_py2_batch, _py3_batch], ids=["python2", "python3"])
def test_cifar10_pickles_match_npz(tmp_path, writer):
    g = np.random.default_rng(0)
    x = g.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    y = g.integers(0, 10, size=12).astype(np.uint8)
    _write_cifar_batches(tmp_path / "p" / "cifar-10-batches-py", x, y, writer)
    np.savez(tmp_path / "cifar10.npz", x_train=x[:10], y_train=y[:10], x_test=x[10:], y_test=y[10:])
    for split, part in (("train", slice(0, 10)), ("test", slice(10, 12))):
        xp, yp = im.load_images("cifar10", split, data_dir=tmp_path / "p")
        xn, yn = im.load_images("cifar10", split, data_dir=tmp_path)
        want = torch.from_numpy(x[part]).permute(0, 3, 1, 2)  # HWC -> CHW
        assert xp.shape == (part.stop - part.start, 3, 32, 32) and xp.dtype == torch.uint8
        assert torch.equal(xp, want) and torch.equal(xn, want)
        assert torch.equal(yp, torch.from_numpy(y[part]).long()) and torch.equal(yp, yn)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=4))
    with pytest.raises(im.DataError, match=r"data_batch_1.*refused to load the global .*system"):
        im.read_cifar_batch(path)
    assert not marker.exists()
    path.write_bytes(b"\x80\x02}q\x00.")  # a dict without data
    with pytest.raises(im.DataError, match=r"expected b'data' \(N, 3072\) uint8"):
        im.read_cifar_batch(path)


# ---- digits ------------------------------------------------------------------------------------
def test_sklearn_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = im.load_images("digits", "train")
    xt, yt = im.load_images("digits", "test")
    assert x.shape == (1500, 1, 8, 8) and xt.shape == (297, 1, 8, 8) and x.dtype == torch.uint8
    v = torch.from_numpy(d.images).round().long()  # integers 0..16
    both = torch.cat([x, xt])[:, 0].long()
    assert torch.equal(both, torch.round(v * 255 / 16).long())  # the stated map
    assert torch.equal(torch.round(both * 16 / 255).long(), v)  # and it loses nothing
    assert both.min() == 0 and both.max() == 255
    assert torch.equal(torch.cat([y, yt]), torch.from_numpy(d.target).long())


# ---- image folders -----------------------------------------------------------------------------
def _save(path, array, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def test_image_folder(tmp_path):
    g = np.random.default_rng(1)
    gray8 = g.integers(0, 256, size=(8, 8), dtype=np.uint8)
    rgb8 = g.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    _save(tmp_path / "a_gray.png", gray8, "PNG")
    _save(tmp_path / "b_rgb.png", rgb8, "PNG")
    _save(tmp_path / "sub" / "c_big.jpg", np.full((20, 12, 3), (200, 40, 90), np.uint8), "JPEG")
    _save(tmp_path / "sub" / "d_big.JPEG", np.full((16, 16), 77, np.uint8), "JPEG")
    rgba = np.concatenate([rgb8, g.integers(0, 256, size=(8, 8, 1), dtype=np.uint8)], axis=2)
    _save(tmp_path / "sub" / "e_rgba.png", rgba, "PNG")
    (tmp_path / "notes.txt").write_text("not an image")

    x3 = im.load_image_folder(tmp_path, 8, 3)
    x1 = im.load_image_folder(tmp_path, 8, 1)
    assert x3.shape == (5, 3, 8, 8) and x1.shape == (5, 1, 8, 8) and x3.dtype == torch.uint8
    # RGBA: the alpha channel is dropped, the colours kept as they are (no compositing).
    assert torch.equal(x3[4], torch.from_numpy(rgb8).permute(2, 0, 1))
    # Lossless 8x8 PNGs are read exactly, in sorted path order.
    assert torch.equal(x1[0, 0], torch.from_numpy(gray8))
    assert torch.equal(x3[0], torch.from_numpy(gray8)[None].expand(3, 8, 8))
    assert torch.equal(x3[1], torch.from_numpy(rgb8).permute(2, 0, 1))
    # RGB -> L is ITU-R 601-2 luma, L = (299 R + 587 G + 114 B) / 1000, rounded (+-1 for rounding).
    luma = (rgb8.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).round()
    assert np.abs(x1[1, 0].numpy().astype(np.float64) - luma).max() <= 1
    # Resized constant images stay constant; baseline JPEG at quality 95 reproduces a flat
    # colour to within 2 levels (DC quantisation step <= 2 plus YCbCr rounding).
    assert (x3[2].double() - torch.tensor([200.0, 40.0, 90.0])[:, None, None]).abs().max() <= 2
    assert (x1[3].double() - 77).abs().max() <= 2
    # load_images reads folders too, and a train/ subfolder when there is one.
    (tmp_path / "sub" / "e_rgba.png").unlink()
    xa, ya = im.load_images(str(tmp_path), "test", size=(8, 8), channels=3)
    x3 = x3[:4]
    assert ya is None and torch.equal(xa, x3)
    _save(tmp_path / "train" / "e.png", rgb8, "PNG")
    xs, _ = im.load_images(tmp_path, "train", size=8, channels=3)
    assert torch.equal(xs, torch.from_numpy(rgb8).permute(2, 0, 1)[None])
    with pytest.raises(ValueError, match="needs size and channels"):
        im.load_images(tmp_path)
    with pytest.raises(ValueError, match="channels must be one of"):
        im.load_image_folder(tmp_path, 8, 2)


def test_corrupt_and_missing_images(tmp_path):
    _save(tmp_path / "a.png", np.zeros((8, 8), np.uint8), "PNG")
    (tmp_path / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(im.DataError, match=r"cannot read image .*b\.png"):
        im.load_image_folder(tmp_path, 8, 1)
    (tmp_path / "b.png").unlink()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(buf, format="JPEG")
    (tmp_path / "c.jpg").write_bytes(buf.getvalue()[:200])  # truncated
    with pytest.raises(im.DataError, match=r"cannot read image .*c\.jpg"):
        im.load_image_folder(tmp_path, 8, 1)
    with pytest.raises(im.DatasetNotFound, match="no PNG/JPEG images"):
        im.load_image_folder(tmp_path / "empty_dir_that_is_missing", 8, 1)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(im.DatasetNotFound, match=r"no PNG/JPEG images .* under .*empty"):
        im.load_images(tmp_path / "empty", size=8, channels=1)


# ---- a user's .npz ----------------------------------------------------------------------------
def test_image_npz_with_and_without_labels(tmp_path):
    g = np.random.default_rng(2)
    x = g.integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x, x_test=x[:2], y_test=np.arange(2))
    xt, yt = im.load_image_npz(tmp_path / "a.npz", "train", (1, 6, 6))
    assert torch.equal(xt[:, 0], torch.from_numpy(x)) and yt is None
    xs, ys = im.load_image_npz(tmp_path / "a.npz", "test", (1, 6, 6), labels=True)
    assert xs.shape == (2, 1, 6, 6) and ys.tolist() == [0, 1]
    with pytest.raises(im.DataError, match=r"no array \['y_train'\]"):
        im.load_image_npz(tmp_path / "a.npz", "train", (1, 6, 6), labels=True)
    with pytest.raises(im.DataError, match=r"\(5, 6, 6\), expected \(N, 28, 28, 1\)"):
        im.load_image_npz(tmp_path / "a.npz", "train", (1, 28, 28))
    np.save(tmp_path / "one.npy", x)
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    with pytest.raises(im.DataError, match="a single array, not an .npz archive"):
        im.load_image_npz(tmp_path / "one.npz", "train", (1, 6, 6))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(im.DataError, match="cannot read .*junk.npz"):
        im.load_image_npz(tmp_path / "junk.npz", "train", (1, 6, 6))


def test_named_set_of_another_shape_in_the_data_dir(tmp_path):
    # An mnist.npz whose images are 32x32 RGB is refused with both shapes named.
    x = np.zeros((2, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.zeros(2, np.int64), x_test=x,
             y_test=np.zeros(2, np.int64))  # fmt: skip
    with pytest.raises(im.DataError, match=r"mnist.npz: images of shape \(2, 32, 32, 3\)") as e:
        im.load_images("mnist", "train", data_dir=tmp_path)
    assert "(C, H, W) = (1, 28, 28)" in str(e.value) and "\n" not in str(e.value)


# ---- where data sets are looked for ------------------------------------------------------------
def test_missing_data_set_message(tmp_path, monkeypatch):
    monkeypatch.delenv(im.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(im.DatasetNotFound) as err:
        im.load_images("fashion_mnist")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert str(tmp_path / "data") in msg and os.path.abspath("../shared/data") in msg
    assert "\n" not in msg  # one line: a command line shows the first line of an error only
    for needed in (
        "fashion_mnist.npz",
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "fashion-mnist/",
        ".gz",
        "SCORESDE_DATA",
    ):
        assert needed in msg
    with pytest.raises(im.DatasetNotFound, match=r"cifar-10-batches-py/ with data_batch_1"):
        im.load_images("cifar10", data_dir=tmp_path / "nowhere")
    names = r"neither a data set name \['cifar10', 'colour_digits'"
    with pytest.raises(im.DatasetNotFound, match=names):
        im.load_images("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        im.load_images("digits", "valid")


def test_scoresde_data_variable(tmp_path, monkeypatch):
    require(DATA / "mnist.npz")
    monkeypatch.chdir(tmp_path)  # the defaults find nothing from here
    monkeypatch.setenv(im.ENV_VAR, f"{tmp_path / 'empty'}{os.pathsep}{DATA}")
    assert im.data_roots() == [tmp_path / "empty", DATA]
    x, y = im.load_images("mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and y[:5].tolist() == [7, 2, 1, 0, 4]
    with pytest.raises(im.DatasetNotFound):  # data_dir wins over the variable
        im.load_images("mnist", "test", data_dir=tmp_path / "empty")


# ---- model space -------------------------------------------------------------------------------
@pytest.mark.parametrize("centered", [False, True])
def test_scaling_round_trip(centered):
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y = im.to_float(x, centered)
    scale, shift = im.SCALING[centered]
    assert y.dtype == torch.float32
    assert y.min() == shift and y.max() == scale + shift
    assert torch.equal(im.from_model(y, centered), x)
    assert torch.equal(im.from_model(y.double(), centered), x)
    outside = torch.tensor([shift - 0.5, scale + shift + 0.5])
    assert im.from_model(outside, centered).tolist() == [0, 255]
    with pytest.raises(ValueError, match="expects uint8"):
        im.to_float(y, centered)


def test_dequantization_bounds():
    assert im.dequantize is likelihood_dequantize  # one implementation
    x = torch.arange(256, dtype=torch.uint8).repeat(200)
    u = im.dequantize(x.float(), torch.Generator().manual_seed(0))
    xf = x.float()
    assert u.dtype == torch.float32
    assert (u >= xf / 256).all() and (u < (xf + 1) / 256).all()
    assert torch.equal(im.from_model(u), x)  # each u lies in its own cell
    # 256 u - x is U[0, 1): mean 1/2, standard error sqrt(1/12 / n); allow 5 standard errors.
    r = (256 * u.double() - xf.double()).mean().item()
    assert abs(r - 0.5) < 5 * math.sqrt(1 / 12 / x.numel())


def test_random_hflip_is_reproducible():
    x = torch.randint(0, 256, (400, 3, 4, 5), generator=torch.Generator().manual_seed(0))
    a = im.random_hflip(x, torch.Generator().manual_seed(1))
    b = im.random_hflip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    same = (a == x).flatten(1).all(1)
    mirrored = (a == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    # Random images are never symmetric, so every image is one or the other; the flipped count
    # is Binomial(400, 1/2): mean 200, standard deviation 10; allow 5 of them.
    assert not (same & mirrored).any()
    assert abs(int(mirrored.sum()) - 200) <= 50


def test_check_images():
    im.check_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), (1, 28, 28))
    with pytest.raises(im.DataError, match=r"\(3, 28, 28\), but the preset expects \(1, 28, 28\)"):
        im.check_images(torch.zeros(2, 3, 28, 28, dtype=torch.uint8), (1, 28, 28))
    with pytest.raises(ValueError, match=r"\(1, 32, 32\), but the preset expects \(1, 28, 28\)"):
        im.check_images(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), (1, 28, 28))


# ---- batches -----------------------------------------------------------------------------------
def _images(n):
    return torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(3)).to(
        torch.uint8
    )


def test_image_batches_values_and_epochs():
    x = _images(10)
    batches = im.ImageBatches(x, 3, labels=torch.arange(10), seed=0)
    assert len(batches) == 3
    seen = []
    for _ in range(3):  # one epoch: 3 full batches of distinct images
        y, idx = next(batches)
        assert y.shape == (3, 1, 4, 4) and y.dtype == torch.float32
        xb = x[idx].float()
        assert (y >= xb / 256).all() and (y < (xb + 1) / 256).all()  # u = (x + U) / 256
        assert torch.equal(im.from_model(y), x[idx])
        seen += idx.tolist()
    assert len(set(seen)) == 9 and batches.epoch == 1
    next(batches)
    assert batches.epoch == 2
    plain = im.ImageBatches(x, 4, labels=torch.arange(10), centered=True, dequantize=False)
    y, idx = next(plain)
    assert torch.equal(y, im.to_float(x[idx], True))
    with pytest.raises(ValueError, match="batch_size must be in"):
        im.ImageBatches(x, 11)
    with pytest.raises(ValueError, match="uint8"):
        im.ImageBatches(x.float(), 2)


def test_image_batches_resume_exactly():
    x = _images(10)

    def make():
        return im.ImageBatches(x, 3, labels=torch.arange(10), centered=True, flip=True, seed=7)

    a = make()
    for _ in range(4):
        next(a)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as a checkpoint would store it
    rest = [next(a) for _ in range(6)]  # crosses two epoch boundaries
    b = make()
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    for (ya, ia), (yb, ib) in zip(rest, (next(b) for _ in range(6))):
        assert torch.equal(ya, yb) and torch.equal(ia, ib)
    assert a.epoch == b.epoch


# ---- download ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_without_network(tmp_path, name):
    unreachable = "http://127.0.0.1:9/"  # the discard port on this machine: nothing listens
    with pytest.raises(im.DataError, match=r"could not download .*no network") as err:
        im.download(name, tmp_path, sources=[unreachable], timeout=2)
    assert unreachable in str(err.value) and str(tmp_path) in str(err.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no partial files left
    first = str(err.value).splitlines()[0]  # what a command line shows: what to place where
    assert "no network" in first and "by hand" in first and str(tmp_path) in first
    assert im.download("digits", tmp_path) == tmp_path  # ships with scikit-learn
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        im.download("svhn", tmp_path)


def test_public_names():
    assert sd.load_images is im.load_images and sd.IMAGE_DATASETS is im.IMAGE_DATASETS
    assert set(im.IMAGE_DATASETS) == {
        *("mnist", "fashion_mnist", "cifar10", "digits", "colour_digits", "colour_mnist")
    }
    assert all(hasattr(im, name) for name in im.__all__)


def test_ensure_downloaded_skips_a_present_set(tmp_path, monkeypatch):
    require(DATA / "mnist.npz")
    unreachable = ["http://127.0.0.1:9/"]
    assert im.ensure_downloaded("mnist", DATA, sources=unreachable, timeout=2) is None
    monkeypatch.setenv(im.ENV_VAR, str(DATA))  # found through the variable too
    assert im.ensure_downloaded("mnist", sources=unreachable, timeout=2) is None
    monkeypatch.setenv(im.ENV_VAR, f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    with pytest.raises(im.DataError, match="could not download") as err:  # into the first root
        im.ensure_downloaded("fashion_mnist", sources=unreachable, timeout=2)
    assert str(tmp_path / "a") in str(err.value).splitlines()[0]
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        im.ensure_downloaded("svhn")
