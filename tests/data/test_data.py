"""Toy data geometry, exact mixtures, file loading errors, splits, the standardizer's log-det,
and a user's images (a folder or an .npz) through load_data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.data import (
    TOY,
    TOY_MIXTURES,
    DataConfig,
    Standardizer,
    checkerboard,
    is_image_path,
    load_array,
    load_data,
    load_image_path,
    moons,
    split,
    swiss_roll,
    toy_mixture,
)


@pytest.mark.parametrize("name", sorted(TOY))
def test_toy_shapes_and_reproducibility(name):
    a = TOY[name](500, generator=torch.Generator().manual_seed(0))
    b = TOY[name](500, generator=torch.Generator().manual_seed(0))
    assert a.dtype == torch.get_default_dtype() and a.ndim == 2 and a.shape[0] == 500
    assert a.shape[1] == (1 if name == "mixture_1d" else 2)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_swiss_roll_geometry():
    # Without noise every point is s (cos s, sin s) / 5 with s in [1.5 pi, 4.5 pi].
    x = swiss_roll(2000, torch.Generator().manual_seed(1), noise=0.0).double() * 5
    s = x.norm(dim=1)
    assert s.min() >= 1.5 * math.pi - 1e-4 and s.max() <= 4.5 * math.pi + 1e-4
    assert torch.allclose(x, s[:, None] * torch.stack([s.cos(), s.sin()], 1), atol=1e-4)


def test_moons_geometry():
    y = (
        moons(2000, torch.Generator().manual_seed(2), noise=0.0).double()
        + torch.tensor([1.0, 0.2], dtype=torch.float64)
    ) / 2
    upper = (y.norm(dim=1) - 1).abs() < 1e-5
    lower = ((y - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs() < 1e-5
    assert (upper | lower).all()
    frac = upper.double().mean().item()
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / 2000)  # binomial standard error


def test_checkerboard_squares():
    n = 8000
    x = checkerboard(n, torch.Generator().manual_seed(3)) / 2
    assert x.abs().max() <= 2
    cells = torch.floor(x).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()  # only the dark squares
    counts = torch.unique(cells, dim=0, return_counts=True)[1]
    assert len(counts) == 8
    se = math.sqrt(n * (1 / 8) * (7 / 8))
    assert ((counts - n / 8).abs() < 5 * se).all()


@pytest.mark.parametrize("name", sorted(TOY_MIXTURES))
def test_mixture_generators_sample_their_mixture(name):
    # The sample mean matches the mixture's mean within 5 standard errors per coordinate.
    gm, n = toy_mixture(name), 20000
    x = TOY[name](n, generator=torch.Generator().manual_seed(4)).double()
    se = gm.cov().diagonal().sqrt() / math.sqrt(n)
    assert ((x.mean(0) - gm.mean()).abs() < 5 * se).all()
    assert torch.isfinite(gm.log_prob(x)).all()


def test_mixture_1d_is_the_seed_target():
    gm = toy_mixture("mixture_1d")
    assert gm.dim == 1 and torch.allclose(gm.means.flatten(), torch.tensor([-1.0, 1.0]).double())
    with pytest.raises(ValueError, match="mixture_2d"):
        toy_mixture("banana")


def test_load_array_npy_csv(tmp_path):
    a = np.arange(12, dtype=np.float64).reshape(6, 2) / 7
    np.save(tmp_path / "a.npy", a)
    np.savetxt(tmp_path / "a.csv", a, delimiter=",")
    np.savetxt(tmp_path / "h.csv", a, delimiter=",", header="x,y", comments="")
    np.save(tmp_path / "v.npy", a[:, 0])
    for f in ("a.npy", "a.csv", "h.csv"):
        assert torch.allclose(load_array(tmp_path / f).double(), torch.from_numpy(a), atol=1e-6)
    assert load_array(tmp_path / "v.npy").shape == (6, 1)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p / "none.npy", "no such data file"),
        (lambda p: (p / "a.txt").write_text("1,2\n") and p / "a.txt", "unsupported"),
        (lambda p: np.save(p / "c.npy", np.zeros((2, 2, 2))) or p / "c.npy", "shape"),
        (lambda p: np.save(p / "n.npy", np.array([[1.0], [np.nan]])) or p / "n.npy", "NaN"),
        (lambda p: (p / "s.csv").write_text("1,2\n3,abc\n") and p / "s.csv", "numeric csv"),
        (lambda p: np.save(p / "o.npy", np.array(["a", "b"])) or p / "o.npy", "numeric"),
        (lambda p: np.save(p / "r.npy", np.zeros((1, 2))) or p / "r.npy", "2 rows"),
        (lambda p: (p / "g.npy").write_bytes(b"garbage") and p / "g.npy", ".npy"),
    ],
)
def test_load_array_errors(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=match) as e:
        load_array(path)
    assert path.name in str(e.value)


def test_split():
    x = torch.arange(20.0)[:, None]
    tr, te = split(x, 0.25, torch.Generator().manual_seed(0))
    assert tr.shape == (15, 1) and te.shape == (5, 1)
    assert torch.equal(torch.cat([tr, te]).flatten().sort().values, x.flatten())
    tr2, _ = split(x, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(tr, tr2)
    with pytest.raises(ValueError, match="test_fraction"):
        split(x, 1.0)


def test_standardizer_log_det_is_the_jacobian_and_changes_densities():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1000, 3, generator=g, dtype=torch.float64) * torch.tensor([0.5, 2.0, 3.0]) + 4
    st = Standardizer.fit(x)
    assert torch.allclose(st.forward(x).mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(st.inverse(st.forward(x)), x)
    J = torch.autograd.functional.jacobian(st.forward, x[:1]).reshape(3, 3)
    assert torch.allclose(torch.linalg.slogdet(J)[1], st.log_det())
    # x ~ N(m, diag s^2) => y ~ N((m - mean)/std, diag (s/std)^2): log p_x = log p_y + log_det.
    m, s = torch.tensor([1.0, -2.0, 0.5]).double(), torch.tensor([0.3, 1.5, 2.0]).double()
    px = torch.distributions.Normal(m, s).log_prob(x).sum(1)
    py = torch.distributions.Normal((m - st.mean) / st.std, s / st.std).log_prob(st.forward(x))
    assert torch.allclose(px, py.sum(1) + st.log_det())
    st2 = Standardizer.from_state_dict(st.state_dict())
    assert torch.equal(st2.mean, st.mean) and torch.equal(st2.std, st.std)
    with pytest.raises(ValueError, match="constant"):
        Standardizer.fit(torch.ones(5, 2))


def test_load_data_toy_and_file(tmp_path):
    tr, te, st = load_data(DataConfig(name="moons", n_train=300, n_test=50, seed=1))
    assert tr.shape == (300, 2) and te.shape == (50, 2)  # data units; st fitted on train
    assert torch.allclose(st.forward(tr).mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(st.forward(tr).std(0), torch.ones(2), atol=1e-5)
    assert torch.equal(tr, moons(350, torch.Generator().manual_seed(1))[:300])
    tr2, te2, _ = load_data(DataConfig(name="moons", n_train=300, n_test=50, seed=1))
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(40, 3)))
    tr, te, st = load_data(
        DataConfig(name="file", path=str(tmp_path / "d.npy"), test_fraction=0.25)
    )
    assert tr.shape == (30, 3) and te.shape == (10, 3) and st.mean.shape == (3,)
    tr, te, st = load_data(DataConfig(name="mixture_1d", n_train=10, n_test=5, standardize=False))
    assert st is None and tr.shape == (10, 1)


# ---- a user's images ---------------------------------------------------------------------------
def _png_folder(folder, n: int, side: int = 6) -> np.ndarray:
    """``n`` random grayscale PNGs ``img_000.png``... (lossless: read back exactly); the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(n).integers(0, 256, size=(n, side, side), dtype=np.uint8)
    for i, a in enumerate(x):
        Image.fromarray(a).save(folder / f"img_{i:03d}.png")
    return x


