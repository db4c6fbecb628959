"""``scoresde sample --grid optimised`` fits a time grid to the run's model and sampler, writes it
beside the samples and samples on it; ``--grid FILE.json`` reads it back and gives the same
samples; a sampler that cannot be fitted, a missing or malformed file: one clear line each.

The run is tiny (a 16-wide MLP, 3 steps): what is checked is the plumbing, whose grid is
:func:`scoresde.optimised_grid`'s (tested against closed forms in tests/samplers).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.app.cli import main

FIT = ["--grid", "optimised", "--grid-warmup", "16", "--steps", "4", "--device", "cpu"]


def _sample(workdir: str, out, *flags: str) -> int:
    return main(["sample", "--workdir", workdir, "--out", str(out), "--quiet", "--n", "40", *flags])


@pytest.fixture(scope="module")
def fitted(toy, tmp_path_factory):
    """One fitted run of unipc: (samples, grid record, the grid file)."""
    out = tmp_path_factory.mktemp("fit") / "s.npz"
    assert _sample(toy, out, "--sampler", "unipc", *FIT) == 0
    grid = out.with_suffix(".grid.json")
    return np.load(out)["samples"], json.loads(grid.read_text()), grid


def test_fitted_grid_is_written_with_its_record(fitted, toy):
    _, record, _ = fitted
    sde = sd.load(toy).sde
    t = torch.tensor(record["times"], dtype=torch.float64)
    assert len(t) == 4 + 1 and record["steps"] == 4 and record["sampler"] == "unipc"
    assert t[0].item() == sde.T and t[-1].item() == pytest.approx(sd.samplers.default_eps(sde))
    assert bool((t.diff() < 0).all())
    assert record["warmup"] == 16 and record["seconds"] >= 0
    # a fit, not the default log-SNR grid of 4 steps
    default = sd.samplers.grids.log_snr(sde, 4, sd.samplers.default_eps(sde), dtype=torch.float64)
    assert (t - default).abs().max().item() > 1e-6


def test_grid_file_reproduces_the_fitted_samples(fitted, toy, tmp_path, capsys):
    x, _, grid = fitted
    out = tmp_path / "again.npz"
    assert _sample(toy, out, "--sampler", "unipc", "--grid", str(grid), "--device", "cpu") == 0
    assert np.array_equal(np.load(out)["samples"], x)
    assert "nfe=4" in capsys.readouterr().out  # one evaluation per interval of the file's grid


def test_fit_reports_the_file_and_how_to_reuse_it(toy, tmp_path, capsys):
    out = tmp_path / "d"
    assert _sample(toy, f"{out}/", "--sampler", "deis", *FIT) == 0
    text = capsys.readouterr().out
    assert (out / "grid.json").is_file()
    line = next(ln for ln in text.splitlines() if "grid.json" in ln)
    assert "4 steps fitted to deis on 16 warm-up draws" in line
    assert f"--grid {out / 'grid.json'}" in line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sampler", "pc", *FIT], "--sampler pc is not one (valid: dpm_solver, unipc"),
        (["--sampler", "unipc", "--grid", "nowhere.json"], "--grid nowhere.json: no such file"),
        (["--sampler", "unipc", "--grid", "BAD"], "not a grid file (KeyError: 'times')"),
        (["--sampler", "ode", "--grid", "GRID"], "--sampler ode takes no time grid"),
    ],
)
def test_bad_grid_choices_are_one_line(toy, tmp_path, capsys, flags, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {"GRID": tmp_path / "g.json", "BAD": tmp_path / "bad.json"}
    files["GRID"].write_text(json.dumps({"times": [1.0, 0.5, 1e-3]}))
    files["BAD"].write_text(json.dumps({"t": [1.0, 1e-3]}))
    flags = [str(files[f]) if f in files else f for f in flags]
    assert _sample(toy, tmp_path / "s.npz", *flags) == 2
    assert not (tmp_path / "s.npz").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
