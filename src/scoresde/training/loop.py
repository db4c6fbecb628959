"""Training: one short, flat loop (denoising score matching, Adam, warm-up, clipping, EMA).

:func:`setup` builds a :class:`Run` (data, model, optimizer, EMA, the loop's generator, resume);
:func:`train` runs the loop over it; :func:`save` writes the one checkpoint.

Files in ``workdir``:

- ``checkpoint.pt``: model, EMA, optimizer, step, RNG states, standardizer and the resolved
  config (:mod:`scoresde.training.checkpoint`), written every ``train.ckpt_every`` steps and at
  the end;
- ``config.yaml``: the resolved config (data shape and model dimension filled in);
- ``metrics.csv``: ``step, train_loss, test_loss, test_bpd, lr, time`` (per-example mean losses
  of the online model on training batches, of the EMA model on the whole test split; image runs
  with ``train.bpd_every``: the EMA model's bits/dim of the first ``train.bpd_n`` test images);
- ``curves.png``: those curves, redrawn at every evaluation (``scoresde plot`` redraws them);
- ``samples_<step>.npy``: EMA-model samples in data units every ``train.sample_every`` steps
  (images: pixels in [0, 1], also drawn as the grid ``samples_<step>.png``);
- ``tb/``: TensorBoard scalars when ``tensorboard`` is installed and ``train.tensorboard``.

Exact resume: every random number of the loop (batch indices, t, noise) comes from one
``torch.Generator`` whose state is checkpointed with the model, the EMA and Adam, so a run resumed
from any checkpoint ends with the same parameters, bit for bit, as an uninterrupted run. Test
losses and samples use their own freshly seeded generators (:mod:`.evaluate`) and never disturb it.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.losses import dsm_loss, reduce
from ..core.score import ScoreModel
from ..data import Standardizer, images_to_model, load_data
from . import distributed
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import (
    Config,
    build_score_model,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    with_data_shape,
)
from .ema import EMA
from .evaluate import EVAL_SEED, SAMPLE_SEED, mean_test_bpd, mean_test_loss, sample_model

__all__ = ["train", "setup", "save", "Run", "TrainingError", "lr_at", "METRICS"]

Data = tuple[Tensor, Tensor, Standardizer | None]  # (train, test, standardizer), data units
METRICS = ("step", "train_loss", "test_loss", "test_bpd", "lr", "time")


class TrainingError(ValueError):
    """Training stopped: the loss became NaN or infinite."""


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up over ``warmup`` updates."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


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
    start_step: int = 0
    saved_step: int | None = None  # the step of the last checkpoint on disk (None: none yet)
    t_start: float = field(default_factory=time.perf_counter)  # minus the elapsed time on resume
    writer: Any = None  # a TensorBoard SummaryWriter (rank 0, when enabled and installed)

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
def _resolve(cfg: Config | None, state: dict | None) -> Config:
    """The run's config: the checkpoint's on resume (``train.steps`` may be raised by ``cfg``)."""
    if state is None:
        if cfg is None:
            raise ValueError("train needs a Config (or resume=True with a checkpoint)")
        return copy.deepcopy(cfg)
    saved = config_from_dict(state["config"])
    if cfg is not None:
        saved.train.steps = cfg.train.steps
    return saved


def _load_data(
    cfg: Config, data: Data | None, device: torch.device
) -> tuple[Config, Tensor, Tensor, Standardizer | None]:
    """``(cfg with the data shape, train, test, standardizer)``, in model units on ``device``
    (uint8 training images stay as they are; the test images are dequantized once)."""
    train_x, test_x, standardizer = load_data(cfg.data) if data is None else data
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


def _restore(state: dict, model, ema, opt, gen) -> tuple[int, float]:
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"]["data"])
    torch.set_rng_state(state["rng"]["torch"])
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


def setup(
    cfg: Config | None, workdir: str | Path, resume: bool = False, data: Data | None = None
) -> Run:
    """Build a run: data, model, the paper's Adam, EMA, the loop's generator, resume, files.

    Arguments as :func:`train`. Joins the ``torchrun`` process group (one process without it).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / CHECKPOINT
    state = load_checkpoint(ckpt) if resume and ckpt.is_file() else None  # every rank
    cfg = _resolve(cfg, state)
    distributed.check_batch(cfg.train.batch_size, distributed.world_size())  # before joining
    d = distributed.init(cfg.train.backend, cfg.train.device)
    for stale in workdir.glob(f".{CHECKPOINT}.*.tmp") if d.is_main else ():  # a killed write
        stale.unlink(missing_ok=True)
    cfg, train_x, test_x, standardizer = _load_data(cfg, data, d.device)

    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = build_score_model(cfg).to(d.device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8)
    ema = EMA(model, tc.ema_rate)
    gen = torch.Generator(d.device).manual_seed(tc.seed)
    step, elapsed = _restore(state, model, ema, opt, gen) if state else (0, 0.0)
    ema_model = copy.deepcopy(model).eval()
    if d.is_main:
        (workdir / "config.yaml").write_text(dump_yaml(cfg))
        _start_metrics(workdir / "metrics.csv", step if state else None)
    writer = _tensorboard(workdir, tc.tensorboard and d.is_main)
    model.train()
    own = distributed.rows(tc.batch_size, d)
    score_fn = _rows_score(distributed.wrap_ddp(model, d), own) if d.active else model
    return Run(
        cfg, workdir, d, train_x, test_x, standardizer, model, score_fn, ema, ema_model, opt, gen,
        start_step=step, saved_step=step if state else None,
        t_start=time.perf_counter() - elapsed, writer=writer,
    )  # fmt: skip


