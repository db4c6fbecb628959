"""Regression: every sampler gives the numbers recorded before the package took its layered shape.

``recorded_before_layout.json`` holds, for each ``"<sde>/<case>"``, the samples and NFE of one run
with ``torch.Generator().manual_seed(7)``, the exact score of the ``mixture`` fixture, shape (4, 2)
and float64. A refactoring must reproduce them to float64 round-off and the NFE exactly.
The ``adaptive`` cases were recorded again when ``sample_adaptive`` began to keep the Brownian
increment of a rejected step (issue 17): that change of the algorithm changes its numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_sde

import scoresde as sd

F64 = torch.float64
RECORDED = json.loads((Path(__file__).parent / "recorded_before_layout.json").read_text())

CASES = {
    "pc": (sd.sample_pc, dict(steps=50)),
    "pc_em_ald": (sd.sample_pc, dict(predictor="euler_maruyama", corrector="ald", steps=40)),
    "ode_rk4": (sd.sample_ode, dict(method="rk4", steps=20)),
    "ode_dopri5": (sd.sample_ode, dict(rtol=1e-6, atol=1e-6)),
    "heun": (sd.sample_heun, dict(steps=8)),
    "heun_churn": (sd.sample_heun, dict(steps=8, churn=5.0)),
    "dpm3": (sd.sample_dpm_solver, dict(steps=12)),
    "dpm_multistep": (sd.sample_dpm_solver, dict(steps=10, method="multistep")),
    "adaptive": (sd.sample_adaptive, dict()),
    "lambda05": (sd.sample_lambda, dict(lam=0.5, steps=30)),
}


def test_every_recorded_case_is_run():
    assert sorted(RECORDED) == sorted(f"{s}/{c}" for s in ("ve", "vp", "subvp") for c in CASES)


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_sampler_reproduces_recorded_values(mixture, key):
    name, case = key.split("/")
    sde = make_sde(name)
    sampler, kwargs = CASES[case]
    g = torch.Generator().manual_seed(7)
    x, nfe = sampler(sde, mixture.score_fn(sde), (4, 2), generator=g, dtype=F64, **kwargs)
    want = torch.tensor(RECORDED[key]["x"], dtype=F64)
    torch.testing.assert_close(x, want, rtol=1e-12, atol=1e-12 * sde.prior_std)
    assert nfe == RECORDED[key]["nfe"]
