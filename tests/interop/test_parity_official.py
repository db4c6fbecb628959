"""Parity with the official score_sde_pytorch code: same inputs, same numbers.

Reference arrays: ``sde_reference.npz`` (SDE functions at t = 1e-5, 0.1, 0.5, 1) and
``sampler_steps.npz`` (one predictor / corrector step with its saved noise); see the README in
the test-data folder. Tolerances are the README's: ``rtol=1e-5, atol=1e-6`` for SDE functions,
``rtol=1e-5, atol=1e-5`` for sampler steps, all in float32.

One deliberate difference: the official VP / sub-VP coefficients compute ``1 - exp(u)`` in float32,
which cancels at t = 1e-5 (u ~ -1e-6), while ours use ``expm1`` and are exact. For the entries that
depend on that cancellation at t = 1e-5 we check that ours equal the float64 closed form and that
the official value lies within the float32 cancellation bound of it (``_cancellation_cases``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TESTDATA, make_sde, require

from scoresde.samplers.pc import ald, ancestral, euler_maruyama, langevin, reverse_diffusion

SDE_FILE = TESTDATA / "sde_reference.npz"
STEP_FILE = TESTDATA / "sampler_steps.npz"
TABLES = (
    "ve_discrete_sigmas",
    "vp_discrete_betas",
    "vp_alphas",
    "vp_alphas_cumprod",
    "vp_sqrt_alphas_cumprod",
    "vp_sqrt_1m_alphas_cumprod",
)
# float32 unit round-off: half the spacing of floats in [1, 2), the spacing in [0.5, 1)
U = 2.0**-24


@pytest.fixture(scope="module")
def sde_ref() -> dict[str, np.ndarray]:
    return dict(np.load(require(SDE_FILE)))


@pytest.fixture(scope="module")
def step_ref() -> dict[str, np.ndarray]:
    return dict(np.load(require(STEP_FILE)))


def _xt(ref: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(ref["x"]), torch.from_numpy(ref["t"])


def _score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The analytic score of the reference data: -x / (1 + t)."""
    return -x / (1 + t.reshape(-1, *([1] * (x.ndim - 1))))


