"""Samples come from one random stream per sample index, so they do not depend on the chunk size
or the batch: ``draw_samples`` with chunks of 3, of 8 and in one batch gives the same samples (to
1e-12 in float64) for the ODE on a fixed grid, PC (annealed Langevin or no corrector), DPM-Solver
and its SDE variant, EDM's Heun with churn, UniPC and the adaptive SDE solver.

The model is an untrained 16-wide MLP on 2-D points: the tests check the streams, not quality.
It keeps the noise parameterization: with the preset's EDM preconditioning the untrained net's
score is steep enough at small t that the adaptive solver carries the round-off of batched matrix
products of other sizes (1e-16) to 3e-10, beyond the 1e-12 checked here. Even in the noise
parameterization the adaptive solver carries that round-off to about 1e-12 on some CPUs (1.02e-12
seen), so it is checked to 1e-11; every fixed-step sampler to 1e-12.
"""

from __future__ import annotations

import copy

import pytest
import torch

import scoresde as sd
from scoresde.samplers import SampleStreams, stream_seed
from scoresde.training.config import build_score_model
from scoresde.training.evaluate import draw_samples

CASES = [
    ("ode", {"method": "rk4", "steps": 4}),
    ("pc", {"predictor": "reverse_diffusion", "corrector": "ald", "steps": 25}),
    ("pc", {"predictor": "euler_maruyama", "corrector": "none", "steps": 6}),
    ("dpm_solver", {"steps": 4, "order": 2}),
    ("heun", {"steps": 3, "churn": 5.0}),
    ("adaptive", {"rtol": 0.2}),
    ("dpm_solver_sde", {"steps": 4}),
    ("unipc", {"steps": 4}),
]


@pytest.fixture(scope="module")
def model() -> sd.ScoreModel:
    """An untrained MLP score model on 2-D points, in float64."""
    cfg = sd.apply_overrides(
        sd.load_config("toy_swissroll_vp"),
        ["model.params.hidden=16", "model.params.depth=2", "model.params.embed_dim=8",
         "model.params.dim=2", "model.parameterization=noise", "model.label=t"],
    )  # fmt: skip
    torch.manual_seed(0)
    return build_score_model(cfg).double().eval()


@pytest.mark.parametrize("sampler, options", CASES)
def test_samples_do_not_depend_on_the_chunk(model, sampler, options):
    kw = {"sampler": sampler, "seed": 7, "dtype": torch.float64, **options}
    atol = 1e-11 if sampler == "adaptive" else 1e-12
    one, _ = draw_samples(model, (2,), 11, chunk=11, **kw)
    threes, _ = draw_samples(model, (2,), 11, chunk=3, **kw)
    eights, _ = draw_samples(model, (2,), 11, chunk=8, **kw)
    assert one.shape == (11, 2) and one.dtype == torch.float64 and torch.isfinite(one).all()
    torch.testing.assert_close(threes, one, rtol=0, atol=atol)
    torch.testing.assert_close(eights, one, rtol=0, atol=atol)
    # the first samples of a longer draw are the samples of a shorter one
    torch.testing.assert_close(draw_samples(model, (2,), 4, chunk=2, **kw)[0], one[:4],
                               rtol=0, atol=atol)  # fmt: skip
    assert not torch.equal(one[0], one[1])  # each sample has its own stream


def test_float32_samples_agree_to_round_off(model):
    m32 = copy.deepcopy(model).float()
    kw = {"sampler": "pc", "seed": 1, "predictor": "euler_maruyama", "corrector": "none",
          "steps": 5}  # fmt: skip
    a, _ = draw_samples(m32, (2,), 9, chunk=2, **kw)
    b, _ = draw_samples(m32, (2,), 9, chunk=9, **kw)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_seeds_give_other_samples(model):
    kw = {"sampler": "ode", "method": "euler", "steps": 2, "dtype": torch.float64}
    a, _ = draw_samples(model, (2,), 4, seed=0, **kw)
    b, _ = draw_samples(model, (2,), 4, seed=1, **kw)
    assert not torch.allclose(a, b)
    assert len({stream_seed(s, i) for s in range(20) for i in range(20)}) == 400


def test_streams_draw_row_i_from_stream_i():
    a = SampleStreams(3, range(0, 5))
    b = SampleStreams(3, range(2, 4))
    x, y = a.randn((5, 2, 3)), b.randn((2, 2, 3))
    assert torch.equal(x[2:4], y)
    for _ in range(70):  # across the blocks each stream draws at a time
        x, y = a.randn((5, 2, 3)), b.randn((2, 2, 3))
    assert torch.equal(x[2:4], y)
    g = torch.Generator().manual_seed(stream_seed(3, 2))
    first = torch.randn((SampleStreams.BLOCK_VALUES // 6, 2, 3), generator=g)[0]
    assert torch.equal(SampleStreams(3, [2]).randn((1, 2, 3))[0], first)
    with pytest.raises(ValueError, match="need 5 rows"):
        a.randn((4, 2))


def test_sample_takes_streams_for_the_start_and_the_steps(model):
    sde = model.sde
    streams = SampleStreams(5, range(3))
    x, _ = sd.sample(sde, model, (3, 2), "pc", streams, predictor="euler_maruyama",
                     corrector="none", steps=3, dtype=torch.float64)  # fmt: skip
    again, _ = draw_samples(model, (2,), 3, seed=5, sampler="pc", predictor="euler_maruyama",
                            corrector="none", steps=3, dtype=torch.float64)  # fmt: skip
    assert torch.equal(x, again)


def test_a_given_z_is_cut_into_the_chunks(model):
    z = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kw = {"sampler": "ode", "method": "rk4", "steps": 3, "z": z}
    a, _ = draw_samples(model, (2,), 7, chunk=3, **kw)
    b, _ = sd.sample(model.sde, model, None, "ode", method="rk4", steps=3, z=z)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