def test_load_data_from_an_image_folder(tmp_path):
    x = _png_folder(tmp_path / "f", 20)
    cfg = DataConfig(name="file", path=str(tmp_path / "f"), shape=[1, 6, 6], test_fraction=0.25)
    assert is_image_path(cfg.path) and not is_image_path(tmp_path / "d.npy")
    train, test, st = load_data(cfg)
    assert st is None and train.dtype == torch.uint8
    assert train.shape == (15, 1, 6, 6) and test.shape == (5, 1, 6, 6)
    # A seeded permutation of the 20 images (sorted by file name): nothing lost, nothing twice.
    both = torch.cat([train, test])[:, 0]
    order = [int(np.flatnonzero((x == b.numpy()).all(axis=(1, 2)))[0]) for b in both]
    assert sorted(order) == list(range(20))
    again, _, _ = load_data(cfg)
    assert torch.equal(again, train)
    # n_train / n_test take the first images of each split, as for the named image sets.
    capped = load_data(DataConfig(name="file", path=cfg.path, shape=[1, 6, 6], n_train=4, n_test=2))
    assert capped[0].shape[0] == 4 and capped[1].shape[0] == 2
    # train/ and test/ subfolders are the splits; resizing and channels follow data.shape.
    xt = _png_folder(tmp_path / "s" / "train", 3)
    xs = _png_folder(tmp_path / "s" / "test", 2)
    train, test, _ = load_data(DataConfig(name="file", path=str(tmp_path / "s"), shape=[1, 6, 6]))
    assert torch.equal(train[:, 0], torch.from_numpy(xt)) and torch.equal(
        test[:, 0], torch.from_numpy(xs)
    )
    big = load_image_path(tmp_path / "s", [3, 12, 10], "test")
    assert big.shape == (2, 3, 12, 10)
    with pytest.raises(ValueError, match=r"needs data.shape = \[C, H, W\]"):
        load_data(DataConfig(name="file", path=str(tmp_path / "f")))


