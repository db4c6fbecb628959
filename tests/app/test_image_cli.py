"""Image models from the command line: a user's folder or .npz, --data-dir, $SCORESDE_DATA,
--download, sampling to .npz + PNG, bits/dim with --repeats against a closed form, bad input.

Networks are tiny (widths 4, 8, 8, 8) and runs a few steps long: these tests check the plumbing
and the arithmetic, not sample quality.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import DATA, require
from PIL import Image

import scoresde as sd
from scoresde import data as images
from scoresde.app.cli import main
from scoresde.core.sde import bcast
from scoresde.data import images_to_model
from scoresde.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from scoresde.training.config import apply_overrides, load_config

QUICK = ["--set", "train.tensorboard=false", "--set", "train.log_every=1"]
TINY = ["--set", "model.params.channels=[4, 8, 8, 8]", "--set", "model.params.embed_dim=8"]
# A DDPM chain of a few steps is undefined (beta_max / N > 1): Euler-Maruyama, no corrector.
FEW = ["--set", "sample.predictor=euler_maruyama", "--set", "sample.corrector=none"]


def _train(preset: str, workdir, steps: int, *extra: str) -> list[str]:
    return ["train", "--config", preset, "--workdir", str(workdir), *QUICK, *TINY,
            "--set", f"train.steps={steps}", "--set", "train.batch_size=8", *extra]  # fmt: skip


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _digit_folder(folder, n: int = 40):
    """scikit-learn digits as PNG and JPEG files of mixed sizes (8x8, 16x16, 12x10) and modes
    (L, RGB, RGBA), in nested folders: what a user's folder may look like."""
    from sklearn.datasets import load_digits

    d = load_digits()
    sizes, modes = [(8, 8), (16, 16), (10, 12)], ["L", "RGB", "RGBA"]
    for i in range(n):
        a = np.rint(d.images[i] * 255 / 16).astype(np.uint8)
        im = Image.fromarray(a).resize(sizes[i % 3]).convert(modes[(i // 3) % 3])
        sub = folder / f"class_{d.target[i]}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 5 == 4:
            im.convert("RGB").save(sub / f"{i:03d}.jpg", quality=95)
        else:
            im.save(sub / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A digits_vp model trained 3 steps on a folder of 40 mixed PNG/JPEG images."""
    tmp = tmp_path_factory.mktemp("folder")
    folder = _digit_folder(tmp / "images")
    run = tmp / "run"
    sets = ["--set", "train.sample_every=3", "--set", "sample.steps=3", "--set", "sample.n=4"]
    assert main(_train("digits_vp", run, 3, "--data", str(folder), *sets, *FEW)) == 0
    return run, folder


# ---- training on a folder / an .npz ------------------------------------------------------------
def test_train_on_an_image_folder(folder_run):
    run, folder = folder_run
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["path"] == str(folder) and saved["shape"] == [1, 8, 8]
    assert (saved["scale"], saved["shift"], saved["standardize"]) == (1.0, 0.0, False)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and np.isfinite(float(rows[-1].split(",")[2]))  # the test loss
    with Image.open(run / "samples_3.png") as im:
        assert im.size[0] > 0 and im.size[1] > 0


def test_centered_folder_data_gets_the_centered_scaling(folder_run, capsys):
    _, folder = folder_run
    argv = ["train", "--config", "digits_vp", "--data", str(folder), "--dry-run"]
    assert main([*argv, "--set", "data.centered=true"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert (data["scale"], data["shift"], data["name"]) == (2.0, -1.0, "file")


def test_train_on_an_npz_of_images(tmp_path):
    g = np.random.default_rng(0)
    x = g.integers(0, 256, size=(30, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x_train=x[:24], x_test=x[24:])
    assert main(_train("digits_vp", tmp_path / "run", 1, "--data", str(tmp_path / "mine.npz"))) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["path"].endswith("mine.npz") and saved["scale"] == 1.0


def test_sample_writes_npz_and_png(folder_run, tmp_path, capsys):
    run, _ = folder_run
    out = tmp_path / "s.npz"
    argv = ["sample", "--workdir", str(run), "--n", "6", "--steps", "3", "--device", "cpu"]
    assert (
        main([*argv, "--predictor", "euler_maruyama", "--corrector", "none", "--out", str(out)])
        == 0
    )
    x = np.load(out)["samples"]
    assert x.shape == (6, 1, 8, 8) and x.min() >= 0 and x.max() <= 1  # pixels in [0, 1]
    assert not out.with_suffix(".png").exists()  # exactly --out; FILE.png or DIR/ for pictures
    assert "nfe=" in capsys.readouterr().out


# ---- where named data sets come from -----------------------------------------------------------
@pytest.mark.parametrize("how", ["flag", "variable"])
def test_data_dir_flag_and_variable(tmp_path, monkeypatch, how):
    require(DATA / "mnist.npz")
    monkeypatch.chdir(tmp_path)  # the default roots (./data, ../shared/data) find nothing here
    monkeypatch.delenv(images.ENV_VAR, raising=False)
    extra = ["--set", "data.n_train=64", "--set", "data.n_test=8"]
    if how == "flag":
        extra += ["--data-dir", str(DATA)]
    else:
        monkeypatch.setenv(images.ENV_VAR, str(DATA))
    assert main(_train("mnist_vp", tmp_path / "run", 1, *extra)) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["data_dir"] == (str(DATA) if how == "flag" else None)
    assert saved["shape"] == [1, 28, 28]


def test_missing_data_set_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(images.ENV_VAR, raising=False)
    assert main(_train("fashion_mnist_subvp", tmp_path / "run", 1)) == 2
    err = _one_error_line(capsys)
    assert str(tmp_path / "data") in err and "fashion_mnist.npz" in err and "--download" in err


def test_download_without_network_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(images.SOURCES, "mnist", ("http://127.0.0.1:9/",))  # nothing listens
    target = tmp_path / "fetched"
    argv = _train("mnist_vp", tmp_path / "run", 1, "--download", "--data-dir", str(target))
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "no network" in err and "by hand" in err and str(target) in err
    assert "mnist.npz" in err and "train-images-idx3-ubyte" in err  # what to place there
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not [p for p in target.rglob("*") if p.is_file()]


def test_download_skips_a_present_set_and_refuses_other_data(tmp_path, capsys):
    require(DATA / "mnist.npz")
    argv = _train("mnist_vp", tmp_path / "run", 1, "--download", "--data-dir", str(DATA))
    assert main([*argv, "--set", "data.n_train=32", "--set", "data.n_test=8"]) == 0
    assert "data set 'mnist': found" in capsys.readouterr().out
    assert main(["train", "--config", "toy_mixture_vp", "--download"]) == 2
    assert "--download fetches a named image data set" in _one_error_line(capsys)


# ---- bits/dim ------------------------------------------------------------------------------------
def test_likelihood_repeats_and_json(folder_run, tmp_path, capsys):
    run, _ = folder_run
    out = tmp_path / "ll.json"
    argv = ["likelihood", "--workdir", str(run), "--n", "3", "--repeats", "2", "--device", "cpu"]
    assert main([*argv, "--rtol", "1e-3", "--atol", "1e-3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["n"], r["repeats"], r["divergence"]) == (3, 2, "rademacher")  # images: Hutchinson
    assert np.isfinite(r["bpd"]) and r["bpd_se"] > 0
    assert r["bpd"] == pytest.approx(r["nll"] / (64 * math.log(2)) + 8, rel=1e-12)  # scale 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nll = ") and lines[1].startswith("bits/dim = ")
    with pytest.raises(SystemExit) as e:  # refused while parsing: one line, exit 2
        main([*argv[:-2], "--repeats", "0"])
    assert e.value.code == 2
    assert "--repeats: must be an integer >= 1, got '0'" in _one_error_line(capsys)


class _GaussianOracle(torch.nn.Module):
    """A score model with the exact score of p_t when p_0 = N(m, s^2 I) in model space."""

    def __init__(self, sde: sd.SDE, m: float, s: float, D: int):
        super().__init__()
        self.sde, self.m, self.s = sde, m, s
        self.p0 = sd.GaussianMixture([1.0], [[m] * D], [s**2])  # one component

    def score_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.p0.score(x, t, self.sde)

    def exact_logp(self, y: torch.Tensor, eps: float) -> torch.Tensor:
        """What the probability-flow likelihood computes with the exact score, in closed form.

        p_t = N(alpha_t m, v_t I), v_t = alpha_t^2 s^2 + sigma_t^2, and its probability flow
        keeps w = (x - alpha_t m) / sqrt(v_t) constant, so y at eps ends at z = alpha_T m +
        sqrt(v_T / v_eps) (y - alpha_eps m). The ODE gives log p_eps(y) with p_T replaced by the
        prior: log prior(z) + log p_eps(y) - log p_T(z) (p_T is not exactly the prior at T = 1).
        """
        y = y.double()
        B = y.shape[0]

        def moments(t: float) -> tuple[torch.Tensor, torch.Tensor]:
            tt = torch.full((B,), t, dtype=torch.float64)
            a, sig = self.sde.alpha(tt).double(), self.sde.sigma(tt).double()
            return bcast(a * self.m, y), bcast(torch.sqrt(a**2 * self.s**2 + sig**2), y)

        (mu_e, std_e), (mu_T, std_T) = moments(eps), moments(self.sde.T)
        z = mu_T + std_T / std_e * (y - mu_e)
        t_e, t_T = torch.full((B,), eps).double(), torch.full((B,), self.sde.T).double()
        return (
            self.sde.prior_logp(z) + self.p0.log_prob(y, t_e, self.sde)
            - self.p0.log_prob(z, t_T, self.sde)
        )  # fmt: skip


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_log_likelihood_of_a_gaussian_matches_its_closed_form(sde_name):
    from conftest import make_sde

    sde, D, eps = make_sde(sde_name), 4, 1e-5
    oracle = _GaussianOracle(sde, 0.4, 0.25, D)
    x = torch.randint(0, 256, (16, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    cfg = apply_overrides(load_config("digits_vp"), ["data.shape=[1, 2, 2]"])
    y = images_to_model(x.to(torch.uint8), cfg.data, torch.Generator().manual_seed(1)).double()
    exact = oracle.exact_logp(y, eps)
    logp, _, nfe = sd.log_likelihood(sde, oracle.score_fn, y, "exact", 1e-9, 1e-9, eps)
    # dopri5 keeps each step's error below atol + rtol |state| <= 1e-9 (1 + max |log p|);
    # summed over at most nfe / 6 steps (6 evaluations per step), float64 round-off aside.
    tol = nfe / 6 * 1e-9 * (1 + exact.abs().max().item())
    assert (logp - exact).abs().max() <= tol
    bpd = sd.bits_per_dim(logp, y.shape, scale=1.0)
    want = -exact / (D * math.log(2)) + 8  # DESIGN section 4 with a = 1
    assert (bpd - want).abs().max() <= tol / (D * math.log(2))


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_elbo_bound_is_the_ode_nll_with_the_exact_score(sde_name):
    """``dataset_nll(bound="elbo")`` through the same dequantization as the ODE path: with the
    exact score of a Gaussian the expected ELBO of each example is log p_eps(y) plus
    E[log prior(x_T) - log p_T(x_T) | y], the ODE's log p_eps(y) plus the same mismatch at one
    point z; both mismatches are far below the Monte Carlo error for the paper's VP and sub-VP
    (p_T is within 1e-4 nats of the prior). So the per-example differences have mean zero up to
    their standard error."""
    from conftest import make_sde

    from scoresde.training.evaluate import dataset_nll

    sde, D, n = make_sde(sde_name), 4, 48
    oracle = _GaussianOracle(sde, 0.4, 0.25, D)
    cfg = apply_overrides(load_config("digits_vp"), ["data.shape=[1, 2, 2]"])
    x = torch.randint(0, 256, (n, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    x = x.to(torch.uint8)
    ode = dataset_nll(oracle, x, cfg.data, divergence="exact", rtol=1e-7, atol=1e-7, seed=3)
    bound = dataset_nll(oracle, x, cfg.data, bound="elbo", elbo_samples=64, seed=3)
    d = (bound.nll - ode.nll).double()
    assert bound.summary()["bound"] == "elbo" and bound.nfe == 64 * 1  # one batch
    assert d.mean().abs() <= 4 * d.std() / math.sqrt(n) + 1e-3, (d.mean(), d.std())
    assert bound.bpd is not None and torch.isfinite(bound.bpd).all()


@pytest.mark.parametrize("centered", [False, True])
def test_cli_bits_per_dim_of_a_known_density(tmp_path, monkeypatch, centered):
    """``scoresde likelihood`` on a model whose score is exact: bpd = -log p_y(y) / (D ln 2)
    - log2(scale) + 8 averaged over R dequantization draws, against the closed form."""
    D, R, n, eps, tol = 4, 3, 12, 1e-5, 1e-6
    cfg = apply_overrides(
        load_config("digits_vp"), ["data.shape=[1, 2, 2]", f"data.centered={str(centered).lower()}"]
    )
    oracle = _GaussianOracle(sd.VPSDE(0.1, 20.0, 1000), -0.2 if centered else 0.4, 0.25, D)
    monkeypatch.setattr(
        "scoresde.training.checkpoint.load_model", lambda *a, **k: (oracle, cfg, None)
    )
    x = np.random.default_rng(3).integers(0, 256, size=(n, 2, 2), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x_train=x, x_test=x)
    out = tmp_path / "ll.json"
    argv = ["likelihood", "--workdir", str(tmp_path), "--data", str(tmp_path / "x.npz")]
    argv += ["--divergence", "exact", "--repeats", str(R), "--seed", "5", "--device", "cpu"]
    assert main([*argv, "--rtol", str(tol), "--atol", str(tol), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    # The documented noise: R draws in turn from one CPU generator seeded with --seed.
    g = torch.Generator().manual_seed(5)
    xt = torch.from_numpy(x)[:, None]
    logps = [oracle.exact_logp(images_to_model(xt, cfg.data, g), eps) for _ in range(R)]
    nll = -sum(logps) / R
    bpd = nll / (D * math.log(2)) - math.log2(cfg.data.scale) + 8
    # Error per solve: each dopri5 step keeps its error below atol + rtol |state|, plus float32
    # round-off of the state (2^-23 relative), i.e. (1e-6 + 2^-23)(1 + max |log p|) nats, over at
    # most nfe / (6 R) steps (6 evaluations per step). In bits/dim divide by D ln 2. Averaging
    # only one of the R draws would be off by 2e-3 to 1e-2 nats here: 5 to 30 times this.
    big = 1 + max(lp.abs().max().item() for lp in logps)
    per_image = r["nfe"] / (6 * R) * (tol + 2**-23) * big
    assert r["n"] == n and r["repeats"] == R and r["divergence"] == "exact"
    assert abs(r["nll"] - nll.mean().item()) <= per_image
    assert abs(r["bpd"] - bpd.mean().item()) <= per_image / (D * math.log(2))
    assert abs(r["bpd_median"] - bpd.median().item()) <= per_image / (D * math.log(2))
    # Errors e_i move a standard deviation by at most std(e) <= max |e| sqrt(n / (n - 1)).
    se_tol = per_image / (D * math.log(2)) / math.sqrt(n - 1)
    assert abs(r["bpd_se"] - bpd.std().item() / math.sqrt(n)) <= se_tol


# ---- bad input: one line, exit code 2 ------------------------------------------------------------
def test_npz_of_another_shape_for_the_preset(tmp_path, capsys):
    x = np.zeros((10, 28, 28), np.uint8)
    np.savez(tmp_path / "big.npz", x_train=x, x_test=x)
    assert main(_train("digits_vp", tmp_path / "run", 1, "--data", str(tmp_path / "big.npz"))) == 2
    err = _one_error_line(capsys)
    assert "big.npz" in err and "(10, 28, 28)" in err and "(1, 8, 8)" in err


def test_corrupt_image_in_a_folder_is_named(tmp_path, capsys):
    folder = _digit_folder(tmp_path / "imgs", 6)
    (folder / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    assert main(_train("digits_vp", tmp_path / "run", 1, "--data", str(folder))) == 2
    err = _one_error_line(capsys)
    assert "cannot read image" in err and "broken.png" in err


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(_train("digits_vp", tmp_path / "run", 1, "--data", str(tmp_path / "empty"))) == 2
    assert "no PNG/JPEG images" in _one_error_line(capsys)


def _doctored(run, tmp_path, model: dict):
    """A copy of ``run``'s checkpoint whose config names another network."""
    state = load_checkpoint(run)
    state["config"]["model"] |= model
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    return tmp_path


@pytest.mark.parametrize(
    "model, needles",
    [
        ({"params": {"num_channels": 1, "channels": [4, 8, 8, 16], "embed_dim": 8,
                     "embedding": "positional", "padded": True}},
         ["shape-mismatched", "vs"]),
        ({"name": "mlp", "params": {"dim": 64, "hidden": 8}}, ["missing", "unexpected"]),
    ],
    ids=["other widths", "other architecture"],
)  # fmt: skip
def test_checkpoint_of_another_architecture(folder_run, tmp_path, capsys, model, needles):
    run, _ = folder_run
    wd = _doctored(run, tmp_path, model)
    for argv in (
        ["sample", "--workdir", str(wd), "--n", "2", "--out", str(tmp_path / "s.npz")],
        ["likelihood", "--workdir", str(wd), "--n", "2"],
    ):
        assert main(argv) == 2
        err = _one_error_line(capsys)
        assert "do not fit this model" in err and all(k in err for k in needles)
    # The same through the API: the report lists a few keys of each kind and counts the rest.
    cfg = apply_overrides(load_config("digits_vp"), ["model.params.channels=[4, 8, 8, 16]"])
    with pytest.raises(CheckpointError, match=r"\d+ shape-mismatched: net\.") as e:
        load_model(run, config=cfg)
    assert "more)" in str(e.value) and "\n" not in str(e.value)
