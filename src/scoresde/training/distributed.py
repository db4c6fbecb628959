"""Several processes on ``torch.distributed``, launched by ``torchrun`` (one node or many).

``torchrun`` gives every process ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment;
:func:`init` reads them and joins the process group (gloo on CPU, NCCL on CUDA). Without
``torchrun`` (``WORLD_SIZE`` unset or 1) the world has one process and every function here is a
no-op, so the same code runs in one process and in many.

Two ways of splitting work, both independent of the world size so that N processes reproduce one:

- training: every rank draws the whole global batch from the same generator and keeps its own rows
  :func:`rows` (``batch_size / world`` of them); DDP averages the gradients;
- sampling and likelihoods: the work is cut into chunks (likelihood batch ``k`` seeded with
  ``seed + k``, sample ``i`` drawn from its own stream whatever its chunk);
  chunks are dealt round-robin (:func:`shard`) and gathered in chunk order (:func:`gather_chunks`).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "Dist",
    "BACKENDS",
    "BACKEND_ENV",
    "init",
    "world_size",
    "resolve_backend",
    "check_batch",
    "rows",
    "shard",
    "chunk_sizes",
    "all_reduce",
    "all_gather_rows",
    "gather_chunks",
    "barrier",
    "wrap_ddp",
]

BACKENDS = ("auto", "gloo", "nccl")
BACKEND_ENV = "SCORESDE_BACKEND"  # read when the backend asked for is "auto"

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


@dataclass(frozen=True)
class Dist:
    """This process's place in the world: ``rank`` of ``world`` processes, ``local_rank`` on its
    node, and the ``device`` it computes on (``cuda:<local_rank>`` for CUDA)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process (collectives are needed)."""
        return self.world > 1


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``"gloo"`` or ``"nccl"`` for ``backend`` (``"auto"``: ``$SCORESDE_BACKEND``, else NCCL on
    CUDA devices and gloo otherwise); NCCL without a CUDA GPU is a ``ValueError``."""
    device, source = torch.device(device), "train.backend"
    if backend == "auto" and os.environ.get(BACKEND_ENV):
        backend, source = os.environ[BACKEND_ENV], f"${BACKEND_ENV}"
    if backend not in BACKENDS:
        raise ValueError(f"{source}: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not (torch.cuda.is_available() and device.type == "cuda"):
        why = "no CUDA GPU is available" if not torch.cuda.is_available() else f"device {device}"
        raise ValueError(
            f"{source}: backend 'nccl' needs CUDA GPUs ({why}); use 'gloo' or 'auto' on CPUs"
        )
    return backend


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """The number of processes ``torchrun`` started (``$WORLD_SIZE``; 1 without it)."""
    return max(_env_int("WORLD_SIZE", 1), 1)


def init(backend: str = "auto", device: torch.device | str = "cpu") -> Dist:
    """Join the ``torchrun`` process group (once per process); one process without ``torchrun``.

    Args:
        backend: ``"auto"``, ``"gloo"`` or ``"nccl"`` (:func:`resolve_backend`; checked even for
            one process, so that a bad choice fails before a long run).
        device: the device asked for; ``cuda`` becomes ``cuda:<LOCAL_RANK>``.
    """
    device = torch.device(device)
    name = resolve_backend(backend, device)
    world = world_size()
    if world == 1:
        return Dist(device=device)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # env:// rendezvous: MASTER_ADDR, MASTER_PORT from torchrun
        dist.init_process_group(name, rank=rank, world_size=world)
        atexit.register(_shutdown)
    return Dist(rank, world, local_rank, device)


def check_batch(global_batch: int, world: int) -> int:
    """The per-rank batch ``global_batch / world``; a ``ValueError`` unless it divides exactly."""
    if global_batch % world:
        lo, hi = (global_batch // world) * world, (global_batch // world + 1) * world
        near = f"{lo} or {hi}" if lo > 0 else f"{hi}"
        raise ValueError(
            f"train.batch_size={global_batch} is the global batch and must be divisible by the "
            f"number of processes ({world}); use e.g. {near}"
        )
    return global_batch // world


def rows(global_batch: int, d: Dist) -> slice:
    """This rank's rows ``[rank * b, (rank + 1) * b)`` of a global batch, ``b = batch / world``."""
    b = check_batch(global_batch, d.world)
    return slice(d.rank * b, (d.rank + 1) * b)


def shard(n_chunks: int, d: Dist) -> range:
    """The chunk indices of this rank: ``rank, rank + world, ...`` (round-robin)."""
    return range(d.rank, n_chunks, d.world)


def chunk_sizes(n: int, chunk: int) -> list[int]:
    """Sizes of ``n`` items cut into chunks of ``chunk`` (the last one may be smaller)."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    return [min(chunk, n - start) for start in range(0, n, chunk)]


def _comm_device(d: Dist) -> torch.device:
    """Where collectives run: the rank's GPU for CUDA, else the CPU (gloo)."""
    return d.device if d.device.type == "cuda" else torch.device("cpu")


def all_reduce(x: Tensor, d: Dist, op: str = "sum") -> Tensor:
    """``op`` (``"sum"``, ``"mean"``, ``"max"``, ``"min"``) of ``x`` over the ranks, as a new
    tensor on ``x``'s device; ``x`` itself for one process."""
    if op not in (*_OPS, "mean"):
        raise ValueError(f"unknown reduction {op!r}; valid: {', '.join([*_OPS, 'mean'])}")
    if not d.active:
        return x
    y = x.detach().to(_comm_device(d), copy=True)
    dist.all_reduce(y, _OPS["sum" if op == "mean" else op])
    if op == "mean":
        y = y / d.world
    return y.to(x.device)


def all_gather_rows(x: Tensor, d: Dist) -> list[Tensor]:
    """Every rank's ``x`` (``(n_r, ...)``; ``n_r`` may differ, the trailing shape may not), in rank
    order. Rows are padded to the longest and cut back after ``dist.all_gather``."""
    if not d.active:
        return [x]
    n = torch.tensor([x.shape[0]], device=_comm_device(d))
    counts = [torch.empty_like(n) for _ in range(d.world)]
    dist.all_gather(counts, n)
    sizes = [int(c) for c in torch.cat(counts).cpu()]  # once per gather, not per step
    padded = x.new_zeros((max(sizes), *x.shape[1:]), device=_comm_device(d))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(d.world)]
    dist.all_gather(parts, padded)
    return [p[:s].to(x.device) for p, s in zip(parts, sizes, strict=True)]


def gather_chunks(local: Sequence[Tensor], sizes: Sequence[int], d: Dist, empty: Tensor) -> Tensor:
    """All chunks, concatenated in chunk order, on every rank.

    Args:
        local: this rank's chunks ``shard(len(sizes), d)``, in that order.
        sizes: the row count of every chunk (the same list on every rank).
        d: the world.
        empty: a tensor with 0 rows and the chunks' trailing shape and dtype (used by a rank
            that holds no chunk).
    """
    mine = list(shard(len(sizes), d))
    if len(local) != len(mine):
        raise ValueError(f"rank {d.rank} holds {len(local)} chunks, its share is {len(mine)}")
    parts = all_gather_rows(torch.cat(list(local)) if local else empty, d)
    # Chunk k lives on rank k % world, as that rank's (k // world)-th chunk.
    pieces = [p.split(list(sizes[r :: d.world])) for r, p in enumerate(parts)]
    order = [pieces[k % d.world][k // d.world] for k in range(len(sizes))]
    return torch.cat(order) if order else empty


def barrier(d: Dist) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if not d.active:
        return
    if d.device.type == "cuda":
        dist.barrier(device_ids=[d.device.index])
    else:
        dist.barrier()


def wrap_ddp(model: nn.Module, d: Dist) -> nn.Module:
    """``DistributedDataParallel(model)`` on the rank's device (the model itself for one
    process). Keep the plain model for state dicts, EMA and sampling: its keys have no
    ``module.`` prefix."""
    if not d.active:
        return model
    ids = [d.device.index] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
