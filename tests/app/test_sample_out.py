"""``scoresde sample --out`` writes exactly the file it reports (its format from the suffix, or a
folder), ``--seed random`` prints the seed it chose, the samples do not depend on ``--chunk``;
``scoresde train`` stores relative data paths as absolute ones and notes a missing TensorBoard.

Runs are tiny (a 16-wide MLP, a U-Net of widths 4-8 on the 8x8 digits) and a few steps long.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from PIL import Image

from scoresde.app.cli import main

DIGITS = [
    "--set", "model.params.channels=[4, 8, 8, 8]", "--set", "model.params.embed_dim=8",
    "--set", "train.batch_size=16", "--set", "train.warmup=1", "--set", "train.steps=1",
    "--set", "train.eval_every=0", "--set", "train.ckpt_every=0", "--set", "train.log_every=1",
]  # fmt: skip
FEW = ["--predictor", "euler_maruyama", "--corrector", "none", "--steps", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    wd = tmp_path_factory.mktemp("digits")
    assert main(["train", "--config", "digits_vp", "--workdir", str(wd), "--quiet", *DIGITS]) == 0
    return str(wd)


def _sample(workdir: str, out, *flags: str) -> int:
    return main(["sample", "--workdir", workdir, "--out", str(out), "--quiet", *FEW, *flags])


def _wrote(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("wrote")]


# ---- --out -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["s.npz", "s.npy", "s.png", "S.NPZ"])
def test_out_writes_exactly_the_file_it_reports(toy, tmp_path, capsys, name):
    out = tmp_path / "sub" / name
    assert _sample(toy, out, "--n", "12") == 0
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [name]  # nothing beside it
    assert _wrote(capsys.readouterr().out) == [_wrote_line(out, name)]
    if name.lower().endswith(".npz"):
        assert np.load(out)["samples"].shape == (12, 2)
    elif name.endswith(".npy"):
        assert np.load(out).shape == (12, 2)
    else:
        with Image.open(out) as im:
            assert im.format == "PNG" and im.size[0] > 100


def _wrote_line(out, name: str) -> str:
    if name.endswith(".png"):
        return f"wrote {out} (a scatter of the samples)"
    key = ", key samples" if name.lower().endswith(".npz") else ""
    return f"wrote {out} (12 samples of shape (2,){key})"


def test_out_folder_of_vectors(toy, tmp_path, capsys):
    out = tmp_path / "new"
    assert _sample(toy, f"{out}/", "--n", "5") == 0  # a trailing slash: a folder, made
    assert sorted(p.name for p in out.iterdir()) == ["samples.npz", "samples.png"]
    lines = _wrote(capsys.readouterr().out)
    assert lines == [f"wrote {out / 'samples.npz'} (5 samples of shape (2,), key samples)",
                     f"wrote {out / 'samples.png'} (a scatter of the samples)"]  # fmt: skip


def test_out_folder_of_images(digits, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()  # an existing folder needs no slash
    assert _sample(digits, out, "--n", "3") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.png", "000001.png", "000002.png", "samples.npz"]
    u = np.load(out / "samples.npz")["samples"]
    assert u.shape == (3, 1, 8, 8) and u.min() >= 0 and u.max() <= 1
    with Image.open(out / "000001.png") as im:
        pixels = np.asarray(im)
    assert pixels.shape == (8, 8) and np.array_equal(
        pixels, np.clip(np.floor(256 * u[1, 0]), 0, 255)
    )
    lines = _wrote(capsys.readouterr().out)
    assert lines[0] == f"wrote 3 images {out / '000000.png'} ... {out / '000002.png'} (8x8)"
    assert lines[1].startswith(f"wrote {out / 'samples.npz'} (3 samples of shape (1, 8, 8)")


def test_image_grid_is_enlarged_and_titled(digits, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert _sample(digits, out, "--n", "4") == 0
    grid = 2 * (64 + 2) + 2  # a 2 x 2 grid of the 8x8 digits drawn 8 times larger, padded
    with Image.open(out) as im:
        w, h = im.size
        band = np.asarray(im)[: h - grid]  # the title, above the grid
    assert w >= grid and h > grid and (band < 128).any()  # dark text in the band
    assert "a grid of 4 of the 4 images" in capsys.readouterr().out


def test_unknown_suffix_is_one_line_listing_the_valid_ones(toy, tmp_path, capsys):
    assert _sample(toy, tmp_path / "s.txt", "--n", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'.txt'" in err[0]
    assert all(s in err[0] for s in ("FILE.npz", "FILE.npy", "FILE.png", "DIR/"))
    assert list(tmp_path.iterdir()) == []


# ---- seeds and chunks ----------------------------------------------------------------------------
def test_seed_random_prints_the_seed_that_repeats_the_call(toy, tmp_path, capsys):
    assert _sample(toy, tmp_path / "a.npy", "--n", "6", "--seed", "random") == 0
    seeds = re.findall(r"^seed=(\d+)$", capsys.readouterr().out, re.M)
    assert len(seeds) == 1
    assert _sample(toy, tmp_path / "b.npy", "--n", "6", "--seed", seeds[0]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_seed_must_be_a_number_or_random(toy, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--workdir", toy, "--out", "x.npy", "--seed", "often"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--seed" in err and "'random'" in err


@pytest.mark.parametrize("sampler", ["pc", "dpm_solver"])
def test_cli_samples_do_not_depend_on_chunk(toy, tmp_path, sampler):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    common = ["--sampler", sampler, "--n", "7", "--seed", "2"]
    assert _sample(toy, a, *common, "--chunk", "3") == 0
    assert _sample(toy, b, *common, "--chunk", "1000") == 0
    np.testing.assert_allclose(np.load(a), np.load(b), rtol=1e-5, atol=1e-5)


# ---- train: data paths and TensorBoard ----------------------------------------------------------
def test_relative_data_paths_are_stored_absolute(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "pts.npy", np.random.default_rng(0).normal(size=(40, 2)))
    argv = ["train", "--config", "toy_mixture_vp", "--data", "pts.npy", "--data-dir", "d",
            "--dry-run"]  # fmt: skip
    assert main(argv) == 0
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["path"] == str(tmp_path / "pts.npy") and data["data_dir"] == str(tmp_path / "d")
    argv = ["train", "--config", "toy_mixture_vp", "--set", "data.path=./pts.npy", "--dry-run"]
    assert main(argv) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["path"] == str(tmp_path / "pts.npy")


@pytest.mark.parametrize("setting, noted", [("true", True), ("null", False)])
def test_missing_tensorboard_is_one_note(
    tmp_path, monkeypatch, capsys, setting, noted, tiny_toy_sets
):
    from scoresde.training import loop

    monkeypatch.setattr(loop, "tensorboard_installed", lambda: False)
    argv = ["train", "--config", "toy_mixture_vp", "--workdir", str(tmp_path / "r"), "--quiet",
            *tiny_toy_sets, "--set", "train.steps=1",
            "--set", f"train.tensorboard={setting}"]  # fmt: skip
    assert main(argv) == 0  # training goes on without it
    err = [ln for ln in capsys.readouterr().err.splitlines() if "tensorboard" in ln]
    assert len(err) == int(noted)
    if noted:
        assert "not installed" in err[0] and "train.tensorboard=false" in err[0]
    assert not (tmp_path / "r" / "tb").exists()
