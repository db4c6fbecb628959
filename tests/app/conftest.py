"""Shared by the command-line tests: a tiny run of the ``toy_mixture_vp`` preset (a 16-wide MLP,
3 steps), trained through ``scoresde train``; the tests check plumbing, not quality."""

from __future__ import annotations

import pytest

from scoresde.app.cli import main

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
