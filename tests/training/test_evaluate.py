"""Evaluation: the data set NLL / bits/dim, chunked samples, and the values recorded before the
evaluation code moved out of the command line and the training loop.

``RECORDED`` holds what ``scoresde train``, ``scoresde likelihood`` and ``scoresde sample``
wrote for the runs below (CPU, one thread) before :mod:`scoresde.training.evaluate` existed:
the likelihood JSON, a few samples and their sum, the metrics rows. The same commands must
reproduce them to float64 round-off. Sample and likelihood values were recorded again when PC took
its coefficients per grid and dopri5 became native (the training losses did not change): the old
ones moved by float32 round-off (toy: at most 1.1e-6 relative), and the image likelihood at
rtol = atol = 1e-3 took 476 evaluations instead of 470 (its NLL moved by 4.2e-4 relative, within
that tolerance); in float64 the samplers agree with the old code to 3e-14. The toy run sets the
``toy_mixture_vp`` preset back to the noise parameterization, score weighting and constant lr it
had when the values were recorded.

On the CPU that recorded them the values come back to float64 round-off. Another CPU's float32
kernels round differently: on one, training losses and samples moved by at most 1.6e-5 relative
and the toy likelihoods by 3e-7, and the image likelihood at rtol = atol = 1e-3 by 1.9e-4 (its
adaptive steps follow the round-off; its standard error by 0.036 nats, 1e-4 of the mean). So
values are checked to 1e-4 relative, and the likelihood summaries of solves at rtol 1e-3 to that
rtol of their mean.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from scoresde.app.cli import main
from scoresde.data import load_data
from scoresde.samplers import SampleStreams, sample
from scoresde.training.checkpoint import load_model
from scoresde.training.evaluate import NLL, dataset_nll, draw_samples

REL = 1e-4  # float32 round-off of another CPU, carried through a few steps
REL_ODE = 1e-3  # the likelihood solves' rtol

RECORDED = {
    "toy_ll_exact": {
        "nll": 11.660443391799927, "nll_per_dim": 5.830221695899963, "se": 0.012742982181558251,
        "median": 11.64525055885315, "n": 50, "repeats": 1, "divergence": "exact", "nfe": 62,
    },
    "toy_ll_rad_rep": {
        "nll": 11.581182730197906, "nll_per_dim": 5.790591365098953, "se": 0.07276963667099408,
        "median": 11.584341764450073, "n": 40, "repeats": 2, "divergence": "rademacher",
        "nfe": 414,
    },
    "img_ll_rep": {
        "nll": 359.2787144978841, "nll_per_dim": 5.613729914029439, "se": 12.386338999003543,
        "median": 363.06396484375, "n": 6, "repeats": 2, "divergence": "rademacher",
        "nfe": 476, "bpd": 16.0989003078603, "bpd_se": 0.2792142163848748,
        "bpd_median": 16.184227837586924,
    },
    # scoresde sample: recorded again when sample i got its own random stream (SampleStreams)
    "toy_s_pc": {
        "first": [358.9656677246094, -55.63699722290039, -1002.1427612304688, -453.3703918457031],
        "sum": 1957.3512382507324, "shape": (25, 2),
    },
    "toy_s_dpm_ms": {
        "first": [-248.97064208984375, -190.99664306640625, -209.1787872314453,
                  -363.5507507324219],
        "sum": -928.3405418395996, "shape": (16, 2),
    },
    "img_s": {"first": [1.0, 1.0, 1.0, 0.0], "sum": 194.67650616168976, "shape": (6, 1, 8, 8)},
    "toy_train": [
        {"step": 5, "train_loss": 2.161069869995117},
        {"step": 10, "train_loss": 1.847435760498047},
        {"step": 15, "test_loss": 2.378363093417138, "train_loss": 1.7935182571411132},
        {"step": 20, "train_loss": 1.973297119140625},
        {"step": 25, "train_loss": 1.9154409408569335},
        {"step": 30, "test_loss": 2.119952393900603, "train_loss": 1.7292457580566407},
    ],
    "img_train": [
        {"step": 1, "train_loss": 96.9427490234375},
        {"step": 2, "test_bpd": 15.93734073638916, "test_loss": 90.96678525109083,
         "train_loss": 93.87550354003906},
        {"step": 3, "train_loss": 91.83705139160156},
        {"step": 4, "test_bpd": 15.933632850646973, "test_loss": 90.82525620637117,
         "train_loss": 86.51313018798828},
    ],
    "toy_samples_30": {
        "first": [-189.80458068847656, 147.39065551757812, -227.6975860595703],
        "sum": -2310.206421852112,
    },
    "img_samples_4": {"first": [0.0, 1.0, 1.0], "sum": 134.58780309557915},
}  # fmt: skip

TOY = [
    "--set", "train.steps=30", "--set", "train.batch_size=64", "--set", "train.eval_every=15",
    "--set", "train.ckpt_every=15", "--set", "train.log_every=5", "--set", "train.warmup=5",
    "--set", "data.n_train=500", "--set", "data.n_test=100", "--set", "model.params.hidden=16",
    "--set", "train.sample_every=15", "--set", "sample.n=20", "--set", "sample.steps=20",
    # the preset as it was when the values were recorded (it has moved to EDM preconditioning)
    "--set", "model.parameterization=noise", "--set", "model.label=t",
    "--set", "train.weighting=score", "--set", "train.t_sampling=uniform",
    "--set", "train.lr_schedule=constant",
]  # fmt: skip
IMG = [
    "--set", "train.tensorboard=false", "--set", "train.log_every=1",
    "--set", "model.params.channels=[4, 8, 8, 8]", "--set", "model.params.embed_dim=8",
    "--set", "train.steps=4", "--set", "train.batch_size=8", "--set", "train.sample_every=2",
    "--set", "sample.steps=3", "--set", "sample.n=4", "--set", "train.bpd_every=2",
    "--set", "train.bpd_n=3", "--set", "train.eval_every=2",
    "--set", "sample.predictor=euler_maruyama", "--set", "sample.corrector=none",
]  # fmt: skip
LIKELIHOOD = {
    "toy_ll_exact": ["--n", "50", "--rtol", "1e-3", "--atol", "1e-3"],
    "toy_ll_rad_rep": ["--n", "40", "--repeats", "2", "--divergence", "rademacher",
                       "--batch-size", "16", "--rtol", "1e-3", "--atol", "1e-3", "--seed", "5"],
    "img_ll_rep": ["--n", "6", "--repeats", "2", "--batch-size", "3", "--rtol", "1e-3",
                   "--atol", "1e-3"],
}  # fmt: skip
SAMPLE = {
    "toy_s_pc": ["--steps", "30", "--n", "25", "--chunk", "10"],
    "toy_s_dpm_ms": ["--sampler", "dpm_solver", "--steps", "9", "--order", "2",
                     "--dpm-method", "multistep", "--n", "16"],
    "img_s": ["--n", "6", "--chunk", "4", "--steps", "3", "--predictor", "euler_maruyama",
              "--corrector", "none"],
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{"toy": folder, "img": folder}``: a 30-step toy run and a 4-step digits run."""
    root = tmp_path_factory.mktemp("recorded")
    toy, img = root / "toy", root / "img"
    assert main(["train", "--config", "toy_mixture_vp", "--workdir", str(toy), *TOY]) == 0
    assert main(["train", "--config", "digits_vp", "--workdir", str(img), *IMG]) == 0
    return {"toy": toy, "img": img}


