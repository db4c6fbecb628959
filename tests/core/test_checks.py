"""The one module of boundary checks and the counted, checked score wrapper."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde.core.checks import (
    CheckedScore,
    check_device_name,
    check_eps,
    check_finite,
    check_int,
    check_range,
    check_seed,
    check_shape,
    default_eps,
    did_you_mean,
    lookup,
    short,
    start_state,
)
from scoresde.core.losses import dsm_loss
from scoresde.samplers import SAMPLERS

TABLE = {"reverse_diffusion": 1, "euler_maruyama": 2, "ancestral": 3}


def test_lookup_names_the_valid_ones_and_the_closest():
    assert lookup(TABLE, "ancestral", "predictor") == 3
    with pytest.raises(ValueError) as info:
        lookup(TABLE, "ancestrl", "predictor")
    assert str(info.value) == (
        "unknown predictor 'ancestrl' (did you mean 'ancestral'?); "
        "valid: reverse_diffusion, euler_maruyama, ancestral"
    )
    with pytest.raises(ValueError, match="valid: ancestral, euler_maruyama, reverse_diffusion"):
        lookup(TABLE, "x", "predictor", sort=True)


def test_lookup_passes_callables_unless_told_not_to():
    f = lambda: None  # noqa: E731
    assert lookup(TABLE, f, "predictor") is f
    with pytest.raises(ValueError, match="unknown predictor"):
        lookup(TABLE, f, "predictor", callables=False)
    with pytest.raises(ValueError, match="unknown predictor 3"):
        lookup(TABLE, 3, "predictor")


def test_did_you_mean_and_short():
    assert did_you_mean("logsnr", ["logSNR", "edm"]) == " (did you mean 'logSNR'?)"
    assert did_you_mean("zzz", ["logSNR", "edm"]) == ""
    assert did_you_mean(3, ["a"]) == ""
    assert short("x" * 200).endswith("...") and len(short("x" * 200)) == 80
    assert short([1, 2]) == "[1, 2]"


def test_eps():
    ve, vp = make_sde("ve"), make_sde("vp")
    assert default_eps(ve) == 1e-5 and default_eps(vp) == 1e-3
    assert check_eps(vp, None) == 1e-3 and check_eps(vp, 0.01) == 0.01
    for bad in (0.0, -1.0, 1.0, math.nan, "0.1", True):
        with pytest.raises(ValueError, match="eps"):
            check_eps(vp, bad)
    with pytest.raises(ValueError, match="eps must be a real number, got None"):
        check_eps(vp, None, default=False)


def test_numbers():
    assert check_int("steps", 3.0, 1) == 3 and isinstance(check_int("steps", 3.0, 1), int)
    for bad in (0, 2.5, True, "3", None, math.inf):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            check_int("steps", bad, 1)
    assert check_range("lam", 1, 0, 1) == 1.0
    with pytest.raises(ValueError, match=r"^lam must lie in \[0, 1\], got 1.5$"):
        check_range("lam", 1.5, 0, 1)
    with pytest.raises(ValueError, match=r"^safety must lie in \(0, 1\], got 0$"):
        check_range("safety", 0, 0, 1, open_low=True)
    with pytest.raises(ValueError, match=r"^need rtol > 0, got 0.0$"):
        check_range("rtol", 0.0, 0, open_low=True)
    with pytest.raises(ValueError, match="need atol >= 0"):
        check_range("atol", math.nan, 0)
    with pytest.raises(ValueError, match="atol must be a real number"):
        check_range("atol", "1e-3", 0)


def test_check_finite():
    check_finite(torch.zeros(3), "x")
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        check_finite(torch.tensor([0.0, math.inf]), "x")


def test_start_state():
    sde = make_sde("vp")
    z = start_state(sde, (3, 2), None, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert z.shape == (3, 2) and z.dtype == torch.float64
    given = torch.ones(3, 2)
    assert start_state(sde, (3, 2), given) is given and start_state(sde, None, given) is given
    with pytest.raises(ValueError, match="give the sample shape or a starting z"):
        start_state(sde, None, None)
    with pytest.raises(ValueError, match=r"x has shape \(3, 2\) but shape=\(4, 2\)"):
        start_state(sde, (4, 2), given, what="x")
    with pytest.raises(ValueError, match="z contains NaN"):
        start_state(sde, None, torch.tensor([[math.nan, 0.0]]))
    with pytest.raises(ValueError, match="floating"):
        start_state(sde, None, torch.ones(3, 2, dtype=torch.long))


def _t(n: int = 2) -> torch.Tensor:
    return torch.full((n,), 0.5)


def test_checked_score_counts_and_checks_every_output():
    score = CheckedScore(lambda x, t: -x)
    x = torch.ones(2, 3)
    for _ in range(4):
        score(x, _t())
    assert score.nfe == 4 and score.finish() == 4
    with pytest.raises(ValueError, match=r"floating tensor shaped like x \(2, 3\), got"):
        CheckedScore(lambda x, t: x[:, :1])(x, _t())
    with pytest.raises(ValueError, match="got torch.int64"):
        CheckedScore(lambda x, t: x.long())(x, _t())
    with pytest.raises(ValueError, match="got torch.complex64"):
        CheckedScore(lambda x, t: x.to(torch.complex64))(x, _t())
    with pytest.raises(ValueError, match="got list"):
        CheckedScore(lambda x, t: [1.0])(x, _t())


def test_checked_score_first_nan_at_once_later_nan_at_finish():
    with pytest.raises(ValueError, match="NaN or inf at its first call"):
        CheckedScore(lambda x, t: x * math.nan)(torch.ones(2, 2), _t())
    calls = []
    score = CheckedScore(lambda x, t: calls.append(1) or (x * math.nan if len(calls) > 2 else x))
    for _ in range(5):
        score(torch.ones(2, 2), _t())  # no error while the solve runs
    with pytest.raises(ValueError, match="NaN or inf at some step; 5 evaluations"):
        score.finish()


def test_checked_score_blames_a_later_error_on_the_nan():
    score = CheckedScore(lambda x, t: x * math.nan if score.nfe else x)
    with pytest.raises(ValueError, match="NaN or inf at some step") as info:
        with score:
            score(torch.ones(2, 2), _t())
            score(torch.ones(2, 2), _t())
            raise RuntimeError("underflow in dt")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(RuntimeError, match="unrelated"):  # finite scores: the error is kept
        with CheckedScore(lambda x, t: x):
            raise RuntimeError("unrelated")


def test_dsm_loss_refuses_a_score_of_the_wrong_shape_or_dtype(sde):
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="shaped like x"):
        dsm_loss(sde, lambda x, t: x[:, :1], x0)
    with pytest.raises(ValueError, match="floating"):
        dsm_loss(sde, lambda x, t: x.long(), x0)


def test_seeds_devices_and_shapes():
    assert check_seed("seed", 2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 2**70, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            check_seed("seed", bad)
    assert [check_device_name(d) for d in ("cpu", "cuda", "cuda:1", "mps")]
    with pytest.raises(ValueError, match=r"unknown device 'cpuu' \(did you mean 'cpu'\?\); valid"):
        check_device_name("cpuu")
    for bad in ("cuda:x", "cpu:0", 3):
        with pytest.raises(ValueError, match="device"):
            check_device_name(bad)
    assert check_shape([2, 3]) == (2, 3)
    for bad in ((), (0, 2), (2, 0), (2.5,), None, (True, 2)):
        with pytest.raises(ValueError, match=r"shape must be \(B, \.\.\.\) with every size >= 1"):
            check_shape(bad)


def test_checked_score_stops_a_solve_that_a_nan_keeps_running():
    """The finite flag is read every CHECK_EVERY evaluations: a loop that never finishes (an
    adaptive step size stuck at zero) still stops."""
    score = CheckedScore(lambda x, t: x * math.nan if score.nfe else x)
    with pytest.raises(ValueError, match=f"{CheckedScore.CHECK_EVERY} evaluations"):
        for _ in range(10 * CheckedScore.CHECK_EVERY):
            score(torch.ones(2, 2), _t())


# ---- every sampler and the likelihood use the checks ----------------------------------------
def _nan_after(k: int, bad: float):
    calls = []

    def score(x, t):
        calls.append(1)
        return -x * bad if len(calls) > k else -x

    return score


BAD_SCORES = {  # factories: each test gets its own counter
    "nan_later": lambda: _nan_after(3, math.nan),
    "inf_later": lambda: _nan_after(3, math.inf),
    "integer": lambda: lambda x, t: torch.zeros(x.shape, dtype=torch.int64),
    "complex": lambda: lambda x, t: torch.zeros(x.shape, dtype=torch.complex64),
}


def _options(name: str) -> dict:
    from scoresde.samplers import sampler_options

    return {"steps": 8} if "steps" in sampler_options(name) and name != "pc" else {}


@pytest.mark.parametrize("bad", list(BAD_SCORES))
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_stops_on_a_bad_score(name, bad):
    sde = sd.VPSDE(0.1, 20.0, 40)  # a short chain: pc takes its 40 steps
    score = BAD_SCORES[bad]()
    need = "NaN or inf" if bad.endswith("later") else "floating tensor shaped like x"
    with pytest.raises(ValueError, match=need):
        sd.sample(sde, score, (4, 2), name, **_options(name))


@pytest.mark.parametrize("shape", [(), (0, 2)], ids=["no_batch_dim", "empty_batch"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_refuses_shapes_without_examples(name, shape):
    with pytest.raises(ValueError, match="shape must be"):
        sd.sample(sd.VPSDE(0.1, 20.0, 40), lambda x, t: -x, shape, name, **_options(name))


@pytest.mark.parametrize("divergence", ["exact", "rademacher"])
def test_log_likelihood_stops_on_bad_scores_shapes_and_tolerances(divergence):
    sde, x = sd.VPSDE(0.1, 20.0, 40), torch.randn(4, 2)

    def ll(score=lambda x, t: -x, data=x, **kw):
        kw = {"rtol": 1e-3, "atol": 1e-3, "divergence": divergence, **kw}
        return sd.log_likelihood(sde, score, data, **kw)

    with pytest.raises(ValueError, match="NaN or inf"):
        ll(_nan_after(3, math.nan))
    with pytest.raises(ValueError, match="got torch.int64"):
        ll(BAD_SCORES["integer"]())
    with pytest.raises(ValueError, match="x.shape must be"):
        ll(data=torch.randn(0, 2))
    with pytest.raises(ValueError, match="floating"):
        ll(data=torch.tensor(1.0))
    with pytest.raises(ValueError, match="need rtol >= 0"):
        ll(rtol=-1.0)
    with pytest.raises(ValueError, match="need atol >= 0"):
        ll(atol=-1e-3)


@pytest.mark.parametrize(
    ("rtol", "atol", "name"), [(-1.0, 1e-5, "rtol"), (0.0, 1e-5, "rtol"), (1e-5, -1e-9, "atol")]
)
def test_ode_tolerances_are_checked_in_the_library(rtol: float, atol: float, name: str) -> None:
    """A negative tolerance turns the error control off; the library refuses it by name."""
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=name):
        sd.sample_ode(sde, lambda x, t: -x, (4, 2), rtol=rtol, atol=atol)
