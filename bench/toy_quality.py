"""Where the toy models' sample error comes from: one change from a preset per row, judged by the
exact density of the data.

The data are exact draws of a Gaussian mixture of ``scoresde.data.toy_mixture``: the one behind
the preset's data set (``toy_mixture_vp`` trains on ``mixture_2d``) or ``--mixture NAME`` (e.g.
``--preset toy_swissroll_vp --mixture mixture_2d``, a mixture trained with the swiss-roll preset),
passed to ``sd.train`` as an array (split by ``data.test_fraction``, standardized as the CLI
does). Each row trains the preset with one change; every row replaces the preset's
``train.steps`` by ``--steps`` (times K for the rows ``steps xK``), so "preset as is" means its
config at that length. ``sd.load`` then samples in data units and the mixture's exact ``log p``
judges:

* ``gap_ode`` / ``gap_pc``: mean log p(held-out exact draws) - mean log p(samples), in nats, with
  its standard error (the two sample variances added; held-out and samples independent).
  Positive: the samples sit at lower density than the data (mass off the modes). ODE: the
  probability-flow ODE (``sampler="ode"``, dopri5); PC: reverse diffusion without corrector at
  the SDE's N steps;
* ``nll_gap``: test NLL of the model (probability-flow ODE, exact divergence) minus the exact
  ``-log p`` of the same held-out points, mean and paired standard error; its expectation is
  KL(p || model) >= 0 up to the ODE's tolerance;
* ``seconds``: training time of the run (the loop's own clock, one torch thread).

Two rows reuse the preset's run and cost no training: ``no EMA`` reads its raw weights
(``sd.load(ema=False)``); ``exact score`` samples and scores with the mixture's exact score in the
run's model units, through the same SDE, samplers, latents and likelihood settings, which is the
floor that the samplers and tolerances leave. The EMA uses the paper's warm-up
``min(rate, (1 + n) / (10 + n))``, which stays below 0.999 until update 8,990, so ``ema_rate``
0.999 and 0.9999 train identical models in runs shorter than that. The ``cosine`` rows decay
the learning rate to 0 after the warm-up (``train.lr_schedule``); the ``sd1`` rows set EDM's
sigma_d to 1, the std of the standardized data (the default 0.5 is EDM's for images in [-1, 1]).

Writes ``bench/results/toy_quality.json`` (``--quick``: ``toy_quality_quick.json``; rows appended
as they finish) and prints a table.
Run: ``.venv/bin/python bench/toy_quality.py [--quick] [--preset toy_mixture_vp] [--mixture NAME]
[--steps 2000] [--only NAME,...] [--n 4000] [--n-held 100000] [--n-nll 500] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.data.arrays import Standardizer
from scoresde.data.toy import swiss_roll_mixture, toy_mixture
from scoresde.training.pipeline import TrainedModel

F64 = torch.float64
RESULTS = Path(__file__).resolve().parent / "results"
REUSE = ("raw", "exact")  # overrides that reuse a run instead of training one
# (key, sampler, options): the probability-flow ODE (dopri5 at its default tolerances) and PC as
# reverse diffusion at the SDE's N steps without corrector (the toy presets' PC setting).
SAMPLINGS = (
    ("ode", "ode", {}),
    ("pc", "pc", {"predictor": "reverse_diffusion", "corrector": "none"}),
)

EDM = ["model.parameterization=edm", "model.label=edm", "train.weighting=edm",
       "train.t_sampling=log_normal"]  # fmt: skip
COSINE = "train.lr_schedule=cosine"
SD1_COSINE = ["model.sigma_data=1.0", COSINE]
# name -> (description, overrides); "raw:RUN" rows read the raw weights of run RUN, "exact:RUN"
# rows replace its network by the mixture's exact score in RUN's model units (same SDE, samplers,
# latents and likelihood settings): the floor that the samplers and the ODE tolerances leave.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "preset": ("preset as is (EMA 0.999)", []),
    "no_ema": ("no EMA (raw weights of preset)", ["raw:preset"]),
    "exact_score": ("exact score (preset's SDE, samplers)", ["exact:preset"]),
    "ema_0.9999": ("ema_rate 0.9999", ["train.ema_rate=0.9999"]),
    "batch_256": ("batch 256", ["train.batch_size=256"]),
    "batch_1024": ("batch 1024", ["train.batch_size=1024"]),
    "steps_x2": ("steps x2", ["steps:2"]),
    "steps_x4": ("steps x4", ["steps:4"]),
    "width_256": ("hidden 256", ["model.params.hidden=256"]),
    "depth_4": ("depth 4", ["model.params.depth=4"]),
    "fourier_1": ("fourier_scale 1", ["model.params.fourier_scale=1.0"]),
    "fourier_16": ("fourier_scale 16", ["model.params.fourier_scale=16.0"]),
    "likelihood_is": (
        "likelihood weighting + importance",
        ["train.weighting=likelihood", "train.importance=true"],
    ),
    "cosine": ("cosine lr decay to 0", ["train.lr_schedule=cosine"]),
    "edm": ("EDM preconditioning", EDM),
    "edm_sd1": ("EDM, sigma_d 1 (the data's std)", [*EDM, "model.sigma_data=1.0"]),
    "edm_cosine": ("EDM, cosine lr", [*EDM, "train.lr_schedule=cosine"]),
    "edm_sd1_cosine": ("EDM, sigma_d 1, cosine lr", [*EDM, *SD1_COSINE]),
    "edm_cosine_b512": ("EDM, cosine lr, batch 512", [*EDM, COSINE, "train.batch_size=512"]),
    "edm_cosine_depth4": ("EDM, cosine lr, depth 4", [*EDM, COSINE, "model.params.depth=4"]),
    "edm_x3": ("EDM, steps x3", [*EDM, "steps:3"]),
    "edm_cosine_x3": ("EDM, cosine lr, steps x3", [*EDM, "train.lr_schedule=cosine", "steps:3"]),
    "edm_sd1_cosine_x3": ("EDM, sigma_d 1, cosine lr, steps x3", [*EDM, *SD1_COSINE, "steps:3"]),
}


def judge_mixture(name: str) -> sd.GaussianMixture:
    """The exact density the rows are judged by: a toy mixture, or ``swissroll``'s."""
    return swiss_roll_mixture() if name == "swissroll" else toy_mixture(name)