def _close(got, want) -> None:
    if isinstance(want, float):
        assert got == pytest.approx(want, rel=REL, abs=1e-300)
    else:
        assert got == want


def _close_nll(got: dict, want: dict) -> None:
    """A likelihood summary to the solves' rtol, relative to its mean on each key's scale (the
    standard error and median move with the mean's round-off)."""
    for k, w in want.items():
        if not isinstance(w, float):
            assert got[k] == w
            continue
        base = "bpd" if k.startswith("bpd") else "nll_per_dim" if k == "nll_per_dim" else "nll"
        assert got[k] == pytest.approx(w, rel=REL_ODE, abs=REL_ODE * abs(want[base]))


def _check(got: np.ndarray, want: dict) -> None:
    if "shape" in want:
        assert got.shape == tuple(want["shape"])
    for g, w in zip(got.ravel()[: len(want["first"])].tolist(), want["first"], strict=True):
        _close(g, w)
    _close(float(got.astype(np.float64).sum()), want["sum"])


@pytest.mark.parametrize("run", ["toy", "img"])
def test_training_metrics_and_samples_as_recorded(runs, run):
    with open(runs[run] / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    want = RECORDED[f"{run}_train"]
    assert [int(r["step"]) for r in rows] == [w["step"] for w in want]
    for row, w in zip(rows, want, strict=True):
        assert {k for k in ("train_loss", "test_loss", "test_bpd") if row[k]} == set(w) - {"step"}
        for k in set(w) - {"step"}:
            _close(float(row[k]), w[k])
    step = 30 if run == "toy" else 4
    _check(np.load(runs[run] / f"samples_{step}.npy"), RECORDED[f"{run}_samples_{step}"])


@pytest.mark.parametrize("case", sorted(LIKELIHOOD))
def test_likelihood_json_as_recorded(runs, case, tmp_path):
    out = tmp_path / "ll.json"
    argv = ["likelihood", "--workdir", str(runs[case.split("_")[0]]), "--device", "cpu"]
    assert main([*argv, "--out", str(out), *LIKELIHOOD[case]]) == 0
    got, want = json.loads(out.read_text()), RECORDED[case]
    assert list(got) == [*want, "bound"]  # the same keys, in the same order; then the bound
    assert got["bound"] == "ode"
    _close_nll(got, want)


@pytest.mark.parametrize("case", sorted(SAMPLE))
def test_samples_as_recorded(runs, case, tmp_path, capsys):
    out = tmp_path / ("s.npz" if case == "img_s" else "s.npy")
    argv = ["sample", "--workdir", str(runs[case.split("_")[0]]), "--device", "cpu"]
    assert main([*argv, "--out", str(out), *SAMPLE[case]]) == 0
    x = np.load(out)["samples"] if out.suffix == ".npz" else np.load(out)
    _check(x, RECORDED[case])


def test_dataset_nll_is_what_the_cli_writes(runs, tmp_path):
    model, cfg, std = load_model(runs["toy"], ema=True)
    _, x, _ = load_data(cfg.data)
    seen: list[tuple[int, int]] = []
    nll = dataset_nll(
        model.eval(), x[:40], cfg.data, std, divergence="rademacher", repeats=2, batch_size=16,
        rtol=1e-3, atol=1e-3, seed=5, callback=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert isinstance(nll, NLL) and nll.nll.shape == (40,) and nll.nll.dtype == torch.float64
    assert nll.bpd is None  # not images
    _close_nll(nll.summary(), RECORDED["toy_ll_rad_rep"])
    assert seen == [(16, 80), (32, 80), (40, 80), (56, 80), (72, 80), (80, 80)]
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        dataset_nll(model, x[:4], cfg.data, std, repeats=0)


def test_image_nll_gives_bits_per_dim(runs):
    model, cfg, std = load_model(runs["img"], ema=True)
    _, x, _ = load_data(cfg.data)
    nll = dataset_nll(model.eval(), x[:6], cfg.data, std, repeats=2, batch_size=3, rtol=1e-3,
                      atol=1e-3)  # fmt: skip
    assert nll.divergence == "rademacher" and nll.scale == cfg.data.scale
    _close_nll(nll.summary(), RECORDED["img_ll_rep"])


def test_draw_samples_takes_sample_i_from_stream_i(runs):
    model, cfg, _ = load_model(runs["toy"], ema=True)
    model.eval()
    seen: list[tuple[int, int]] = []
    x, nfe = draw_samples(model, (2,), 7, sampler="ode", chunk=3, seed=4, method="rk4", steps=5,
                          callback=lambda done, total: seen.append((done, total)))  # fmt: skip
    with torch.no_grad():  # one call over streams 0..6 of seed 4: the same samples
        whole, nfe_k = sample(model.sde, model.score_fn, (7, 2), "ode", SampleStreams(4, range(7)),
                              method="rk4", steps=5)  # fmt: skip
    assert torch.allclose(x, whole, atol=1e-6) and nfe == nfe_k
    assert seen == [(0, 7), (3, 7), (6, 7), (7, 7)]  # (0, 7): the start, for a bar's clock
    with pytest.raises(ValueError, match="takes no option 'lam'"):
        draw_samples(model, (2,), 2, sampler="ode", lam=0.5)
