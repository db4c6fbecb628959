"""Likelihood, bits/dim and dequantization against closed forms and the official code.

Oracle: with the exact score of a Gaussian mixture the probability-flow ODE carries p_eps to p_T
exactly, so along a trajectory x(eps) = x -> x(T) = z

    int_eps^T div f~ dt = log p_eps(x) - log p_T(z).

``log_likelihood`` returns logp = prior_logp(z) + that integral, so

    logp - log p_eps(x) = prior_logp(z) - log p_T(z),

the prior mismatch at T, known in closed form at the computed z: p_T is the mixture with
components N(alpha(T) mu_k, alpha(T)^2 Sigma_k + sigma(T)^2 I), the prior N(0, prior_std^2 I).
For VE, alpha = 1 and sigma(T) = sigma_max = prior_std, so the gap is O(|mu| |z| / sigma_max^2);
for VP and sub-VP, alpha(T) = exp(-(beta_max - beta_min)/4 - beta_min/2) = 6.6e-3 and the gap is
O(alpha(T) |mu| |z|). Both are ~1e-3..1e-2 here, far above the solver error, so the tests compare
logp - prior_logp(z) + log p_T(z) with log p_eps(x) (no approximation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TESTDATA, make_sde, require

import scoresde as sd
from scoresde.core.likelihood import (
    DIVERGENCES,
    div_exact,
    div_hutchinson,
    log_likelihood_estimates,
)

EPS = 1e-5


def full(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype)


def corrected(mixture, sde, logp, z):
    """logp with the prior replaced by the exact p_T: equals log p_eps(x) up to solver error."""
    z = z.double().reshape(z.shape[0], -1)
    return logp.double() - sde.prior_logp(z) + mixture.log_prob(z, full(z, sde.T), sde)


def solver_bound(nfe: int, rtol: float, atol: float, delta, z, lip: float) -> float:
    """Bound on the error of delta_logp + E(z) after an adaptive solve, E an end-point term.

    Each accepted step keeps its local error below (atol + rtol |y|) per component in RMS norm,
    i.e. below sqrt(n) (atol + rtol |y|) for one of n components; dopri5 takes nfe / 6 steps, so
    with n <= 36 the sum of the local errors is below nfe (atol + rtol max|y|) per component,
    assuming the flow does not amplify earlier errors (its log-volume changes by a few nats).
    The error in z reaches E through its gradient: at most lip * D * (error per component).
    """
    per = lambda y: nfe * (atol + rtol * float(y.abs().max()))  # noqa: E731
    return per(delta) + lip * z[0].numel() * per(z)


def exact_bound(mixture, sde, nfe, rtol, atol, logp, z) -> float:
    """``solver_bound`` for ``corrected``: E = log p_T, whose gradient is the exact score at T."""
    z = z.double()
    lip = float(mixture.score(z, full(z, sde.T), sde).abs().max())
    return solver_bound(nfe, rtol, atol, logp.double() - sde.prior_logp(z), z, lip)


def points(mixture, sde, n: int, seed: int = 0) -> torch.Tensor:
    return mixture.sample_t(n, sde, EPS, generator=torch.Generator().manual_seed(seed))


# ---- exact divergence: closed form --------------------------------------------------------------
def test_div_exact_and_hutchinson_of_a_linear_field():
    # f(x) = A x per example: div = tr A; v^T A v for a probe v.
    A = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 3.0, 0.5], [0.0, 4.0, -2.0]], dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    v = torch.randn(4, 5, 3, dtype=torch.float64)
    f = lambda x: x @ A.T  # noqa: E731
    with torch.no_grad():
        fx, div = div_exact(f, x)
        fx2, est = div_hutchinson(f, x, v)
        _, est1 = div_hutchinson(f, x, v[0])
    torch.testing.assert_close(fx, f(x))
    torch.testing.assert_close(fx2, f(x))
    torch.testing.assert_close(div, torch.full((5,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(est, torch.einsum("kbi,ij,kbj->kb", v, A, v))
    torch.testing.assert_close(est1, est[0])


def test_exact_divergence_matches_closed_form(sde, mixture):
    x = points(mixture, sde, 6)
    rtol = atol = 1e-7
    logp, z, nfe = sd.log_likelihood(sde, mixture.score_fn(sde), x, "exact", rtol, atol, EPS)
    exact = mixture.log_prob(x, full(x, EPS), sde)
    err = (corrected(mixture, sde, logp, z) - exact).abs().max()
    assert err <= exact_bound(mixture, sde, nfe, rtol, atol, logp, z)
    # The prior mismatch is real (and what the correction removes): not a vacuous comparison.
    assert (logp - exact).abs().max() > 10 * err
    assert logp.shape == (6,) and z.shape == x.shape and isinstance(nfe, int) and nfe > 0


def test_float32(mixture):
    sde = make_sde("vp")
    x = points(mixture, sde, 6)
    rtol = atol = 1e-5
    logp, z, nfe = sd.log_likelihood(sde, mixture.score_fn(sde), x.float(), "exact", rtol, atol)
    assert logp.dtype == z.dtype == torch.float32
    exact = mixture.log_prob(x, full(x, EPS), sde)
    # Float32 round-off adds ~6e-8 |y| per evaluation, far below atol + rtol |y| per step.
    err = (corrected(mixture, sde, logp, z) - exact).abs().max()
    assert err <= exact_bound(mixture, sde, nfe, rtol, atol, logp, z)


# ---- Hutchinson estimators ----------------------------------------------------------------------
@pytest.mark.parametrize("divergence", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(sde, mixture, divergence):
    # Each copy of a point gets its own probe: M independent single-probe estimates per point.
    P, M, tol = 3, 200, 1e-6
    x = points(mixture, sde, P)
    g = torch.Generator().manual_seed(1)
    score = mixture.score_fn(sde)
    est, z, nfe = sd.log_likelihood(sde, score, x.repeat(M, 1), divergence, tol, tol, generator=g)
    ref, zr, nfe_ref = sd.log_likelihood(sde, score, x, "exact", tol, tol)
    est = est.reshape(M, P)
    se = est.std(dim=0) / math.sqrt(M)
    assert (se > 0).all()
    # 4 standard errors (two-sided p = 6e-5 each) plus the two solves' error bounds; the end
    # term is prior_logp, whose gradient is -z / prior_std^2.
    lip = float(z.abs().max()) / sde.prior_std**2
    slack = solver_bound(nfe, tol, tol, est - sde.prior_logp(z).reshape(M, P), z, lip)
    slack += solver_bound(nfe_ref, tol, tol, ref - sde.prior_logp(zr), zr, lip)
    assert ((est.mean(dim=0) - ref).abs() <= 4 * se + slack).all()


@pytest.mark.parametrize("divergence", ["gaussian", "rademacher"])
def test_more_probes_shrink_the_spread(mixture, divergence):
    sde, M, K = make_sde("subvp"), 400, 4
    x = points(mixture, sde, 1).repeat(M, 1)
    g = torch.Generator().manual_seed(2)
    score = mixture.score_fn(sde)
    one, _, _ = sd.log_likelihood(sde, score, x, divergence, 1e-6, 1e-6, generator=g)
    many, _, _ = sd.log_likelihood(sde, score, x, divergence, 1e-6, 1e-6, probes=K, generator=g)
    # log of a sample std has variance (kurtosis - 1) / (4 M) to first order; the expected
    # ratio of the spreads is 1/sqrt(K). Allow 4 standard deviations of the log ratio.
    sd_log = math.sqrt(sum((kurtosis(v) - 1) / (4 * M) for v in (one, many)))
    ratio = many.std() / one.std()
    assert abs(math.log(ratio) + 0.5 * math.log(K)) <= 4 * sd_log + 1 / M


def kurtosis(v: torch.Tensor) -> float:
    c = v - v.mean()
    return float((c**4).mean() / (c**2).mean() ** 2)


def test_probes_average_the_single_probe_runs(mixture):
    # Fixed grid: the joint solve does per probe exactly what a single-probe solve does.
    sde = make_sde("vp")
    x = points(mixture, sde, 4)
    noise = torch.randn(3, *x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(3))
    kw = dict(method="rk4", steps=40)
    score = mixture.score_fn(sde)
    rows, z, nfe = log_likelihood_estimates(sde, score, x, "gaussian", noise=noise, **kw)
    singles = [sd.log_likelihood(sde, score, x, "gaussian", noise=n, **kw) for n in noise]
    torch.testing.assert_close(rows, torch.stack([s[0] for s in singles]))
    mean, z_mean, _ = sd.log_likelihood(sde, score, x, "gaussian", probes=3, noise=noise, **kw)
    torch.testing.assert_close(mean, rows.mean(0))
    torch.testing.assert_close(z, singles[0][1])
    assert nfe == singles[0][2] == 4 * 40  # rk4: four drift evaluations per step


# ---- shapes, reproducibility, gradients ---------------------------------------------------------
@pytest.mark.parametrize("divergence", ["exact", "rademacher"])
def test_shaped_data_gives_the_same_numbers(mixture, divergence):
    sde = make_sde("vp")
    x = points(mixture, sde, 5)
    score = mixture.score_fn(sde)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    a = sd.log_likelihood(sde, score, x, divergence, 1e-5, 1e-5, generator=g())
    b = sd.log_likelihood(sde, score, x.reshape(5, 1, 2, 1), divergence, 1e-5, 1e-5, generator=g())
    torch.testing.assert_close(b[0], a[0])
    torch.testing.assert_close(b[1].reshape(5, 2), a[1])
    assert a[2] == b[2]


def test_generator_makes_results_reproducible(mixture):
    sde = make_sde("ve")
    x = points(mixture, sde, 6)
    score = mixture.score_fn(sde)
    run = lambda seed: sd.log_likelihood(  # noqa: E731
        sde, score, x, "gaussian", 1e-4, 1e-4, generator=torch.Generator().manual_seed(seed)
    )[0]
    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))


class ExactScoreNet(torch.nn.Module):
    """The exact score plus a zero-weight linear layer: a module with parameters."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.score, self.lin = mixture.score_fn(sde), torch.nn.Linear(2, 2, dtype=torch.float64)
        torch.nn.init.zeros_(self.lin.weight)
        torch.nn.init.zeros_(self.lin.bias)

    def forward(self, x, t):
        return self.score(x, t) + self.lin(x)


