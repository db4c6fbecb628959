"""Evaluation of a trained model, shared by the command line, the training loop, the demo and the
benchmarks: a data set's NLL and bits/dim, samples drawn in chunks, the held-out DSM loss.

Work is split so that the numbers do not depend on the number of processes (``torchrun``): the
data set is cut into batches (and the samples into chunks); batch ``k`` of repeat ``r`` takes its
Hutchinson probes from ``seed + r * n_batches + k``; sample ``i`` draws from its own stream of
``seed`` (:class:`scoresde.samplers.SampleStreams`), whatever chunk it falls in. Batches and
chunks are dealt round-robin to the processes (:func:`distributed.shard`) and gathered in order,
so every process ends with the whole result.

Library code here never prints: progress goes through ``callback(done, total)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import check_int, lookup
from ..core.likelihood import bits_per_dim, elbo, log_likelihood
from ..core.losses import dsm_loss
from ..core.score import ScoreModel
from ..data import DataConfig, Standardizer, images_to_model
from . import distributed
from .config import Config, SampleConfig, sampler_kwargs

__all__ = [
    "EVAL_SEED",
    "SAMPLE_SEED",
    "NLL",
    "dataset_nll",
    "draw_samples",
    "sample_model",
    "mean_test_loss",
    "mean_test_bpd",
]

EVAL_SEED, SAMPLE_SEED = 1, 2  # offsets from train.seed of the loop's evaluation / sample seeds

Progress = Callable[[int, int], None]  # callback(done, total)
StepCallback = Callable[[int, Tensor, Tensor, Tensor], None]  # callback(i, t, x, x_mean)


def _world(model: torch.nn.Module, dist: distributed.Dist | None) -> distributed.Dist:
    """``dist``, or one process on the model's device (the CPU for a model without weights)."""
    if dist is not None:
        return dist
    weight = next(model.parameters(), None)
    return distributed.Dist(device=weight.device if weight is not None else torch.device("cpu"))


def _se(v: Tensor) -> float:
    """Standard error of the mean of ``v`` (NaN for fewer than two values)."""
    return v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")


# ---- a data set's NLL and bits/dim --------------------------------------------------------------
@dataclass(frozen=True)
class NLL:
    """Per-example negative log-likelihood of a data set, in nats of the data's own units.

    ``nll`` is the mean over ``repeats`` evaluations per example (float64, on the CPU); ``nfe``
    the score evaluations of all of them; ``scale`` the model-space scale of 8-bit images (None
    for other data), which turns the NLL into bits/dim (DESIGN section 4).
    """

    nll: Tensor
    shape: tuple[int, ...]
    repeats: int
    divergence: str
    nfe: int
    scale: float | None = None
    bound: str = "ode"  # "ode": the probability-flow NLL; "elbo": the ELBO's upper bound on it

    @property
    def bpd(self) -> Tensor | None:
        """Per-example bits/dim of the 8-bit data (None unless the data are images)."""
        if self.scale is None:
            return None
        return bits_per_dim(-self.nll, self.shape, scale=self.scale)

    def summary(self) -> dict:
        """Mean ± standard error and median over examples, as ``scoresde likelihood`` writes."""
        nll, n, D = self.nll, len(self.nll), math.prod(self.shape[1:])
        result = {
            "nll": nll.mean().item(),
            "nll_per_dim": nll.mean().item() / D,
            "se": _se(nll),
            "median": nll.median().item(),
            "n": n,
            "repeats": self.repeats,
            "divergence": self.divergence,
            "nfe": self.nfe,
        }
        bpd = self.bpd
        if bpd is not None:
            result |= {
                "bpd": bpd.mean().item(),
                "bpd_se": _se(bpd),
                "bpd_median": bpd.median().item(),
            }
        return result | {"bound": self.bound}  # last: the keys before it kept their order


def _to_model_space(
    x: Tensor, data: DataConfig, standardizer: Standardizer | None, g_deq: torch.Generator
) -> Tensor:
    """Images: a fresh uniform dequantization into ``data.scale * u + data.shift``; other data:
    the standardizer's model units."""
    if x.dtype == torch.uint8:
        return images_to_model(x, data, generator=g_deq)
    return standardizer.forward(x) if standardizer is not None else x


def _log_p(
    model: ScoreModel, y: Tensor, bound: str, how: tuple, g: torch.Generator
) -> tuple[Tensor, int]:
    """``(log p(y) or its ELBO, nfe)``; ``how``: ``(divergence, rtol, atol, eps)`` of the ODE or
    ``(samples, eps)`` of the ELBO."""
    if bound == "elbo":
        samples, eps = how
        return elbo(model.sde, model.score_fn, y, samples, generator=g, eps=eps)
    divergence, rtol, atol, eps = how
    lp, _, nfe = log_likelihood(
        model.sde, model.score_fn, y, divergence, rtol, atol, eps, generator=g
    )
    return lp, nfe


