"""The evaluation benchmark of a trained image run: test bits/dim by the probability-flow ODE and by
the ELBO, and FID / KID / precision-recall of several samplers at fixed score-evaluation budgets,
each beside its floor, with wall times.

What it does, for the run in ``--workdir`` (its EMA weights, its data set):

1. the training images' features, once, by the feature network (``--features``, default the
   network cached for the run's data set); every sampler setting is scored against them;
2. an estimate of the total time, from one timed score evaluation at the chunk's batch size
   (and a gradient through it for the ODE's divergence) and a small ODE solve, printed before
   any long work, so that ``--n`` / ``--n-test`` can be cut;
3. bits/dim of the first ``--n-test`` test images, once, by ``evaluate`` (of
   ``scoresde.training.evaluate``) with ``metrics=("bpd", "elbo")``;
4. for every ``NAME:NFE`` of ``--samplers``, ``--n`` samples (capped at the test split, which the
   floor needs; the output says so) with the most steps within NFE score evaluations, scored
   with ``metrics=("fid",)`` and the features of step 1 (``reference``).

Setting names: any sampler of ``scoresde.SAMPLERS`` with its default options, or one of
:data:`SETTINGS`: ``pc`` (the paper's PC sampler: reverse-diffusion predictor and one Langevin
corrector step at snr 0.16; two evaluations a step), ``pc_nc`` (reverse diffusion, no corrector)
and ``em`` (Euler-Maruyama, no corrector). On a VP SDE with beta_max = 20 the discrete chain
needs beta_max / steps <= 1 for the reverse-diffusion predictor and < 1 for the Langevin
corrector, so ``pc`` needs NFE >= 42 (21 steps) and ``pc_nc`` NFE >= 20; ``em`` runs at any NFE
(``pc:10`` is refused before any work). The default runs ``pc`` at NFE 50 (25 steps), ``em`` at
NFE 10, and ``dpm_solver`` and ``unipc`` at NFE 10 and 50.

Run (after ``scoresde features train --data DATA`` if the data set has no feature network yet)::

    .venv/bin/python bench/evaluate_runs.py --workdir runs/mnist [--n 10000] [--n-test 1000]
        [--samplers pc:50 em:10 dpm_solver:10 ...] [--features FILE] [--seed 0] [--threads 2]
        [--chunk 500] [--out bench/results/evaluate_<run name>.json]
    .venv/bin/python bench/evaluate_runs.py --cost mnist_vp   # the cost of a preset's network

Columns of the table:

* ``setting``, ``NFE``: the setting and the score evaluations each sample took (at most the
  budget asked; ``steps`` in the JSON);
* ``FID``: Frechet distance between Gaussians fitted to the features of the N samples and of
  the training images; ``floor FID``: the same for N test images. FID at N is biased upwards,
  more so for small N: compare a setting's FID with the floor at the same N, not with published
  numbers at another N (or with another feature network);
* ``KID ± se``: kernel inception distance (unbiased, mean and standard error over 100 subsets);
* ``precision``, ``recall``: improved precision and recall (k = 3) of the samples against the
  training features (quality, coverage);
* ``seconds``: wall time of the setting (sampling, features, metrics);
* bits/dim rows: mean ± standard error over N images (uniform dequantization), the score
  evaluations (``nfe``) of all batches, and the seconds. The ODE is the model's likelihood (one
  Rademacher probe per image, dopri5 at rtol = atol = 1e-5); the ELBO an upper bound on the
  reverse SDE's, a model of its own: with a learned score it may lie below the ODE's.

Everything goes to one JSON (``--out``) with its N, seed, NFE, seconds and the machine (platform,
torch version, threads); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import scoresde as sd
from scoresde.training.config import Config
from scoresde.training.evaluate import steps_for_nfe

SETTINGS = {  # name -> (sampler, options)
    "pc": (
        "pc",
        {
            "predictor": "reverse_diffusion",
            "corrector": "langevin",
            "snr": 0.16,
            "corrector_steps": 1,
        },
    ),
    "pc_nc": ("pc", {"predictor": "reverse_diffusion", "corrector": "none"}),
    "em": ("pc", {"predictor": "euler_maruyama", "corrector": "none"}),
}
DEFAULT_SAMPLERS = ("pc:50", "em:10", "dpm_solver:10", "dpm_solver:50", "unipc:10", "unipc:50")
ODE_BATCH = 500  # images per ODE / ELBO solve inside evaluate
RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def parse_setting(item: str) -> tuple[str, str, dict, int]:
    """``NAME:NFE`` -> ``(name, sampler, options, nfe)``; a bad item: one-line ValueError."""
    name, sep, nfe = item.partition(":")
    valid = [*SETTINGS, *(s for s in sd.SAMPLERS if s not in SETTINGS)]
    if name not in valid:
        raise ValueError(f"unknown sampler setting {name!r} in {item!r}; valid: {', '.join(valid)}")
    if not sep or not nfe.isdigit() or int(nfe) < 1:
        raise ValueError(f"sampler setting {item!r} must be NAME:NFE with NFE an integer >= 1")
    sampler, options = SETTINGS.get(name, (name, {}))
    return name, sampler, dict(options), int(nfe)


def resolve(settings: list[str], sde: sd.SDE, shape: tuple[int, ...]) -> list[dict]:
    """Every setting with its steps (the most within its NFE) and the NFE they take, checked
    before any work (a setting that cannot run within its budget: ValueError)."""
    out = []
    for item in settings:
        name, sampler, options, budget = parse_setting(item)
        try:
            steps = steps_for_nfe(sde, sampler, budget, shape, options)
        except ValueError as e:
            raise ValueError(f"{item}: {e}") from None
        nfe = count_nfe(sde, sampler, steps, options, shape)
        out.append({"setting": item, "name": name, "sampler": sampler, "options": options,
                    "nfe_budget": budget, "steps": steps, "nfe": nfe})  # fmt: skip
    return out


def count_nfe(
    sde: sd.SDE, sampler: str, steps: int | None, options: dict, shape: tuple[int, ...]
) -> int:
    """Score evaluations of one run of ``sampler`` (the count does not depend on the network)."""
    from scoresde.samplers import sample

    g = torch.Generator().manual_seed(0)
    kw = options if steps is None else {**options, "steps": steps}
    return int(sample(sde, lambda x, t: -x, (1, *shape), sampler, g, **kw)[1])


def time_call(fn: Callable[[], object], repeats: int = 2, best: bool = False) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after one warm-up call (of two:
    the slower, so that a forecast errs long); with ``best`` the fastest call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if best else sorted(times)[len(times) // 2]


def score_costs(model: sd.ScoreModel, shape: tuple[int, ...], batch: int, seed: int = 0) -> dict:
    """Wall seconds of one score evaluation of ``batch`` inputs (no gradient), and of one with
    the gradient of a probe's inner product (what the ODE's divergence costs per evaluation)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g)
    t = torch.full((batch,), 0.5)
    v = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1

    def forward() -> None:
        with torch.no_grad():
            model.score_fn(x, t)

    def with_grad() -> None:
        with torch.enable_grad():
            y = x.clone().requires_grad_(True)
            torch.autograd.grad((model.score_fn(y, t) * v).sum(), y)

    return {"batch": batch, "forward_s": time_call(forward), "divergence_s": time_call(with_grad)}


