"""The Python entry point: ``sd.load(workdir)`` gives samples and likelihoods in data units that
equal what ``scoresde sample`` / ``scoresde likelihood`` write for the same seed, and
``sd.train(config, data=array)`` trains on data held in memory.

Runs are tiny (a 16-wide MLP on a swiss roll, a U-Net of widths 4-8 on the 8x8 digits) and a few
steps long: the tests check units, seeds and plumbing, not quality.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.app.cli import main
from scoresde.data import from_model, load_data, split
from scoresde.samplers import SampleStreams
from scoresde.training.pipeline import TrainedModel, training_data

TOY = [
    "model.params.hidden=16", "model.params.depth=2", "model.params.embed_dim=8",
    "data.n_train=256", "data.n_test=64", "train.batch_size=32", "train.warmup=2",
    "train.lr=1e-3", "train.tensorboard=false", "train.steps=10", "train.eval_every=0",
]  # fmt: skip
DIGITS = [
    "model.params.channels=[4, 8, 8, 8]", "model.params.embed_dim=8", "train.batch_size=16",
    "train.warmup=2", "train.steps=3", "train.eval_every=0", "train.ckpt_every=0",
    "train.sample_every=0", "train.tensorboard=false", "train.log_every=1",
]  # fmt: skip
FEW = {"predictor": "euler_maruyama", "corrector": "none", "steps": 4}  # a short chain
FEW_FLAGS = ["--predictor", "euler_maruyama", "--corrector", "none", "--steps", "4"]
LOOSE = {"rtol": 1e-3, "atol": 1e-3}  # likelihood tolerances: an untrained net, few NFE


def toy_config() -> sd.Config:
    return sd.apply_overrides(sd.load_config("toy_swissroll_vp"), TOY)


def digits_config() -> sd.Config:
    return sd.apply_overrides(sd.load_config("digits_vp"), DIGITS)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> str:
    """A swiss-roll run trained from its config's own data."""
    workdir = tmp_path_factory.mktemp("toy")
    sd.train(toy_config(), workdir=workdir)
    return str(workdir)


@pytest.fixture(scope="module")
def digits_images() -> np.ndarray:
    """All 8x8 digits as one uint8 numpy array (N, 1, 8, 8)."""
    train, test, _ = load_data(digits_config().data)
    return torch.cat([train, test]).numpy()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits_images) -> str:
    """A digits run trained from a numpy array held in memory."""
    workdir = tmp_path_factory.mktemp("digits")
    sd.train(digits_config(), data=digits_images, workdir=workdir)
    return str(workdir)


def _cli_samples(workdir: str, out, *flags: str) -> np.ndarray:
    argv = ["sample", "--workdir", workdir, "--device", "cpu", "--out", str(out), *flags]
    assert main(argv) == 0
    return np.load(out)


def _cli_likelihood(workdir: str, out, x: np.ndarray, *flags: str) -> dict:
    data = out.with_suffix(".npz" if x.dtype == np.uint8 else ".npy")
    if x.dtype == np.uint8:
        hwc = x.transpose(0, 2, 3, 1)  # an .npz holds (N, H, W, C) images
        np.savez(data, x_train=hwc, x_test=hwc)
    else:
        np.save(data, x)
    argv = ["likelihood", "--workdir", workdir, "--data", str(data), "--device", "cpu"]
    assert main([*argv, "--out", str(out), *flags]) == 0
    return json.loads(out.read_text())


# ---- vectors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sampler, options, flags",
    [
        ("pc", {"steps": 25}, ["--steps", "25"]),  # a DDPM chain needs N > beta_max
        ("dpm_solver", {"steps": 4}, ["--steps", "4"]),
    ],
)
def test_vector_samples_are_the_cli_samples(toy_run, tmp_path, sampler, options, flags):
    model = sd.load(toy_run)
    x = model.sample(12, sampler=sampler, seed=3, **options)
    cli = _cli_samples(toy_run, tmp_path / "s.npy", "--sampler", sampler, "--n", "12",
                       "--seed", "3", *flags)  # fmt: skip
    assert x.shape == (12, 2) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), cli, rtol=1e-6, atol=1e-6)
    # sample i from stream i of the seed: the streams given as the generator draw the same
    streams = SampleStreams(3, range(12))
    assert torch.allclose(model.sample(12, sampler=sampler, generator=streams, **options), x)


