"""What keeps the samplers' own cost near zero, checked as behaviour: no host reads per step, the
per-grid coefficients give what the public per-example steps give, and the cheap per-call check
of the score (one min / max reduction) still sees every NaN and infinity."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde.core.checks import CheckedScore
from scoresde.samplers import CORRECTORS, PREDICTORS, default_eps

F64 = torch.float64
READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")


@pytest.fixture
def host_reads(monkeypatch):
    """A counter of the tensor-to-host reads (``bool(t)``, ``float(t)``, ``t.item()``, ...)."""
    count = [0]
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(*args, _original=original, **kwargs):
            count[0] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


RUNS = {
    "pc": lambda sde, n: sd.sample_pc(sde, lambda x, t: -x, (8, 2), steps=n),
    "pc_em_ald": lambda sde, n: sd.sample_pc(
        sde, lambda x, t: -x, (8, 2), predictor="euler_maruyama", corrector="ald", steps=n
    ),
    "pc_ancestral": lambda sde, n: sd.sample_pc(
        sde, lambda x, t: -x, (8, 2), predictor="ancestral", corrector="none", steps=n
    ),
    "ode_rk4": lambda sde, n: sd.sample_ode(sde, lambda x, t: -x, (8, 2), method="rk4", steps=n),
    "dpm_multistep": lambda sde, n: sd.sample_dpm_solver(
        sde, lambda x, t: -x, (8, 2), steps=n, method="multistep"
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_no_host_read_per_step(host_reads, name):
    """Twice the steps, the same reads, but for the score check's one read per CHECK_EVERY
    evaluations: the loops do tensor work only (on a GPU: no synchronisation per step)."""
    sde, counts = make_sde("vp"), []
    for n in (30, 90):
        host_reads[0] = 0
        _, nfe = RUNS[name](sde, n)
        counts.append((host_reads[0], nfe))
    (r1, nfe1), (r2, nfe2) = counts
    assert nfe2 > nfe1 and 0 <= r2 - r1 <= math.ceil((nfe2 - nfe1) / CheckedScore.CHECK_EVERY)


def test_dopri5_reads_one_number_per_step(host_reads, mixture):
    """The adaptive solver reads its error norm once per attempted step (6 evaluations), three
    numbers for its first step size, and the score check's periodic read."""
    sde = make_sde("vp")
    for tol in (1e-3, 1e-6):
        host_reads[0] = 0
        _, nfe = sd.sample_ode(sde, mixture.score_fn(sde), (8, 2), rtol=tol, atol=tol, dtype=F64)
        attempts = (nfe - 2) / 6
        assert attempts == int(attempts) and attempts > 5
        assert host_reads[0] <= attempts + 3 + nfe // CheckedScore.CHECK_EVERY + 4


def _by_public_steps(sde, score, shape, predictor, corrector, steps, seed):
    """Algorithm 1 written out with the public step functions at the (B,) time of each step."""
    g = torch.Generator().manual_seed(seed)
    sde_n = sde.with_steps(steps)
    x = sde.prior_sampling(shape, g, dtype=F64)
    for tk in torch.linspace(sde.T, default_eps(sde), steps, dtype=F64):
        t = tk.expand(shape[0])
        x, _ = CORRECTORS[corrector](sde_n, score, x, t, 0.16, 1, g)
        x, x_mean = PREDICTORS[predictor](sde_n, score, x, t, g)
    return x_mean


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_grid_coefficients_give_the_public_steps_numbers(mixture, name):
    """sample_pc takes each step's coefficients from one evaluation on its whole grid; the public
    steps take them per example. The same arithmetic on the same values: equal but for the last
    bit of a transcendental (exp, expm1) that a vectorised and a scalar loop may round apart,
    carried through 25 steps (measured: equal here; 1e-13 relative allows 100s of ulp)."""
    sde, score = make_sde(name), mixture.score_fn(make_sde(name))
    for p in PREDICTORS:
        for c in CORRECTORS:
            if (p, c) == ("none", "none") or (p == "ancestral" and name == "subvp"):
                continue
            g = torch.Generator().manual_seed(3)
            x, _ = sd.sample_pc(sde, score, (6, 2), predictor=p, corrector=c, steps=25,
                                generator=g, dtype=F64)  # fmt: skip
            want = _by_public_steps(sde, score, (6, 2), p, c, 25, seed=3)
            torch.testing.assert_close(x, want, rtol=1e-13, atol=1e-13 * sde.prior_std)


def test_a_wrapped_step_function_gives_the_same_samples(mixture):
    """A step function that is not the built-in one runs as it is (per example, no grid
    coefficients) and samples the same chain."""
    sde = make_sde("vp")
    wrapped = lambda *args: PREDICTORS["reverse_diffusion"](*args)  # noqa: E731
    run = lambda p: sd.sample_pc(sde, mixture.score_fn(sde), (6, 2), predictor=p, steps=25,
                                 generator=torch.Generator().manual_seed(1), dtype=F64)  # fmt: skip
    a, nfe_a = run("reverse_diffusion")
    b, nfe_b = run(wrapped)
    assert nfe_a == nfe_b == 50
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def _bad_at(call: int, position: int, bad: float):
    """``-x``, with ``bad`` at one flat ``position`` of the output of the ``call``-th call."""
    calls = [0]

    def score_fn(x, t):
        calls[0] += 1
        s = -x.clone()
        if calls[0] == call:
            s.view(-1)[position] = bad
        return s

    return score_fn


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, F64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_the_checked_score_sees_one_bad_value_anywhere(dtype, bad):
    """One NaN / inf among 10,000 x 3 values, at the first, a middle, a vector-tail and the last
    position of a later call: the min / max kept per call catches every one at finish()."""
    x, t = torch.ones(10000, 3, dtype=dtype), torch.zeros(10000, dtype=dtype)
    for position in (0, 12345, 29993, 29999):
        score = CheckedScore(_bad_at(3, position, bad))
        for _ in range(5):
            score(x, t)
        with pytest.raises(ValueError, match="NaN or inf at some step; 5 evaluations"):
            score.finish()