def test_no_grad_callers_and_no_parameter_grads(mixture):
    sde = make_sde("vp")
    x = points(mixture, sde, 4)
    net = ExactScoreNet(mixture, sde)
    ref = sd.log_likelihood(sde, mixture.score_fn(sde), x, "exact", 1e-5, 1e-5)[0]
    with torch.no_grad():
        logp = sd.log_likelihood(sde, net, x, "exact", 1e-5, 1e-5)[0]
    logp2 = sd.log_likelihood(sde, net, x.requires_grad_(True), "rademacher", 1e-5, 1e-5)[0]
    with torch.inference_mode():
        logp3 = sd.log_likelihood(sde, net, x, "exact", 1e-5, 1e-5)[0]
    torch.testing.assert_close(logp, ref)
    torch.testing.assert_close(logp3, ref)
    assert not logp.requires_grad and not logp2.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_the_second_stage_takes_no_vector_jacobian_product(mixture, monkeypatch):
    """delta_logp feeds no derivative, so dopri5's second stage evaluates the drift alone,
    without gradients: one call in six after the two that choose the first step. The result is
    bit for bit that of the solve where every stage takes the divergence too."""
    import scoresde.core.likelihood as lik

    sde, score = make_sde("vp"), mixture.score_fn(make_sde("vp"))
    x = points(mixture, sde, 8)
    probe = torch.ones_like(x)
    graded = []

    def counted(x, t):
        graded.append(torch.is_grad_enabled())
        return score(x, t)

    logp, z, nfe = sd.log_likelihood(sde, counted, x, noise=probe)
    assert len(graded) == nfe and graded.count(False) == (nfe - 2) // 6 > 3
    full_solve = lik.integrate
    monkeypatch.setattr(lik, "integrate", lambda *a: full_solve(*a[:8]))  # no lean stage
    logp_full, z_full, nfe_full = sd.log_likelihood(sde, score, x, noise=probe)
    assert nfe_full == nfe and torch.equal(logp, logp_full) and torch.equal(z, z_full)


