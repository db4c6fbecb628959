"""Conditional sampling of Gaussian mixtures with their exact score: distance to the posterior.

Each method of ``sd.sample_conditional`` (PC projection, RePaint, DPS) runs on every observation
below at a few step budgets, with the mixture's exact (unconditional) score, so every error is the
method's. The reference row ``exact`` runs the exact conditional score ``grad log p_t(x_t | y)``
(the posterior mixture diffused by the SDE) through the same sampler: its distance is the
discretization and Monte Carlo floor. Observations (VP SDE, one observation, n samples of it):

* ``mask_2d``: the 2-D test oracle, first coordinate observed (y = 0.8, noiseless);
* ``noisy_2d``: the 2-D oracle through ``y = x_1 + x_2 / 2 + 0.3 n`` (a LinearObservation);
* ``mask_64d``: a 4-component 64-D mixture, the first half of the coordinates observed;
* ``superres_64d``: the same mixture, average pooling by 2 (32 observed means);
* ``noisy_64d``: the same mixture, a random 16 x 64 operator with noise 0.1;
* ``colour_48d``: a 3-component mixture of (3, 4, 4) images, colorization (its grey channel).

Columns: ``ed`` energy distance to n exact posterior draws (``ed_null``: exact against exact, the
noise floor), ``resid`` mean ``||y - A x||`` (0 where a noiseless observation is kept; about
``noise_std sqrt(M)`` is right for a noisy one), NFE, wall seconds.

Writes ``bench/results/control.json``, prints a table.
Run: ``.venv/bin/python bench/control.py [--quick] [--n 1000] [--steps 25 100] [--threads 1]``
(default: n = 1000, steps 25 and 100; about 6 minutes on 2 loaded cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from common import mixture_2d

import scoresde as sd
from scoresde.control import exact_posterior
from scoresde.core.metrics import energy_distance

F64 = torch.float64
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {
    "pc": dict(method="pc"),
    "repaint": dict(method="repaint", jump=5, resample=3),
    "dps": dict(method="dps", zeta=0.1),
}


def random_mixture(K: int, D: int, seed: int) -> sd.GaussianMixture:
    """K components in D dimensions: means 1.5 N(0, I), covariance eigenvalues in [0.05, 0.3]."""
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(K, D, generator=g, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(K, D, D, generator=g, dtype=F64))
    lam = 0.05 + 0.25 * torch.rand(K, D, generator=g, dtype=F64)
    return sd.GaussianMixture(
        0.5 + torch.rand(K, generator=g, dtype=F64), means, Q @ torch.diag_embed(lam) @ Q.mT
    )


def _linear(y: torch.Tensor, W: torch.Tensor, noise: float) -> sd.LinearObservation:
    return sd.LinearObservation(y, lambda x: x @ W.T, lambda v: v @ W, noise)


def cases() -> dict[str, tuple[sd.GaussianMixture, sd.Observation, tuple[int, ...]]]:
    """name -> (mixture, observation, one example's shape)."""
    m2, m64, m48 = mixture_2d(), random_mixture(4, 64, 1), random_mixture(3, 48, 2)
    x64 = m64.sample(1, torch.Generator().manual_seed(3))
    half = torch.arange(64)[None] < 32
    W = torch.randn(16, 64, generator=torch.Generator().manual_seed(4), dtype=F64) / 8
    x48 = m48.sample(1, torch.Generator().manual_seed(5)).reshape(1, 3, 4, 4)
    return {
        "mask_2d": (
            m2,
            sd.Inpainting(torch.tensor([[0.8, 0.0]], dtype=F64), torch.tensor([[True, False]])),
            (2,),
        ),
        "noisy_2d": (
            m2,
            _linear(torch.tensor([[0.7]], dtype=F64), torch.tensor([[1.0, 0.5]], dtype=F64), 0.3),
            (2,),
        ),
        "mask_64d": (m64, sd.Inpainting(x64, half), (64,)),
        "superres_64d": (m64, sd.SuperResolution(x64.reshape(1, 32, 2).mean(-1), 2), (64,)),
        "noisy_64d": (m64, _linear(x64 @ W.T + 0.1 * torch.randn(1, 16, dtype=F64), W, 0.1), (64,)),
        "colour_48d": (m48, sd.Colorization(x48.mean(1, keepdim=True)), (3, 4, 4)),
    }


def _run(sde, mix, obs, shape, method, steps, n, exact):
    post = exact_posterior(mix, obs, shape)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    if method == "exact":  # the exact conditional score; projection agrees with it if noiseless
        score = lambda x, t: post.score(x, t, sde)  # noqa: E731
        if obs.noise_std == 0:
            x, nfe = sd.sample_conditional(sde, score, (n, *shape), obs, steps=steps, generator=g)
        else:
            x, nfe = sd.sample(
                sde, score, (n, *shape), sampler="pc", steps=steps, generator=g, dtype=F64
            )
    else:
        score = lambda x, t: mix.score(x, t, sde)  # noqa: E731
        opts = METHODS[method]
        x, nfe = sd.sample_conditional(
            sde, score, (n, *shape), obs, steps=steps, generator=g, **opts
        )
    wall = time.perf_counter() - t0
    ed = energy_distance(x, exact).item()
    return dict(ed=ed, resid=obs.residual(x).mean().item(), nfe=nfe, seconds=wall)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="n=500, steps 25 50")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, nargs="+", default=[25, 100])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    n, budgets = (500, [25, 50]) if a.quick else (a.n, a.steps)
    sde = sd.VPSDE(0.1, 20.0, 1000)
    rows = []
    for name, (mix, obs, shape) in cases().items():
        post = exact_posterior(mix, obs, shape)
        exact = post.sample(n, torch.Generator().manual_seed(100)).reshape(n, *shape)
        null = energy_distance(post.sample(n, torch.Generator().manual_seed(101)), exact).item()
        for method in ["exact", *METHODS]:
            for steps in budgets:
                r = _run(sde, mix, obs, shape, method, steps, n, exact)
                rows.append(dict(case=name, method=method, steps=steps, ed_null=null, **r))
                print(
                    f"{name:13s} {method:8s} steps {steps:4d} nfe {r['nfe']:5d} "
                    f"ed {r['ed']:8.4f} (null {null:7.4f}) resid {r['resid']:.2e} "
                    f"{r['seconds']:6.2f}s",
                    flush=True,
                )
    RESULTS.mkdir(exist_ok=True)
    meta = dict(n=n, steps=budgets, sde="VPSDE(0.1, 20, 1000)", methods=METHODS)
    meta.update(torch=torch.__version__, machine=platform.machine(), threads=a.threads)
    out = RESULTS / "control.json"
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
