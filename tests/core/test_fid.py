"""FID, KID and precision / recall against closed forms and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from scoresde.core import metrics
from scoresde.core.metrics import feature_stats, fid, frechet_distance, kid, precision_recall

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(d: int, g: torch.Generator) -> torch.Tensor:
    """A random symmetric positive definite matrix (well conditioned)."""
    a = torch.randn(d, d, generator=g, dtype=F64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=F64)


def _rotation(d: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q


# ---- Fréchet distance -------------------------------------------------------------------------
def test_feature_stats_are_mean_and_unbiased_covariance():
    x = torch.randn(50, 3, generator=_gen(0), dtype=torch.float32)
    mu, cov = feature_stats(x)
    assert mu.dtype == cov.dtype == F64 and mu.shape == (3,) and cov.shape == (3, 3)
    ref = np.cov(x.double().numpy(), rowvar=False, ddof=1)
    assert np.allclose(mu.numpy(), x.double().numpy().mean(0), atol=1e-14)
    assert np.allclose(cov.numpy(), ref, atol=1e-13)


def test_identical_sets_give_zero_fid():
    x = torch.randn(500, 16, generator=_gen(1), dtype=F64) @ _spd(16, _gen(2))
    mu, cov = feature_stats(x)
    assert float(fid(x, x.clone())) < 1e-8 * float(torch.trace(cov))
    # a rank-deficient covariance (more features than samples) too
    y = torch.randn(10, 32, generator=_gen(3), dtype=F64)
    assert float(fid(y, y)) < 1e-8 * float(torch.trace(feature_stats(y)[1]))


@pytest.mark.parametrize("singular", [False, True])
def test_frechet_distance_commuting_covariances_closed_form(singular):
    # Q diag(a) Q^T and Q diag(b) Q^T commute: tr(...)^(1/2) = sum sqrt(a b), so the distance is
    # |dmu|^2 + sum (sqrt(a) - sqrt(b))^2. With a zero eigenvalue the computed one is ~1e-16,
    # whose square root ~1e-8 bounds the accuracy (sqrt is not Lipschitz at 0).
    g = _gen(4)
    d = 6
    q = _rotation(d, g)
    a = 0.1 + torch.rand(d, generator=g, dtype=F64) * 3
    b = 0.1 + torch.rand(d, generator=g, dtype=F64) * 3
    if singular:
        a[0] = 0.0
    tol = 1e-6 if singular else 1e-10
    mu1, mu2 = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    c1, c2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    got = frechet_distance(mu1, c1, mu2, c2)
    assert got.dtype == F64 and got.ndim == 0
    assert abs(float(got) - expected) < tol * expected
    got_diag = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))  # no rotation
    assert abs(float(got_diag) - expected) < 1e-10 * expected


def test_frechet_distance_general_pair_matches_scipy_sqrtm():
    g = _gen(5)
    d = 8
    c1, c2 = _spd(d, g), _spd(d, g)
    mu1, mu2 = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    # independent route: the principal square root of the non-symmetric product C1 C2, whose
    # trace equals tr (C1^(1/2) C2 C1^(1/2))^(1/2)
    root = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy())
    ref = float(((mu1 - mu2) ** 2).sum()) + np.trace(c1.numpy() + c2.numpy() - 2 * root.real)
    got = float(frechet_distance(mu1, c1, mu2, c2))
    assert abs(got - ref) < 1e-9 * abs(ref)
    assert got >= 0


def test_frechet_distance_and_fid_are_exactly_symmetric():
    g = _gen(6)
    c1, c2 = _spd(10, g), _spd(10, g)
    mu1, mu2 = torch.randn(10, generator=g, dtype=F64), torch.randn(10, generator=g, dtype=F64)
    assert frechet_distance(mu1, c1, mu2, c2) == frechet_distance(mu2, c2, mu1, c1)
    x = torch.randn(300, 10, generator=g)
    y = torch.randn(200, 10, generator=g) * 1.5 + 0.2
    assert fid(x, y) == fid(y, x)


def test_fid_of_large_samples_approaches_the_closed_form():
    """FID of n samples per Gaussian vs the exact distance of the two Gaussians.

    Tolerance (delta method, commuting covariances with eigenvalues a_i, b_i): the estimate is
    |dmu_hat|^2 + sum (sqrt(a_hat) - sqrt(b_hat))^2 to first order, with standard deviation
    sigma, sigma^2 = 4 dmu^T (C1 + C2) dmu / n + (2 / n) sum_i [(1 - sqrt(b_i / a_i))^2 a_i^2 +
    (1 - sqrt(a_i / b_i))^2 b_i^2] (a sample variance has variance 2 a^2 / n), plus an upward
    bias below (tr(C1 + C2) + d^2 max(a, b)) / n (the mean's |e|^2 and the off-diagonal
    entries' second-order terms). We allow 5 sigma plus that bias.
    """
    g = _gen(7)
    d, n = 4, 20000
    q = _rotation(d, g)
    a = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=F64)
    b = torch.tensor([0.25, 1.0, 2.25, 4.0], dtype=F64)
    dmu = q @ torch.tensor([0.6, 0.0, 0.8, 0.0], dtype=F64)  # |dmu| = 1
    c1, c2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    x = torch.randn(n, d, generator=g, dtype=F64) @ (q * a.sqrt()).T
    y = dmu + torch.randn(n, d, generator=g, dtype=F64) @ (q * b.sqrt()).T
    exact = float((dmu**2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())  # 2.5
    var = 4 * float(dmu @ (c1 + c2) @ dmu) / n
    var += (
        2 / n * float(((1 - (b / a).sqrt()) ** 2 * a**2 + (1 - (a / b).sqrt()) ** 2 * b**2).sum())
    )
    bias = (float(torch.trace(c1 + c2)) + d**2 * float(torch.max(a.max(), b.max()))) / n
    tol = 5 * math.sqrt(var) + bias  # about 0.08 here, 3% of the distance
    assert abs(float(fid(x, y)) - exact) < tol


def test_fid_rejects_bad_input():
    x = torch.randn(20, 4)
    with pytest.raises(ValueError, match="same feature size"):
        fid(x, torch.randn(20, 5))
    with pytest.raises(ValueError, match="at least 2 rows"):
        fid(x, torch.randn(1, 4))
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fid(x, bad)
    with pytest.raises(ValueError, match=r"\(n, F\)"):
        fid(torch.randn(20), x)
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(2))


# ---- KID --------------------------------------------------------------------------------------
def test_kid_standard_error_matches_spread_over_repeats():
    # 20 repeats, each with fresh samples of two equal distributions. The subsets of one call
    # (20 of 50 rows out of 1000) share few rows, so its standard error should describe how much
    # the KID mean varies between repeats. The sample standard deviation of 20 values has a
    # relative error of about 1 / sqrt(2 * 19) = 16%, so a ratio within [0.6, 1.6] (about 3
    # standard errors either way) is a fair check; a SE missing the 1 / sqrt(subsets) would give
    # a ratio near 0.22, a SE of the wrong spread (variance) a ratio far from 1.
    g = _gen(8)
    means, ses = [], []
    for _ in range(20):
        x = torch.randn(1000, 8, generator=g, dtype=F64)
        y = torch.randn(1000, 8, generator=g, dtype=F64)
        m, se = kid(x, y, subsets=20, subset_size=50, generator=g)
        means.append(float(m))
        ses.append(float(se))
    ratio = np.std(means, ddof=1) / math.sqrt(np.mean(np.square(ses)))
    assert 0.6 < ratio < 1.6, ratio


def test_kid_of_equal_distributions_is_zero_within_its_error():
    g = _gen(9)
    x = torch.randn(2000, 8, generator=g, dtype=F64)
    y = torch.randn(2000, 8, generator=g, dtype=F64)
    m, se = kid(x, y, subsets=20, subset_size=100, generator=g)
    assert abs(float(m)) < 3 * float(se)


def test_kid_of_a_set_with_itself_matches_its_overlap_bias():
    # Subsets of x drawn twice share rows (their pairs k(x_i, x_i) enter the cross term), so the
    # mean over draws is not 0 but E = 2 / (n - 1) (mean k(x_i, x_j) - mean k(x_i, x_i)), which
    # follows from the inclusion probabilities alone (it does not depend on the subset size).
    g = _gen(10)
    n, f = 400, 5
    x = torch.randn(n, f, generator=g, dtype=F64)
    k = (x @ x.T / f + 1) ** 3
    expected = 2 / (n - 1) * float(k.mean() - k.diagonal().mean())
    m, se = kid(x, x, subsets=200, subset_size=100, generator=g)
    assert abs(float(m) - expected) < 4 * float(se)
    assert abs(expected) < 0.05 * float(kid(x, x + 0.5, subsets=5, subset_size=100)[0])


def test_kid_by_hand():
    # F = 1, k(a, b) = (ab + 1)^3; subsets of 2 of 2 rows are the whole sets, so every subset
    # gives the same value: k(0, 1) = 1 within x, k(1, 2) = 27 within y, and the cross mean
    # (k(0, 1) + k(0, 2) + k(1, 1) + k(1, 2)) / 4 = (1 + 1 + 8 + 27) / 4, so 1 + 27 - 2 * 9.25.
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[1.0], [2.0]])
    m, se = kid(x, y, subsets=3, subset_size=2, generator=_gen(0))
    assert float(m) == pytest.approx(9.5, abs=1e-12) and float(se) == pytest.approx(0, abs=1e-12)


def test_kid_one_feature_closed_form():
    # F = 1: k(a, b) = (ab + 1)^3 = a^3 b^3 + 3 a^2 b^2 + 3 ab + 1, so the population MMD^2 is
    # (m3x - m3y)^2 + 3 (m2x - m2y)^2 + 3 (m1x - m1y)^2 in the raw moments m_k. X ~ N(0, 1),
    # Y ~ N(d, 1): m1 = d, m2 = 1 + d^2, m3 = d^3 + 3 d.
    d = 0.5
    exact = (d**3 + 3 * d) ** 2 + 3 * (d**2) ** 2 + 3 * d**2
    g = _gen(11)
    x = torch.randn(8000, 1, generator=g, dtype=F64)
    y = d + torch.randn(8000, 1, generator=g, dtype=F64)
    m, se = kid(x, y, subsets=40, subset_size=200, generator=g)
    assert abs(float(m) - exact) < 4 * float(se), (float(m), float(se), exact)
    assert float(m) > 10 * float(se)


def test_kid_shift_is_clearly_positive_and_seeded():
    x = torch.randn(600, 16, generator=_gen(12))
    y = torch.randn(600, 16, generator=_gen(13)) + 0.3
    m, se = kid(x, y, subsets=10, subset_size=200, generator=_gen(0))
    assert float(m) > 10 * float(se) > 0
    again = kid(x, y, subsets=10, subset_size=200, generator=_gen(0))
    assert again[0] == m and again[1] == se


def test_kid_caps_subset_size_and_rejects_bad_input():
    x, y = torch.randn(30, 3, generator=_gen(14)), torch.randn(20, 3, generator=_gen(15))
    # subset_size 1000 > min(n, m) = 20: every subset of y is all of y
    m, _ = kid(x, y, subsets=3, subset_size=1000, generator=_gen(1))
    assert torch.isfinite(m)
    with pytest.raises(ValueError, match="subsets"):
        kid(x, y, subsets=1)
    with pytest.raises(ValueError, match="same feature size"):
        kid(x, torch.randn(20, 4))


# ---- precision / recall -----------------------------------------------------------------------
def _modes(n: int, modes: list[int], g: torch.Generator) -> torch.Tensor:
    """n points from equal-weight unit Gaussians centred at 10 points 20 apart from the origin
    on a circle (neighbours 12.4 apart), ``modes`` of them."""
    which = torch.tensor(modes)[torch.randint(len(modes), (n,), generator=g)]
    angle = 2 * math.pi * which.double() / 10
    centres = 20 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + torch.randn(n, 2, generator=g, dtype=F64)


@pytest.mark.parametrize("k, precision, recall", [(1, 0.5, 0.75), (2, 1.0, 1.0)])
def test_precision_recall_by_hand(k, precision, recall):
    # real 0, 1, 3, 7: distances to the 1st / 2nd nearest other point 1, 1, 2, 4 / 3, 2, 3, 6;
    # fake 0.5, 2.5, 11.5, 12: 2, 2, 0.5, 0.5 / 11, 9, 9, 9.5. With k = 1, 11.5 and 12 lie
    # outside every real ball (4.5 > 4 from 7) and 7 outside every fake ball (4.5 from 2.5 and
    # from 11.5); with k = 2 every point is covered.
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    fake = torch.tensor([[0.5], [2.5], [11.5], [12.0]])
    p, r = precision_recall(real, fake, k=k)
    assert (float(p), float(r)) == (precision, recall)


def test_precision_recall_same_distribution_near_one():
    g = _gen(16)
    real, fake = _modes(1500, list(range(10)), g), _modes(1500, list(range(10)), g)
    p, r = precision_recall(real, fake, k=3)
    assert p.dtype == F64 and 0.9 < float(p) <= 1 and 0.9 < float(r) <= 1


def test_precision_recall_half_the_modes():
    g = _gen(17)
    real, fake = _modes(1500, list(range(10)), g), _modes(1500, [0, 1, 2, 3, 4], g)
    _, r_same = precision_recall(real, _modes(1500, list(range(10)), g))
    p, r = precision_recall(real, fake)
    assert float(p) > 0.9
    # half of the real points lie in covered modes (+- 0.013, binomial), each covered as well as
    # with all modes (the fake set has twice the density there, so if anything better)
    assert 0.5 * float(r_same) - 0.05 < float(r) < 0.55, (float(r), float(r_same))


def test_precision_recall_blocks_give_the_same_answer(monkeypatch):
    g = _gen(18)
    real, fake = _modes(300, list(range(10)), g), _modes(200, [1, 2, 3], g)
    whole = precision_recall(real, fake, k=2)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 1000)  # blocks of 3 to 5 rows
    assert precision_recall(real, fake, k=2) == whole


def test_precision_recall_rejects_bad_input():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least 4 rows"):
        precision_recall(x, torch.randn(3, 3), k=3)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="same feature size"):
        precision_recall(x, torch.randn(10, 2))


def test_precision_recall_takes_the_real_radii_computed_once():
    # the by-hand set of test_precision_recall_by_hand: radii to the 1st nearest other point
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    fake = torch.tensor([[0.5], [2.5], [11.5], [12.0]])
    radii = metrics.knn_radii(real, 1)
    assert radii.tolist() == [1.0, 1.0, 2.0, 4.0]
    assert precision_recall(real, fake, k=1, real_radii=radii) == precision_recall(real, fake, 1)
    # radii that cover nothing of the fake set drop the precision, not the recall
    p, r = precision_recall(real, fake, k=1, real_radii=torch.zeros(4))
    assert (float(p), float(r)) == (0.0, 0.75)
    with pytest.raises(ValueError, match=r"real_radii must be shaped \(4,\)"):
        precision_recall(real, fake, k=1, real_radii=torch.ones(3))


def test_knn_radii_by_brute_force_in_blocks_with_progress(monkeypatch):
    g = _gen(19)
    x = torch.randn(57, 4, generator=g, dtype=torch.float64)
    brute = torch.cdist(x, x).sort(dim=1).values[:, 3]  # the 3rd nearest other row
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 57 * 10)  # blocks of 10 rows
    seen: list[tuple[int, int]] = []
    radii = metrics.knn_radii(x, 3, callback=lambda done, n: seen.append((done, n)))
    assert torch.equal(radii, brute)
    assert seen == [(10, 57), (20, 57), (30, 57), (40, 57), (50, 57), (57, 57)]