def estimate(
    model: sd.ScoreModel,
    cfg: Config,
    x_test: Tensor,
    plan: list[dict],
    n: int,
    n_test: int,
    args: argparse.Namespace,
    ref: Tensor,
) -> dict:
    """Seconds expected for each part, from timed score evaluations, a small ODE solve and the
    scores of a few features against the reference ``ref`` (:func:`metrics_cost`)."""
    from scoresde.training.evaluate import dataset_nll

    shape, b = tuple(cfg.data.shape), min(args.chunk, n)
    cost = score_costs(model, shape, b, args.seed)
    chunks = math.ceil(n / b)
    scores = 2 * metrics_cost(ref, n, args.seed)  # the samples', then the floor's
    out = {"score": cost, "scores_s": scores, "sampling_s": {}, "settings": {}}
    for s in plan:
        out["sampling_s"][s["setting"]] = s["nfe"] * chunks * cost["forward_s"]
        out["settings"][s["setting"]] = out["sampling_s"][s["setting"]] + scores
    nb = min(ODE_BATCH, n_test)
    big = cost if nb == b else score_costs(model, shape, nb, args.seed)
    batches = math.ceil(n_test / nb)
    out["elbo"] = batches * args.elbo_samples * big["forward_s"]
    small = min(8, n_test)
    t0 = time.perf_counter()
    probe = dataset_nll(model, x_test[:small], cfg.data, seed=args.seed, batch_size=small)
    out["ode_probe"] = {"n": small, "nfe": probe.nfe, "seconds": time.perf_counter() - t0}
    out["bpd"] = batches * probe.nfe * big["divergence_s"]  # rough: NFE grows with the batch
    out["total"] = out["bpd"] + out["elbo"] + sum(out["settings"].values())
    return out