# ---- bits per dimension and dequantization ------------------------------------------------------
def test_bits_per_dim_of_uniform_models():
    # Uniform on [0,1)^D: log p = 0 -> bpd = bits. Centred y = 2u - 1 uniform on [-1,1)^D:
    # log p_y = -D ln 2, and the -log2(2) term brings it back to bits.
    D = 12
    zero = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(sd.bits_per_dim(zero, (3, 3, 2, 2)), zero + 8)
    torch.testing.assert_close(sd.bits_per_dim(zero - D * math.log(2), D, scale=2.0), zero + 8)
    torch.testing.assert_close(sd.bits_per_dim(zero, D, bits=5), zero + 5)


@pytest.mark.parametrize("a", [0.5, 2.0, 255.0])
def test_bits_per_dim_is_invariant_to_the_model_scale(a):
    # u ~ N(m, s^2 I) in data space; y = a u has log p_y(a u) = log p_u(u) - D log a, and the
    # -log2(a) term must undo exactly that.
    g = torch.Generator().manual_seed(7)
    u = torch.rand(4, 3, 5, generator=g, dtype=torch.float64)
    m, s = 0.4, 0.3
    log_pu = torch.distributions.Normal(m, s).log_prob(u).sum(dim=(1, 2))
    log_py = torch.distributions.Normal(a * m, a * s).log_prob(a * u).sum(dim=(1, 2))
    torch.testing.assert_close(
        sd.bits_per_dim(log_py, u.shape, scale=a), sd.bits_per_dim(log_pu, u.shape)
    )
    expected = -log_pu / (15 * math.log(2)) + 8  # the formula for a = 1, written out
    torch.testing.assert_close(sd.bits_per_dim(log_pu, 15), expected)


