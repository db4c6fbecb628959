"""Training: one short, flat loop (denoising score matching, Adam, lr schedule, clipping, EMA).

:func:`setup` builds a :class:`Run` (data, model, optimizer, EMA, the loop's generator, resume);
:func:`train` runs the loop over it; :func:`save` writes the one checkpoint.

Files in ``workdir``:

- ``checkpoint.pt``: model, EMA, optimizer, step, RNG states, standardizer, the running sums of
  the training loss since the last metrics row and the resolved config
  (:mod:`scoresde.training.checkpoint`), written every ``train.ckpt_every`` steps, at the end,
  at a stop (``max_steps``, ``max_seconds``) and on SIGINT / SIGTERM;
- ``config.yaml``: the resolved config (data shape and model dimension filled in);
- ``.lock``: held (``flock``) by the training process; the OS releases it when the process ends;
- ``metrics.csv``: ``step, train_loss, test_loss, test_bpd, lr, time, bpd_method`` (per-example
  mean losses of the online model on training batches, of the EMA model on the whole test split;
  image runs with ``train.bpd_every``: the EMA model's bits/dim of the first ``train.bpd_n`` test
  images, by ``bpd_method`` ``ode`` or ``elbo``, from ``train.bpd_method``);
- ``eval_<step>.json``: with ``train.eval_metrics``, :func:`~.evaluate.evaluate` of the EMA
  model at every ``train.eval_every`` steps and at the end (the run's data read again by its
  config, ``sample.*`` sampling, ``train.bpd_n`` test examples);
- ``curves.png``: those curves, redrawn at every evaluation (``scoresde plot`` redraws them);
- ``density.npz``: 1-D and 2-D data: the EMA model's probability-flow density on a small grid at
  every evaluation (:mod:`.density`; ``scoresde plot --what animation`` draws it);
- ``samples_<step>.npy``: EMA-model samples in data units every ``train.sample_every`` steps
  (images: pixels in [0, 1], also drawn as the grid ``samples_<step>.png``);
- ``tb/``: TensorBoard scalars when ``tensorboard`` is installed, unless ``train.tensorboard``
  is false (``true`` without it installed: training goes on without, see
  :func:`tensorboard_note`).

The run folder (:mod:`.workdir`): a folder that holds a run is refused unless ``resume`` (continue
it, with the checkpoint's own config; only ``train.steps`` and the keys of
:data:`~scoresde.training.config.SAFE_ON_RESUME` may change) or ``overwrite`` (its run files are
removed once the new run has passed every check, just before its first file is written). A second
process on a locked folder stops at once. ``checkpoint.pt``, ``config.yaml`` and ``metrics.csv``
are replaced atomically (temporary file, fsync, rename); a failed write raises one
:class:`~scoresde.training.workdir.WorkdirError` naming the file and the last checkpoint stays.
Everything that can be checked before the first step is (:func:`~.config.preflight`).

SIGINT and SIGTERM (when :func:`train` runs in the main thread): the loop finishes the current
update, saves the checkpoint of that step and raises :class:`Interrupted` (``exit_code`` 130 or
143); a second signal stops at once, keeping the last checkpoint.

Exact resume: the learning rate is a function of the step (:func:`lr_at`), and every random
number of the loop (batch indices, t, noise) comes from one ``torch.Generator`` whose state is
checkpointed with the model, the EMA and Adam, so a run resumed from any checkpoint ends with the
same parameters, bit for bit, as an uninterrupted run. Test losses and samples use their own
freshly seeded generators (:mod:`.evaluate`) and never disturb it.

Several processes (``torchrun --nproc_per_node=N -m scoresde train ...``): DistributedDataParallel
(:mod:`scoresde.training.distributed`, backend ``train.backend``); ``train.batch_size`` is the
global batch. Every rank draws the whole global batch (indices, t, noise) from the same generator
and computes the network on its own ``batch_size / N`` rows, so the generator stays identical on
every rank and N processes train as one does with the same seed (up to float round-off). Rank 0
alone evaluates, samples, logs and writes files; every rank resumes from the same checkpoint.

Images (uint8 ``(N, C, H, W)`` from an image data set): every batch is flipped (``data.flip``)
and dequantized into model space by :func:`scoresde.data.images_to_model` with the loop's
generator; the test images are dequantized once, with the evaluation seed.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.checks import lookup
from ..core.losses import dsm_loss, reduce
from ..core.score import ScoreModel
from ..data import Standardizer, images_to_model, load_data
from . import distributed
from .checkpoint import (
    CHECKPOINT,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
    write_text_atomic,
)
from .config import (
    Config,
    build_score_model,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    preflight,
    resume_config,
    sampler_kwargs,
    with_data_shape,
)
from .density import SNAPSHOT, snapshot_density
from .ema import EMA
from .evaluate import (
    EVAL_SEED,
    SAMPLE_SEED,
    evaluate,
    mean_test_bpd,
    mean_test_loss,
    sample_model,
)
from .workdir import WorkdirLock, claim, clear_run, remove_stale_temporaries, writing

__all__ = [
    "train", "setup", "save", "Run", "TrainingError", "Interrupted", "lr_at", "LR_DECAYS",
    "METRICS",
]  # fmt: skip

Data = tuple[Tensor, Tensor, Standardizer | None]  # (train, test, standardizer), data units
METRICS = ("step", "train_loss", "test_loss", "test_bpd", "lr", "time", "bpd_method")


class TrainingError(ValueError):
    """Training stopped: the loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM.

    Attributes:
        signum: the signal.
        step: the step of the checkpoint on disk (None: none written yet).
        checkpoint: its path.
        exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), what a shell reports.
    """

    def __init__(self, signum: int, step: int | None, checkpoint: Path, at_once: bool = False):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if at_once:
            kept = "none written yet" if step is None else f"step {step} in {checkpoint}"
            msg = f"{name} again: stopped at once; the last checkpoint is kept ({kept})"
        else:
            msg = f"{name}: saved the checkpoint of step {step} to {checkpoint} (resume continues)"
        super().__init__(msg)


def _constant(p: float) -> float:
    return 1.0


def _cosine(p: float) -> float:
    return (1 + math.cos(math.pi * p)) / 2


def _linear(p: float) -> float:
    return 1 - p


# config.LR_SCHEDULES -> the share of (lr - lr_min) left after the fraction p of the decay
LR_DECAYS: dict[str, Callable[[float], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "linear": _linear,
}


def lr_at(
    step: int,
    lr: float,
    warmup: int,
    schedule: str = "constant",
    lr_min: float = 0.0,
    steps: int | None = None,
) -> float:
    """Learning rate of update ``step`` (0-based), a pure function of the step.

    Linear warm-up ``lr (step + 1) / warmup`` over the first ``warmup`` updates; then
    ``"constant"`` keeps ``lr``, and a decay (:data:`LR_DECAYS`) gives ``lr_min + (lr - lr_min)
    decay(p)`` with ``p = (step + 1 - warmup) / (steps - warmup)`` the fraction of the post-warm-up
    updates done, this one included: ``lr`` at the end of the warm-up, ``lr_min`` at the last
    update of a run of ``steps`` (and after it).

    Raises:
        ValueError: an unknown ``schedule``, or a decay without ``steps``.
    """
    decay = lookup(LR_DECAYS, schedule, "lr schedule", callables=False)
    n = step + 1  # updates done, this one included
    if n <= warmup:
        return lr * (n / warmup)
    if decay is _constant:  # lr itself, not lr_min + (lr - lr_min): bit for bit as before
        return lr
    if steps is None:
        raise ValueError(f"the {schedule!r} lr schedule needs steps (the run's last step)")
    p = min(1.0, (n - warmup) / max(steps - warmup, 1))
    return lr_min + (lr - lr_min) * decay(p)


class _Losses:
    """Training losses since the last log row, and the first step whose loss was not finite,
    kept on the device (no host synchronisation per step). The sums are checkpointed, so a
    resumed run logs the rows of an uninterrupted one."""

    def __init__(self, device: torch.device):
        self.device, self.count = device, 0
        self.total = torch.zeros((), device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, own_losses: Tensor, loss: Tensor, step: int) -> None:
        """Count this rank's per-example losses of update ``step`` and the loss's finiteness."""
        self.total += own_losses.detach().mean()
        self.count += 1
        bad = (self.first_bad < 0) & ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad, step, self.first_bad)

    def pop_mean(self, d: distributed.Dist) -> float:
        """The mean over the ranks and the updates since the last call; starts a new sum."""
        mean = self.peek_mean(d)
        self.total, self.count = torch.zeros((), device=self.device), 0
        return mean

    def peek_mean(self, d: distributed.Dist) -> float:
        """The mean since the last row without starting a new sum (every rank calls it)."""
        return distributed.all_reduce(self.total, d, "mean").item() / max(self.count, 1)

    def state_dict(self, d: distributed.Dist) -> dict:
        """The sums to checkpoint (every rank calls it): the mean of the ranks' sums, which
        continues each rank's sum exactly in the mean that :meth:`pop_mean` takes."""
        total = distributed.all_reduce(self.total.clone(), d, "mean") if d.active else self.total
        return {"total": total.detach().cpu().clone(), "count": self.count}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict` (None, from a checkpoint without sums: empty sums)."""
        if state is not None:
            self.total = state["total"].to(self.device, torch.float32).clone()
            self.count = int(state["count"])

    def check(self, run: Run) -> None:
        """Raise :class:`TrainingError` on every rank (all stop together) after a bad loss."""
        never = torch.iinfo(torch.long).max
        bad = torch.where(self.first_bad < 0, never, self.first_bad)
        bad = int(distributed.all_reduce(bad, run.d, "min"))
        if bad != never:
            raise TrainingError(
                f"the training loss became NaN or inf at step {bad}; stopped (try a smaller "
                f"train.lr or train.grad_clip). Last good checkpoint: {_kept(run)}"
            )


def _kept(run: Run) -> str:
    """The checkpoint on disk, in words."""
    return "none yet" if run.saved_step is None else f"step {run.saved_step} in {run.checkpoint}"


@dataclass
class Run:
    """A training run in memory: what :func:`setup` builds and the loop of :func:`train` updates.

    ``model`` is the plain module (state dicts without a ``module.`` prefix, EMA, evaluation);
    ``score_fn`` is what the loss calls: under several processes, the DDP-wrapped network on this
    rank's rows of the global batch. ``ema_model`` holds the EMA weights for evaluation and
    sampling. ``test_x`` is in model units (images: dequantized once with the evaluation seed).
    """

    cfg: Config
    workdir: Path
    d: distributed.Dist
    train_x: Tensor
    test_x: Tensor
    standardizer: Standardizer | None
    model: ScoreModel
    score_fn: Callable[[Tensor, Tensor], Tensor]
    ema: EMA
    ema_model: ScoreModel
    opt: torch.optim.Optimizer
    gen: torch.Generator
    losses: _Losses
    start_step: int = 0
    saved_step: int | None = None  # the step of the last checkpoint on disk (None: none yet)
    t_start: float = field(default_factory=time.perf_counter)  # minus the elapsed time on resume
    writer: Any = None  # a TensorBoard SummaryWriter (rank 0, when enabled and installed)
    lock: WorkdirLock | None = None  # rank 0: the folder's lock, held until close()
    rows: list[dict] = field(default_factory=list)  # metrics.csv (rank 0)
    changes: list[str] = field(default_factory=list)  # resume: config keys changed, "k: a -> b"

    def close(self) -> None:
        """Close TensorBoard and release the folder's lock (idempotent)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def images(self) -> bool:
        """uint8 image data: batches are flipped and dequantized in the loop."""
        return self.train_x.dtype == torch.uint8

    @property
    def own(self) -> slice:
        """This rank's rows of the global batch."""
        return distributed.rows(self.cfg.train.batch_size, self.d)

    @property
    def checkpoint(self) -> Path:
        """``<workdir>/checkpoint.pt``."""
        return self.workdir / CHECKPOINT

    @property
    def metrics_csv(self) -> Path:
        """``<workdir>/metrics.csv``."""
        return self.workdir / "metrics.csv"


# ---- set-up -----------------------------------------------------------------------------------
def _resolve(cfg: Config | None, state: dict | None) -> tuple[Config, list[str]]:
    """``(the run's config, the keys changed)``: on resume the checkpoint's, which ``cfg`` may
    change only in safe keys (:func:`~scoresde.training.config.resume_changes`)."""
    if state is None:
        if cfg is None:
            raise ValueError("train needs a Config (or resume=True with a checkpoint)")
        return copy.deepcopy(cfg), []
    return resume_config(config_from_dict(state["config"]), cfg)


def _load_data(
    cfg: Config, data: Data | None, device: torch.device
) -> tuple[Config, Tensor, Tensor, Standardizer | None]:
    """``(cfg with the data shape, train, test, standardizer)``, in model units on ``device``
    (uint8 training images stay as they are; the test images are dequantized once)."""
    from .pipeline import training_data  # one array or tensor in memory: split here

    data = load_data(cfg.data) if data is None else training_data(cfg, data)
    train_x, test_x, standardizer = data
    images = train_x.dtype == torch.uint8
    if images and cfg.data.scale is None:
        raise ValueError("uint8 images need an image data set in data.name (for scale, shift)")
    if standardizer is not None:
        train_x, test_x = standardizer.forward(train_x), standardizer.forward(test_x)
    cfg = with_data_shape(cfg, tuple(train_x.shape[1:]))
    train_x, test_x = train_x.to(device), test_x.to(device)
    if images:  # one fixed dequantization of the test images, so test losses are comparable
        g_test = torch.Generator(device).manual_seed(cfg.train.seed + EVAL_SEED)
        test_x = images_to_model(test_x, cfg.data, g_test)
    return cfg, train_x, test_x, standardizer


def _restore(state: dict, model, ema, opt, gen, losses: _Losses) -> tuple[int, float]:
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"]["data"])
    torch.set_rng_state(state["rng"]["torch"])
    losses.load_state_dict(state.get("losses"))
    return int(state["step"]), float(state.get("elapsed", 0.0))


def _rows_score(net: torch.nn.Module, own: slice) -> Callable[[Tensor, Tensor], Tensor]:
    """The network's score on this rank's rows ``own`` of the global batch, 0 on the others.

    The other rows' losses then carry no gradient, so ``world * reduce(losses)`` has the gradient
    of this rank's share of the global ``reduce``; DDP's mean over the ranks gives the gradient of
    the global mean (or sum) of the per-example losses.
    """

    def score(x: Tensor, t: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        out[own] = net(x[own], t[own])
        return out

    return score


def _is_rank0() -> bool:
    """Rank 0 of a ``torchrun`` group (read before joining it), or the only process."""
    return distributed.world_size() == 1 or os.environ.get("RANK", "0") == "0"


def setup(
    cfg: Config | None,
    workdir: str | Path,
    resume: bool = False,
    data: Data | None = None,
    overwrite: bool = False,
) -> Run:
    """Build a run: data, model, the paper's Adam, EMA, the loop's generator, resume, files.

    Arguments as :func:`train`. Joins the ``torchrun`` process group (one process without it).
    Rank 0 holds the folder's lock until :meth:`Run.close`; on an error it is released.
    """
    workdir = Path(workdir)
    lock = claim(workdir, resume, overwrite) if _is_rank0() else None
    try:
        return _build(cfg, workdir, resume, data, overwrite, lock)
    except BaseException:
        if lock is not None:
            lock.undo()  # a new folder refused before its first file: nothing is left
        raise


def _build(
    cfg: Config | None,
    workdir: Path,
    resume: bool,
    data: Data | None,
    overwrite: bool,
    lock: WorkdirLock | None,
) -> Run:
    """:func:`setup` once the folder is claimed: every check first, then the first file."""
    ckpt = workdir / CHECKPOINT
    state = load_checkpoint(ckpt) if resume else None  # every rank
    if state is not None:  # the checks the CLI's resume makes, before anything is built
        check_resumable(state, ckpt)
    cfg, changes = _resolve(cfg, state)
    distributed.check_batch(cfg.train.batch_size, distributed.world_size())  # before joining
    d = distributed.init(cfg.train.backend, cfg.train.device)
    cfg, train_x, test_x, standardizer = _load_data(cfg, data, d.device)
    preflight(cfg)
    if "fid" in cfg.train.eval_metrics and train_x.dtype == torch.uint8 and d.is_main:
        from .evaluate import feature_net

        feature_net(cfg, None)  # a missing feature network: refused before the first step

    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = build_score_model(cfg).to(d.device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8)
    ema, losses = EMA(model, tc.ema_rate), _Losses(d.device)
    gen = torch.Generator(d.device).manual_seed(tc.seed)
    step, elapsed = _restore(state, model, ema, opt, gen, losses) if state else (0, 0.0)
    ema_model = copy.deepcopy(model).eval()
    rows = _start_files(workdir, cfg, step if state else None, overwrite) if d.is_main else []
    writer = _tensorboard(workdir, tc.tensorboard is not False and d.is_main)
    model.train()
    own = distributed.rows(tc.batch_size, d)
    score_fn = _rows_score(distributed.wrap_ddp(model, d), own) if d.active else model
    return Run(
        cfg, workdir, d, train_x, test_x, standardizer, model, score_fn, ema, ema_model, opt, gen,
        losses, start_step=step, saved_step=step if state else None,
        t_start=time.perf_counter() - elapsed, writer=writer, lock=lock, rows=rows,
        changes=changes,
    )  # fmt: skip


def _start_files(workdir: Path, cfg: Config, resume_step: int | None, overwrite: bool) -> list:
    """The run's first writes (rank 0), after every check passed: ``overwrite`` removes the old
    run's files, then ``config.yaml`` and ``metrics.csv`` (on resume: the rows up to the
    checkpoint's step). Returns the rows."""
    if overwrite:
        clear_run(workdir)
    remove_stale_temporaries(workdir)  # of a killed write
    rows = _read_metrics(workdir / "metrics.csv", resume_step)
    with writing(workdir / "config.yaml"):
        write_text_atomic(workdir / "config.yaml", dump_yaml(cfg))
    with writing(workdir / "metrics.csv"):
        write_text_atomic(workdir / "metrics.csv", _metrics_text(rows))
    return rows


def _tensorboard(workdir: Path, enabled: bool) -> Any:
    """A SummaryWriter on ``workdir/tb`` when ``enabled`` and TensorBoard is installed."""
    if not enabled or not tensorboard_installed():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(workdir / "tb"))


def tensorboard_installed() -> bool:
    """Whether the ``tensorboard`` package can be imported (it is optional: the ``tb`` extra)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_note(cfg: Config) -> str | None:
    """The one line to show when ``train.tensorboard`` is true but TensorBoard is not installed
    (training goes on without it); None otherwise (``null``, the default: silently off)."""
    if cfg.train.tensorboard is not True or tensorboard_installed():
        return None
    return (
        "note: train.tensorboard is true but tensorboard is not installed; training without it "
        "(pip install tensorboard, or --set train.tensorboard=false)"
    )


# ---- the phases of one iteration --------------------------------------------------------------
def _update(run: Run, lr: float) -> tuple[Tensor, Tensor]:
    """One Adam update on a global batch; returns ``(per-example losses, reduced loss)``.

    Indices, t and noise of the whole global batch are drawn on every rank (see
    :func:`_rows_score`); DDP averages the gradients, hence ``loss * world``.
    """
    tc, model = run.cfg.train, run.model
    for group in run.opt.param_groups:
        group["lr"] = lr
    n = run.train_x.shape[0]
    x0 = run.train_x[torch.randint(n, (tc.batch_size,), generator=run.gen, device=run.d.device)]
    if run.images:
        x0 = images_to_model(x0, run.cfg.data, run.gen, run.cfg.data.flip)
    per_example = dsm_loss(
        model.sde,
        run.score_fn,
        x0,
        tc.weighting,
        tc.eps,
        run.gen,
        importance=tc.importance,
        t_sampling=tc.t_sampling,
        sigma_data=model.sigma_data,  # run.score_fn may wrap the model (several processes)
    )
    loss = reduce(per_example, tc.reduce)
    if run.d.active:
        loss = loss * run.d.world
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if tc.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    run.opt.step()
    run.ema.update(model)
    return per_example, loss


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def _evaluations_due(run: Run, step: int, done: bool) -> tuple[bool, bool]:
    """``(test loss, test bits/dim)``: which evaluations fall on ``step`` (both at the end)."""
    tc = run.cfg.train
    bpd = run.images and tc.bpd_every > 0 and (_every(step, tc.bpd_every) or done)
    return _every(step, tc.eval_every) or done, bpd


def _row_due(run: Run, step: int, done: bool) -> bool:
    """A metrics row falls on ``step``: a log period or an evaluation comes round, or the end."""
    return _every(step, run.cfg.train.log_every) or done or any(_evaluations_due(run, step, done))


def _evaluate(run: Run, step: int, done: bool) -> dict:
    """The EMA model's test DSM loss and (images) test bits/dim of the first ``train.bpd_n``."""
    loss, bpd = _evaluations_due(run, step, done)
    out = {}
    if loss or bpd:
        run.ema.copy_to(run.ema_model)
    if loss:
        out["test_loss"] = mean_test_loss(run.ema_model, run.test_x, run.cfg)
    if bpd:
        out["test_bpd"] = mean_test_bpd(run.ema_model, run.test_x[: run.cfg.train.bpd_n], run.cfg)
        out["bpd_method"] = run.cfg.train.bpd_method
    if loss and run.cfg.train.eval_metrics:
        out |= _eval_metrics(run, step)
    return out


def _eval_metrics(run: Run, step: int) -> dict:
    """``train.eval_metrics`` by :func:`~.evaluate.evaluate` (the EMA model, ``sample.*``
    sampling, ``train.bpd_n`` test examples, the evaluation seed) into ``eval_<step>.json``;
    returns the headline values (``eval_bpd``, ``eval_elbo``: bits/dim of images;
    ``eval_bpd_nll``, ``eval_elbo_nll``: the NLL in nats; ``eval_fid``)."""
    import json

    cfg = run.cfg
    train_raw, test_raw, _ = load_data(cfg.data)  # data units (uint8 images), as evaluate takes
    result = evaluate(
        run.ema_model, cfg, test_raw, x_train=train_raw, standardizer=run.standardizer,
        metrics=cfg.train.eval_metrics, n=min(cfg.sample.n, len(test_raw)),
        n_test=cfg.train.bpd_n, sampler=cfg.sample.sampler, options=sampler_kwargs(cfg.sample),
        seed=cfg.train.seed + EVAL_SEED, dist=distributed.Dist(device=run.d.device),
    )  # fmt: skip
    path = run.workdir / f"eval_{step}.json"
    with writing(path, _note(run)):
        write_text_atomic(path, json.dumps({"step": step, **result}, indent=2) + "\n")
    out = {f"eval_{m}": result[m]["bpd"] for m in ("bpd", "elbo") if "bpd" in result.get(m, {})}
    out |= {f"eval_{m}_nll": result[m]["nll"] for m in ("bpd", "elbo") if m in result}
    return out | ({"eval_fid": result["fid"]["fid"]} if "fid" in result else {})


def _log(run: Run, metrics: dict) -> None:
    """Add the row to ``metrics.csv`` (rewritten atomically), redraw ``curves.png`` after an
    evaluation, TensorBoard."""
    run.rows.append({k: metrics.get(k, "") for k in METRICS})
    with writing(run.metrics_csv, _note(run)):
        write_text_atomic(run.metrics_csv, _metrics_text(run.rows))
    if "test_loss" in metrics or "test_bpd" in metrics:
        from ..viz.plots import training_curves

        with writing(run.workdir / "curves.png", _note(run)):
            bpd_n = run.cfg.train.bpd_n if run.images else None
            training_curves(run.metrics_csv, run.workdir / "curves.png", bpd_n=bpd_n)
    if run.writer is not None:
        for k in ("train_loss", "test_loss", "test_bpd", "lr"):
            if k in metrics:
                run.writer.add_scalar(k, metrics[k], metrics["step"])


def _note(run: Run) -> str:
    """How a write error ends: which checkpoint is kept."""
    return f" (the last checkpoint is kept: {_kept(run)})"


def _sample(run: Run, step: int) -> None:
    """``samples_<step>.npy`` of the EMA model in data units (images: pixels, and a grid)."""
    cfg = run.cfg
    run.ema.copy_to(run.ema_model)
    g = torch.Generator(run.d.device).manual_seed(cfg.train.seed + SAMPLE_SEED)
    x, _ = sample_model(run.ema_model, cfg.sample, (cfg.sample.n, *cfg.data.shape), g)
    x = x if run.standardizer is None else run.standardizer.inverse(x)
    stem = run.workdir / f"samples_{step}"
    if run.images:  # pixels (y - shift) / scale in [0, 1]
        from ..viz.plots import image_grid

        x = ((x - cfg.data.shift) / cfg.data.scale).clamp(0, 1)
        with writing(stem.with_suffix(".png"), _note(run)):
            image_grid(x[:64].cpu().numpy(), stem.with_suffix(".png"))
    with writing(stem.with_suffix(".npy"), _note(run)):
        np.save(stem.with_suffix(".npy"), x.cpu().numpy())


def _density_snapshot(run: Run, step: int) -> None:
    """1-D and 2-D data: append the EMA model's density on a small grid to ``density.npz``."""
    shape = tuple(run.cfg.data.shape)
    if run.images or len(shape) != 1 or shape[0] > 2:
        return
    data = run.train_x if run.standardizer is None else run.standardizer.inverse(run.train_x)
    with writing(run.workdir / SNAPSHOT, _note(run)):
        snapshot_density(run.ema_model, run.standardizer, data, step, run.workdir / SNAPSHOT)


def save(run: Run, step: int) -> None:
    """Write ``checkpoint.pt`` (rank 0); no rank goes on (or ends) before it is written.

    Every rank calls it (the loss sums are averaged over the ranks). A failed write raises
    :class:`~scoresde.training.workdir.WorkdirError` and leaves the previous checkpoint.
    """
    elapsed = time.perf_counter() - run.t_start
    losses = run.losses.state_dict(run.d)
    if run.d.is_main:
        state = {
            "config": config_to_dict(run.cfg),
            "model": run.model.state_dict(),
            "ema": run.ema.state_dict(),
            "step": step,
            "optimizer": run.opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": run.gen.get_state()},
            "standardizer": None if run.standardizer is None else run.standardizer.state_dict(),
            "elapsed": elapsed,
            "losses": losses,
        }
        with writing(run.checkpoint, _note(run)):
            save_checkpoint(run.checkpoint, state)
    distributed.barrier(run.d)
    run.saved_step = step


def _out_of_time(run: Run, max_seconds: float | None) -> bool:
    """The run's training time (across resumes) reached ``max_seconds`` on some rank."""
    if max_seconds is None:
        return False
    late = time.perf_counter() - run.t_start >= max_seconds
    if not run.d.active:
        return late
    return bool(distributed.all_reduce(torch.tensor(int(late), device=run.d.device), run.d, "max"))


# ---- metrics file -----------------------------------------------------------------------------
def _read_metrics(path: Path, resume_step: int | None) -> list[dict]:
    """On resume, the rows of ``metrics.csv`` up to the checkpoint's step; else none."""
    if resume_step is None or not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]


def _metrics_text(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, METRICS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: r.get(k, "") for k in METRICS} for r in rows)
    return out.getvalue()


# ---- signals ----------------------------------------------------------------------------------
class _Signals:
    """SIGINT / SIGTERM while the loop runs (handlers only in the main thread, restored on exit):
    the first asks the loop to save and stop after the current update; a second stops at once
    (raising :class:`Interrupted` wherever the process is; atomic writes keep the last file).

    During set-up the default handlers stay: there is nothing to save yet, and a process that
    waits for the ``torchrun`` group must stay easy to stop."""

    def __init__(self, run: Run):
        self.signum: int | None = None
        self.run, self._old = run, {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            return
        raise Interrupted(signum, self.run.saved_step, self.run.checkpoint, at_once=True)

    def asked(self, run: Run) -> bool:
        """A stop was asked on some rank (one small all-reduce per update under torchrun)."""
        flag = self.signum is not None
        if not run.d.active:
            return flag
        got = distributed.all_reduce(torch.tensor(int(flag), device=run.d.device), run.d, "max")
        if got and self.signum is None:
            self.signum = signal.SIGTERM  # another rank's signal: torchrun forwards SIGTERM
        return bool(got)


# ---- the loop ---------------------------------------------------------------------------------
def train(
    cfg: Config | None,
    workdir: str | Path,
    resume: bool = False,
    data: Data | None = None,
    callback: Callable[[int, dict], None] | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a score model; return the final metrics.

    Args:
        cfg: the configuration. On resume the checkpoint's is used and ``cfg`` may be None; a
            ``cfg`` given may differ from it only in ``train.steps`` (to extend the run) and the
            keys that leave the training as it is (periods, ``sample.*``, ``data.data_dir``).
        workdir: folder for the checkpoint, config, metrics and samples (created).
        resume: continue from ``<workdir>/checkpoint.pt``, which must exist.
        data: ``(train, test, standardizer)`` in data units instead of ``load_data(cfg.data)``;
            a standardizer (or None) maps them to model units and is saved with the model.
        callback: ``callback(step, metrics)`` after every update, with the last logged metrics.
        max_steps: pause (with a checkpoint) once this many updates are done, before ``steps``.
        max_seconds: pause (with a checkpoint) once the run's training time, counted across
            resumes, reaches this many seconds. A pause writes no extra metrics row (so a
            resumed run's ``metrics.csv`` equals an uninterrupted one's); the returned metrics
            hold a fresh evaluation.
        overwrite: replace the run that ``workdir`` holds (else such a folder is refused).

    Raises:
        TrainingError: the loss became NaN or inf; the last good checkpoint is kept.
        WorkdirError: the folder holds a run (neither ``resume`` nor ``overwrite``), has no
            checkpoint to resume, is locked by another process, or a file cannot be written.
        ConfigError: the config cannot run (e.g. its sampler), or differs on resume.
        Interrupted: SIGINT / SIGTERM; the checkpoint of the step reached is saved first.
    """
    run = setup(cfg, workdir, resume, data, overwrite)
    try:
        with _Signals(run) as signals:  # from here on a signal saves (setup has nothing to save)
            last = run.cfg.train.steps if max_steps is None else min(run.cfg.train.steps, max_steps)
            step, metrics = _loop(run, signals, callback, last, max_seconds)
            if signals.signum is not None and step < last:
                _interrupt(run, step, signals.signum)
            result = _finish(run, step, metrics)
        # The ranks leave together: rank 0 evaluates the last step alone, and a gloo peer that
        # tears its connections down meanwhile at exit can abort ("terminate called without an
        # active exception", seen once in CI on the 2-process resume).
        distributed.barrier(run.d)
        return result
    finally:
        run.close()


def _loop(
    run: Run,
    signals: _Signals,
    callback: Callable[[int, dict], None] | None,
    last: int,
    max_seconds: float | None,
) -> tuple[int, dict]:
    """Update until step ``last``, a time-out or a signal; returns ``(step, last metrics row)``."""
    tc, main, step = run.cfg.train, run.d.is_main, run.start_step
    metrics = {"step": step}
    while step < last and not signals.asked(run):
        # step: one update of the online model on a global batch, then the EMA
        lr = lr_at(step, tc.lr, tc.warmup, tc.lr_schedule, tc.lr_min, tc.steps)
        per_example, loss = _update(run, lr)
        step += 1
        run.losses.add(per_example[run.own], loss, step)
        end = step == tc.steps  # the run's end: a last row and evaluation
        # log: the mean training loss since the last row (every rank takes part)
        if _row_due(run, step, end):
            run.losses.check(run)
            metrics = {"step": step, "lr": lr, "time": time.perf_counter() - run.t_start}
            metrics["train_loss"] = run.losses.pop_mean(run.d)
            # evaluate: the EMA model on the test split (rank 0), then the row is written
            if main:
                metrics |= _evaluate(run, step, end)
                _log(run, metrics)
                if "test_loss" in metrics:
                    _density_snapshot(run, step)
        # sample: EMA samples in data units (rank 0)
        if _every(step, tc.sample_every):
            run.losses.check(run)
            if main:
                _sample(run, step)
        # checkpoint: every train.ckpt_every updates, at the end and at a pause
        pause = step == last or _out_of_time(run, max_seconds)
        if _every(step, tc.ckpt_every) or end or pause:
            run.losses.check(run)
            save(run, step)
        if callback is not None:
            callback(step, metrics)
        if pause:
            break
    return step, metrics


def _interrupt(run: Run, step: int, signum: int) -> None:
    """Save the checkpoint of ``step`` (unless the loss went bad) and raise :class:`Interrupted`."""
    run.losses.check(run)
    if run.saved_step != step:
        save(run, step)
    raise Interrupted(signum, step, run.checkpoint)


def _finish(run: Run, step: int, metrics: dict) -> dict:
    """A run with no update in this call still leaves a checkpoint; the returned metrics are
    those of ``step`` (evaluated now, without a row, when the last row is of an earlier step)."""
    if run.saved_step != step:
        save(run, step)
    if metrics.get("step") != step or "test_loss" not in metrics:
        if run.losses.count:  # the mean since the last row, which stays in the checkpoint
            metrics = {**metrics, "train_loss": run.losses.peek_mean(run.d)}
        if run.d.is_main:
            metrics = {**metrics, **_evaluate(run, step, True)}
    return {**metrics, "step": step, "workdir": str(run.workdir)}