def test_load_data_from_an_image_npz(tmp_path):
    g = np.random.default_rng(0)
    x_train = g.integers(0, 256, size=(7, 4, 4, 3), dtype=np.uint8)
    x_test = g.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x_train=x_train, x_test=x_test)  # no labels: allowed
    cfg = DataConfig(name="file", path=str(tmp_path / "rgb.npz"), shape=[3, 4, 4])
    train, test, st = load_data(cfg)
    assert st is None
    assert torch.equal(train, torch.from_numpy(x_train).permute(0, 3, 1, 2))
    assert torch.equal(test, torch.from_numpy(x_test).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"\(7, 4, 4, 3\), expected \(N, 8, 8, 1\)"):
        load_data(DataConfig(name="file", path=cfg.path, shape=[1, 8, 8]))
    with pytest.raises(ValueError, match="no such image file"):
        load_image_path(tmp_path / "missing.npz", [3, 4, 4], "train")


def test_swiss_roll_mixture_is_the_roll_s_density():
    # Draws of the roll and of its mixture have the same mean log-density (within 4 standard
    # errors of 20,000 draws each), and the midpoint rule has converged: k = 2,000 and 8,000
    # components agree on it to 1e-6 nats (measured: 5e-8).
    from scoresde.data.toy import swiss_roll, swiss_roll_mixture

    mix = swiss_roll_mixture()
    x = swiss_roll(20_000, torch.Generator().manual_seed(0)).double()
    y = mix.sample(20_000, torch.Generator().manual_seed(1))
    lx, ly = mix.log_prob(x), mix.log_prob(y)
    se = math.sqrt(lx.var().item() / 20_000 + ly.var().item() / 20_000)
    assert abs(lx.mean().item() - ly.mean().item()) < 4 * se
    fine = swiss_roll_mixture(8000).log_prob(x[:2000])
    assert abs(fine.mean().item() - lx[:2000].mean().item()) < 1e-6
