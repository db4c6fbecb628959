"""Samplers against exact answers: Gaussian closed forms, the Gaussian-mixture oracle, orders.

Two exact references are used:

* a 1-D Gaussian N(mu, s0): every step is affine in x, so the mean and variance of what
  ``sample_pc`` returns follow a closed-form recursion (``_pc_gaussian``), and the probability-flow
  map is linear, x_eps = x_T sqrt(v_eps / v_T) with v_t = alpha_t^2 s0 + sigma_t^2;
* the 2-D ``mixture`` fixture with its exact score and exact samples at any t.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sde

import scoresde as sd
from scoresde.samplers import (
    CORRECTORS,
    PREDICTORS,
    default_eps,
    encode,
    sample_ode,
    sample_pc,
)
from scoresde.samplers.pc import langevin, reverse_diffusion

F64 = torch.float64
SQRT_2_PI = math.sqrt(2 / math.pi)


def _vec(v: float, n: int = 1) -> torch.Tensor:
    return torch.full((n,), float(v), dtype=F64)


def _pairs(sde_name: str) -> list[tuple[str, str]]:
    """Every predictor x corrector pair that samples (ancestral: VE, VP only; not none x none)."""
    return [
        (p, c)
        for p in PREDICTORS
        for c in CORRECTORS
        if not (p == "none" and c == "none") and not (p == "ancestral" and sde_name == "subvp")
    ]


ALL_PAIRS = [(s, p, c) for s in ("ve", "vp", "subvp") for p, c in _pairs(s)]


# ---- the closed-form recursion for Gaussian data ----------------------------------------------
def _folded_mean(d: float, w: float) -> float:
    """E|Y| for Y ~ N(d, w)."""
    s = math.sqrt(w)
    return s * SQRT_2_PI * math.exp(-(d**2) / (2 * w)) + d * math.erf(d / (s * math.sqrt(2)))


def _predictor_map(sde, sde_n, predictor, t, v, al_mu):
    """(a, b, q) of the predictor's step x' = a x + b + sqrt(q) z, or None for ``none``."""
    if predictor == "euler_maruyama":
        dt, f, g2 = sde.T / sde_n.N, sde.f(t).item(), sde.g(t).item() ** 2
        return 1 - f * dt - g2 * dt / v, g2 * dt * al_mu / v, g2 * dt
    if predictor == "reverse_diffusion":
        f, G = sde_n.discretize(torch.ones(1, 1, dtype=F64), t)
        return 1 - f.item() - G.item() ** 2 / v, G.item() ** 2 * al_mu / v, G.item() ** 2
    if predictor == "ancestral":
        k, c, s = (u.item() for u in sde_n.ancestral(t))
        return (1 - k / v) / c, k * al_mu / (v * c), s**2
    return None


def _corrector_map(sde, sde_n, corrector, t, v, al_mu, m, w, snr):
    """(a, b, q) of one corrector iteration from the state N(m, w)."""
    lam = sde_n.langevin_alpha(t).item()
    if corrector == "langevin":  # e = (snr E|z| / E|s|)^2 2 alpha, |s| = |x - alpha mu| / v
        e = (snr * SQRT_2_PI * v / _folded_mean(m - al_mu, w)) ** 2 * 2 * lam
    else:
        e = (snr * sde.sigma(t).item()) ** 2 * 2 * lam
    return 1 - e / v, e * al_mu / v, 2 * e


def _apply(abq, m, w):
    """Moments after x' = a x + b + sqrt(q) z: (x_mean moments, mean, variance)."""
    a, b, q = abq
    return (a * m + b, a * a * w), a * m + b, a * a * w + q