def log_prob(mix: sd.GaussianMixture, x: torch.Tensor, block: int = 2048) -> torch.Tensor:
    """``mix.log_prob(x)`` in blocks of rows (the swiss roll has 2,000 components)."""
    return torch.cat([mix.log_prob(b) for b in x.split(block)])


def gap(lp_data: torch.Tensor, lp_samples: torch.Tensor) -> tuple[float, float]:
    """``mean lp_data - mean lp_samples`` and its standard error (independent samples)."""
    d = lp_data.mean() - lp_samples.mean()
    se = (lp_data.var() / lp_data.numel() + lp_samples.var() / lp_samples.numel()).sqrt()
    return float(d), float(se)


def paired_gap(lp_exact: torch.Tensor, lp_model: torch.Tensor) -> tuple[float, float]:
    """Mean of ``lp_exact - lp_model`` over the same points (NLL minus exact), paired s.e."""
    d = lp_exact - lp_model
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def config_for(preset: str, steps: int, overrides: list[str]) -> sd.Config:
    """The preset with ``overrides``, ``steps`` updates (times ``steps:K``), one evaluation."""
    factor = [int(o.split(":")[1]) for o in overrides if o.startswith("steps:")]
    n = steps * (factor[0] if factor else 1)
    own = [o for o in overrides if ":" not in o]
    quiet = [f"train.steps={n}", f"train.log_every={n}", f"train.eval_every={n}"]
    quiet += [f"train.ckpt_every={n}", "train.sample_every=0", "train.tensorboard=false"]
    return sd.apply_overrides(sd.load_config(preset), own + quiet)


def train_run(cfg: sd.Config, x: torch.Tensor, workdir: Path) -> float:
    """Train ``cfg`` on the array ``x``; the loop's training seconds."""
    t0 = time.perf_counter()
    metrics = sd.train(cfg, data=x.numpy(), workdir=workdir, overwrite=True)
    return float(metrics.get("time", time.perf_counter() - t0))


def judge(
    model: TrainedModel, mix: sd.GaussianMixture, held: torch.Tensor, n: int, n_nll: int
) -> dict:
    """Sample gaps (ODE, PC) and the NLL gap of a loaded model against the exact density."""
    lp_held = log_prob(mix, held)
    row = {}
    for key, sampler, options in SAMPLINGS:
        t0 = time.perf_counter()
        x = model.sample(n, sampler=sampler, seed=1, **options).to(torch.float64)
        row[f"gap_{key}"], row[f"se_{key}"] = gap(lp_held, log_prob(mix, x))
        row[f"{key}_seconds"] = time.perf_counter() - t0
    pts = held[:n_nll]
    lp_model = model.log_likelihood(pts, divergence="exact").to(torch.float64)
    row["nll_gap"], row["nll_se"] = paired_gap(log_prob(mix, pts), lp_model)
    return row


def model_units(mix: sd.GaussianMixture, st: Standardizer) -> sd.GaussianMixture:
    """The mixture of ``y = (x - mean) / std`` (the standardizer ``st``): exact in model units."""
    m, s = st.mean.to(torch.float64), st.std.to(torch.float64)
    covs = mix.covs / (s[:, None] * s[None, :])
    return sd.GaussianMixture(mix.weights, (mix.means - m) / s, covs)


