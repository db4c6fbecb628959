"""Shared fixtures: the Gaussian-mixture oracle (DESIGN section 5), official reference data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scoresde as sd

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
