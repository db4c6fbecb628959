"""The one module of boundary checks and the counted, checked score wrapper."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

from scoresde.core.checks import (
    CheckedScore,
    check_eps,
    check_finite,
    check_int,
    check_range,
    default_eps,
    did_you_mean,
    lookup,
    short,
    start_state,
)
from scoresde.core.losses import dsm_loss

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
