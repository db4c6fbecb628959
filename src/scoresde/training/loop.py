"""Training: one short, flat loop (denoising score matching, Adam, warm-up, clipping, EMA).

Files in ``workdir``:

- ``checkpoint.pt``: model, EMA, optimizer, step, RNG states, standardizer and the resolved
  config (:mod:`scoresde.checkpoint`), written every ``train.ckpt_every`` steps and at the end;
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
losses and samples use their own freshly seeded generators and never disturb it.

Several processes (``torchrun --nproc_per_node=N -m scoresde train ...``): DistributedDataParallel
(:mod:`scoresde.distributed`, backend ``train.backend``); ``train.batch_size`` is the global batch.
Every rank draws the whole global batch (indices, t, noise) from the same generator and computes
the network on its own ``batch_size / N`` rows, so the generator stays identical on every rank and
N processes train as one does with the same seed (up to float round-off). Rank 0 alone evaluates,
samples, logs and writes files; every rank resumes from the same checkpoint.

Images (uint8 ``(N, C, H, W)`` from an image data set): every batch is flipped (``data.flip``)
and dequantized into model space by :func:`scoresde.data.images_to_model` with the loop's
generator; the test images are dequantized once, with the evaluation seed.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.losses import dsm_loss, reduce
from ..core.score import ScoreModel
from ..data.arrays import Standardizer, images_to_model, load_data
from . import distributed
from .checkpoint import CHECKPOINT, load_checkpoint, load_model, save_checkpoint
from .config import (
    Config,
    SampleConfig,
    apply_overrides,
    build_score_model,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    load_config,
    sampler_kwargs,
    with_data_shape,
)
from .ema import EMA

__all__ = ["train", "TrainingError", "evaluate", "eval_bpd", "sample_model", "lr_at", "METRICS"]
# Re-exported so that ``from scoresde.train import ...`` gives the whole train/load workflow.
__all__ += ["Config", "load_config", "apply_overrides", "load_model"]

METRICS = ("step", "train_loss", "test_loss", "test_bpd", "lr", "time")
_EVAL_SEED, _SAMPLE_SEED = 1, 2  # offsets from train.seed for the evaluation / sample generators


class TrainingError(ValueError):
    """Training stopped: the loss became NaN or infinite."""


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up over ``warmup`` updates."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


@torch.no_grad()
def evaluate(model: ScoreModel, x: Tensor, cfg: Config, batch_size: int = 4096) -> float:
    """Per-example mean DSM loss on ``x`` with a fixed seed (the same t, z at every evaluation)."""
    g = torch.Generator(x.device).manual_seed(cfg.train.seed + _EVAL_SEED)
    tc = cfg.train
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for chunk in x.split(batch_size):
        loss = dsm_loss(model.sde, model, chunk, tc.weighting, tc.eps, g, importance=tc.importance)
        total += loss.double().sum()
    return total.item() / x.shape[0]


def eval_bpd(model: ScoreModel, y: Tensor, cfg: Config, batch_size: int = 500) -> float:
    """Mean bits/dim of dequantized test images ``y`` (model space) by the probability-flow ODE.

    One Rademacher probe per image from a fixed seed, dopri5 at rtol = atol = 1e-5 from
    ``train.eps``, so successive evaluations differ only through the model. bits/dim as
    :func:`scoresde.likelihood.bits_per_dim` with the run's ``data.scale``.
    """
    from ..core.likelihood import bits_per_dim, log_likelihood

    g = torch.Generator(y.device).manual_seed(cfg.train.seed + _EVAL_SEED)
    logp = [
        log_likelihood(model.sde, model.score_fn, chunk, eps=cfg.train.eps, generator=g)[0]
        for chunk in y.split(batch_size)
    ]
    return bits_per_dim(torch.cat(logp), y.shape, scale=cfg.data.scale).mean().item()


@torch.no_grad()
def sample_model(
    model: ScoreModel,
    sample: SampleConfig,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """``(x, nfe)``: samples in model units from the sampler that ``sample`` names."""
    from ..samplers import sample as draw

    device = next(model.parameters()).device
    options = sampler_kwargs(sample) | {"device": device}
    return draw(model.sde, model, shape, sample.sampler, generator, **options)


# ---- metrics file ----------------------------------------------------------------------
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


def _tensorboard(workdir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(workdir / "tb"))


# ---- setup ----------------------------------------------------------------------
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


def _checkpoint_state(cfg, model, ema, opt, step, gen, standardizer, elapsed) -> dict:
    return {
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "step": step,
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "data": gen.get_state()},
        "standardizer": None if standardizer is None else standardizer.state_dict(),
        "elapsed": elapsed,
    }


def _restore(state: dict, model, ema, opt, gen) -> tuple[int, float]:
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"]["data"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["step"]), float(state.get("elapsed", 0.0))


def _save_samples(stem: Path, x: Tensor, cfg: Config, images: bool) -> None:
    """``<stem>.npy`` in data units; images: pixels ``(y - shift) / scale`` in [0, 1], a grid."""
    if images:
        from ..viz.plots import image_grid

        x = ((x - cfg.data.shift) / cfg.data.scale).clamp(0, 1)
        image_grid(x[:64].cpu().numpy(), stem.with_suffix(".png"))
    np.save(stem.with_suffix(".npy"), x.cpu().numpy())


def _draw_curves(metrics_path: Path, path: Path) -> None:
    from ..viz.plots import training_curves

    training_curves(metrics_path, path)


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


def _any_rank(flag: bool, d: distributed.Dist) -> bool:
    """True on every rank when ``flag`` is true on one (a decision all ranks must share)."""
    if not d.active:
        return flag
    return bool(distributed.all_reduce(torch.tensor(int(flag), device=d.device), d, "max"))


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


# ---- the loop ----------------------------------------------------------------------
def train(
    cfg: Config | None,
    workdir: str | Path,
    resume: bool = False,
    data: tuple[Tensor, Tensor, Standardizer | None] | None = None,
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
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = workdir / CHECKPOINT, workdir / "metrics.csv"
    state = load_checkpoint(ckpt_path) if resume and ckpt_path.is_file() else None  # every rank
    cfg = _resolve(cfg, state)
    distributed.check_batch(cfg.train.batch_size, distributed.world_size())  # before joining
    d = distributed.init(cfg.train.backend, cfg.train.device)  # one process without torchrun
    own, main = distributed.rows(cfg.train.batch_size, d), d.is_main
    for stale in workdir.glob(f".{CHECKPOINT}.*.tmp") if main else ():  # from a killed write
        stale.unlink(missing_ok=True)
    train_x, test_x, standardizer = load_data(cfg.data) if data is None else data
    images = train_x.dtype == torch.uint8  # dequantized per batch below
    if images and cfg.data.scale is None:
        raise ValueError("uint8 images need an image data set in data.name (for scale, shift)")
    if standardizer is not None:  # model units
        train_x, test_x = standardizer.forward(train_x), standardizer.forward(test_x)
    cfg = with_data_shape(cfg, tuple(train_x.shape[1:]))
    tc, device = cfg.train, d.device
    train_x, test_x = train_x.to(device), test_x.to(device)
    if images:  # one fixed dequantization of the test images, so test losses are comparable
        g_test = torch.Generator(device).manual_seed(tc.seed + _EVAL_SEED)
        test_x = images_to_model(test_x, cfg.data, g_test)

    # Model, optimizer (the paper's Adam), EMA, and the one generator of the loop.
    torch.manual_seed(tc.seed)
    model = build_score_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8)
    ema = EMA(model, tc.ema_rate)
    gen = torch.Generator(device).manual_seed(tc.seed)
    step, elapsed = _restore(state, model, ema, opt, gen) if state else (0, 0.0)
    ema_model = copy.deepcopy(model).eval()  # holds the EMA weights for evaluation and sampling
    if main:
        (workdir / "config.yaml").write_text(dump_yaml(cfg))
        _start_metrics(metrics_path, step if state else None)
    writer = _tensorboard(workdir, tc.tensorboard and main)
    # Several processes: DDP averages the gradients; `model` stays the plain module (state dicts
    # without a "module." prefix, EMA, evaluation).
    score_fn = _rows_score(distributed.wrap_ddp(model, d), own) if d.active else model

    sde, n_train = model.sde, train_x.shape[0]
    last = tc.steps if max_steps is None else min(tc.steps, max_steps)
    saved_step = step if state else None
    metrics: dict = {"step": step}
    loss_sum, n_sum = torch.zeros((), device=device), 0
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # no host sync per step
    t_start = time.perf_counter() - elapsed

    def check_finite() -> None:  # on every rank at the same steps: all stop together
        never = torch.iinfo(torch.long).max
        bad = int(distributed.all_reduce(torch.where(first_bad < 0, never, first_bad), d, "min"))
        if bad != never:
            kept = f"step {saved_step} in {ckpt_path}" if saved_step is not None else "none yet"
            raise TrainingError(
                f"the training loss became NaN or inf at step {bad}; stopped (try a smaller "
                f"train.lr or train.grad_clip). Last good checkpoint: {kept}"
            )

    model.train()
    bpd_every = tc.bpd_every if images else 0
    while step < last:
        lr = lr_at(step, tc.lr, tc.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = train_x[torch.randint(n_train, (tc.batch_size,), generator=gen, device=device)]
        if images:
            x0 = images_to_model(x0, cfg.data, gen, cfg.data.flip)
        per_example = dsm_loss(
            sde, score_fn, x0, tc.weighting, tc.eps, gen, importance=tc.importance
        )  # t and z of the whole global batch on every rank
        loss = reduce(per_example, tc.reduce)
        if d.active:  # DDP averages over ranks (see _rows_score)
            loss = loss * d.world
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        ema.update(model)
        step += 1
        loss_sum += per_example[own].detach().mean()
        n_sum += 1
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)

        done = step == last or (
            max_seconds is not None and _any_rank(time.perf_counter() - t_start >= max_seconds, d)
        )
        log, ev = _every(step, tc.log_every) or done, _every(step, tc.eval_every) or done
        bpd = bpd_every > 0 and (_every(step, bpd_every) or done)
        if log or ev or bpd:
            check_finite()
            metrics = {"step": step, "lr": lr, "time": time.perf_counter() - t_start}
            metrics["train_loss"] = distributed.all_reduce(loss_sum, d, "mean").item() / n_sum
            loss_sum, n_sum = torch.zeros((), device=device), 0
        if (log or ev or bpd) and main:
            if ev or bpd:
                ema.copy_to(ema_model)
            if ev:
                metrics["test_loss"] = evaluate(ema_model, test_x, cfg)
            if bpd:
                metrics["test_bpd"] = eval_bpd(ema_model, test_x[: tc.bpd_n], cfg)
            _append_metrics(metrics_path, metrics)
            if ev or bpd:
                _draw_curves(metrics_path, workdir / "curves.png")
            if writer is not None:
                for k in ("train_loss", "test_loss", "test_bpd", "lr"):
                    if k in metrics:
                        writer.add_scalar(k, metrics[k], step)
        if _every(step, tc.sample_every):
            check_finite()
        if _every(step, tc.sample_every) and main:
            ema.copy_to(ema_model)
            g = torch.Generator(device).manual_seed(tc.seed + _SAMPLE_SEED)
            x, _ = sample_model(ema_model, cfg.sample, (cfg.sample.n, *cfg.data.shape), g)
            x = x if standardizer is None else standardizer.inverse(x)
            _save_samples(workdir / f"samples_{step}", x, cfg, images)
        if _every(step, tc.ckpt_every) or done:
            check_finite()
            elapsed = time.perf_counter() - t_start
            if main:
                state = _checkpoint_state(cfg, model, ema, opt, step, gen, standardizer, elapsed)
                save_checkpoint(ckpt_path, state)
            distributed.barrier(d)  # no rank goes on (or ends) before the checkpoint is written
            saved_step = step
        if callback is not None:
            callback(step, metrics)
        if done:
            break

    if writer is not None:
        writer.close()
    if saved_step != step:  # no update in this call (steps=0): still leave a checkpoint
        elapsed = time.perf_counter() - t_start
        if main:
            state = _checkpoint_state(cfg, model, ema, opt, step, gen, standardizer, elapsed)
            save_checkpoint(ckpt_path, state)
        distributed.barrier(d)
    if "test_loss" not in metrics and main:  # no update in this call: report the current state
        ema.copy_to(ema_model)
        metrics = {**metrics, "test_loss": evaluate(ema_model, test_x, cfg)}
    return {**metrics, "step": step, "workdir": str(workdir)}