def _pc_gaussian(sde, predictor, corrector, N, s0, mu=0.0, snr=0.16, M=1, eps=None, denoise=True):
    """Exact mean and variance of ``sample_pc``'s output for 1-D data N(mu, s0) and its exact score
    s = -(x - alpha mu) / v_t.  Every step is x' = a x + b + sqrt(q) z.  The Langevin step size uses
    the batch means of |z| and |s|, replaced by their expectations (a large-batch limit; the
    remaining randomness of one shared step size moves the variance by O(snr^2 / sqrt(n)))."""
    sde_n = sde.with_steps(N)
    eps = default_eps(sde) if eps is None else eps
    m, w = 0.0, sde.prior_std**2
    out = (m, w)
    for tk in torch.linspace(sde.T, eps, N, dtype=F64).tolist():
        t = _vec(tk)
        al = sde.alpha(t).item()
        v = al**2 * s0 + sde.sigma(t).item() ** 2
        for _ in range(M if corrector != "none" else 0):
            out, m, w = _apply(
                _corrector_map(sde, sde_n, corrector, t, v, al * mu, m, w, snr), m, w
            )
        pm = _predictor_map(sde, sde_n, predictor, t, v, al * mu)
        if pm is not None:
            out, m, w = _apply(pm, m, w)
    return out if denoise else (m, w)


def _sample_gaussian_pc(sde, predictor, corrector, N, s0, n, seed, **kw):
    score = lambda x, t: -x / sd.core.sde.bcast(sde.alpha(t) ** 2 * s0 + sde.sigma(t) ** 2, x)
    g = torch.Generator().manual_seed(seed)
    return sample_pc(
        sde,
        score,
        (n, 1),
        predictor=predictor,
        corrector=corrector,
        steps=N,
        generator=g,
        dtype=F64,
        **kw,
    )


@pytest.mark.parametrize("name,predictor,corrector", ALL_PAIRS)
def test_pc_matches_gaussian_closed_form(name, predictor, corrector):
    """On N(0, s0) data, each pair's output mean and variance equal the closed-form recursion.

    n = 10000 paths, N = 40 steps: 5 standard errors (sqrt(w/n) for the mean, w sqrt(2/(n-1))
    for the variance). This checks every step's algebra exactly, discretisation error included.
    """
    sde, n, N, s0 = make_sde(name), 10000, 40, 0.3
    x, nfe = _sample_gaussian_pc(sde, predictor, corrector, N, s0, n, seed=10)
    m, w = _pc_gaussian(sde, predictor, corrector, N, s0)
    assert abs(x.mean().item() - m) <= 5 * math.sqrt(w / n)
    assert abs(x.var().item() - w) <= 5 * w * math.sqrt(2 / (n - 1))
    assert nfe == N * ((predictor != "none") + (corrector != "none"))


def test_pc_gaussian_closed_form_with_mean_and_two_corrector_steps():
    """Nonzero data mean and M = 2 Langevin iterations per step (the folded-normal |s| enters)."""
    sde, n, N, s0, mu = make_sde("vp"), 10000, 40, 0.3, 1.5
    score = lambda x, t: (
        -(x - sd.core.sde.bcast(sde.alpha(t), x) * mu)
        / sd.core.sde.bcast(sde.alpha(t) ** 2 * s0 + sde.sigma(t) ** 2, x)
    )
    g = torch.Generator().manual_seed(11)
    x, nfe = sample_pc(
        sde,
        score,
        (n, 1),
        predictor="reverse_diffusion",
        corrector="langevin",
        corrector_steps=2,
        steps=N,
        generator=g,
        dtype=F64,
    )
    m, w = _pc_gaussian(sde, "reverse_diffusion", "langevin", N, s0, mu=mu, M=2)
    assert abs(x.mean().item() - m) <= 5 * math.sqrt(w / n)
    assert abs(x.var().item() - w) <= 5 * w * math.sqrt(2 / (n - 1))
    assert nfe == 3 * N


