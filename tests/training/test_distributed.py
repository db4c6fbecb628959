"""Several processes: torchrun + gloo training equals one process, resume, sharded sampling.

The multi-process runs go through the real launcher (``python -m torch.distributed.run
--standalone --nproc_per_node=2 -m scoresde ...``) with one thread per process; the one-process
references run in this process with the same config, seed and global batch.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scoresde.app.cli import main
from scoresde.training import distributed
from scoresde.training.checkpoint import load_checkpoint, load_model
from scoresde.training.config import apply_overrides, load_config
from scoresde.training.loop import train

K = 15  # the 2-process run stops at step K, then resumes to 2K
TINY = [
    "model.params.hidden=16", "model.params.depth=2", "model.params.embed_dim=8",
    "data.n_train=512", "data.n_test=128", "train.batch_size=32", "train.warmup=5",
    "train.lr=1e-3", "train.tensorboard=false", "train.log_every=5", "train.eval_every=10",
    "train.ckpt_every=10",
    # a constant lr: the runs resumed with more steps must equal uninterrupted ones (a decaying
    # schedule depends on train.steps)
    "train.lr_schedule=constant",
]  # fmt: skip
PRESET = "toy_swissroll_vp"


def _torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(distributed.BACKEND_ENV, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, "-m", "scoresde", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def _sets(*more: str) -> list[str]:
    return [a for kv in [*TINY, *more] for a in ("--set", kv)]


def _rows(workdir) -> list[dict]:
    with open(workdir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2 processes to step K, then resumed to 2K (CLI); 1 process to K and to 2K (in process)."""
    root = tmp_path_factory.mktemp("ddp")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for steps in (K, 2 * K):
            cfg = apply_overrides(load_config(PRESET), [*TINY, f"train.steps={steps}"])
            train(cfg, root / f"one_{steps}")
    finally:
        torch.set_num_threads(n)
    two = root / "two"
    out = {}
    for steps, resume in ((K, []), (2 * K, ["--resume"])):
        args = ["train", "--config", PRESET, "--workdir", str(two), *_sets(f"train.steps={steps}")]
        proc = _torchrun(*args, *resume, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[steps] = (load_checkpoint(two), _rows(two), proc.stdout)
    return root, out


def _tolerance(state: dict) -> float:
    """Largest parameter gap allowed between 2 processes and 1 after ``step`` Adam updates.

    Float32 (unit round-off u = 2^-24): the 2 ranks sum their 16-example gradients before DDP
    averages them, a different order from the one 32-example sum, so each gradient entry moves by
    about B u times its cancellation factor (sum |terms| / |sum|, taken <= 1e3). Adam's direction
    m / sqrt(v) moves by that relative amount, the update by lr times it; rounding the new
    parameter adds a few ulps of |theta|. Per step: 4 u max|theta| + lr B u 1e3; summed over steps.
    A real fault (other rows, a sum instead of a mean, other draws) moves parameters by ~ lr per
    step, 1e3 times more.
    """
    u, lr, B = 2.0**-24, 1e-3, 32
    big = max(v.abs().max().item() for v in state["model"].values())
    return state["step"] * (4 * u * big + lr * B * u * 1e3)


def _gap(a: dict, b: dict) -> float:
    gaps = [(a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]]
    gaps += [(v - b["ema"]["params"][k]).abs().max().item() for k, v in a["ema"]["params"].items()]
    return max(gaps)


@pytest.mark.parametrize("steps", [K, 2 * K])
def test_two_processes_equal_one(runs, steps):
    root, out = runs
    two, rows, _ = out[steps]
    one = load_checkpoint(root / f"one_{steps}")
    assert two["step"] == one["step"] == steps
    assert set(two["model"]) == set(one["model"])  # plain keys, no "module." prefix
    assert _gap(two, one) <= _tolerance(one)
    # Every rank drew the whole global batch: the generator is in the same state as in 1 process.
    assert torch.equal(two["rng"]["data"], one["rng"]["data"])
    assert two["ema"]["num_updates"] == one["ema"]["num_updates"] == steps


def test_rank0_logs_the_global_mean_loss_once(runs):
    root, out = runs
    _, rows, _ = out[2 * K]
    ref = _rows(root / f"one_{2 * K}")
    assert [r["step"] for r in rows] == [r["step"] for r in ref]  # one writer; resume kept rows
    # The logged loss is the mean over both ranks' rows: parameters agree to _tolerance (< 1e-4)
    # on O(1) losses, far inside 1e-3; one rank's 16-example mean alone is off by its Monte Carlo
    # error, ~10% of the loss here.
    for r, q in zip(rows, ref, strict=True):
        assert float(r["train_loss"]) == pytest.approx(float(q["train_loss"]), rel=1e-3)


def test_checkpoint_of_two_processes_loads_in_one(runs, tmp_path):
    root, _ = runs
    model, cfg, _ = load_model(root / "two")
    assert cfg.train.batch_size == 32 and cfg.train.backend == "auto"
    x = torch.randn(4, 2)
    assert torch.isfinite(model(x, torch.full((4,), 0.5))).all()


def test_sharded_sampling_equals_one_process(runs, tmp_path):
    root, _ = runs
    # 50 samples in chunks of 16: chunks 0, 2 (32 rows) on rank 0, chunks 1, 3 (18 rows) on rank
    # 1, so the gather pads and cuts unequal shards. Same chunk, same seed, same shapes, same ops:
    # the samples are bit for bit those of one process.
    common = ["--workdir", str(root / "two"), "--chunk", "16", "--steps", "50", "--seed", "3"]
    proc = _torchrun("sample", *common, "--num-samples", "50", "--out", "two.npy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 chunks, 2 processes" in proc.stdout and proc.stdout.count("wrote") == 1
    assert main(["sample", *common, "--n", "50", "--out", str(tmp_path / "one.npy")]) == 0
    two, one = np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy")
    assert two.shape == (50, 2) and np.array_equal(two, one)
    # Chunks differ from each other (each has its own seed).
    assert not np.array_equal(one[:2], one[16:18])


def test_sharded_likelihood_equals_one_process(runs, tmp_path):
    root, _ = runs
    # 40 points in batches of 16: batches 0 and 2 on rank 0, batch 1 on rank 1; 2 repeats, each
    # batch of each repeat with its own probe seed. The same ODE solves as in one process, so the
    # same numbers, bit for bit. "--" ends torchrun's options (it would read --n as its own).
    args = ["likelihood", "--workdir", str(root / "two"), "--divergence", "rademacher", "--n", "40"]
    args += ["--batch-size", "16", "--repeats", "2", "--rtol", "1e-3", "--atol", "1e-3"]
    proc = _torchrun("--", *args, "--seed", "5", "--out", "two.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote") == 1
    assert main([*args, "--seed", "5", "--out", str(tmp_path / "one.json")]) == 0
    two = json.loads((tmp_path / "two.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["n"] == 40 and one["repeats"] == 2 and two == one
    # The seed matters (the probes are drawn): another seed gives another estimate.
    assert main([*args, "--seed", "6", "--out", str(tmp_path / "other.json")]) == 0
    assert json.loads((tmp_path / "other.json").read_text())["nll"] != one["nll"]


# ---- one process: no-ops and clear errors -----------------------------------------------------
def test_without_torchrun_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = distributed.init()
    assert (d.rank, d.world, d.local_rank, d.device) == (0, 1, 0, torch.device("cpu"))
    assert d.is_main and not d.active
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_reduce(x, d, "mean") is x
    assert distributed.rows(8, d) == slice(0, 8) and list(distributed.shard(3, d)) == [0, 1, 2]
    assert distributed.chunk_sizes(50, 16) == [16, 16, 16, 2]
    parts = list(x.split([2, 1]))
    assert torch.equal(distributed.gather_chunks(parts, [2, 1], d, x[:0]), x)
    assert distributed.wrap_ddp(torch.nn.Linear(2, 2), d).__class__ is torch.nn.Linear


def test_rows_and_shards_cover_the_batch_once():
    covered = []
    for rank in range(4):
        d = distributed.Dist(rank=rank, world=4)
        covered += list(range(32))[distributed.rows(32, d)]
        assert list(distributed.shard(10, d)) == list(range(rank, 10, 4))
    assert covered == list(range(32))


def test_world_size_not_dividing_the_global_batch(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=30 .* divisible .* \(4\); use e.g. 28 or 32"):
        distributed.check_batch(30, 4)
    assert distributed.check_batch(32, 4) == 8
    # train() checks before joining a process group (no torchrun needed to see the error).
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = apply_overrides(load_config(PRESET), [*TINY, "train.batch_size=5"])
    with pytest.raises(ValueError, match="batch_size=5 is the global batch"):
        train(cfg, tmp_path)


def test_backend_choice_and_errors(monkeypatch, tmp_path):
    monkeypatch.delenv(distributed.BACKEND_ENV, raising=False)
    assert distributed.resolve_backend("auto", "cpu") == "gloo"
    assert distributed.resolve_backend("gloo", "cpu") == "gloo"
    with pytest.raises(ValueError, match="unknown backend 'mpi'; valid: auto, gloo, nccl"):
        distributed.resolve_backend("mpi", "cpu")
    # NCCL needs CUDA tensors: on CPU it is refused whether or not the machine has GPUs.
    with pytest.raises(ValueError, match="'nccl' needs CUDA GPUs"):
        distributed.resolve_backend("nccl", "cpu")
    cfg = apply_overrides(load_config(PRESET), [*TINY, "train.backend=nccl"])
    with pytest.raises(ValueError, match="train.backend: backend 'nccl' needs CUDA GPUs"):
        train(cfg, tmp_path)
    monkeypatch.setenv(distributed.BACKEND_ENV, "nccl")
    with pytest.raises(ValueError, match=r"\$SCORESDE_BACKEND: backend 'nccl'"):
        distributed.init("auto", "cpu")
    assert distributed.resolve_backend("gloo", "cpu") == "gloo"  # an explicit choice wins
