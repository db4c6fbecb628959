"""Evaluation of a trained model, shared by the command line, the training loop, the demo and the
benchmarks: a data set's NLL and bits/dim, samples drawn in chunks, the held-out DSM loss, and
:func:`evaluate`, the one evaluation of a model (bits/dim by ODE and ELBO; FID, KID and
precision / recall of samples beside their floor, the same metrics of as many test images).

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.checks import check_int, lookup
from ..core.likelihood import bits_per_dim, elbo, log_likelihood
from ..core.losses import dsm_loss
from ..core.score import ScoreModel
from ..core.sde import SDE
from ..data import DataConfig, Standardizer, images_to_model
from . import distributed
from .config import EVAL_METRICS, Config, SampleConfig, sampler_kwargs

__all__ = [
    "EVAL_SEED",
    "SAMPLE_SEED",
    "NLL",
    "dataset_nll",
    "draw_samples",
    "sample_model",
    "mean_test_loss",
    "mean_test_bpd",
    "evaluate",
    "steps_for_nfe",
    "feature_net",
    "tag_features",
    "samples_to_images",
    "FLOOR_NOTE",
    "VECTOR_NOTE",
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
    bound: str = "ode"  # "ode": the probability-flow NLL; "elbo": a bound on the reverse SDE's

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


@torch.no_grad()  # the ELBO would keep every draw's graph; the ODE takes its VJPs itself
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
    or with ``bound="elbo"`` the reverse SDE's bound :func:`scoresde.core.likelihood.elbo`.

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
    if callback is not None:
        callback(0, n)  # the clock of a progress bar starts with the work
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
        loss = dsm_loss(
            model.sde,
            model,
            chunk,
            tc.weighting,
            tc.eps,
            g,
            importance=tc.importance,
            t_sampling=tc.t_sampling,
        )
        total += loss.double().sum()
    return total.item() / x.shape[0]


LOOP_ELBO_SAMPLES = 16  # draws of (t, noise) per image of the loop's ELBO bits/dim


@torch.no_grad()
def mean_test_bpd(model: ScoreModel, y: Tensor, cfg: Config, batch_size: int = 500) -> float:
    """Mean bits/dim of dequantized test images ``y`` (model space), by ``train.bpd_method``.

    ``ode``: the probability-flow ODE, one Rademacher probe per image, dopri5 at rtol = atol =
    1e-5 from ``train.eps``; ``elbo``: the ELBO (a bound on the reverse SDE's bits/dim),
    :data:`LOOP_ELBO_SAMPLES` draws per image (that many network calls per batch instead of the
    ODE's hundreds). Random numbers from one generator seeded ``train.seed + EVAL_SEED``, so
    successive evaluations differ only through the model; bits/dim by
    :func:`scoresde.core.likelihood.bits_per_dim` with ``data.scale``.
    """
    g = torch.Generator(y.device).manual_seed(cfg.train.seed + EVAL_SEED)
    eps, sde, score = cfg.train.eps, model.sde, model.score_fn
    if cfg.train.bpd_method == "elbo":
        logp = [elbo(sde, score, c, LOOP_ELBO_SAMPLES, generator=g, eps=eps)[0]
                for c in y.split(batch_size)]  # fmt: skip
    else:
        logp = [log_likelihood(sde, score, c, eps=eps, generator=g)[0] for c in y.split(batch_size)]
    return bits_per_dim(torch.cat(logp), y.shape, scale=cfg.data.scale).mean().item()


# ---- one evaluation of a model: bits/dim by ODE and ELBO, FID / KID / precision-recall --------
FLOOR_NOTE = (
    "FID and KID of N images are biased upward, more so for small N: compare a score with its "
    "floor, the same metrics of N held-out test images against the same training features"
)
VECTOR_NOTE = "FID, KID and precision/recall need images; this run's data are vectors"

EvalCallback = Callable[[str, int, int], None]  # callback(part, done, total)
_TABLE = dict.fromkeys(EVAL_METRICS)  # the metric names, for lookup's message


def _part_progress(callback: EvalCallback | None, part: str) -> Progress | None:
    """``callback(done, total)`` of one part, reported as ``callback(part, done, total)``."""
    if callback is None:
        return None
    return lambda done, total: callback(part, done, total)


def steps_for_nfe(
    sde: SDE, sampler: str, nfe: int, shape: tuple[int, ...], options: dict | None = None
) -> int:
    """The largest ``steps`` whose run of ``sampler`` (with ``options``) makes at most ``nfe``
    score evaluations, found by bisection on one sample with the score of N(0, I) (``-x``):
    the count of a fixed-step sampler depends on its steps and options, not on the network."""
    from ..samplers import sample, sampler_options

    if "steps" not in sampler_options(sampler):
        raise ValueError(f"sampler {sampler!r} takes no steps (it is adaptive): nfe cannot set it")
    check_int("nfe", nfe, 1)
    options = {k: v for k, v in (options or {}).items() if k != "steps"}

    def count(steps: int) -> int | None:  # None: the sampler refuses so few steps
        g = torch.Generator().manual_seed(0)
        try:
            _, k = sample(sde, lambda x, t: -x, (1, *shape), sampler, g, steps=steps, **options)
        except ValueError:
            return None
        return int(k)

    low, high = 1, nfe  # every sampler makes at least one evaluation a step
    while low < high:  # refused step counts lie below the valid ones: bisect past them
        mid = (low + high + 1) // 2
        k = count(mid)
        low, high = (mid, high) if k is None or k <= nfe else (low, mid - 1)
    k = count(low)
    if k is None or k > nfe:
        raise ValueError(
            f"sampler {sampler!r} cannot run within nfe={nfe} score evaluations with these "
            "options (more nfe, another sampler, or a fixed-step method)"
        )
    if low > 1 and count(low // 2) == k:  # an adaptive method: its steps do not set its nfe
        raise ValueError(f"sampler {sampler!r} with these options is adaptive: nfe cannot set it")
    return low


def _nll_part(model, cfg: Config, x: Tensor, standardizer, method: str, seed: int, kw: dict,
              dist, callback) -> dict:  # fmt: skip
    """Bits/dim (NLL for vectors) of ``x`` by ``method`` (``bpd``: the ODE, ``elbo``)."""
    t0 = time.perf_counter()
    bound = "elbo" if method == "elbo" else "ode"
    nll = dataset_nll(
        model, x, cfg.data, standardizer, seed=seed, dist=dist, bound=bound,
        callback=_part_progress(callback, method), **kw,
    )  # fmt: skip
    out = {"method": bound, **nll.summary(), "seed": seed}
    if bound == "elbo":
        out["elbo_samples"] = kw.get("elbo_samples", 16)
    return out | {"seconds": time.perf_counter() - t0}


def _feature_scores(fake: Tensor, ref: Tensor, seed: int, radii: Tensor) -> dict:
    """FID, KID (mean and standard error over subsets) and precision / recall of the features
    ``fake`` against the reference features ``ref`` (KID subsets from ``seed``; ``radii``: the
    k = 3 nearest-neighbour radii of ``ref``)."""
    from ..core.metrics import fid, kid, precision_recall

    g = torch.Generator().manual_seed(seed)
    size = min(1000, len(fake), len(ref))
    kid_mean, kid_se = kid(ref, fake, subsets=100, subset_size=size, generator=g)
    precision, recall = precision_recall(ref, fake, k=3, real_radii=radii)
    return {
        "fid": float(fid(ref, fake)),
        "kid": float(kid_mean),
        "kid_se": float(kid_se),
        "precision": float(precision),
        "recall": float(recall),
        "kid_subset_size": size,
    }


def samples_to_images(x: Tensor, data: DataConfig) -> Tensor:
    """Samples in model units -> 8-bit images as values in [0, 1] (CPU, float32).

    ``u = (x - shift) / scale`` clamped to [0, 1], then the pixel ``floor(256 u)`` (at most 255)
    over 255: the samples take the values that real images read as ``x_uint8 / 255`` take, as
    they would once saved as PNG files.
    """
    u = ((x.detach().cpu().float() - data.shift) / data.scale).clamp(0, 1)
    return torch.floor(u * 256).clamp(max=255) / 255


def feature_net(cfg: Config, features: Any) -> Any:
    """``features``, else the run's feature network: for RGB images the FID Inception-v3 from
    the user's weights under the data roots (:func:`scoresde.training.inception.load_inception`),
    else the network trained for the run's data set
    (:func:`scoresde.training.features.load_features`). A missing file: FileNotFoundError
    saying how to get it."""
    if features is not None:
        return features
    if cfg.data.shape and cfg.data.shape[0] == 3:
        from .inception import load_inception

        return load_inception(data_dir=cfg.data.data_dir)
    from .features import features_path, load_features

    net = load_features(dataset=cfg.data.name, data_dir=cfg.data.data_dir)
    return tag_features(net, features_path(cfg.data.name, data_dir=cfg.data.data_dir))


def tag_features(net: Any, path: str | Path) -> Any:
    """``net`` with ``path`` and, from the JSON record beside the file, ``sha256``, ``dataset``
    and ``seed`` set as attributes, so that an evaluation records which network scored it."""
    import json

    net.path = Path(path)
    record = Path(path).with_suffix(".json")
    if record.is_file():
        meta = json.loads(record.read_text(encoding="utf-8"))
        for key in ("sha256", "dataset", "seed"):
            setattr(net, key, meta.get(key))
    return net


def _describe(net: Any) -> dict:
    """What the JSON records of a feature network: its class and, when it has them, file, hash."""
    out = {"network": type(net).__name__}
    for key in ("path", "sha256", "dataset", "seed"):
        value = getattr(net, key, None)
        if value is not None:
            out[key] = str(value) if key == "path" else value
    return out


def _fid_part(model, cfg: Config, x_test: Tensor, x_train: Tensor, how: dict, dist,
              callback) -> tuple[dict, Tensor]:  # fmt: skip
    """Sample quality (FID, KID, precision / recall) of ``how["n"]`` samples and the floor of
    as many test images, both against the training images' features; returns the samples too."""
    from ..core.metrics import knn_radii
    from .features import image_features

    n, seed, seconds = how["n"], how["seed"], {}
    t0, net, ref = time.perf_counter(), how["features"], how.get("reference")
    if ref is not None and (ref.ndim != 2 or len(ref) != len(x_train)):
        raise ValueError(
            f"reference must be the features (n_train, F) of the {len(x_train)} training "
            f"images, got shape {tuple(ref.shape)}"
        )
    x, nfe = draw_samples(
        model, tuple(cfg.data.shape), n, sampler=how["sampler"], chunk=how["chunk"], seed=seed,
        dist=dist, callback=_part_progress(callback, "samples"), **how["options"],
    )  # fmt: skip
    seconds["sampling"], t1 = time.perf_counter() - t0, time.perf_counter()
    images = samples_to_images(x, cfg.data)
    ref = image_features(net, x_train.float() / 255) if ref is None else ref.double().cpu()
    fake = image_features(net, images)
    real = image_features(net, x_test[:n].float() / 255)
    seconds["features"], t2 = time.perf_counter() - t1, time.perf_counter()
    # the reference's k-NN search, once for score and floor: most of the part's time
    radii = knn_radii(ref, 3, callback=_part_progress(callback, "neighbours"))
    score, floor = _feature_scores(fake, ref, seed, radii), _feature_scores(real, ref, seed, radii)
    seconds["metrics"] = time.perf_counter() - t2
    out = {
        **score, "n": n, "seed": seed, "sampler": how["sampler"], "nfe": nfe,
        "options": {k: v for k, v in how["options"].items() if k != "z"},
        "floor": {**floor, "n": n, "seed": seed, "of": "test images against the training set"},
        "n_train": len(x_train), "features": _describe(net), "note": FLOOR_NOTE,
        "seconds": seconds | {"total": time.perf_counter() - t0},
    }  # fmt: skip
    return out, images


# fmt: off
def evaluate(
    model: ScoreModel, cfg: Config, x_test: Tensor, *, x_train: Tensor | None = None,
    standardizer: Standardizer | None = None, metrics: tuple[str, ...] | list[str] = EVAL_METRICS,
    n: int | None = None, n_test: int | None = None, sampler: str = "pc",
    steps: int | None = None, nfe: int | None = None, options: dict | None = None, seed: int = 0,
    features: Any = None, elbo_samples: int = 16, rtol: float = 1e-5, atol: float = 1e-5,
    chunk: int = 1000, dist: distributed.Dist | None = None, callback: EvalCallback | None = None,
    return_samples: bool = False, reference: Tensor | None = None,
) -> dict:
    # fmt: on
    """One evaluation of a model, the same for the command line, the training loop and the
    benchmarks: a JSON-ready dict with a part per metric, each recording its N and seed.

    Parts (``metrics``, from :data:`~scoresde.training.config.EVAL_METRICS`): ``bpd``, the
    test bits/dim by the probability-flow ODE, and ``elbo``, the reverse SDE's bound (mean,
    standard error, median, n, nfe, seconds; NLL in nats for vector data), on the first
    ``n_test`` test examples (default: all); ``fid``, for images only, FID, KID (mean and
    standard error) and precision / recall (k = 3) of ``n`` samples of ``sampler`` against the
    training images' features, with their ``floor``: the same metrics of the first ``n`` test
    images against the same features (FID at N is biased in N, so both use the same N; default
    N: the test images, at most 1000).

    Args:
        model, cfg: the score model (on the device of ``dist``, else its weights'), its config.
        x_test, x_train: data units (uint8 images or vectors); ``fid`` needs ``x_train``.
        standardizer: the run's map of vectors to model units.
        sampler, steps, nfe, options: the sampler, its steps (or the most steps within ``nfe``
            evaluations, :func:`steps_for_nfe`) and its other options.
        rtol, atol: the tolerances of the ODE's dopri5 (``bpd``).
        seed: of the dequantization, the Hutchinson probes, the ELBO's draws, the samples
            (sample i from stream i, :func:`draw_samples`) and the KID subsets.
        features: an object with ``features(x01)`` (a feature network, Inception; default the
            run's own); ``reference``: its features of ``x_train``, if already computed.
        callback: ``callback(part, done, total)`` as each part advances.
        return_samples: add ``"samples"``: the ``n`` samples as images in [0, 1] (CPU).
    """
    metrics = [m for m in metrics if lookup(_TABLE, m, "metric", callables=False) is None]
    if steps is not None and nfe is not None:
        raise ValueError("give steps or nfe, not both")
    t0, images = time.perf_counter(), x_test.dtype == torch.uint8
    x = x_test if n_test is None else x_test[: check_int("n_test", n_test, 1)]
    result: dict = {"metrics": metrics, "seed": seed, "data": cfg.data.name,
                    "shape": list(x_test.shape[1:]), "notes": []}  # fmt: skip
    how = None
    if "fid" in metrics and images:  # checked, and the feature network loaded, before any work
        how = _sampling(model, cfg, x_test, x_train, sampler, steps, nfe, options, n)
        how |= {"seed": seed, "features": feature_net(cfg, features), "chunk": chunk}
        how["reference"] = reference
    kw = {"elbo_samples": elbo_samples, "batch_size": 500, "rtol": rtol, "atol": atol}
    for m in (m for m in ("bpd", "elbo") if m in metrics):
        result[m] = _nll_part(model, cfg, x, standardizer, m, seed, kw, dist, callback)
    if "fid" in metrics and not images:
        result["notes"].append(f"{VECTOR_NOTE} of shape {list(x_test.shape[1:])}: fid skipped")
    elif how is not None:
        result["fid"], samples = _fid_part(model, cfg, x_test, x_train, how, dist, callback)
        result["notes"].append(FLOOR_NOTE)
        if return_samples:
            result["samples"] = samples
    result["seconds"] = time.perf_counter() - t0
    return result


def _sampling(model, cfg, x_test, x_train, sampler, steps, nfe, options, n) -> dict:
    """The checked sampling of the ``fid`` part: ``{"n", "sampler", "options"}``."""
    from ..samplers import SAMPLERS, sampler_options

    lookup(SAMPLERS, sampler, "sampler", callables=False)
    if x_train is None or x_train.dtype != torch.uint8:
        raise ValueError("fid needs the training images (uint8) as x_train")
    n = min(1000, len(x_test)) if n is None else check_int("n", n, 1)
    if n > len(x_test):
        raise ValueError(
            f"n={n} samples but the test split holds {len(x_test)} images; the floor (test "
            f"images against the training set at the same N) needs n <= {len(x_test)}"
        )
    options = dict(options or {})
    if nfe is not None:
        steps = steps_for_nfe(model.sde, sampler, nfe, tuple(cfg.data.shape), options)
    if steps is not None:
        if "steps" not in sampler_options(sampler):
            raise ValueError(f"sampler {sampler!r} takes no steps (it is adaptive)")
        options["steps"] = steps
    return {"n": n, "sampler": sampler, "options": options}