# ---- the Gaussian mixture ---------------------------------------------------------------------
def _sliced_w2(x: torch.Tensor, y: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Sliced squared 2-Wasserstein distance of two equal-size samples along unit ``dirs``."""
    px, py = (x @ dirs.T).sort(dim=0).values, (y @ dirs.T).sort(dim=0).values
    return ((px - py) ** 2).mean()


class _Reference:
    """Exact moments, CLT standard errors and the sliced-W2 null law of one target p_t."""

    def __init__(self, mixture, sde, t, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.mixture, self.sde, self.t, self.n = mixture, sde, t, n
        tt = _vec(t)
        a, s = sde.alpha(tt).item(), sde.sigma(tt).item()
        self.mean = a * mixture.mean()
        self.cov = a**2 * mixture.cov() + s**2 * torch.eye(2, dtype=F64)
        big = mixture.sample_t(200_000, sde, t, g)
        d = big - self.mean
        prods = d[:, :, None] * d[:, None, :]
        self.se_cov = prods.std(dim=0) / math.sqrt(n)  # CLT: sd of (x_i - m_i)(x_j - m_j) / sqrt(n)
        self.se_mean = self.cov.diagonal().sqrt() / math.sqrt(n)
        ang = torch.arange(32, dtype=F64) * math.pi / 32
        self.dirs = torch.stack([ang.cos(), ang.sin()], 1)
        null = torch.stack(
            [
                _sliced_w2(
                    mixture.sample_t(n, sde, t, g), mixture.sample_t(n, sde, t, g), self.dirs
                )
                for _ in range(40)
            ]
        )
        self.null_mean, self.null_sd = null.mean().item(), null.std().item()
        self.exact = mixture.sample_t(n, sde, t, g)


@pytest.fixture(scope="module")
def references():
    cache = {}

    def get(mixture, name: str, t_kind: str) -> _Reference:
        key = (name, t_kind)
        if key not in cache:
            sde = make_sde(name)
            t = 0.0 if t_kind == "0" else default_eps(sde)
            cache[key] = _Reference(mixture, sde, t, n=2000, seed=20)
        return cache[key]

    return get


def _component_scales(mixture) -> list[float]:
    """Data variances that set the mixture's scales: its components' and its own eigenvalues."""
    lam = torch.cat([mixture.lam.reshape(-1), torch.linalg.eigvalsh(mixture.cov())])
    return [float(v) for v in lam]


def _bias_allowance(mixture, sde, predictor, corrector, N, target_t):
    """Discretisation bias of the sampler, estimated by the exact Gaussian recursion.

    For each scale s0 of the mixture (component and total eigenvalues) the recursion gives the
    sampler's variance and mean errors against N(alpha mu, alpha^2 s0 + sigma^2) at ``target_t``;
    the largest absolute errors bound the covariance and mean bias (the mean error per unit mean
    times the largest |component mean|).
    """
    tt = _vec(target_t)
    a, s = sde.alpha(tt).item(), sde.sigma(tt).item()
    mu_max = mixture.means.abs().max().item()
    db_v, db_m = 0.0, 0.0
    for s0 in _component_scales(mixture):
        m, w = _pc_gaussian(sde, predictor, corrector, N, s0, mu=1.0)
        db_v = max(db_v, abs(w - (a**2 * s0 + s**2)))
        db_m = max(db_m, abs(m - a) * mu_max)
    return db_m, db_v


def _check_against(ref: _Reference, x: torch.Tensor, bias_m: float = 0.0, bias_v: float = 0.0):
    """Mean and covariance within 4.5 CLT standard errors plus the bias allowance; sliced W2 within
    the null mean + 6 null sd (40 exact-vs-exact replicates; a chi-square_1 law, one dominant term,
    exceeds that with probability 0.002, sums of more terms less often) plus the bias's own
    W2^2, bias_m^2 + bias_v^2 / (4 min var) (two Gaussians whose variances differ by bias_v).
    """
    n = x.shape[0]
    assert n == ref.n
    dm = (x.mean(0) - ref.mean).abs()
    assert (dm <= 4.5 * ref.se_mean + bias_m).all(), (dm, ref.se_mean, bias_m)
    dc = (torch.cov(x.T, correction=0) - ref.cov).abs()
    assert (dc <= 4.5 * ref.se_cov + bias_v).all(), (dc, ref.se_cov, bias_v)
    w2 = _sliced_w2(x, ref.exact, ref.dirs).item()
    lam_min = torch.linalg.eigvalsh(ref.cov)[0].item()
    limit = ref.null_mean + 6 * ref.null_sd + bias_m**2 + bias_v**2 / (4 * lam_min)
    assert w2 <= limit, (w2, limit)


MIXTURE_PAIRS = [p for p in ALL_PAIRS if p[1:] != ("none", "ald")]


@pytest.mark.slow
@pytest.mark.parametrize("name,predictor,corrector", MIXTURE_PAIRS)
def test_pc_pairs_reproduce_mixture(mixture, references, name, predictor, corrector):
    """Each pair reproduces the mixture (n = 2000, float64) at N = 250 steps (N = 1000, the paper's,
    for Langevin alone, whose annealing needs the finer ladder); the allowance for the
    discretisation bias at that N comes from the closed form (``_bias_allowance``).

    With denoising the last step lands on t = eps - T/N ~ 0, so the target is p_0. Not here:
    annealed Langevin alone (none x ald), which does not converge at snr = 0.16 (the closed form
    gives variance errors of 0.16-0.5 at N = 1000); the closed-form test above checks it exactly.
    """
    sde = make_sde(name)
    N = 1000 if predictor == "none" else 250
    ref = references(mixture, name, "0")
    g = torch.Generator().manual_seed(30)
    x, nfe = sample_pc(
        sde,
        mixture.score_fn(sde),
        (ref.n, 2),
        predictor=predictor,
        corrector=corrector,
        steps=N,
        generator=g,
        dtype=F64,
    )
    bias_m, bias_v = _bias_allowance(mixture, sde, predictor, corrector, N, 0.0)
    _check_against(ref, x, bias_m, bias_v)
    assert nfe == N * ((predictor != "none") + (corrector != "none"))


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_ode_sampler_reproduces_mixture(mixture, references, name):
    """dopri5 at rtol = atol = 1e-5 lands on p_eps; the solver error (~1e-5) is far below the
    Monte Carlo limits, so no bias allowance."""
    sde = make_sde(name)
    ref = references(mixture, name, "eps")
    g = torch.Generator().manual_seed(31)
    x, nfe = sample_ode(sde, mixture.score_fn(sde), (ref.n, 2), generator=g, dtype=F64)
    _check_against(ref, x)
    assert 0 < nfe < 1000


def _solve_flow(sde, score, x, t0, t1, tol=1e-7):
    """The probability-flow ODE from t0 to t1 (a reference solve between any two times)."""

    def f(t, y):
        tv = t.clamp(min(t0, t1), max(t0, t1)).expand(y[0].shape[0])
        return (sde.probability_flow_drift(y[0], tv, score(y[0], tv)),)

    return sd.core.ode.integrate(f, (x,), t0, t1, rtol=tol, atol=tol)[0][0]


def _decode_amplification(sde, score, x, eps) -> float:
    """Bound on ||d x_eps / d x_t|| of the decoding flow over t in {T, T/2, T/10}: central
    differences (step 1e-4, solves at tol 1e-7, so ~1e-3 relative error) along both axes;
    sqrt(2) max column norm >= the spectral norm."""
    amp = 1.0
    for t in (sde.T, sde.T / 2, sde.T / 10):
        xt = _solve_flow(sde, score, x, eps, t)
        for e in torch.eye(2, dtype=F64) * 1e-4:
            a, b = (_solve_flow(sde, score, xt + s * e, t, eps) for s in (1, -1))
            amp = max(amp, math.sqrt(2) * ((a - b).norm(dim=1) / 2e-4).max().item())
    return amp


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_encode_decode_round_trip(mixture, name):
    """encode then sample_ode(z=...) returns x to solver tolerance.

    Each adaptive step keeps its (estimated) local error below atol + rtol |y|, |y| <= max(|x|, |z|)
    on the path; the decoding flow carries an error made at time t to eps multiplied by at most
    A = max_t ||d x_eps / d x_t|| (measured; ~17 for VP, where points between modes are pulled
    apart). So |x' - x| <= A (steps of both solves) (atol + rtol max|y|), steps = nfe / 6 for dopri5
    (first-same-as-last: 6 new evaluations per accepted step).
    """
    sde = make_sde(name)
    eps = default_eps(sde)
    g = torch.Generator().manual_seed(32)
    x = mixture.sample_t(100, sde, eps, g)
    score = mixture.score_fn(sde)
    A = _decode_amplification(sde, score, x, eps)
    errs = []
    for tol in (1e-5, 1e-8):
        z, nfe1 = encode(sde, score, x, rtol=tol, atol=tol)
        x2, nfe2 = sample_ode(sde, score, x.shape, z=z, rtol=tol, atol=tol)
        y_max = max(x.abs().max().item(), z.abs().max().item())
        errs.append((x2 - x).abs().max().item())
        assert errs[-1] <= A * (nfe1 + nfe2) / 6 * (tol + tol * y_max), (errs, A)
    assert errs[1] < errs[0]
    # z is a latent of the prior's scale, not x itself
    assert z.std().item() == pytest.approx(sde.prior_std, rel=0.3)


def test_sample_ode_denoise_counts_one_more_evaluation(mixture):
    sde = make_sde("vp")
    g = torch.Generator().manual_seed(33)
    z = sde.prior_sampling((100, 2), g, dtype=F64)
    score = mixture.score_fn(sde)
    x0, nfe0 = sample_ode(sde, score, z.shape, z=z, method="rk4", steps=5)
    x1, nfe1 = sample_ode(sde, score, z.shape, z=z, method="rk4", steps=5, denoise=True)
    assert (nfe0, nfe1) == (20, 21)
    eps = _vec(default_eps(sde), 100)
    _, expect = reverse_diffusion(sde, score, x0, eps, noise=torch.zeros_like(x0))
    torch.testing.assert_close(x1, expect, rtol=0, atol=0)


def test_sample_ode_scipy_rk45_agrees_with_dopri5(mixture):
    """The paper's black-box path and torchdiffeq reach the same x (both ~1e-6 from the flow)."""
    sde = make_sde("vp")
    z = sde.prior_sampling((64, 2), torch.Generator().manual_seed(34), dtype=F64)
    score = mixture.score_fn(sde)
    xa, _ = sample_ode(sde, score, z.shape, z=z, method="scipy-RK45", rtol=1e-7, atol=1e-7)
    xb, _ = sample_ode(sde, score, z.shape, z=z, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(xa, xb, rtol=0, atol=1e-4)


# ---- convergence orders -----------------------------------------------------------------------
def test_euler_maruyama_weak_order_one():
    """Weak order 1 of the Euler-Maruyama sampler on VP with N(0, 0.3) data (eps = 1e-5, no
    denoising, so the limit is p_eps within O(eps)):

    * the closed-form recursion's error |w_N - v_eps| halves as N doubles (observed order between
      N = 512 and 1024 within 0.02 of 1: the O(1/N) correction there is ~1e-3);
    * ``sample_pc`` realises that recursion: mean x^2 of n = 100000 paths at N = 16 ... 128 equals
      it within 5 standard errors (sqrt(2) w / sqrt(n)), and the order fitted to the sampled errors
      equals the recursion's (-1.14 there, the O(1/N) correction) within 5 propagated standard
      errors.
    """
    sde, s0, eps = make_sde("vp"), 0.3, 1e-5
    te = _vec(eps)
    v_eps = (sde.alpha(te) ** 2 * s0 + sde.sigma(te) ** 2).item()

    def rec(N):
        return _pc_gaussian(sde, "euler_maruyama", "none", N, s0, eps=eps, denoise=False)[1]

    e512, e1024 = abs(rec(512) - v_eps), abs(rec(1024) - v_eps)
    assert abs(math.log2(e512 / e1024) - 1) < 0.02
    Ns, n = [16, 32, 64, 128], 100_000
    err_mc, err_rec, se = [], [], []
    for i, N in enumerate(Ns):
        x, _ = _sample_gaussian_pc(
            sde, "euler_maruyama", "none", N, s0, n, seed=40 + i, eps=eps, denoise=False
        )
        w = rec(N)
        m2 = (x**2).mean().item()
        se.append(math.sqrt(2) * w / math.sqrt(n))
        assert abs(m2 - w) <= 5 * se[-1]
        err_mc.append(abs(m2 - v_eps))
        err_rec.append(abs(w - v_eps))
    logN = torch.tensor([math.log(N) for N in Ns], dtype=F64)
    X = torch.stack([logN, torch.ones_like(logN)], 1)

    def slope(errs):
        y = torch.tensor([math.log(e) for e in errs], dtype=F64)
        return torch.linalg.lstsq(X, y[:, None]).solution[0, 0].item()

    # Least-squares slope: sum_i c_i log e_i with c_i = (logN_i - mean) / Sxx; sd(log e_i) = se/e_i.
    c = (logN - logN.mean()) / ((logN - logN.mean()) ** 2).sum()
    slope_sd = math.sqrt(sum((ci.item() * s / e) ** 2 for ci, s, e in zip(c, se, err_rec)))
    assert abs(slope(err_mc) - slope(err_rec)) <= 5 * slope_sd


@pytest.mark.parametrize(
    "method,order,Ks", [("euler", 1, [64, 128, 256, 512]), ("rk4", 4, [16, 32, 64, 128])]
)
@pytest.mark.parametrize("name", ["ve", "vp"])
def test_fixed_grid_ode_order(name, method, order, Ks):
    """Fixed-grid order on the probability-flow ODE of N(0, s0) data, whose flow map is linear:
    x_eps = x_T sqrt(v_eps / v_T). The error is c h^p (1 + d h + ...), so the observed order
    between K and 2K steps is p + O(1/K): its deviation from p halves with each doubling (ratio in
    [0.3, 0.7]) and is below 0.1 between the two finest grids (errors stay >= 1e-9, far above
    round-off)."""
    sde, s0 = make_sde(name), 0.3
    eps = default_eps(sde)
    T, E = _vec(sde.T), _vec(eps)
    v = lambda t: (sde.alpha(t) ** 2 * s0 + sde.sigma(t) ** 2).item()
    z = torch.linspace(-2, 2, 9, dtype=F64)[:, None] * sde.prior_std
    exact = z * math.sqrt(v(E) / v(T))
    score = lambda x, t: -x / sd.core.sde.bcast(sde.alpha(t) ** 2 * s0 + sde.sigma(t) ** 2, x)
    errs = []
    for K in Ks:
        x, nfe = sample_ode(sde, score, z.shape, z=z, method=method, steps=K)
        assert nfe == K * {"euler": 1, "rk4": 4}[method]
        errs.append((x - exact).abs().max().item())
    dev = [abs(math.log2(errs[i] / errs[i + 1]) - order) for i in range(len(errs) - 1)]
    assert dev[-1] < 0.1, dev
    assert all(0.3 < dev[i + 1] / dev[i] < 0.7 for i in range(len(dev) - 1)), dev


def test_dopri5_meets_its_tolerance_on_gaussian_flow():
    sde, s0 = make_sde("vp"), 0.3
    z = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
    v = lambda t: (sde.alpha(_vec(t)) ** 2 * s0 + sde.sigma(_vec(t)) ** 2).item()
    score = lambda x, t: -x / sd.core.sde.bcast(sde.alpha(t) ** 2 * s0 + sde.sigma(t) ** 2, x)
    x, nfe = sample_ode(sde, score, z.shape, z=z, rtol=1e-8, atol=1e-8)
    exact = z * math.sqrt(v(1e-3) / v(1.0))
    assert (x - exact).abs().max().item() <= nfe / 6 * 1e-8 * 3  # steps x (atol + rtol max|x|)


# ---- corrector details ------------------------------------------------------------------------
def test_langevin_step_size_uses_batch_mean_norms():
    """One Langevin step: e = (snr mean_b||z_b|| / mean_b||s_b||)^2 2 alpha, per example alpha."""
    sde = make_sde("vp")
    g = torch.Generator().manual_seed(50)
    x = torch.randn(3, 2, 2, generator=g, dtype=F64)
    z = torch.randn(3, 2, 2, generator=g, dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    score = lambda x, t: -2.0 * x
    out, mean = langevin(sde, score, x, t, 0.16, 1, noise=z)
    s = -2.0 * x
    ratio = z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean()
    e = (0.16 * ratio) ** 2 * 2 * sde.langevin_alpha(t)
    torch.testing.assert_close(mean, x + e[:, None, None] * s, rtol=1e-15, atol=0)
    torch.testing.assert_close(out, mean + (2 * e[:, None, None]).sqrt() * z, rtol=1e-15, atol=0)


# ---- generic behaviour ------------------------------------------------------------------------
def test_generator_makes_results_reproducible(mixture):
    sde = make_sde("vp")
    run = lambda seed: sample_pc(
        sde,
        mixture.score_fn(sde),
        (50, 2),
        steps=25,
        dtype=F64,
        generator=torch.Generator().manual_seed(seed),
    )[0]
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    z = lambda seed: sample_ode(
        sde,
        mixture.score_fn(sde),
        (50, 2),
        dtype=F64,
        method="rk4",
        steps=4,
        generator=torch.Generator().manual_seed(seed),
    )[0]
    assert torch.equal(z(3), z(3))


def test_shape_generic_sampling(mixture):
    """(B, 2) and (B, 1, 2, 1) data give the same numbers (the score flattens, so does the step)."""
    sde = make_sde("ve")
    score = mixture.score_fn(sde)
    a, _ = sample_pc(
        sde,
        score,
        (40, 2),
        predictor="euler_maruyama",
        corrector="langevin",
        steps=15,
        dtype=F64,
        generator=torch.Generator().manual_seed(5),
    )
    b, _ = sample_pc(
        sde,
        score,
        (40, 1, 2, 1),
        predictor="euler_maruyama",
        corrector="langevin",
        steps=15,
        dtype=F64,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(a, b.reshape(40, 2))


def test_float32_runs_in_float32(mixture):
    sde = make_sde("subvp")
    x, nfe = sample_pc(sde, mixture.score_fn(sde), (30, 2), steps=30, dtype=torch.float32)
    assert x.dtype == torch.float32 and nfe == 60 and torch.isfinite(x).all()
    x, _ = sample_ode(sde, mixture.score_fn(sde), (30, 2), dtype=torch.float32)
    assert x.dtype == torch.float32


def test_callback_sees_the_time_grid_and_steps_override(mixture):
    """steps=N runs on linspace(T, eps, N) with the chain of with_steps(N); callback every step."""
    sde = make_sde("vp")
    seen = []
    cb = lambda i, t, x, xm: seen.append((i, t[0].item(), t.shape, x.shape))
    _, nfe = sample_pc(
        sde,
        mixture.score_fn(sde),
        (7, 2),
        predictor="ancestral",
        corrector="none",
        steps=25,
        eps=0.01,
        callback=cb,
        dtype=F64,
    )
    assert nfe == 25 and [s[0] for s in seen] == list(range(25))
    grid = torch.linspace(1.0, 0.01, 25, dtype=F64)
    torch.testing.assert_close(torch.tensor([s[1] for s in seen], dtype=F64), grid)
    assert all(s[2] == (7,) and s[3] == (7, 2) for s in seen)


def test_predictor_and_corrector_accept_functions(mixture):
    sde = make_sde("vp")
    kw = dict(steps=25, dtype=F64)
    a, _ = sample_pc(
        sde,
        mixture.score_fn(sde),
        (9, 2),
        predictor=reverse_diffusion,
        corrector=langevin,
        **kw,
        generator=torch.Generator().manual_seed(0),
    )
    b, _ = sample_pc(
        sde,
        mixture.score_fn(sde),
        (9, 2),
        predictor="reverse_diffusion",
        corrector="langevin",
        **kw,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "predictor,corrector,M,nfe",
    [
        ("none", "langevin", 3, 30),
        ("euler_maruyama", "none", 1, 10),
        ("ancestral", "ald", 2, 30),
        ("reverse_diffusion", "langevin", 0, 10),
    ],
)
def test_nfe_counts_score_evaluations(mixture, predictor, corrector, M, nfe):
    sde = make_sde("ve")
    calls = []
    score = lambda x, t: calls.append(1) or mixture.score(x, t, sde)
    _, got = sample_pc(
        sde,
        score,
        (4, 2),
        predictor=predictor,
        corrector=corrector,
        corrector_steps=M,
        steps=10,
        dtype=F64,
    )
    assert got == nfe == len(calls)


def test_start_from_given_x(mixture):
    """x=... replaces the prior draw; predictor none and corrector none return it unchanged."""
    sde = make_sde("vp")
    x0 = torch.randn(5, 2, dtype=F64)
    x, nfe = sample_pc(sde, mixture.score_fn(sde), (5, 2), predictor="none", corrector="none", x=x0)
    assert nfe == 0 and torch.equal(x, x0)


# ---- bad input --------------------------------------------------------------------------------
def _vp_score(mixture):
    return mixture.score_fn(make_sde("vp"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(predictor="heun"), "euler_maruyama, reverse_diffusion, ancestral, none"),
        (dict(corrector="hmc"), "langevin, ald, none"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-3), "eps"),
        (dict(eps=1.0), "eps"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(snr=0.0), "snr"),
        (dict(snr=-0.1), "snr"),
        (dict(corrector_steps=-1), "corrector_steps"),
    ],
)
def test_sample_pc_bad_arguments(mixture, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_pc(make_sde("vp"), _vp_score(mixture), (4, 2), dtype=F64, **kwargs)


@pytest.mark.parametrize(
    "predictor,corrector",
    [
        ("reverse_diffusion", "none"),
        ("ancestral", "none"),
        ("euler_maruyama", "langevin"),
        ("euler_maruyama", "ald"),
    ],
)
def test_too_few_steps_for_the_ddpm_chain_raises(mixture, predictor, corrector):
    """VP's DDPM chain has beta_i = beta(t)/N, >= 1 for N <= beta_max = 20: no such chain."""
    with pytest.raises(ValueError, match="steps=10"):
        sample_pc(
            make_sde("vp"),
            _vp_score(mixture),
            (4, 2),
            predictor=predictor,
            corrector=corrector,
            steps=10,
        )
    x, nfe = sample_pc(
        make_sde("vp"),
        _vp_score(mixture),
        (4, 2),
        predictor="euler_maruyama",
        corrector="none",
        steps=10,
    )  # Euler-Maruyama needs no chain
    assert nfe == 10 and torch.isfinite(x).all()


def test_ancestral_on_subvp_raises_before_sampling(mixture):
    calls = []
    score = lambda x, t: calls.append(1) or x
    with pytest.raises(ValueError, match="ancestral"):
        sample_pc(make_sde("subvp"), score, (4, 2), predictor="ancestral", corrector="none")
    assert not calls


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_start_raises(mixture, bad):
    x = torch.zeros(4, 2, dtype=F64)
    x[1, 0] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        sample_pc(make_sde("vp"), _vp_score(mixture), (4, 2), x=x)
    with pytest.raises(ValueError, match="NaN or inf"):
        sample_ode(make_sde("vp"), _vp_score(mixture), (4, 2), z=x)
    with pytest.raises(ValueError, match="NaN or inf"):
        encode(make_sde("vp"), _vp_score(mixture), x)


def test_given_x_with_wrong_shape_raises(mixture):
    with pytest.raises(ValueError, match="shape"):
        sample_pc(make_sde("vp"), _vp_score(mixture), (4, 2), x=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="shape"):
        sample_pc(make_sde("vp"), _vp_score(mixture), None)
    with pytest.raises(ValueError, match="shape"):
        sample_ode(make_sde("vp"), _vp_score(mixture), None)
    x, nfe = sample_pc(
        make_sde("ve"),
        _vp_score(mixture),
        None,
        predictor="none",
        corrector="none",
        x=torch.ones(3, 2),
    )
    assert nfe == 0 and x.shape == (3, 2)


@pytest.mark.parametrize("sampler", ["pc", "ode"])
def test_bad_score_raises(sampler):
    sde = make_sde("vp")
    run = (
        (lambda f: sample_pc(sde, f, (4, 2), steps=25))
        if sampler == "pc"
        else (lambda f: sample_ode(sde, f, (4, 2), method="euler", steps=3))
    )
    with pytest.raises(ValueError, match="shaped like x"):
        run(lambda x, t: x[:, :1])
    with pytest.raises(ValueError, match="NaN or inf"):
        run(lambda x, t: x / 0 * 0)
    with pytest.raises(ValueError, match="NaN or inf"):
        run(lambda x, t: torch.full_like(x, float("inf")))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="rk45"), "dopri5"),
        (dict(method="rk4"), "steps"),
        (dict(method="euler", steps=0), "steps"),
        (dict(eps=0.0), "eps"),
        (dict(eps=2.0), "eps"),
    ],
)
def test_sample_ode_bad_arguments(mixture, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_ode(make_sde("vp"), _vp_score(mixture), (4, 2), **kwargs)


def test_injected_noise_of_wrong_shape_raises(mixture):
    sde = make_sde("vp")
    x, t = torch.zeros(4, 2, dtype=F64), _vec(0.5, 4)
    with pytest.raises(ValueError, match="noise"):
        reverse_diffusion(sde, _vp_score(mixture), x, t, noise=torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="noise"):
        langevin(sde, _vp_score(mixture), x, t, 0.16, 2, noise=torch.zeros(4, 2, dtype=F64))
