"""Every toy preset learns its data: a short run's training loss falls and its samples' log-density
gap to held-out data shrinks, judged by the data's exact density.

Each preset trains twice, ``SHORT`` and ``LONG`` updates (its own batch, network, loss and a cosine
lr over the run's length); 1,000 samples of each run by the probability-flow ODE and by PC (reverse
diffusion, no corrector, 200 steps: a fifth of the SDE's N, to keep the test short) are scored by
the exact log-density; the gap is mean log p(10,000 held-out exact draws) - mean log p(samples).
The limits come from one measurement of these runs (CPU, one thread; ``MEASURED``), not from
tuning: the long run's gap must stay below the measured value plus ``4`` standard errors, and
below the short run's by at least half the measured improvement. The full-length quality of each
preset is in the README (``bench/toy_quality.py``).
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

import scoresde as sd
from scoresde.data.toy import swiss_roll_mixture, toy_mixture

SHORT, LONG, N = 100, 400, 1000
PC = {"predictor": "reverse_diffusion", "corrector": "none", "steps": 200}
# preset -> its data's exact density
JUDGES = {
    "toy_mixture_vp": lambda: toy_mixture("mixture_2d"),
    "toy_mixture_ve": lambda: toy_mixture("mixture_2d"),
    "toy_1d_mixture_subvp": lambda: toy_mixture("mixture_1d"),
    "toy_swissroll_vp": swiss_roll_mixture,
}
# (preset, sampler) -> (gap after SHORT, gap after LONG), nats, measured once as described above
MEASURED: dict[tuple[str, str], tuple[float, float]] = {
    ("toy_mixture_vp", "ode"): (2.001, 0.080),
    ("toy_mixture_vp", "pc"): (1.888, 0.104),
    ("toy_mixture_ve", "ode"): (1.999, 0.089),
    ("toy_mixture_ve", "pc"): (1.815, 0.155),
    ("toy_1d_mixture_subvp", "ode"): (2.721, 0.066),
    ("toy_1d_mixture_subvp", "pc"): (2.750, 0.121),
    ("toy_swissroll_vp", "ode"): (2.517, 1.188),
    ("toy_swissroll_vp", "pc"): (2.531, 1.298),
}


def _train(preset: str, steps: int, workdir) -> list[dict]:
    every = steps // 4
    sets = [f"train.steps={steps}", f"train.log_every={every}", f"train.eval_every={steps}",
            f"train.ckpt_every={steps}", "train.sample_every=0",
            "train.tensorboard=false"]  # fmt: skip
    sd.train(sd.apply_overrides(sd.load_config(preset), sets), workdir)
    with open(workdir / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["train_loss"]]


def _gap(
    model, mix: sd.GaussianMixture, held_lp: torch.Tensor, sampler: str
) -> tuple[float, float]:
    x = model.sample(N, sampler=sampler, seed=3, **(PC if sampler == "pc" else {}))
    lp = mix.log_prob(x.to(torch.float64))
    se = math.sqrt(held_lp.var().item() / held_lp.numel() + lp.var().item() / lp.numel())
    return held_lp.mean().item() - lp.mean().item(), se


@pytest.fixture(scope="module", params=list(JUDGES))
def runs(request, tmp_path_factory) -> tuple:
    """``(preset, {steps: (logged rows, loaded model)}, exact density, held-out log-densities)``
    of the two runs, one thread."""
    preset, threads, out = request.param, torch.get_num_threads(), {}
    torch.set_num_threads(1)
    try:
        for n in (SHORT, LONG):
            workdir = tmp_path_factory.mktemp(f"{preset}_{n}")
            out[n] = (_train(preset, n, workdir), sd.load(workdir))
    finally:
        torch.set_num_threads(threads)
    mix = JUDGES[preset]()  # the held-out log-densities once per preset (the roll: 2,000 terms)
    held = mix.sample(10_000, torch.Generator().manual_seed(11))
    return preset, out, mix, torch.cat([mix.log_prob(b) for b in held.split(2000)])


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["ode", "pc"])
def test_loss_falls_and_samples_approach_the_data(runs, sampler):
    preset, out, mix, held_lp = runs
    rows = out[LONG][0]
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    short, _ = _gap(out[SHORT][1], mix, held_lp, sampler)
    long, se = _gap(out[LONG][1], mix, held_lp, sampler)
    assert last < first
    m_short, m_long = MEASURED[preset, sampler]
    assert long < m_long + 4 * se
    assert long < short - (m_short - m_long) / 2