def test_dequantize_bounds_and_distribution():
    g = torch.Generator().manual_seed(8)
    x = torch.randint(0, 256, (20000,), generator=g).to(torch.uint8)
    u = sd.dequantize(x, generator=g)
    assert u.dtype == torch.get_default_dtype()
    xf = x.to(u.dtype)
    assert ((u >= xf / 256) & (u < (xf + 1) / 256)).all()
    # The position inside the cell is U[0,1): Kolmogorov-Smirnov statistic below its
    # 0.1% critical value 1.95 / sqrt(n).
    frac = (256 * u.double() - x.double()).sort().values
    n = frac.numel()
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = torch.maximum(grid - frac, frac - (grid - 1 / n)).max()
    assert ks < 1.95 / math.sqrt(n)
    # Float input holding integers, and reproducibility.
    u2 = sd.dequantize(xf.double(), generator=torch.Generator().manual_seed(9))
    u3 = sd.dequantize(xf.double(), generator=torch.Generator().manual_seed(9))
    assert u2.dtype == torch.float64 and torch.equal(u2, u3)


def test_dequantize_top_cell_stays_below_one():
    # In float32, 255 + U rounds to 256 for U > 1 - 2^-17: ~8 of 2^20 draws would reach 1.0.
    x = torch.full((2**20,), 255.0)
    u = sd.dequantize(x, generator=torch.Generator().manual_seed(10))
    assert u.max() < 1.0 and u.min() >= 255 / 256