def metrics_cost(ref: Tensor, n: int, seed: int = 0) -> float:
    """Seconds of the scores of ``n`` features against ``ref`` as ``evaluate`` computes them,
    from calls on subsets scaled by their costs: precision / recall (k = 3) by ``(len(ref) +
    n)^2`` (its nearest-neighbour distances), KID (100 subsets of ``min(1000, n)``) by the
    subsets (timed on 2 of them); the faster of two timed calls each (small calls on a loaded
    machine are slowed most by waiting threads)."""
    from scoresde.core.metrics import kid, precision_recall

    a = min(len(ref), 2000)
    b = min(max(n, 4), 500, a)  # precision / recall needs more than k rows
    m = min(1000, n, len(ref))
    g = torch.Generator().manual_seed(seed)
    pr = time_call(lambda: precision_recall(ref[:a], ref[a - b : a], k=3), best=True)
    kd = time_call(lambda: kid(ref[:a], ref[:m], subsets=2, subset_size=m, generator=g), best=True)
    return pr * ((len(ref) + n) / (a + b)) ** 2 + kd * 50


def print_estimate(est: dict, n: int, n_test: int) -> None:
    """The estimate, on stderr, before the long work."""
    c = est["score"]
    log(f"timed: one score evaluation of {c['batch']} inputs {c['forward_s']:.3g} s, with the "
        f"divergence gradient {c['divergence_s']:.3g} s; a small ODE solve of "
        f"{est['ode_probe']['n']} images took {est['ode_probe']['nfe']} evaluations")  # fmt: skip
    log(f"estimate: bits/dim of {n_test} images by the ODE ~{est['bpd']:.0f} s (rough), by the "
        f"ELBO ~{est['elbo']:.0f} s")  # fmt: skip
    for name, sec in est["settings"].items():
        sampling, scores = est["sampling_s"][name], est["scores_s"]
        log(f"estimate: {name}, {n} samples: ~{sec:.0f} s (sampling ~{sampling:.0f} s, "
            f"scores of samples and floor ~{scores:.0f} s)")  # fmt: skip
    log(f"estimate: total ~{est['total'] / 60:.1f} min; cut --n or --n-test to go faster")


class Progress:
    """``callback(part, done, total)`` of ``evaluate`` as plain stderr lines: one at the end of
    each part and, used as a context manager, one every ``every`` seconds while it runs (a part
    reports only after each batch or chunk, which can take minutes)."""

    def __init__(self, label: str, every: float = 60.0) -> None:
        self.label, self.every, self.t0 = label, every, time.perf_counter()
        self.state, self.stop = None, threading.Event()
        self.beat = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Progress:
        self.beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.beat.join()

    def _beat(self) -> None:
        while not self.stop.wait(self.every):
            if self.state is None:  # no part has reported yet
                log(f"{self.label}: running ({self._elapsed()})")
            else:
                part, done, total = self.state
                log(f"{self.label}: {part} running, {done}/{total} done ({self._elapsed()})")

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self.t0:.0f} s"

    def __call__(self, part: str, done: int, total: int) -> None:
        self.state = (part, done, total)
        if done >= total:
            log(f"{self.label}: {part} {done}/{total} done ({self._elapsed()})")


def load_run(args: argparse.Namespace) -> tuple:
    """``(model, cfg, standardizer, x_train, x_test, feature net)`` of the run."""
    from scoresde.data import load_data
    from scoresde.training.checkpoint import load_model
    from scoresde.training.evaluate import feature_net, tag_features
    from scoresde.training.features import load_features

    model, cfg, standardizer = load_model(args.workdir, ema=True)
    # the run's config may keep only the first test images for its test losses: the floor needs N
    cfg.data.n_test = max(cfg.data.n_test, args.n, args.n_test)
    x_train, x_test, _ = load_data(cfg.data)
    if x_test.dtype != torch.uint8:
        raise ValueError(f"{args.workdir} is not an image run (data {cfg.data.name!r})")
    if args.features:
        net = tag_features(load_features(path=args.features), args.features)
    else:
        net = feature_net(cfg, None)
    return model.eval(), cfg, standardizer, x_train, x_test, net


