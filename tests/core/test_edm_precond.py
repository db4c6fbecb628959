"""EDM preconditioning (Karras et al. 2022) as the ``edm`` parameterization, label and weighting.

The oracle network is EDM's F for the exact denoiser of the Gaussian mixture,
``F = (D* - c_skip x^) / c_out``, computed only from what a network is fed (``c_in x^`` and
``c_noise``). D* = E[x0 | x_t] comes from the Gaussian conditioning formulas, not from the
mixture's score, so the tests also check Tweedie's ``s = (alpha D - x) / sigma^2``. EDM's
sigma_d is the model's ``sigma_data`` (default ``SIGMA_DATA`` = 0.5); the tests run the
default and sigma_d = 1.3, data of another scale.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.core.losses import EDM_P_MEAN, EDM_P_STD, WEIGHTINGS, dsm_loss, sample_t
from scoresde.core.mixture import GaussianMixture
from scoresde.core.score import SIGMA_DATA, ScoreModel, edm_coefficients, edm_sigma
from scoresde.data import toy_mixture
from scoresde.training.config import (
    ConfigError,
    apply_overrides,
    build_score_model,
    config_from_dict,
    config_to_dict,
    load_config,
    resume_changes,
    with_data_shape,
)
from scoresde.training.evaluate import mean_test_loss
from scoresde.training.loop import setup, train

F64, F32 = torch.float64, torch.float32
TIMES = [1e-3, 0.1, 0.5, 1.0]
SIGMA_DS = [SIGMA_DATA, 1.3]  # the default and data of another scale


def exact_denoiser(gm, sde, x, t):
    """E[x0 | x_t = x] of the mixture: component k gives mu_k + alpha Sigma_k C_k^-1 (x - alpha
    mu_k), C_k = alpha^2 Sigma_k + sigma^2 I, weighted by the exact p_t(k | x)."""
    alpha, sigma = sde.alpha(t)[:, None, None], sde.sigma(t)[:, None, None]
    C = alpha[..., None] ** 2 * gm.covs + sigma[..., None] ** 2 * torch.eye(gm.dim, dtype=x.dtype)
    r = x[:, None, :] - alpha * gm.means  # (B, K, D)
    sol = torch.linalg.solve(C, r.unsqueeze(-1)).squeeze(-1)
    post = gm.means + alpha * torch.einsum("kde,bke->bkd", gm.covs, sol)
    w = gm.log_class_prob(x, t, sde).exp()
    return torch.einsum("bk,bkd->bd", w, post)


class OracleF(nn.Module):
    """EDM's raw network for the exact denoiser, plus ``delta * tanh(x_in)`` (a perturbation),
    for the preconditioning of ``sigma_d``."""

    def __init__(self, gm, sde, delta: float = 0.0, sigma_d: float = SIGMA_DATA):
        super().__init__()
        self.gm, self.sde, self.delta, self.sigma_d = gm, sde, delta, sigma_d

    def forward(self, x_in, c_noise):
        t = self.sde.t_of_log_snr(-4 * c_noise)  # c_noise = ln(sigma^) / 4 = -log_snr / 4
        c = edm_coefficients(torch.exp(4 * c_noise), self.sigma_d)
        c_skip, c_out, c_in, _ = (ci[:, None] for ci in c)
        x_hat = x_in / c_in
        D = exact_denoiser(self.gm, self.sde, self.sde.alpha(t)[:, None] * x_hat, t)
        return (D - c_skip * x_hat) / c_out + self.delta * torch.tanh(x_in)


def edm_model(gm, sde, delta: float = 0.0, sigma_d: float = SIGMA_DATA) -> ScoreModel:
    return ScoreModel(OracleF(gm, sde, delta, sigma_d), sde, "edm", "edm", sigma_data=sigma_d)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-12, atol: float = 0.0) -> None:
    """|a - b| <= atol + rtol |b| everywhere (round-off bounds of float64 formulas)."""
    assert ((a - b).abs() <= atol + rtol * b.abs()).all(), (a - b).abs().max()


def _times(t: float, n: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=F64)


# ---- the parameterization is exact -------------------------------------------------------------
@pytest.mark.parametrize("sigma_d", SIGMA_DS)
@pytest.mark.parametrize("t", TIMES)
def test_exact_denoiser_gives_the_exact_score(sde, mixture, t, sigma_d):
    # Float64 round-off: D* is known to a few ulps of |x^|, and any denoiser-to-score map
    # (Tweedie, s = (alpha D - x) / sigma^2) multiplies that by alpha / sigma^2, so the bound is
    # |s - s*| <= k eps (|x| / sigma^2 + |s*|); measured k <= 6.1 over these SDEs and times
    # (relative error 1e-11 and below, 8e-8 for sub-VP at t = 1e-3 where sigma = 1.1e-4), k = 100.
    # Same bound for sigma_d = 1.3 (measured k <= 6.0). The oracle read with another sigma_d
    # than it was built for misses by >= 2e7 of these ulps (measured): the model uses its own.
    x = mixture.sample_t(256, sde, t, torch.Generator().manual_seed(0))
    tt = _times(t, 256)
    model = edm_model(mixture, sde, sigma_d=sigma_d)
    assert model.sigma_data == sigma_d
    s, s_exact = model(x, tt), mixture.score(x, tt, sde)
    norm = lambda v: v.norm(dim=1)  # noqa: E731
    ulp = torch.finfo(F64).eps * (norm(x) / sde.sigma(tt) ** 2 + norm(s_exact))
    assert (norm(s - s_exact) <= 100 * ulp).all()
    other = 1.3 if sigma_d == SIGMA_DATA else SIGMA_DATA
    wrong = ScoreModel(model.net, sde, "edm", "edm", sigma_data=other)(x, tt)
    assert (norm(wrong - s_exact) > 100 * ulp).all()
    D = model.denoise(x, tt)
    assert (D - exact_denoiser(mixture, sde, x, tt)).abs().max() < 1e-10


@pytest.mark.parametrize("sigma_d", SIGMA_DS)
def test_label_input_and_other_parameterizations(sde, sigma_d):
    # The network sees c_in x^ = x / sqrt(sigma^2 + alpha^2 sigma_d^2) and c_noise = ln(sigma^)/4;
    # every other parameterization is fed x itself (the same tensor).
    seen = []

    class Probe(nn.Module):
        def forward(self, x_in, label):
            seen.append((x_in, label))
            return torch.zeros_like(x_in)

    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    t = torch.linspace(0.01, 1.0, 5, dtype=F64)
    ScoreModel(Probe(), sde, "edm", "edm", sigma_data=sigma_d)(x, t)
    sig_hat = sde.sigma(t) / sde.alpha(t)
    _, _, c_in, c_noise = edm_coefficients(sig_hat, sigma_d)
    assert torch.allclose(c_in, 1 / torch.sqrt(sig_hat**2 + sigma_d**2), rtol=1e-15, atol=0)
    _close(seen[0][0], c_in[:, None] * x / sde.alpha(t)[:, None], rtol=1e-14, atol=0)
    _close(seen[0][1], c_noise, rtol=1e-14, atol=1e-15)
    _close(edm_sigma(sde, t), sig_hat, rtol=1e-14, atol=0)
    for p in ("score", "noise", "scaled", "drift"):
        ScoreModel(Probe(), sde, p, "t", sigma_data=sigma_d)(x, t)
        assert seen[-1][0] is x


# ---- EDM's identities ---------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_d", SIGMA_DS)
def test_coefficient_identities_in_closed_form(sigma_d):
    # Data of std sigma_d, x^ = x0 + sigma^ n: Var(c_in x^) = c_in^2 (sigma_d^2 + sigma^^2) = 1,
    # Var(F_target) = ((1 - c_skip)^2 sigma_d^2 + c_skip^2 sigma^^2) / c_out^2 = 1, and EDM's
    # weight lambda = (sigma^^2 + sigma_d^2) / (sigma^ sigma_d)^2 is 1 / c_out^2.
    sig = torch.logspace(-3, 3, 61, dtype=F64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sig, sigma_d)
    sd2 = sigma_d**2
    one = torch.ones_like(sig)
    _close(c_in**2 * (sd2 + sig**2), one, rtol=1e-14, atol=0)
    var_target = ((1 - c_skip) ** 2 * sd2 + c_skip**2 * sig**2) / c_out**2
    _close(var_target, one, rtol=1e-12, atol=0)
    _close((sig**2 + sd2) / (sig * sigma_d) ** 2 * c_out**2, one)
    _close(c_noise, 0.25 * sig.log())


@pytest.mark.parametrize("sigma_d", SIGMA_DS)
@pytest.mark.parametrize("t", TIMES)
def test_unit_variance_input_and_target_on_gaussian_data(sde, t, sigma_d):
    # x0 ~ N(0, sigma_d^2 I). With F = 0 the edm-weighted loss is ||F_target||^2, chi^2 with D
    # degrees of freedom if the target has unit variance; the network's input has unit variance
    # per coordinate. Both within 5 standard errors of their sample means (CLT).
    n, D = 20000, 4
    inputs = []

    class Zero(nn.Module):
        def forward(self, x_in, label):
            inputs.append(x_in)
            return torch.zeros_like(x_in)

    g = torch.Generator().manual_seed(1)
    x0 = sigma_d * torch.randn(n, D, generator=g, dtype=F64)
    model = ScoreModel(Zero(), sde, "edm", "edm", sigma_data=sigma_d)
    loss = dsm_loss(sde, model, x0, "edm", generator=g, t=_times(t, n))
    se = math.sqrt(2 * D / n)
    assert abs(loss.mean().item() - D) < 5 * se
    sq = inputs[0].pow(2).mean(1)  # E x_in^2 = 1 per coordinate, Var(mean of D squares) = 2 / D
    assert abs(sq.mean().item() - 1) < 5 * math.sqrt(2 / D / n)


@pytest.mark.parametrize("sigma_d", SIGMA_DS)
def test_edm_weighting_is_the_unit_weight_regression_of_F(sde, sigma_d):
    # lambda ||s + z/sigma||^2 with the edm weighting equals ||F - F_target||^2, F_target =
    # (x0 - c_skip x^) / c_out, for any network output (same t and z; round-off only). The loss
    # reads sigma_d from the model; passed explicitly (a wrapper without it) it is the same.
    class Some(nn.Module):
        def forward(self, x_in, label):
            return torch.tanh(x_in) * (1 + label[:, None])

    n = 512
    x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    t = torch.linspace(1e-3, 1.0, n, dtype=F64)
    model = ScoreModel(Some(), sde, "edm", "edm", sigma_data=sigma_d)
    loss = dsm_loss(sde, model, x0, "edm", generator=torch.Generator().manual_seed(3), t=t)
    wrapped = dsm_loss(
        sde, lambda x, t: model(x, t), x0, "edm", generator=torch.Generator().manual_seed(3),
        t=t, sigma_data=sigma_d,
    )  # fmt: skip
    assert torch.equal(loss, wrapped)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    sig_hat = edm_sigma(sde, t)
    c_skip, c_out, c_in, c_noise = (c[:, None] for c in edm_coefficients(sig_hat, sigma_d))
    x_hat = x0 + sig_hat[:, None] * z
    F = Some()(c_in * x_hat, c_noise[:, 0])
    expected = (F - (x0 - c_skip * x_hat) / c_out).pow(2).sum(1)
    _close(loss, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("sigma_d", SIGMA_DS)
def test_edm_weighting_is_edm_lambda_on_the_denoiser_error(sde, sigma_d):
    # EDM's Eq. 8: lambda_D ||D - x0||^2, lambda_D = (sigma^^2 + sigma_d^2) / (sigma^ sigma_d)^2,
    # D the model's denoiser at x_t = alpha x0 + sigma z (same t and z), for a model of another
    # parameterization: the weighting reads sigma_d from the model. Round-off: D - x0 ~ sigma z
    # is a difference of O(1) terms, relative error ~ eps / sigma (2e-12 at the smallest sigma
    # here, 1.1e-4 for sub-VP); measured max 1.6e-12 (sub-VP), 3e-14 for VE and VP; bound 1e-10.
    class Some(nn.Module):
        def forward(self, x_in, label):
            return torch.sin(x_in) * (1 + label[:, None])

    n = 256
    x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(12), dtype=F64)
    t = torch.linspace(1e-3, 1.0, n, dtype=F64)
    model = ScoreModel(Some(), sde, "noise", "t", sigma_data=sigma_d)
    loss = dsm_loss(sde, model, x0, "edm", generator=torch.Generator().manual_seed(13), t=t)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(13), dtype=F64)
    mean, sigma = sde.marginal_prob(x0, t)
    x_t = mean + sigma[:, None] * z
    sig_hat = sigma / sde.alpha(t)
    lam_D = (sig_hat**2 + sigma_d**2) / (sig_hat * sigma_d) ** 2
    with torch.no_grad():
        expected = lam_D * (model.denoise(x_t, t) - x0).pow(2).sum(1)
    _close(loss, expected, rtol=1e-10)
    lam = sigma**2 * (sig_hat**2 + sigma_d**2) / sigma_d**2  # the same, on ||s + z/sigma||^2
    _close(WEIGHTINGS["edm"](sde, t, sigma_d), lam, rtol=1e-14)


def test_default_sigma_d_reproduces_the_old_values(sde):
    # The edm formulas read the constant 0.5 before sigma_d was a field; those expressions,
    # written out here, give the same bits as the default model, input and weighting.
    seen = []

    class Some(nn.Module):
        def forward(self, x_in, label):
            seen.append(x_in)
            return torch.tanh(x_in) * (1 + label[:, None])

    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(14), dtype=F64)
    t = torch.linspace(1e-3, 1.0, 64, dtype=F64)
    model = ScoreModel(Some(), sde, "edm", "edm")
    assert model.sigma_data == SIGMA_DATA == 0.5
    s = model(x, t)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    sig_hat = sigma / alpha
    c_out = sig_hat * 0.5 / torch.sqrt(sig_hat**2 + 0.5**2)
    x_in = x / torch.sqrt(sigma**2 + (alpha * 0.5) ** 2)[:, None]
    o = torch.tanh(x_in) * (1 + (-0.25 * sde.log_snr(t))[:, None])
    x_coef = 1 / (sigma**2 + (alpha * 0.5) ** 2)
    old = (alpha * c_out / sigma**2)[:, None] * o - x_coef[:, None] * x
    assert torch.equal(seen[0], x_in) and torch.equal(s, old)
    old_lam = sde.sigma(t) ** 2 * (1 + (edm_sigma(sde, t) / 0.5) ** 2)
    assert torch.equal(WEIGHTINGS["edm"](sde, t), old_lam)
    g = lambda: torch.Generator().manual_seed(15)  # noqa: E731
    plain = dsm_loss(sde, lambda x, t: -x, x, "edm", generator=g(), t=t)  # no sigma_data: 0.5
    assert torch.equal(plain, dsm_loss(sde, lambda x, t: -x, x, "edm", generator=g(), t=t,
                                       sigma_data=0.5))  # fmt: skip
    assert not torch.equal(plain, dsm_loss(sde, lambda x, t: -x, x, "edm", generator=g(), t=t,
                                           sigma_data=1.3))  # fmt: skip


# ---- training objective --------------------------------------------------------------------------
def test_exact_denoiser_minimises_the_edm_loss(sde, mixture):
    # Same x0, t (EDM's log-normal) and z: loss(F* + delta) - loss(F*) = 2 delta.(F* - F_target)
    # + |delta|^2, the cross term of mean zero (E[F_target | x_t] = F*), so the mean difference is
    # E |delta|^2 (5 standard errors).
    n = 4000
    x0 = mixture.sample(n, torch.Generator().manual_seed(4))
    kw = dict(weighting="edm", t_sampling="log_normal")
    l_exact = dsm_loss(
        sde, edm_model(mixture, sde), x0, generator=torch.Generator().manual_seed(5), **kw
    )
    l_pert = dsm_loss(
        sde, edm_model(mixture, sde, 0.3), x0, generator=torch.Generator().manual_seed(5), **kw
    )
    assert l_exact.mean() < l_pert.mean()
    g = torch.Generator().manual_seed(5)
    t = sample_t(sde, n, generator=g, dtype=F64, t_sampling="log_normal")
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    mean, sigma = sde.marginal_prob(x0, t)
    x_t = mean + sigma[:, None] * z
    _, _, c_in, _ = edm_coefficients(edm_sigma(sde, t))
    delta2 = (0.3 * torch.tanh(c_in[:, None] * x_t / sde.alpha(t)[:, None])).pow(2).sum(1)
    diff = l_pert - l_exact - delta2
    assert abs(diff.mean().item()) < 5 * diff.std().item() / math.sqrt(n)


def test_log_normal_times(sde):
    # ln sigma^(t) ~ N(P_mean, P_std^2) clipped to [eps, T]: P(ln sigma^ <= q) = Phi((q - P_mean) /
    # P_std) for q inside the SDE's range of noise levels (binomial, 5 standard errors).
    n, eps = 20000, 1e-5
    t = sample_t(
        sde, n, eps, generator=torch.Generator().manual_seed(6), dtype=F64, t_sampling="log_normal"
    )
    assert t.min() >= eps and t.max() <= sde.T
    log_sig = torch.log(edm_sigma(sde, t))
    for q in (-3.0, -1.2, 0.5, 2.0):
        p = 0.5 * (1 + math.erf((q - EDM_P_MEAN) / (EDM_P_STD * math.sqrt(2))))
        frac = (log_sig <= q).double().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n), (q, frac, p)
    with pytest.raises(ValueError, match="importance"):
        sample_t(sde, 4, eps, importance=True, t_sampling="log_normal")
    with pytest.raises(ValueError, match="log_normal"):
        dsm_loss(sde, lambda x, t: x, torch.zeros(4, 2), t_sampling="lognormal")


# ---- samplers and the likelihood take it unchanged ---------------------------------------------
@pytest.mark.parametrize("sampler", ["heun", "dpm_solver"])
def test_samplers_through_edm_match_the_exact_score(sde, mixture, sampler):
    # The same deterministic sampler from the same latent: only round-off of the score differs
    # (test above). Measured max |difference| 2.4e-14 over these runs (|x| <= 3); bound 1e-11.
    z = sde.prior_sampling((64, 2), torch.Generator().manual_seed(7), dtype=F64)
    a, nfe_a = sd.sample(sde, edm_model(mixture, sde), (64, 2), sampler, steps=12, z=z)
    b, nfe_b = sd.sample(sde, mixture.score_fn(sde), (64, 2), sampler, steps=12, z=z)
    assert nfe_a == nfe_b and (a - b).abs().max() < 1e-11


def test_log_likelihood_through_edm_matches_the_exact_score(sde, mixture):
    # Exact divergence on a fixed RK4 grid: the same steps for both, round-off only. Measured max
    # |difference| 1.8e-12 in log p, 4.4e-13 in z (VP, sub-VP; 6e-14 VE); bound 1e-9.
    x = mixture.sample(16, torch.Generator().manual_seed(8))
    kw = dict(divergence="exact", method="rk4", steps=20)
    lp_a, z_a, _ = sd.log_likelihood(sde, edm_model(mixture, sde), x, **kw)
    lp_b, z_b, _ = sd.log_likelihood(sde, mixture.score_fn(sde), x, **kw)
    assert (lp_a - lp_b).abs().max() < 1e-9 and (z_a - z_b).abs().max() < 1e-9


# ---- configuration and a tiny training run -------------------------------------------------------
EDM = ["model.parameterization=edm", "model.label=edm", "train.weighting=edm"]
SCORE_MATCHING = ["model.parameterization=noise", "model.label=t", "train.weighting=score",
                  "train.t_sampling=uniform"]  # fmt: skip


def test_config_accepts_edm_and_checks_t_sampling():
    # the preset as it was before it moved to EDM: score matching, t uniform
    base = apply_overrides(load_config("toy_swissroll_vp"), SCORE_MATCHING)
    assert base.train.t_sampling == "uniform" and base.model.parameterization == "noise"
    cfg = apply_overrides(base, [*EDM, "train.t_sampling=log_normal"])
    model = build_score_model(with_data_shape(cfg, (2,)))
    assert model.parameterization == "edm" and model.label == "edm"
    with pytest.raises(ConfigError, match="log_normal"):
        apply_overrides(base, ["train.t_sampling=lognormal"])
    with pytest.raises(ConfigError, match="importance"):
        apply_overrides(base, ["train.t_sampling=log_normal", "train.importance=true"])


TINY = [
    "model.params.hidden=16", "model.params.depth=2", "model.params.embed_dim=8",
    "data.n_train=512", "data.n_test=512", "train.batch_size=64", "train.warmup=5",
    "train.lr=3e-3", "train.tensorboard=false", "train.steps=300", "train.log_every=300",
    "train.eval_every=300",
]  # fmt: skip


def test_tiny_training_run_approaches_the_exact_loss(tmp_path):
    # 300 steps of the toy MLP on mixture_2d, whose standardized law is again a Gaussian mixture,
    # so the loss of the exact F on the loop's own test draws (fixed t and z) is known. The EMA
    # model removed 57-86% of the initial model's excess over it (seeds 0-3, 512 test points);
    # the test asks for 30%.
    cfg = apply_overrides(load_config("toy_mixture_vp"), [*TINY, *EDM])
    run = setup(cfg, tmp_path)
    before = mean_test_loss(run.ema_model, run.test_x, run.cfg)
    gm, m, s = toy_mixture("mixture_2d"), run.standardizer.mean, run.standardizer.std
    covs = gm.covs / (s[:, None] * s[None, :]).to(gm.covs)
    gm = GaussianMixture(gm.weights, (gm.means - m.to(gm.means)) / s.to(gm.means), covs, F32)
    best = mean_test_loss(edm_model(gm, run.model.sde), run.test_x, run.cfg)
    run.close()
    after = train(cfg, tmp_path, overwrite=True)["test_loss"]
    assert before - after > 0.3 * (before - best), (before, after, best)


def test_config_sigma_data_reaches_the_model_and_is_checked():
    base = load_config("toy_swissroll_vp")
    assert base.model.sigma_data == SIGMA_DATA
    cfg = with_data_shape(apply_overrides(base, [*EDM, "model.sigma_data=1.3"]), (2,))
    assert build_score_model(cfg).sigma_data == 1.3
    for bad in ("0", "-1", ".nan", ".inf", "abc"):
        with pytest.raises(ConfigError, match="model.sigma_data"):
            apply_overrides(base, [f"model.sigma_data={bad}"])
    d = config_to_dict(cfg)  # a checkpoint's config written before the field existed
    del d["model"]["sigma_data"]
    assert config_from_dict(d).model.sigma_data == 0.5
    assert build_score_model(config_from_dict(d)).sigma_data == 0.5
    with pytest.raises(ConfigError, match="model.sigma_data"):
        resume_changes(cfg, apply_overrides(cfg, ["model.sigma_data=2.0"]))
    with pytest.raises(ValueError, match="positive finite"):
        ScoreModel(nn.Identity(), sd.VPSDE(), "edm", "edm", 0.0)
    with pytest.raises(ValueError, match="positive finite"):
        dsm_loss(sd.VPSDE(), lambda x, t: x, torch.zeros(2, 2), "edm", sigma_data=-1.0)


def test_an_old_checkpoint_loads_with_the_default_sigma_d():
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "toy_checkpoint_v1.pt"
    model, cfg, _ = sd.load_model(fixture)
    assert cfg.model.sigma_data == 0.5 and model.sigma_data == 0.5


def test_the_trainer_hands_sigma_d_to_the_loss(tmp_path):
    # Under several processes the loss sees a wrapper of the model (loop._rows_score) that has no
    # sigma_data, so the trainer passes the model's own: one update through such a wrapper gives
    # the per-example losses of the model itself (same indices, t and z), bit for bit. The test
    # loss reads sigma_d from the EMA model.
    from scoresde.training.evaluate import EVAL_SEED
    from scoresde.training.loop import _update

    # t uniform, as dsm_loss draws it by default below
    sets = [*TINY, *EDM, "model.sigma_data=1.3", "train.t_sampling=uniform"]
    run = setup(apply_overrides(load_config("toy_mixture_vp"), sets), tmp_path)
    try:
        assert run.model.sigma_data == run.ema_model.sigma_data == 1.3
        tc, sde = run.cfg.train, run.model.sde
        g = torch.Generator().manual_seed(tc.seed + EVAL_SEED)
        test = dsm_loss(sde, run.ema_model, run.test_x, "edm", tc.eps, g, sigma_data=1.3)
        assert mean_test_loss(run.ema_model, run.test_x, run.cfg) == pytest.approx(
            test.double().mean().item(), rel=1e-12
        )  # the same float32 losses (one chunk), summed in float64 in another order
        g = torch.Generator().set_state(run.gen.get_state())
        x0 = run.train_x[torch.randint(run.train_x.shape[0], (tc.batch_size,), generator=g)]
        expected = dsm_loss(sde, run.model, x0, "edm", tc.eps, g)
        run.score_fn = lambda x, t: run.model(x, t)  # a wrapper without sigma_data
        per_example, _ = _update(run, tc.lr)
        assert torch.equal(per_example.detach(), expected.detach())
    finally:
        run.close()
