"""Shared fixtures: the Gaussian-mixture oracle (DESIGN section 5), official reference data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.app.cli import main

# One thread: the tests use small tensors, where OpenMP start-up costs more than it saves.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread, whatever an earlier one (a CLI call with --threads) set."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TESTDATA = SHARED / "testdata" / "score_sde_pytorch"
DATA = SHARED / "data"


def make_sde(name: str) -> sd.SDE:
    """The paper's default SDEs by short name."""
    return {
        "ve": sd.VESDE(0.01, 50.0, 1000),
        "vp": sd.VPSDE(0.1, 20.0, 1000),
        "subvp": sd.SubVPSDE(0.1, 20.0, 1000),
    }[name]


@pytest.fixture(params=["ve", "vp", "subvp"])
def sde(request) -> sd.SDE:
    """Each of the three SDEs with the paper's parameters."""
    return make_sde(request.param)


@pytest.fixture
def mixture() -> sd.GaussianMixture:
    """A 2-D, three-component mixture with unequal weights and full covariances (float64)."""
    from scoresde.core.mixture import oracle_mixture_2d

    return oracle_mixture_2d()


def require(path: Path) -> Path:
    """Skip a test whose shared reference file is absent."""
    if not path.exists():
        pytest.skip(f"missing reference file {path}")
    return path


# ---- a tiny run of the toy_mixture_vp preset (a 16-wide MLP, 3 steps) for the CLI tests ----------
TINY_TOY = [
    "--set", "train.steps=3", "--set", "train.batch_size=32", "--set", "train.warmup=1",
    "--set", "train.eval_every=0", "--set", "train.log_every=1", "--set", "data.n_train=128",
    "--set", "data.n_test=32", "--set", "model.params.hidden=16",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_toy_sets() -> list[str]:
    """The ``--set`` flags of the tiny toy run."""
    return list(TINY_TOY)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> str:
    """The folder of a tiny toy run, one per test module."""
    wd = tmp_path_factory.mktemp("toy")
    argv = ["train", "--config", "toy_mixture_vp", "--workdir", str(wd), "--quiet", *TINY_TOY]
    assert main(argv) == 0
    return str(wd)