def test_vector_samples_are_in_data_units(toy_run):
    model = sd.load(toy_run)
    assert model.standardizer is not None and model.images is False
    raw = model.sample(6, output="float", seed=1, **FEW)
    y = sd.sample(model.sde, model.score_fn, (6, 2), "pc", SampleStreams(1, range(6)), **FEW)[0]
    assert torch.allclose(raw, model.standardizer.inverse(y), atol=1e-6)
    with pytest.raises(ValueError, match="image models"):
        model.sample(2, output="uint8", **FEW)
    with pytest.raises(ValueError, match="output must be one of"):
        model.sample(2, output="png", **FEW)


def test_vector_log_likelihood_is_the_cli_likelihood(toy_run, tmp_path):
    model = sd.load(toy_run)
    x = load_data(model.config.data)[1][:16]
    logp = model.log_likelihood(x)
    r = _cli_likelihood(toy_run, tmp_path / "lk.json", x.numpy())
    assert logp.shape == (16,) and logp.dtype == torch.float64
    assert -logp.mean().item() == pytest.approx(r["nll"], rel=1e-9, abs=1e-9)
    # data units: the model-space density plus the standardizer's log-determinant
    y = model.standardizer.forward(x)
    lp_y = sd.log_likelihood(model.sde, model.score_fn, y, divergence="exact")[0]
    log_det = model.standardizer.log_det()
    assert torch.allclose(logp, lp_y.double() + log_det.double(), atol=1e-4)
    assert torch.allclose(model.log_likelihood(x.numpy()), logp)  # numpy in, same numbers
    with pytest.raises(ValueError, match="8-bit image models"):
        model.bits_per_dim(x)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        model.log_likelihood(torch.zeros(3, 5))


def test_load_exposes_the_run(toy_run):
    model = sd.load(toy_run, ema=False)
    assert isinstance(model, TrainedModel)
    assert model.config.data.shape == [2] and model.shape == (2,)
    assert isinstance(model.sde, sd.VPSDE) and model.device == torch.device("cpu")
    assert model.to("cpu") is model
    assert "TrainedModel(sde=" in repr(model)
    ema = sd.load(toy_run)
    x = torch.randn(4, 2)
    assert not torch.allclose(model.score_fn(x, 0.5), ema.score_fn(x, 0.5))


# ---- plain-number t ---------------------------------------------------------------------------
def test_score_fn_takes_a_plain_number_t(toy_run, digits_run):
    for workdir, shape in ((toy_run, (5, 2)), (digits_run, (3, 1, 8, 8))):
        score_fn = sd.load(workdir).score_fn
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        full = score_fn(x, torch.full((shape[0],), 0.5))
        assert torch.equal(score_fn(x, 0.5), full)
        assert torch.equal(score_fn(x, torch.tensor(0.5)), full)


def test_mixture_score_takes_a_plain_number_t(mixture):
    sde = sd.VPSDE()
    x = mixture.sample(6, torch.Generator().manual_seed(0))
    t = torch.full((6,), 0.3, dtype=torch.float64)
    assert torch.equal(mixture.score_fn(sde)(x, 0.3), mixture.score(x, t, sde))
    assert torch.equal(mixture.log_prob(x, 0.3, sde), mixture.log_prob(x, t, sde))


# ---- images -----------------------------------------------------------------------------------
def test_image_samples_come_as_pixels(digits_run, tmp_path):
    model = sd.load(digits_run)
    assert model.images and model.shape == (1, 8, 8)
    u = model.sample(4, seed=5, **FEW)
    assert u.dtype == torch.float32 and u.shape == (4, 1, 8, 8)
    assert u.min() >= 0 and u.max() <= 1
    pixels = model.sample(4, seed=5, output="uint8", **FEW)
    assert pixels.dtype == torch.uint8 and torch.equal(pixels, from_model(u))
    cli = _cli_samples(digits_run, tmp_path / "s.npz", "--n", "4", "--seed", "5", *FEW_FLAGS)
    np.testing.assert_allclose(u.numpy(), cli["samples"], atol=1e-6)