# ---- parity with the official code --------------------------------------------------------------
@pytest.mark.parametrize("run, scale", [("", 1.0), ("centered_", 2.0)])
def test_parity_with_official_analytic_likelihood(run, scale):
    ref = np.load(require(TESTDATA / "likelihood_vp_analytic.npz"))
    x = torch.from_numpy(ref[f"{run}data"])
    noise = torch.from_numpy(ref["epsilon"])
    sde = sd.VPSDE(0.1, 20.0, 1000)

    def score(x, t):  # what the official get_score_fn made of the stored tiny network
        return -x / (1 + t[:, None, None, None])

    logp, z, nfe = sd.log_likelihood(
        sde, score, x, "rademacher", 1e-5, 1e-5, 1e-5, method="scipy-RK45", noise=noise
    )
    # offset 7 - inverse_scaler(-1) of the official code = 8 - log2(scale)
    assert float(ref[f"{run}offset"]) == 8 - math.log2(scale)
    bpd = sd.bits_per_dim(logp, x.shape, scale=scale)
    # README section "Suggested tolerances": same nfe, bpd and z to 1e-4.
    assert nfe == int(ref[f"{run}nfe"])
    np.testing.assert_allclose(bpd.numpy(), ref[f"{run}bpd"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(z.numpy(), ref[f"{run}z"], rtol=0, atol=1e-4)


# ---- bad input ----------------------------------------------------------------------------------
def bad_call(mixture, **kw):
    sde = make_sde("vp")
    args = dict(x=points(mixture, sde, 2), score_fn=mixture.score_fn(sde))
    args.update(kw)
    return sd.log_likelihood(sde, args.pop("score_fn"), args.pop("x"), **args)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(divergence="hutchinson"), "valid: exact, gaussian, rademacher"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-3), "eps"),
        (dict(eps=1.0), "eps"),
        (dict(probes=0), "probes"),
        (dict(probes=1.5), "probes"),
        (dict(x=torch.tensor([[0.0, float("nan")], [0.0, 0.0]], dtype=torch.float64)), "NaN"),
        (dict(x=torch.tensor([[0.0, float("inf")]], dtype=torch.float64)), "NaN or inf"),
        (dict(x=torch.ones(2, 2, dtype=torch.long)), "floating"),
        (dict(score_fn=lambda x, t: x[:, :1]), "shaped like x"),
        (dict(score_fn=lambda x, t: x * float("nan")), "NaN"),
        (dict(divergence="exact", noise=torch.ones(2, 2)), "exact"),
        (dict(noise=torch.ones(2, 3)), "noise must be shaped"),
        (dict(noise=torch.ones(3, 2, 2), probes=2), "noise must be shaped"),
        (dict(method="rk5"), "valid"),
    ],
)
def test_bad_input(mixture, kw, match):
    with pytest.raises(ValueError, match=match):
        bad_call(mixture, **kw)


def test_divergence_names():
    assert DIVERGENCES == ("exact", "gaussian", "rademacher")


@pytest.mark.parametrize(
    "x",
    [
        torch.tensor([0, 256]),
        torch.tensor([-1, 3]),
        torch.tensor([0.0, 1.5]),
        torch.tensor([0.0, float("nan")]),
        torch.tensor([True, False]),
    ],
)
def test_dequantize_bad_input(x):
    with pytest.raises(ValueError):
        sd.dequantize(x)


def test_bits_per_dim_bad_input():
    with pytest.raises(ValueError, match="scale"):
        sd.bits_per_dim(torch.zeros(2), 4, scale=0.0)
    with pytest.raises(ValueError, match="D >= 1"):
        sd.bits_per_dim(torch.zeros(2), (2, 0))
    with pytest.raises(ValueError, match="D >= 1"):
        sd.bits_per_dim(torch.zeros(2), 0)