def judge_exact(
    model: TrainedModel, mix: sd.GaussianMixture, held: torch.Tensor, n: int, n_nll: int
) -> dict:
    """:func:`judge` with the exact score of ``model``'s data in place of its network."""
    st, sde = model.standardizer, model.sde
    score = model_units(mix, st).score_fn(sde)
    lp_held, row = log_prob(mix, held), {}
    for key, sampler, options in SAMPLINGS:
        t0 = time.perf_counter()
        streams = sd.samplers.SampleStreams(1, range(n))  # the latents of model.sample(seed=1)
        y, _ = sd.sample(sde, score, (n, mix.dim), sampler, streams, dtype=F64, **options)
        row[f"gap_{key}"], row[f"se_{key}"] = gap(lp_held, log_prob(mix, st.inverse(y)))
        row[f"{key}_seconds"] = time.perf_counter() - t0
    y = st.forward(held[:n_nll])
    lp, _, _ = sd.log_likelihood(sde, score, y, divergence="exact")
    row["nll_gap"], row["nll_se"] = paired_gap(log_prob(mix, held[:n_nll]), lp + st.log_det())
    return row


def measure(
    name: str,
    args: argparse.Namespace,
    mix: sd.GaussianMixture,
    data: torch.Tensor,
    held: torch.Tensor,
    root: Path,
) -> dict:
    """Train (or reuse) the run of variant ``name`` and judge it."""
    desc, overrides = VARIANTS[name]
    reuse = {o.split(":")[0]: o.split(":")[1] for o in overrides if o.split(":")[0] in REUSE}
    workdir = root / (next(iter(reuse.values())) if reuse else name)
    seconds = None
    if not reuse:
        seconds = train_run(config_for(args.preset, args.steps, overrides), data, workdir)
    elif not (workdir / "checkpoint.pt").exists():
        raise SystemExit(f"{name} reads the run {workdir.name}; put it before {name} in --only")
    model = sd.load(workdir, ema="raw" not in reuse)
    row = {"variant": name, "change": desc, "overrides": overrides, "train_seconds": seconds}
    fn = judge_exact if "exact" in reuse else judge
    return row | fn(model, mix, held, args.n, args.n_nll)


def table(rows: list[dict]) -> str:
    """One line per variant: the change, the gaps with their standard errors, seconds."""
    head = f"{'change':<36} {'gap ODE':>16} {'gap PC':>16} {'NLL - H':>16} {'train s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        secs = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(
            f"{r['change']:<36} {r['gap_ode']:>+8.3f} ± {r['se_ode']:.3f}"
            f" {r['gap_pc']:>+8.3f} ± {r['se_pc']:.3f}"
            f" {r['nll_gap']:>+8.3f} ± {r['nll_se']:.3f} {secs:>8}"
        )
    return "\n".join(lines)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="500 steps, 500 samples, 3 variants")
    p.add_argument("--preset", default="toy_mixture_vp")
    p.add_argument("--mixture", default=None, help="toy mixture (default: the preset's data)")
    p.add_argument("--steps", type=int, default=2000, help="updates of a row (times steps:K)")
    p.add_argument("--only", default=None, help="comma-separated variants, in order")
    p.add_argument("--n", type=int, default=4000, help="samples per sampler")
    p.add_argument("--n-held", type=int, default=100_000, help="held-out exact draws")
    p.add_argument("--n-nll", type=int, default=500, help="held-out points for the NLL")
    p.add_argument("--out", default=None, help="results file name (default: toy_quality.json)")
    args = p.parse_args()
    if args.quick:
        args.steps, args.n, args.n_held, args.n_nll = 500, 500, 1000, 100
        args.only = args.only or "preset,no_ema,batch_1024"
    return args


def main() -> None:
    args = _args()
    torch.set_num_threads(1)
    cfg = sd.load_config(args.preset)
    mix = judge_mixture(args.mixture or cfg.data.name)
    gen = torch.Generator().manual_seed(0)
    data = mix.sample(cfg.data.n_train + cfg.data.n_test, gen).to(torch.float32)
    held = mix.sample(args.n_held, torch.Generator().manual_seed(1))
    # The exact entropy H = -E log p, from the held-out draws (its s.e. beside it).
    lp = log_prob(mix, held)
    entropy, entropy_se = float(-lp.mean()), float(lp.std() / math.sqrt(lp.numel()))
    names = args.only.split(",") if args.only else list(VARIANTS)
    out = {
        "preset": args.preset,
        "mixture": args.mixture or cfg.data.name,
        "steps": args.steps,
        "n": args.n,
    }
    out |= {"n_held": args.n_held, "n_nll": args.n_nll, "entropy": entropy}
    out |= {"entropy_se": entropy_se, "threads": 1, "platform": platform.platform(), "rows": []}
    name = args.out or ("toy_quality_quick.json" if args.quick else "toy_quality.json")
    path = RESULTS / name
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out["rows"].append(measure(name, args, mix, data, held, Path(tmp)))
            path.write_text(json.dumps(out, indent=2) + "\n")
            print(table(out["rows"][-1:]).splitlines()[-1], flush=True)
    print(f"\n{args.preset} on {out['mixture']}: H = {entropy:.4f} ± {entropy_se:.4f} nats")
    print(table(out["rows"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