def dataset_nll(
    model: ScoreModel,
    x: Tensor,
    data: DataConfig,
    standardizer: Standardizer | None = None,
    *,
    divergence: str | None = None,
    repeats: int = 1,
    batch_size: int = 1000,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    seed: int = 0,
    dist: distributed.Dist | None = None,
    callback: Progress | None = None,
    bound: str = "ode",
    elbo_samples: int = 16,
) -> NLL:
    """The NLL of every example of ``x`` by the probability-flow ODE (every process gets it all),
    or with ``bound="elbo"`` the upper bound on it from :func:`scoresde.core.likelihood.elbo`.

    Args:
        model: the score model (on the device of ``dist``, else its weights' device).
        x: the data in data units: uint8 images ``(N, C, H, W)`` or float vectors ``(N, D)``.
        data: the run's data section (images: ``scale`` and ``shift`` of model space).
        standardizer: the run's map of vectors to model units (its log-determinant is added).
        divergence: ``exact``, ``gaussian``, ``rademacher`` (images: rademacher, else exact).
        repeats: evaluations per example (fresh dequantization noise and probes), averaged.
        batch_size: examples per ODE solve.
        rtol, atol, eps: the solver's tolerances and its last time.
        seed: dequantization noise from ``seed`` (CPU); probes of batch ``k`` of repeat ``r``
            from ``seed + r * n_batches + k``.
        dist: the process group (one process when None).
        callback: ``callback(done, total)`` after every batch, in examples (this process's).
        bound: ``ode`` (the ODE) or ``elbo`` (``elbo_samples`` draws per example, no ODE solve).
    """
    check_int("repeats", repeats, 1)
    lookup(dict.fromkeys(("ode", "elbo")), bound, "bound", callables=False)
    d = _world(model, dist)
    images = x.dtype == torch.uint8
    divergence = divergence or ("rademacher" if images else "exact")
    log_det = float(standardizer.log_det()) if standardizer is not None else 0.0
    g_deq = torch.Generator().manual_seed(seed)  # dequantization noise, on the CPU
    nll, nfe, done = torch.zeros(len(x), dtype=torch.float64), 0, 0
    for r in range(repeats):
        batches, logps = torch.split(_to_model_space(x, data, standardizer, g_deq), batch_size), []
        for k in distributed.shard(len(batches), d):
            g = torch.Generator(device=d.device).manual_seed(seed + r * len(batches) + k)
            y = batches[k].to(device=d.device, dtype=torch.float32)
            how = (divergence, rtol, atol, eps) if bound == "ode" else (elbo_samples, eps)
            lp, nfe_k = _log_p(model, y, bound, how, g)
            logps.append(lp.double().cpu() + log_det)
            nfe, done = nfe + nfe_k, done + len(y)
            if callback is not None:
                callback(done, len(x) * repeats)
        empty = torch.empty(0, dtype=torch.float64)
        logp = distributed.gather_chunks(logps, [len(b) for b in batches], d, empty)
        nll -= logp / repeats  # per-example mean over the repeats
    nfe = int(distributed.all_reduce(torch.tensor(nfe), d, "sum"))
    return NLL(nll, tuple(x.shape), repeats, divergence, nfe, data.scale if images else None, bound)


