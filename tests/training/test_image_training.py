"""Training score models on images from the command line: 8x8 digits and MNIST, end to end.

Networks here are tiny (a few thousand parameters) and runs a few steps long: the tests check the
plumbing (data -> model space -> training -> checkpoint -> samples in [0, 1] as .npz and PNG), the
dequantization bounds, exact resume with per-batch dequantization noise, and the wrong-size error.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import DATA, TESTDATA, require
from PIL import Image

from scoresde.app.cli import main
from scoresde.data import images_to_model, load_data
from scoresde.training.config import ConfigError, apply_overrides, build_sde, load_config
from scoresde.training.loop import train


def _image_config(name: str, side: int) -> dict:
    """A VP run on the image set ``name`` of ``side`` x ``side`` pixels: a tiny padded tutorial
    U-Net (widths 4, 8, 8, 8; a few thousand parameters) with a smooth time embedding."""
    net = {"num_channels": 1, "channels": [4, 8, 8, 8], "embed_dim": 8}
    net |= {"embedding": "positional", "padded": True}
    return {
        "sde": {"name": "vpsde"},
        "model": {"name": "unet_tutorial", "parameterization": "noise", "params": net},
        "data": {"name": name, "n_train": 1500, "n_test": 297, "shape": [1, side, side]},
        "train": {"batch_size": 16, "lr": 1e-3, "warmup": 10, "eval_every": 1000},
        "sample": {"n": 4},
    }


@pytest.fixture
def presets(tmp_path) -> dict[str, str]:
    """Config files for the 8x8 digits and for 28x28 MNIST."""
    out = {}
    for name, side in (("digits", 8), ("mnist", 28)):
        path = tmp_path / f"{name}_vp.yaml"
        path.write_text(yaml.safe_dump(_image_config(name, side)))
        out[name] = str(path)
    return out


QUICK = ["--set", "train.tensorboard=false", "--set", "train.log_every=1"]
# A DDPM chain of a few steps is undefined (beta_max / N > 1): Euler-Maruyama, no corrector.
FEW = ("sample.predictor=euler_maruyama", "sample.corrector=none")


def _train_args(preset: str, workdir, steps: int, *sets: str) -> list[str]:
    extra = [a for s in sets for a in ("--set", s)]
    return ["train", "--config", preset, "--workdir", str(workdir), *QUICK, *extra] + [
        "--set",
        f"train.steps={steps}",
    ]


def _sample_and_check(workdir, tmp_path, n: int, shape: tuple[int, ...]) -> None:
    out = tmp_path / "samples.npz"
    argv = ["sample", "--workdir", str(workdir), "--n", str(n), "--steps", "4"]
    argv += ["--predictor", "euler_maruyama", "--corrector", "none"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    x = np.load(out)["samples"]
    assert x.shape == (n, *shape)
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0  # pixels in [0, 1]
    assert not out.with_suffix(".png").exists()  # --out FILE.npz writes that file only
    grid = tmp_path / "grid.png"
    assert main([*argv, "--device", "cpu", "--out", str(grid)]) == 0
    assert grid.is_file() and grid.stat().st_size > 0


def test_digits_train_then_sample(tmp_path, presets):
    run = tmp_path / "run"
    sets = ("train.sample_every=3", "sample.steps=3", *FEW)
    assert main(_train_args(presets["digits"], run, 3, *sets)) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["shape"] == [1, 8, 8]
    assert (saved["data"]["scale"], saved["data"]["shift"]) == (1.0, 0.0)
    grid = np.load(run / "samples_3.npy")
    assert grid.shape == (4, 1, 8, 8) and grid.min() >= 0 and grid.max() <= 1
    assert (run / "samples_3.png").stat().st_size > 0
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and np.isfinite(float(rows[-1].split(",")[2]))  # test loss
    _sample_and_check(run, tmp_path, 5, (1, 8, 8))
    # Dataset bits/dim of the test images: bpd = nll / (D ln 2) - log2(scale) + 8, scale = 1 here.
    out = tmp_path / "ll.json"
    argv = ["likelihood", "--workdir", str(run), "--n", "4", "--divergence", "rademacher"]
    assert main([*argv, "--rtol", "1e-3", "--atol", "1e-3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 4 and np.isfinite(r["bpd"])
    assert r["bpd"] == pytest.approx(r["nll"] / (64 * math.log(2)) + 8, rel=1e-9)


def test_mnist_first_256_images_train_then_sample(tmp_path, presets):
    data_dir = require(DATA / "mnist.npz").parent
    run = tmp_path / "run"
    sets = (f"data.data_dir={data_dir}", "data.n_train=256", "data.n_test=32")
    assert main(_train_args(presets["mnist"], run, 2, "train.batch_size=8", *sets)) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["shape"] == [1, 28, 28]
    _sample_and_check(run, tmp_path, 2, (1, 28, 28))


def test_wrong_image_size_for_preset_is_one_clear_error(tmp_path, capsys, presets):
    data_dir = require(DATA / "mnist.npz").parent
    argv = _train_args(presets["digits"], tmp_path / "run", 1, "data.name=mnist")
    assert main([*argv, "--set", f"data.data_dir={data_dir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(1, 28, 28)" in err[0] and "(1, 8, 8)" in err[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_image_data_config_scaling_and_loading(presets):
    cfg = load_config(presets["digits"])
    assert (cfg.data.scale, cfg.data.shift, cfg.data.standardize) == (1.0, 0.0, False)
    centered = apply_overrides(cfg, ["data.centered=true", "data.n_train=40", "data.n_test=7"])
    assert (centered.data.scale, centered.data.shift) == (2.0, -1.0)
    train_x, test_x, standardizer = load_data(centered.data)
    assert standardizer is None
    assert train_x.dtype == torch.uint8 and train_x.shape == (40, 1, 8, 8)
    assert test_x.shape == (7, 1, 8, 8)
    assert load_config("toy_mixture_vp").data.scale is None  # toy data: no image scaling
    with pytest.raises(ConfigError, match="digits"):
        apply_overrides(cfg, ["data.name=no_such_set"])


@pytest.mark.parametrize("centered", [False, True])
def test_images_to_model_stays_in_each_pixel_cell(centered, presets):
    cfg = apply_overrides(
        load_config(presets["digits"]), [f"data.centered={str(centered).lower()}"]
    )
    x = torch.arange(256, dtype=torch.uint8).repeat(64).view(64, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    y = images_to_model(x, cfg.data, g, flip=False)
    u = (y.double() - cfg.data.shift) / cfg.data.scale
    k = x.double()
    # u = (k + U) / 256 with U in [0, 1); float32 rounding of scale * u + shift moves u by at most
    # a few ulp of 1 (2^-24 each), so allow 1e-6 outside the cell [k / 256, (k + 1) / 256].
    assert (u >= k / 256 - 1e-6).all() and (u <= (k + 1) / 256 + 1e-6).all()
    # Black pixels (k = 0) get U ~ U[0, 1): its mean over 16,384 draws is 1/2 within 4 standard
    # errors (1/sqrt(12 n) = 0.0023); no dequantization (u = k / 255) would give exactly 0.
    zeros = torch.zeros_like(x)
    U = 256 * (images_to_model(zeros, cfg.data, g).double() - cfg.data.shift) / cfg.data.scale
    assert abs(U.mean() - 0.5) < 4 / (12 * x.numel()) ** 0.5
    assert U.min() >= 0 and U.max() <= 1 + 1e-4  # 1e-4: 256 times the 1e-6 allowance above


def test_flip_mirrors_whole_images(presets):
    cfg = apply_overrides(load_config(presets["digits"]), ["data.flip=true"])
    x = torch.randint(0, 256, (200, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    x = x.to(torch.uint8)
    y = images_to_model(x, cfg.data, torch.Generator().manual_seed(2), flip=True)
    k = torch.floor(256 * y).to(torch.uint8)  # scale 1, shift 0: the pixel cell of each value
    same = (k == x).flatten(1).all(1)
    mirrored = (k == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    # Flips are Bernoulli(1/2): 200 images give 100 +- 4 * 7.1 flipped (4 standard errors).
    assert abs(int(mirrored.sum()) - 100) < 4 * (200 * 0.25) ** 0.5


def test_image_training_resumes_exactly(tmp_path, presets):
    cfg = apply_overrides(
        load_config(presets["digits"]),
        [
            "data.flip=true",
            "train.batch_size=8",
            "train.steps=4",
            "train.ckpt_every=2",
            "train.sample_every=0",
            "train.tensorboard=false",
        ],
    )
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(cfg, whole)
    train(cfg, parts, max_steps=2)
    train(cfg, parts, resume=True)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(parts / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- presets -----------------------------------------------------------------------------------
TINY_NET = ["model.params.channels=[4, 8, 8, 8]", "model.params.embed_dim=8"]


@pytest.mark.parametrize("preset", ["mnist_subvp", "mnist_ve", "fashion_mnist_subvp"])
def test_mnist_presets_train_a_few_steps_and_draw_a_grid(tmp_path, preset):
    cfg = load_config(preset)
    name = cfg.data.name
    require(DATA / f"{name}.npz")
    run = tmp_path / "run"
    sets = (*TINY_NET, f"data.data_dir={DATA}", "data.n_train=256", "data.n_test=16")
    sets += ("train.batch_size=8", "train.sample_every=2", "sample.n=4", "sample.steps=3", *FEW)
    assert main(_train_args(preset, run, 2, *sets)) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["sde"]["name"] == cfg.sde.name and saved["data"]["name"] == name
    with Image.open(run / "samples_2.png") as im:  # a real PNG with pixels in it
        assert im.size[0] > 0 and im.size[1] > 0
        assert np.asarray(im.convert("L")).std() > 0  # not a blank picture


def test_mnist_ve_sigma_max_is_the_largest_distance_between_training_images():
    # Song & Ermon (2020), technique 1. The 100 images of largest norm against all 60,000 give a
    # lower bound of the largest distance; the preset's comment gives the exact value, 16.88
    # (all pairs). sigma_max must cover it and not exceed it by more than 2 %.
    with np.load(require(DATA / "mnist.npz")) as d:
        x = torch.from_numpy(d["x_train"]).reshape(60000, -1).float() / 255
    n2 = (x * x).sum(1)
    top = torch.argsort(n2, descending=True)[:100]
    lower = (n2[top, None] + n2[None, :] - 2 * x[top] @ x.T).max().sqrt().item()
    sigma_max = load_config("mnist_ve").sde.sigma_max
    assert lower <= sigma_max <= 1.02 * lower


def _official(name: str, **model) -> dict:
    config = json.loads(require(TESTDATA / name).read_text())
    config["model"] |= model
    config["data"]["image_size"] = 32
    return config


# The official deep sub-VP config (configs/subvp/cifar10_ddpmpp_deep_continuous.py) is its
# cifar10_ddpmpp_continuous.py with num_res_blocks 8 and n_iters 950001: the stored small config
# of the latter, unshrunk (README of the test data: nf, ch_mult, num_res_blocks, attn, image_size).
PAPER_PRESETS = {
    "cifar10_ncsnpp_continuous_ve": lambda: _official("ve_ncsnpp_continuous_full_config.json"),
    "cifar10_ddpmpp_deep_continuous_subvp": lambda: _official(
        "subvp_ddpmpp_continuous_small_config.json",
        nf=128,
        ch_mult=[1, 2, 2, 2],
        num_res_blocks=8,
        attn_resolutions=[16],
    ),  # fmt: skip
}


@pytest.mark.parametrize("preset", sorted(PAPER_PRESETS))
def test_paper_presets_have_the_official_hyperparameters(preset):
    from scoresde.interop.official import official_adapters, official_net, official_sde
    from scoresde.nets import build_net

    official = PAPER_PRESETS[preset]()
    cfg = load_config(preset)
    with torch.device("meta"):  # full size (63M / 107M parameters): shapes only, no memory
        ours, theirs = build_net(cfg.model.name, cfg.model.params), official_net(official)
    assert ours.config == theirs.config
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert (cfg.model.label, cfg.model.parameterization) == official_adapters(official)
    sde = official_sde(official)
    assert type(sde).__name__.lower() == cfg.sde.name
    assert sde.config() == build_sde(cfg.sde).config()  # sigma or beta range and N
    data, tr, optim, sampling = (official[k] for k in ("data", "training", "optim", "sampling"))
    assert (cfg.data.centered, cfg.data.flip, cfg.data.shape) == (
        data["centered"],
        data["random_flip"],
        [3, 32, 32],
    )
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.warmup) == (
        tr["batch_size"],
        optim["lr"],
        optim["warmup"],
    )
    assert cfg.train.ema_rate == official["model"]["ema_rate"]
    assert cfg.train.weighting == ("likelihood" if tr["likelihood_weighting"] else "score")
    # Official loss = c * ours: c = 1 / D with reduce_mean (mean over the D = 3072 pixels), else
    # 0.5 (half the sum); gradients scale by c, so clipping ours at clip / c is the same clipping.
    c = 1 / 3072 if tr["reduce_mean"] else 0.5
    assert cfg.train.grad_clip == pytest.approx(optim["grad_clip"] / c, rel=1e-12)
    assert (cfg.sample.predictor, cfg.sample.corrector) == (
        sampling["predictor"],
        sampling["corrector"],
    )
    assert cfg.sample.snr == sampling["snr"] and cfg.sample.steps is None  # N = 1000 steps