def _sde_outputs(sde, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our counterpart of every ``<sde>_<name>`` array of sde_reference.npz."""
    s = _score(x, t)
    out = {}
    out["sde_drift"], out["sde_diffusion"] = sde.sde(x, t)
    out["marginal_mean"], out["marginal_std"] = sde.marginal_prob(x, t)
    out["prior_logp"] = sde.prior_logp(x)
    out["discretize_f"], out["discretize_G"] = sde.discretize(x, t)
    out["reverse_sde_drift"], out["reverse_sde_diffusion"] = sde.reverse_drift(x, t, s), sde.g(t)
    # the official reverse ODE returns the Python float 0. as its diffusion
    out["pflow_sde_drift"], out["pflow_sde_diffusion"] = (
        sde.probability_flow_drift(x, t, s),
        torch.zeros(()),
    )
    out["reverse_discretize_f"], out["reverse_discretize_G"] = sde.reverse_discretize(x, t, s)
    out["pflow_discretize_f"], out["pflow_discretize_G"] = sde.reverse_discretize(x, t, s, True)
    out["score"] = s
    return out


# ---- the float32 cancellation of the official code at t = 1e-5 ---------------------------------
def _sqrt_bound(v: float, d: float) -> float:
    """max |sqrt(v + e) - sqrt(v)| over |e| <= d (v > d)."""
    return d / (math.sqrt(v) + math.sqrt(v - d))


def _cancellation_cases(t: float) -> dict[str, tuple[float, float]]:
    """Float64 closed forms at ``t`` and the bound on the official float32 error, per entry.

    The official code forms ``1 - exp(u)`` with u ~ -1e-6: exp(u) lies in [0.5, 1), where float32
    values are 2^-24 apart, and its float32 exp is within 1 ulp, so exp(u) is off by at most 2^-24
    absolute; the subtraction is exact (Sterbenz), and u's own rounding (a few ulp of |u| ~ 1e-6)
    moves exp(u) by ~1e-13, so |delta(1 - exp(u))| <= 2^-24 (1 + 1e-5). That error is carried
    through the square roots and products below; the final float32 operations add 2 ulp of the
    result.
    """
    b0, b1, N = 0.1, 20.0, 1000
    lmc = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0  # log alpha(t)
    beta = b0 + t * (b1 - b0)
    d = U * (1 + 1e-5)
    v_vp = -math.expm1(2 * lmc)  # VP variance, sub-VP std
    disc = -math.expm1(4 * lmc)  # sub-VP: g^2 = beta (1 - alpha^4)
    g = math.sqrt(beta * disc)
    g_bound = math.sqrt(beta) * _sqrt_bound(disc, d)
    return {
        "vp_marginal_std": (math.sqrt(v_vp), _sqrt_bound(v_vp, d)),
        "subvp_marginal_std": (v_vp, d),
        "subvp_sde_diffusion": (g, g_bound),
        "subvp_reverse_sde_diffusion": (g, g_bound),
        "subvp_discretize_G": (g / math.sqrt(N), g_bound / math.sqrt(N)),
        "subvp_reverse_discretize_G": (g / math.sqrt(N), g_bound / math.sqrt(N)),
    }


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_sde_functions_match_official(sde_ref, name):
    """Every array of sde_reference.npz at rtol=1e-5, atol=1e-6 (prior_logp ~ -270..-930: rtol
    only), except the t = 1e-5 entries of ``_cancellation_cases`` (next test)."""
    x, t = torch.from_numpy(sde_ref["x"]), torch.from_numpy(sde_ref["t"])
    assert t[0].item() == pytest.approx(1e-5)
    ours = _sde_outputs(make_sde(name), x, t)
    special = _cancellation_cases(t[0].item())
    keys = [k for k in sde_ref if k.startswith(f"{name}_") and k not in TABLES]
    assert sorted(keys) == sorted(f"{name}_{k}" for k in ours)  # every array is compared
    for key in keys:
        ref = torch.from_numpy(sde_ref[key])
        got = ours[key.removeprefix(f"{name}_")]
        assert got.dtype == torch.float32, key
        got = got.reshape(ref.shape)
        if key in special:
            got, ref = got[1:], ref[1:]
        atol = 0.0 if key.endswith("prior_logp") else 1e-6
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=atol, msg=key)


@pytest.mark.parametrize("key", list(_cancellation_cases(1e-5)))
def test_small_t_entries_are_exact_and_official_within_float32_bound(sde_ref, key):
    """At t = 1e-5 ours equal the float64 closed form to float32 round-off (expm1: a few ulp, so
    rtol 1e-6 ~ 17 ulp); the official value differs from it by at most the cancellation bound
    (a few percent here), and by more than our own error."""
    name = key.split("_")[0]
    x, t = torch.from_numpy(sde_ref["x"]), torch.from_numpy(sde_ref["t"])
    exact, bound = _cancellation_cases(t[0].double().item())[key]
    ours = _sde_outputs(make_sde(name), x, t)[key.removeprefix(f"{name}_")][0].item()
    official = float(sde_ref[key][0])
    assert ours == pytest.approx(exact, rel=1e-6, abs=0)
    assert abs(official - exact) <= bound + 2 * U * abs(exact), (official, exact, bound)
    assert abs(official - exact) > abs(ours - exact)


def test_discrete_tables_match_official(sde_ref):
    """The SMLD sigmas and DDPM tables (ours float64, official float32) at rtol=1e-5, atol=1e-6."""
    ve, vp = make_sde("ve"), make_sde("vp")
    ours = {
        "ve_discrete_sigmas": ve.discrete_sigmas,
        "vp_discrete_betas": vp.discrete_betas,
        "vp_alphas": vp.alphas,
        "vp_alphas_cumprod": vp.alphas_cumprod,
        "vp_sqrt_alphas_cumprod": vp.alphas_cumprod.sqrt(),
        "vp_sqrt_1m_alphas_cumprod": (1 - vp.alphas_cumprod).sqrt(),
    }
    assert sorted(ours) == sorted(TABLES)
    assert set(sde_ref) == set(TABLES) | {"x", "t"} | {
        f"{n}_{k}" for n in ("ve", "vp", "subvp") for k in _sde_outputs(ve, *_xt(sde_ref))
    }
    for key, got in ours.items():
        ref = torch.from_numpy(sde_ref[key]).double()
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6, msg=key)


# ---- one sampler step with the official noise ---------------------------------------------------
def _pflow_reverse_diffusion(sde, score_fn, x, t, noise):
    """The official ReverseDiffusionPredictor(probability_flow=True): G = 0, noise drawn unused."""
    f, G = sde.reverse_discretize(x, t, score_fn(x, t), probability_flow=True)
    x_mean = x - f
    return x_mean + G.reshape(-1, 1, 1, 1) * noise, x_mean


STEPS = {
    "euler_maruyama": lambda sde, x, t, z: euler_maruyama(sde, _score, x, t, noise=z),
    "reverse_diffusion": lambda sde, x, t, z: reverse_diffusion(sde, _score, x, t, noise=z),
    "reverse_diffusion_pflow": lambda sde, x, t, z: _pflow_reverse_diffusion(sde, _score, x, t, z),
    "ancestral_sampling": lambda sde, x, t, z: ancestral(sde, _score, x, t, noise=z),
    "langevin": lambda sde, x, t, z: langevin(sde, _score, x, t, 0.16, 1, noise=z),
    "langevin_nsteps2": lambda sde, x, t, z: langevin(sde, _score, x, t, 0.16, 2, noise=z),
    "ald": lambda sde, x, t, z: ald(sde, _score, x, t, 0.16, 1, noise=z),
}
STORED = [
    (name, step)
    for name in ("ve", "vp", "subvp")
    for step in STEPS
    if name != "subvp" or step in ("euler_maruyama", "reverse_diffusion", "reverse_diffusion_pflow")
]


def test_every_stored_step_is_covered(step_ref):
    prefixes = {k.rsplit("_noise", 1)[0] for k in step_ref if k.endswith("_noise")}
    assert prefixes == {f"{name}_{step}" for name, step in STORED}


@pytest.mark.parametrize("name,step", STORED)
def test_sampler_step_matches_official(step_ref, name, step):
    """One step from x_in at t = 0.5 with the saved noise: x and x_mean at rtol=atol=1e-5."""
    x, t = torch.from_numpy(step_ref["x_in"]), torch.from_numpy(step_ref["t"])
    prefix = f"{name}_{step}"
    z = torch.from_numpy(step_ref[f"{prefix}_noise"])
    out, mean = STEPS[step](make_sde(name), x, t, z)
    assert out.dtype == torch.float32
    ref_x = torch.from_numpy(step_ref[f"{prefix}_x_out"])
    ref_mean = torch.from_numpy(step_ref[f"{prefix}_x_mean_out"])
    torch.testing.assert_close(out, ref_x, rtol=1e-5, atol=1e-5, msg=f"{prefix} x")
    torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-5, msg=f"{prefix} x_mean")


def test_subvp_correctors_and_ancestral(step_ref):
    """Where the official code fails on sub-VP, ours: ancestral raises ValueError (no discrete
    chain); the correctors run with the VP alphas of the same beta schedule."""
    x, t = torch.from_numpy(step_ref["x_in"]), torch.from_numpy(step_ref["t"])
    sde = make_sde("subvp")
    with pytest.raises(ValueError, match="ancestral"):
        ancestral(sde, _score, x, t)
    z = torch.zeros_like(x)
    out, mean = langevin(sde, _score, x, t, 0.16, 1, noise=z)
    assert torch.isfinite(out).all() and torch.equal(out, mean)