def machine(threads: int) -> dict:
    """Where the numbers were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "cpu_count": os.cpu_count(),
    }


def run_settings(
    model: sd.ScoreModel,
    cfg: Config,
    x_train: Tensor,
    x_test: Tensor,
    ref: Tensor,
    net: object,
    plan: list[dict],
    n: int,
    args: argparse.Namespace,
    est: dict,
) -> list[dict]:
    """FID / KID / precision-recall of every setting, with a running forecast on stderr."""
    from scoresde.training.evaluate import evaluate

    rows, spent, planned = [], 0.0, 0.0
    for k, s in enumerate(plan):
        log(f"[{k + 1}/{len(plan)}] {s['setting']}: {s['steps']} steps, NFE {s['nfe']}")
        with Progress(s["setting"]) as bar:
            r = evaluate(
                model, cfg, x_test, x_train=x_train, metrics=("fid",), n=n,
                sampler=s["sampler"], steps=s["steps"], options=s["options"], seed=args.seed,
                features=net, chunk=args.chunk, reference=ref, callback=bar,
            )["fid"]  # fmt: skip
        rows.append({**s, **r, "nfe_budget": s["nfe_budget"], "steps": s["steps"]})
        spent, planned = spent + r["seconds"]["total"], planned + est["settings"][s["setting"]]
        left = sum(est["settings"][p["setting"]] for p in plan[k + 1 :]) * spent / planned
        fid, floor, sec = r["fid"], r["floor"]["fid"], r["seconds"]["total"]
        log(
            f"[{k + 1}/{len(plan)}] {s['setting']}: FID {fid:.4g} (floor {floor:.4g}) in "
            f"{sec:.0f} s; ~{left:.0f} s left"
        )
    return rows


def _pm(mean: float, se: float) -> str:
    """``mean ± se``, or the mean alone when the error is not finite."""
    return f"{mean:.4g} ± {se:.2g}" if math.isfinite(se) else f"{mean:.4g}"


def table(result: dict) -> list[str]:
    """The printed table: a row per sampler setting, then the bits/dim rows."""
    head = ("setting", "NFE", "FID", "floor FID", "KID ± se", "precision", "recall", "seconds")
    rows = [head]
    for r in result["settings"]:
        rows.append((r["setting"], str(r["nfe"]), f"{r['fid']:.4g}", f"{r['floor']['fid']:.4g}",
                     _pm(r["kid"], r["kid_se"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                     f"{r['seconds']['total']:.1f}"))  # fmt: skip
    lines = _columns(rows)
    lines.append(f"N = {result['n']} samples per setting and test images per floor, "
                 f"seed {result['seed']}" + (" (capped at the test split)" if result["capped"]
                                             else ""))  # fmt: skip
    bpd = [("bits/dim", "mean ± se", "N", "nfe", "seconds")]
    for m in ("bpd", "elbo"):
        p = result[m]
        bpd.append((p["method"].upper(), _pm(p["bpd"], p["bpd_se"]), str(p["n"]), str(p["nfe"]),
                    f"{p['seconds']:.1f}"))  # fmt: skip
    return [*lines, "", *_columns(bpd)]


def _columns(rows: list[tuple]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def write_json(path: Path, result: dict) -> None:
    """Write ``result`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main_run(args: argparse.Namespace) -> dict:
    """The benchmark of the run in ``args.workdir``: the JSON-ready result."""
    from scoresde.training.evaluate import evaluate
    from scoresde.training.features import image_features

    t_start = time.perf_counter()
    for item in args.samplers:  # names checked before anything is loaded
        parse_setting(item)
    model, cfg, standardizer, x_train, x_test, net = load_run(args)
    plan = resolve(args.samplers, model.sde, tuple(cfg.data.shape))
    n, n_test = min(args.n, len(x_test)), min(args.n_test, len(x_test))
    notes = []
    if n < args.n:
        notes.append(f"--n {args.n} capped at the test split: {n} samples per setting")
        log(notes[-1])
    if n_test < args.n_test:
        notes.append(f"--n-test {args.n_test} capped at the test split: {n_test} images")
        log(notes[-1])
    t0 = time.perf_counter()
    ref = image_features(net, x_train.float() / 255)
    ref_s = time.perf_counter() - t0
    log(f"features of the {len(x_train)} training images in {ref_s:.1f} s (once, for all)")
    est = estimate(model, cfg, x_test, plan, n, n_test, args, ref)
    print_estimate(est, n, n_test)
    with Progress("bits/dim") as bar:
        nll = evaluate(
            model, cfg, x_test, x_train=x_train, standardizer=standardizer,
            metrics=("bpd", "elbo"), n_test=n_test, seed=args.seed,
            elbo_samples=args.elbo_samples, callback=bar,
        )  # fmt: skip
    rows = run_settings(model, cfg, x_train, x_test, ref, net, plan, n, args, est)
    return {
        "run": str(args.workdir), "data": cfg.data.name, "shape": list(cfg.data.shape),
        "seed": args.seed, "n": n, "n_requested": args.n, "capped": n < args.n,
        "n_test": n_test, "chunk": args.chunk, "machine": machine(args.threads),
        "reference": {"n": len(x_train), "seconds": ref_s},
        "estimate": est, "bpd": nll["bpd"], "elbo": nll["elbo"], "settings": rows,
        "notes": [*notes, *nll["notes"], *{r["note"] for r in rows}],
        "seconds": time.perf_counter() - t_start,
    }  # fmt: skip


def main_cost(args: argparse.Namespace) -> dict:
    """The cost of a preset's network with random weights: one score evaluation at batch
    ``args.chunk``, and from it ``args.n`` samples at NFE 10 and 50 and with the preset's own
    sampler (the PC sampler at its default steps)."""
    from scoresde.training.config import build_score_model, load_config, sampler_kwargs

    cfg = load_config(args.cost)
    torch.manual_seed(args.seed)
    model = build_score_model(cfg).eval()
    shape = tuple(cfg.data.shape)
    cost = score_costs(model, shape, args.chunk, args.seed)
    ode = cost if args.chunk == ODE_BATCH else score_costs(model, shape, ODE_BATCH, args.seed)
    chunks = math.ceil(args.n / args.chunk)
    own = sampler_kwargs(cfg.sample)
    own_nfe = count_nfe(model.sde, cfg.sample.sampler, None, own, shape)
    per = chunks * cost["forward_s"]
    out = {
        "preset": args.cost, "shape": list(shape), "n": args.n, "machine": machine(args.threads),
        "parameters": sum(p.numel() for p in model.parameters()), "score": cost,
        "samples_seconds": {"nfe_10": 10 * per, "nfe_50": 50 * per},
        "own_sampler": {"sampler": cfg.sample.sampler, "options": own, "nfe": own_nfe,
                        "seconds": own_nfe * per},
        "ode_seconds_per_100_nfe_per_1000_images": 100 * math.ceil(1000 / ODE_BATCH)
        * ode["divergence_s"],
    }  # fmt: skip
    print(f"{args.cost}: {out['parameters']} parameters; one score evaluation of {args.chunk} "
          f"inputs {cost['forward_s']:.3f} s ({args.threads} threads), with the divergence "
          f"gradient {cost['divergence_s']:.3f} s")  # fmt: skip
    for k in (10, 50):
        sec = out["samples_seconds"][f"nfe_{k}"]
        print(f"{args.n} samples at NFE {k}: ~{sec:.0f} s ({sec / 3600:.2f} h)")
    sec = out["own_sampler"]["seconds"]
    print(f"{args.n} samples of the preset's {cfg.sample.sampler} sampler ({own}, NFE {own_nfe}):"
          f" ~{sec:.0f} s ({sec / 3600:.1f} h)")  # fmt: skip
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="run folder holding checkpoint.pt")
    p.add_argument("--cost", metavar="PRESET", help="instead of a run: time the score of this "
                   "preset's network (random weights) and forecast sampling costs")  # fmt: skip
    p.add_argument("--features", metavar="FILE", help="feature network (default: the data "
                   "set's cached one)")  # fmt: skip
    p.add_argument("--n", type=int, default=10000, help="samples per setting (capped at the "
                   "test split)")  # fmt: skip
    p.add_argument("--n-test", dest="n_test", type=int, default=1000, help="bits/dim images")
    p.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), metavar="NAME:NFE")
    p.add_argument("--elbo-samples", dest="elbo_samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=500, help="samples per sampler call")
    p.add_argument("--out", help="JSON path (default: bench/results/evaluate_<run name>.json)")
    args = p.parse_args(argv)
    if (args.workdir is None) == (args.cost is None):
        p.error("give --workdir RUN or --cost PRESET")
    for name in ("n", "n_test", "elbo_samples", "threads", "chunk"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the cost forecast), print the table, write the JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        result = main_cost(args) if args.cost else main_run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = f"cost_{args.cost}" if args.cost else Path(args.workdir).resolve().name
    out = Path(args.out) if args.out else RESULTS / f"evaluate_{name}.json"
    write_json(out, result)
    if not args.cost:
        print("\n".join(table(result)))
        print("\n".join(f"note: {note}" for note in result["notes"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