def _tensorboard(workdir: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(workdir / "tb"))


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
        model.sde, run.score_fn, x0, tc.weighting, tc.eps, run.gen, importance=tc.importance
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


class _Losses:
    """Training losses since the last log row, and the first step whose loss was not finite,
    kept on the device (no host synchronisation per step)."""

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
        mean = distributed.all_reduce(self.total, d, "mean").item() / self.count
        self.total, self.count = torch.zeros((), device=self.device), 0
        return mean

    def check(self, run: Run) -> None:
        """Raise :class:`TrainingError` on every rank (all stop together) after a bad loss."""
        never = torch.iinfo(torch.long).max
        bad = torch.where(self.first_bad < 0, never, self.first_bad)
        bad = int(distributed.all_reduce(bad, run.d, "min"))
        if bad != never:
            kept = "none yet"
            if run.saved_step is not None:
                kept = f"step {run.saved_step} in {run.checkpoint}"
            raise TrainingError(
                f"the training loss became NaN or inf at step {bad}; stopped (try a smaller "
                f"train.lr or train.grad_clip). Last good checkpoint: {kept}"
            )


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
    return out


def _log(run: Run, metrics: dict) -> None:
    """Append the row to ``metrics.csv``, redraw ``curves.png`` after an evaluation, TensorBoard."""
    _append_metrics(run.metrics_csv, metrics)
    if "test_loss" in metrics or "test_bpd" in metrics:
        from ..viz.plots import training_curves

        training_curves(run.metrics_csv, run.workdir / "curves.png")
    if run.writer is not None:
        for k in ("train_loss", "test_loss", "test_bpd", "lr"):
            if k in metrics:
                run.writer.add_scalar(k, metrics[k], metrics["step"])


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
        image_grid(x[:64].cpu().numpy(), stem.with_suffix(".png"))
    np.save(stem.with_suffix(".npy"), x.cpu().numpy())


def save(run: Run, step: int) -> None:
    """Write ``checkpoint.pt`` (rank 0); no rank goes on (or ends) before it is written."""
    elapsed = time.perf_counter() - run.t_start
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
        }
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
def _start_metrics(path: Path, resume_step: int | None) -> None:
    """A fresh ``metrics.csv``; on resume, keep the rows up to the checkpoint's step."""
    rows = []
    if resume_step is not None and path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, METRICS)
        w.writeheader()
        w.writerows(rows)


def _append_metrics(path: Path, row: dict) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, METRICS).writerow({k: row.get(k, "") for k in METRICS})


# ---- the loop ---------------------------------------------------------------------------------
def train(
    cfg: Config | None,
    workdir: str | Path,
    resume: bool = False,
    data: Data | None = None,
    callback: Callable[[int, dict], None] | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> dict:
    """Train a score model; return the final metrics.

    Args:
        cfg: the configuration (on resume the checkpoint's is used; only ``train.steps`` is taken
            from ``cfg`` so that a finished run can be extended; ``cfg`` may then be None).
        workdir: folder for the checkpoint, config, metrics and samples (created).
        resume: continue from ``<workdir>/checkpoint.pt`` if it exists (else start afresh).
        data: ``(train, test, standardizer)`` in data units instead of ``load_data(cfg.data)``;
            a standardizer (or None) maps them to model units and is saved with the model.
        callback: ``callback(step, metrics)`` after every update, with the last logged metrics.
        max_steps: stop (with a checkpoint) once this many updates are done, before ``steps``.
        max_seconds: stop (with a final evaluation and checkpoint) once the run's training time,
            counted across resumes, reaches this many seconds.

    Raises:
        TrainingError: the loss became NaN or inf; the last good checkpoint is kept.
    """
    run = setup(cfg, workdir, resume, data)
    tc, main, step = run.cfg.train, run.d.is_main, run.start_step
    last = tc.steps if max_steps is None else min(tc.steps, max_steps)
    losses, metrics = _Losses(run.d.device), {"step": step}
    while step < last:
        # step: one update of the online model on a global batch, then the EMA
        lr = lr_at(step, tc.lr, tc.warmup)
        per_example, loss = _update(run, lr)
        step += 1
        losses.add(per_example[run.own], loss, step)
        done = step == last or _out_of_time(run, max_seconds)
        # log: the mean training loss since the last row (every rank takes part)
        if _row_due(run, step, done):
            losses.check(run)
            metrics = {"step": step, "lr": lr, "time": time.perf_counter() - run.t_start}
            metrics["train_loss"] = losses.pop_mean(run.d)
            # evaluate: the EMA model on the test split (rank 0), then the row is written
            if main:
                metrics |= _evaluate(run, step, done)
                _log(run, metrics)
        # sample: EMA samples in data units (rank 0)
        if _every(step, tc.sample_every):
            losses.check(run)
            if main:
                _sample(run, step)
        # checkpoint: every train.ckpt_every updates and at the end
        if _every(step, tc.ckpt_every) or done:
            losses.check(run)
            save(run, step)
        if callback is not None:
            callback(step, metrics)
        if done:
            break
    return _finish(run, step, metrics)


def _finish(run: Run, step: int, metrics: dict) -> dict:
    """Close TensorBoard; a run with no update in this call still leaves a checkpoint and
    reports the current test loss."""
    if run.writer is not None:
        run.writer.close()
    if run.saved_step != step:
        save(run, step)
    if "test_loss" not in metrics and run.d.is_main:
        run.ema.copy_to(run.ema_model)
        metrics = {**metrics, "test_loss": mean_test_loss(run.ema_model, run.test_x, run.cfg)}
    return {**metrics, "step": step, "workdir": str(run.workdir)}