def test_image_likelihood_and_bits_per_dim_are_the_cli_ones(digits_run, digits_images, tmp_path):
    model = sd.load(digits_run)
    x = digits_images[:4]
    logp, bpd = model.log_likelihood(x, **LOOSE), model.bits_per_dim(x, **LOOSE)
    r = _cli_likelihood(digits_run, tmp_path / "lk.json", x, "--rtol", "1e-3", "--atol", "1e-3")
    assert r["divergence"] == "rademacher" and logp.shape == bpd.shape == (4,)
    assert -logp.mean().item() == pytest.approx(r["nll"], rel=1e-9)
    assert bpd.mean().item() == pytest.approx(r["bpd"], rel=1e-9)
    assert torch.allclose(bpd, sd.bits_per_dim(logp, x.shape, scale=1.0))  # data.scale = 1
    with pytest.raises(ValueError, match="uint8 pixels"):
        model.log_likelihood(torch.from_numpy(x).float() / 255)


# ---- training on data held in memory ----------------------------------------------------------
def test_train_on_a_numpy_array(tmp_path):
    x = sd.data.mixture_2d(300, generator=torch.Generator().manual_seed(1)).numpy() * 3 + 1
    cfg = toy_config()
    result = sd.train(cfg, data=x, workdir=tmp_path / "run")
    assert result["step"] == cfg.train.steps
    model = sd.load(tmp_path / "run")
    train, _ = split(torch.from_numpy(x).float(), cfg.data.test_fraction,
                     torch.Generator().manual_seed(cfg.data.seed))  # fmt: skip
    assert torch.allclose(model.standardizer.mean, train.mean(0))
    assert torch.allclose(model.standardizer.std, train.std(0))
    assert model.sample(5, **FEW).shape == (5, 2)


def test_digits_run_from_an_array_loads(digits_run, digits_images):
    model = sd.load(digits_run)
    assert model.standardizer is None and model.config.data.shape == [1, 8, 8]
    train, test, st = training_data(digits_config(), digits_images)
    assert st is None and train.dtype == torch.uint8
    assert len(train) + len(test) == len(digits_images)
    assert len(test) == round(len(digits_images) * digits_config().data.test_fraction)


def test_training_data_passes_tuples_and_tensors_through():
    cfg = toy_config()
    x = torch.randn(50, 2)
    train, test, st = training_data(cfg, x)
    assert train.shape == (45, 2) and test.shape == (5, 2) and st is not None
    triple = (x[:40], x[40:], None)
    assert training_data(cfg, triple) == triple
    one_d, _, _ = training_data(cfg, np.arange(50.0))
    assert one_d.shape == (45, 1) and one_d.dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    "config, x, why",
    [
        ("toy", np.zeros((20, 1, 8, 8), dtype=np.uint8), "need an image config"),
        ("toy", np.zeros((20, 2, 2)), r"shape \(N, D\)"),
        ("toy", np.full((20, 2), np.nan), "NaN"),
        ("digits", np.zeros((20, 64)), "uint8 images of shape"),
        ("digits", np.zeros((20, 1, 7, 7), dtype=np.uint8), r"\(N, 1, 8, 8\)"),
        ("digits", np.zeros((20, 1, 8, 8)), "uint8 images"),
    ],
)
def test_data_that_do_not_fit_the_config_are_refused(config, x, why):
    cfg = toy_config() if config == "toy" else digits_config()
    with pytest.raises(ValueError, match="do not fit the config") as err:
        training_data(cfg, x)
    assert err.match(why)


def test_train_refuses_a_wrong_shape_with_one_message(tmp_path):
    cfg = sd.apply_overrides(toy_config(), ["model.params.dim=2"])
    with pytest.raises(ValueError, match=r"model.params.dim is 2 but the data have D = 3"):
        sd.train(cfg, data=np.zeros((30, 3)), workdir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