# ---- samples ----------------------------------------------------------------------------------
@torch.no_grad()
def draw_samples(
    model: ScoreModel,
    shape: tuple[int, ...],
    n: int,
    *,
    sampler: str = "pc",
    chunk: int = 1000,
    seed: int = 0,
    dist: distributed.Dist | None = None,
    callback: Progress | None = None,
    step_callback: StepCallback | None = None,
    **options,
) -> tuple[Tensor, int]:
    """``(x, nfe)``: ``n`` samples in model units, drawn in chunks of ``chunk``.

    Sample ``i`` takes every random number (its start latent, then its step noise) from its own
    stream, :class:`scoresde.samplers.SampleStreams` seeded ``stream_seed(seed, i)``, through
    :func:`scoresde.samplers.sample` (``sampler`` and its ``options``). So the samples do not
    depend on ``chunk``, nor on the number of processes the chunks are dealt to, for every sampler
    that treats the rows of a batch independently: all of them, except the ``pc`` sampler's
    ``langevin`` corrector (its step size uses batch-mean norms, as the official code) and the
    ``ode`` sampler's adaptive methods (one step size for the batch: equal to the tolerance).
    A given ``z`` (``(n, *shape)``) is cut into the chunks. Every process gets all samples;
    ``nfe`` is the largest count of one chunk.

    ``callback(done, total)`` follows the chunks (this process's samples); ``step_callback(i, t,
    x, x_mean)`` goes to the sampler as its per-step ``callback``. A sampler without one (the
    probability-flow ODE) calls it at each score evaluation instead, with ``i`` the evaluation's
    index and ``x_mean = x``. Neither changes the samples.
    """
    d = _world(model, dist)
    device = d.device
    sizes, parts, nfe = distributed.chunk_sizes(n, chunk), [], 0
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    score_fn, hook = _hooks(model.score_fn, sampler, step_callback)
    z = options.pop("z", None)
    for k in distributed.shard(len(sizes), d):
        rows = range(starts[k], starts[k] + sizes[k])
        xk, nfe_k = _draw_chunk(model, score_fn, shape, sampler, seed, rows, z, device,
                                {**hook, **options})  # fmt: skip
        parts.append(xk)
        nfe = max(nfe, int(nfe_k))
        if callback is not None:
            callback(sum(p.shape[0] for p in parts), n)
    x = distributed.gather_chunks(parts, sizes, d, torch.empty((0, *shape), device=device))
    return x, int(distributed.all_reduce(torch.tensor(nfe, device=device), d, "max"))


def _hooks(score_fn: Callable[[Tensor, Tensor], Tensor], sampler: str, step_callback):
    """``(score_fn, options)`` that report the steps to ``step_callback``: the sampler's own
    ``callback`` where it takes one, else a score function reporting each evaluation."""
    from ..samplers import sampler_options

    if step_callback is None:
        return score_fn, {}
    if "callback" in sampler_options(sampler):
        return score_fn, {"callback": step_callback}
    return _reporting(score_fn, step_callback), {}


def _draw_chunk(model, score_fn, shape, sampler, seed, rows, z, device, options):
    """``(x, nfe)`` of the samples ``rows``, each from its own stream of ``seed``."""
    from ..samplers import SampleStreams, sample

    streams = SampleStreams(seed, rows)
    if z is not None:
        options["z"] = z[rows.start : rows.stop].to(device)
    options = {"device": device, **options}
    return sample(model.sde, score_fn, (len(rows), *shape), sampler, streams, **options)


def _reporting(score_fn: Callable[[Tensor, Tensor], Tensor], step_callback: StepCallback):
    """``score_fn`` that reports each evaluation as ``step_callback(i, t, x, x)``."""
    count = [0]

    def reported(x: Tensor, t: Tensor) -> Tensor:
        s = score_fn(x, t)
        step_callback(count[0], t, x, x)
        count[0] += 1
        return s

    return reported


@torch.no_grad()
def sample_model(
    model: ScoreModel,
    sample: SampleConfig,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """``(x, nfe)``: samples in model units from the sampler that ``sample`` names, in one go."""
    from ..samplers import sample as draw

    options = sampler_kwargs(sample) | {"device": next(model.parameters()).device}
    return draw(model.sde, model, shape, sample.sampler, generator, **options)


# ---- the training loop's test metrics ---------------------------------------------------------
@torch.no_grad()
def mean_test_loss(model: ScoreModel, x: Tensor, cfg: Config, batch_size: int = 4096) -> float:
    """Per-example mean DSM loss on ``x`` (model units) with the seed ``train.seed + EVAL_SEED``:
    the same t and z at every evaluation, so successive values differ only through the model."""
    tc = cfg.train
    g = torch.Generator(x.device).manual_seed(tc.seed + EVAL_SEED)
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for chunk in x.split(batch_size):
        loss = dsm_loss(model.sde, model, chunk, tc.weighting, tc.eps, g, importance=tc.importance)
        total += loss.double().sum()
    return total.item() / x.shape[0]


def mean_test_bpd(model: ScoreModel, y: Tensor, cfg: Config, batch_size: int = 500) -> float:
    """Mean bits/dim of dequantized test images ``y`` (model space) by the probability-flow ODE.

    One Rademacher probe per image from one generator seeded ``train.seed + EVAL_SEED``, dopri5
    at rtol = atol = 1e-5 from ``train.eps``, so successive evaluations differ only through the
    model; bits/dim by :func:`scoresde.core.likelihood.bits_per_dim` with ``data.scale``.
    """
    g = torch.Generator(y.device).manual_seed(cfg.train.seed + EVAL_SEED)
    logp = [
        log_likelihood(model.sde, model.score_fn, chunk, eps=cfg.train.eps, generator=g)[0]
        for chunk in y.split(batch_size)
    ]
    return bits_per_dim(torch.cat(logp), y.shape, scale=cfg.data.scale).mean().item()
