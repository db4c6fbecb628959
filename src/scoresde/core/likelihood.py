"""Exact log-likelihood through the probability-flow ODE, and bits/dim.

The probability-flow ODE  dx/dt = f~(x, t) = f(t) x - g(t)^2 s(x, t) / 2  (the paper's Eq. 13) moves
p_eps into p_T. Along one of its trajectories the instantaneous change of variables gives

    log p_eps(x(eps)) = log p_T(x(T)) + int_eps^T div f~(x(t), t) dt          (the paper's Eq. 39),

so one ODE solve of the pair (x, delta_logp) from eps to T, with d(delta_logp)/dt = div f~, gives
log p_eps(x) = prior_logp(z) + delta_logp with z = x(T). The divergence is either exact (one
vector-Jacobian product per dimension, for small D) or the Skilling-Hutchinson estimate eps^T J eps
with a probe eps (Gaussian or Rademacher) drawn once per solve, as in the paper. Several probes
ride along in the same solve: the trajectory x(t) does not depend on the probe, so the K
integrals are K independent, unbiased estimates of the same log p_eps(x); their mean and standard
error come from :func:`log_likelihood_estimates`. delta_logp is a quadrature (it feeds no
derivative), so dopri5's second stage, whose weight in the solution and in the error estimate is
zero, takes the drift alone: a forward pass without a vector-Jacobian product, one evaluation in
six, with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .checks import (
    CheckedScore,
    check_eps,
    check_finite,
    check_int,
    check_range,
    check_shape,
    lookup,
)
from .losses import importance_weight, t_of_u
from .ode import integrate
from .sde import SDE, bcast

__all__ = [
    "log_likelihood",
    "log_likelihood_estimates",
    "elbo",
    "elbo_estimates",
    "bits_per_dim",
    "div_exact",
    "div_hutchinson",
    "PROBES",
    "DIVERGENCES",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Field = Callable[..., Tensor]


# ---- divergence estimators ---------------------------------------------------------------------
def _flat_sum(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).sum(dim=1)


def _quadratic_forms(fx: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """``v_k^T J v_k`` for each probe ``v_k`` in ``probes`` (K, B, ...), J = d fx / d x: ``(K, B)``.

    One vector-Jacobian product per probe through the graph of ``fx``; gradients flow to ``x``
    only, so parameters of the field never accumulate ``.grad``.
    """
    out = []
    for k, v in enumerate(probes):
        (vJ,) = torch.autograd.grad(
            fx, x, grad_outputs=v, retain_graph=k < len(probes) - 1, materialize_grads=True
        )
        out.append(_flat_sum(vJ * v))
    return torch.stack(out)


def _forward(f: Field, x: Tensor, args: tuple) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    return x, f(x, *args)


def div_exact(f: Field, x: Tensor, *args) -> tuple[Tensor, Tensor]:
    """The field ``f(x, *args)`` and its exact divergence ``tr J_f(x)`` per example.

    Returns ``(f(x), div)`` shaped ``(like x, (B,))``; J is the Jacobian with respect to x.

    ``tr J = sum_d e_d^T J e_d``: one vector-Jacobian product per dimension with the basis
    vector e_d, so the cost is one forward and D backward passes; meant for small D. Works under
    ``torch.no_grad()``; the returned tensors are detached.
    """
    with torch.enable_grad():
        x, fx = _forward(f, x, args)
        D = x[0].numel()
        eye = torch.eye(D, dtype=x.dtype, device=x.device).reshape(D, 1, *x.shape[1:])
        div = _quadratic_forms(fx, x, eye.expand(D, *x.shape)).sum(dim=0)
    return fx.detach(), div.detach()


def div_hutchinson(f: Field, x: Tensor, probe: Tensor, *args) -> tuple[Tensor, Tensor]:
    """The field ``f(x, *args)`` and Hutchinson estimates ``probe^T J_f(x) probe`` of div f.

    ``probe`` is shaped like ``x`` (one estimate per example, ``(B,)``) or ``(K, *x.shape)``
    (K estimates per example from one forward pass, ``(K, B)``). The estimate is unbiased when
    the probe has zero mean and identity covariance (Gaussian or Rademacher). Works under
    ``torch.no_grad()``; the returned tensors are detached.
    """
    single = probe.shape == x.shape
    probes = probe.unsqueeze(0) if single else probe
    if probes.shape[1:] != x.shape:
        raise ValueError(f"probe must be shaped like x {tuple(x.shape)} or (K, *x.shape)")
    with torch.enable_grad():
        x, fx = _forward(f, x, args)
        est = _quadratic_forms(fx, x, probes.to(x))
    return fx.detach(), (est[0] if single else est).detach()


def _gaussian(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _rademacher(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    r = torch.randint(0, 2, shape, generator=generator, device=like.device, dtype=like.dtype)
    return 2 * r - 1


PROBES: dict[str, Callable[[tuple[int, ...], Tensor, torch.Generator | None], Tensor]] = {
    "gaussian": _gaussian,
    "rademacher": _rademacher,
}
DIVERGENCES = ("exact", *PROBES)


# ---- log-likelihood ----------------------------------------------------------------------------
def _check_inputs(
    sde: SDE, x: Tensor, divergence: str, eps: float, probes: int, tols: tuple[float, float]
) -> tuple:
    """``(eps, probes)`` as numbers after the boundary checks of the arguments (``tols``: the
    solver's ``(rtol, atol)``, which must not be negative)."""
    lookup(dict.fromkeys(DIVERGENCES), divergence, "divergence", callables=False)
    eps = check_eps(sde, eps, default=False)
    probes = check_int("probes", probes, 1)
    check_range("rtol", tols[0], 0)
    check_range("atol", tols[1], 0)
    if not isinstance(x, Tensor) or x.ndim < 1 or not x.is_floating_point():
        raise ValueError(
            f"x must be a floating (B, ...) tensor (dequantize integer data first), got "
            f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}"
        )
    check_shape(x.shape, "x.shape")
    check_finite(x, "x")
    return eps, probes


def _probe(
    divergence: str, x: Tensor, probes: int, generator: torch.Generator | None, noise: Tensor | None
) -> Tensor | None:
    """The probes of one solve, ``(K, *x.shape)``, or None for the exact divergence."""
    if noise is None:
        if divergence == "exact":
            return None
        return PROBES[divergence]((probes, *x.shape), x, generator)
    if divergence == "exact":
        raise ValueError("noise (a Hutchinson probe) makes no sense with divergence='exact'")
    noise = noise.to(device=x.device, dtype=x.dtype)
    noise = noise.unsqueeze(0) if noise.shape == x.shape else noise
    if noise.shape[1:] != x.shape or probes not in (1, noise.shape[0]):
        raise ValueError(
            f"noise must be shaped like x {tuple(x.shape)} or (K, *x.shape) with K = probes "
            f"({probes}), got {tuple(noise.shape)}"
        )
    return noise


def log_likelihood_estimates(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    divergence: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    probes: int = 1,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor, int]:
    """The K per-probe estimates of log p_eps(x): ``(logp (K, B), z, nfe)``.

    Same arguments as :func:`log_likelihood`; K = ``probes`` (1 for the exact divergence). The
    rows are independent given x, so ``logp.mean(0)`` is the estimate and
    ``logp.std(0) / sqrt(K)`` its standard error.
    """
    eps, probes = _check_inputs(sde, x, divergence, eps, probes, (rtol, atol))
    probe = _probe(divergence, x, probes, generator, noise)
    score = CheckedScore(score_fn)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)

    def drift(x: Tensor, t: Tensor) -> Tensor:  # f~(x, t) of the paper's Eq. 13
        return sde.probability_flow_drift(x, t, score(x, t))

    def func(t: Tensor, y: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        tt = ones * t  # ode.integrate keeps t inside [eps, T]
        if probe is None:
            dx, div = div_exact(drift, y[0], tt)
            return dx, div.unsqueeze(0)
        return div_hutchinson(drift, y[0], probe, tt)

    def lean(t: Tensor, y: tuple[Tensor, Tensor]) -> tuple[Tensor]:  # the drift alone
        with torch.no_grad():
            return (drift(y[0], ones * t),)

    K = 1 if probe is None else probe.shape[0]
    with torch.inference_mode(False), score:
        y0 = (x.detach().clone(), x.new_zeros(K, x.shape[0]))
        (z, delta_logp), nfe = integrate(func, y0, eps, sde.T, method, rtol, atol, steps, lean)
    score.finish()
    return sde.prior_logp(z) + delta_logp, z, nfe  # Eq. 39: log p_T(z) + int div


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    divergence: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    probes: int = 1,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Log-density (nats) of ``x`` under the probability-flow ODE model at time ``eps``.

    Integrates the probability-flow ODE jointly with the divergence of its drift from ``eps`` to
    T, then adds the prior log-density of the end point (the paper's Eq. 39; see the module doc).

    Args:
        sde: the SDE; its prior stands in for p_T.
        score_fn: ``score_fn(x, t) -> like x``, the (model) score of p_t.
        x: ``(B, ...)`` float tensor, the points, read as samples at time ``eps``.
        divergence: ``"exact"`` (D backward passes per evaluation; small D), ``"gaussian"`` or
            ``"rademacher"`` (Hutchinson, probe drawn once per solve).
        rtol, atol, method, steps: the ODE solver, see :func:`scoresde.core.ode.integrate`
            (``method="scipy-RK45"`` reproduces the official code).
        eps: start time, in (0, T).
        probes: number K of Hutchinson probes carried by the one solve; the result is the mean
            of the K estimates (see :func:`log_likelihood_estimates` for each of them).
        generator: random source of the probes.
        noise: an explicit probe, shaped like ``x`` or ``(K, *x.shape)``, instead of a draw.

    Returns:
        ``(logp, z, nfe)``: ``logp`` ``(B,)`` in nats (the density of ``x`` itself), ``z`` the
        end point at T shaped like ``x``, ``nfe`` the number of drift evaluations (each one
        forward pass of ``score_fn``). Results are detached; works under ``torch.no_grad()``.
    """
    logp, z, nfe = log_likelihood_estimates(
        sde, score_fn, x, divergence, rtol, atol, eps, method, steps, probes, generator, noise
    )
    return logp.mean(dim=0), z, nfe


# ---- bits per dimension and dequantization -----------------------------------------------------
def bits_per_dim(
    logp: Tensor, x_shape: Sequence[int] | torch.Size | int, scale: float = 1.0, bits: int = 8
) -> Tensor:
    """Bits per dimension of ``bits``-bit data from the log-density of its model-space image.

    The data x_int in {0, ..., 2^bits - 1}^D is dequantized to u = (x_int + U[0,1)) / 2^bits in
    [0, 1)^D and fed to the model as y = scale * u + shift; ``logp`` = log p_y(y) in nats. By the
    change of variables the density of the dequantized data on the integer scale v = 2^bits u is
    p_v = p_y * scale^D / 2^(bits D), hence (DESIGN section 4)

        bpd = -log2 p_v / D = -logp / (D ln 2) - log2(scale) + bits.

    Args:
        logp: ``(B,)`` log p_y in nats.
        x_shape: the data's ``(B, ...)`` shape, or the number of dimensions D itself.
        scale: the factor a of y = a u + b (1 for data in [0, 1), 2 for data centred in [-1, 1)).
        bits: bits per stored value (8 for images).
    """
    D = x_shape if isinstance(x_shape, int) else math.prod(tuple(x_shape)[1:])
    if D < 1 or not scale > 0:
        raise ValueError(f"need D >= 1 and scale > 0, got D={D} (from {x_shape!r}), scale={scale}")
    return -logp / (D * math.log(2)) - math.log2(scale) + bits


# ---- the evidence lower bound of the reverse SDE -----------------------------------------------
# The model: the reverse-time SDE  dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dw  from the prior pi
# at T down to eps; p^SDE_eps its density at eps. The inference process is the forward SDE
# started at x at time eps: x_t ~ p_{eps,t}(x_t | x) = N(a x, c I) with the kernel of the SDE
#
#     a(t) = alpha(t) / alpha(eps),   c(t) = sigma(t)^2 - a(t)^2 sigma(eps)^2.
#
# Girsanov's theorem (Song et al. 2021b, Thm 1 per example; Huang et al. 2021, Thm 3) gives for
# every score s, with div(f(t) x) = D f(t) and grad log p_{eps,t}(x_t | x) = -z / sqrt(c) where
# x_t = a x + sqrt(c) z,
#
#     log p^SDE_eps(x) >= E[log pi(x_T)] + int D f dt - 1/2 int g^2 E[h] dt,           (ELBO)
#     h = |s - grad log p_{eps,t}|^2 - |grad log p_{eps,t}|^2 = |s|^2 + 2 s . z / sqrt(c),
#
# integrals over [eps, T]. Estimator, unbiased at each step (its mean is the bound):
# 1. Antithetic noise. 2 s . z / sqrt(c) has variance of order 1 / c(t), unbounded as t -> eps;
#    averaging h over the pair z, -z cancels it, leaving (|s_+|^2 + |s_-|^2) / 2 +
#    (s_+ - s_-) . z / sqrt(c), s_+- = s(a x +- sqrt(c) z, t): bounded variance.
# 2. A control variate. For the exact score of a reference model, data N(0, I) with marginals
#    p^ref_t = N(0, v(t) I), v = alpha^2 + sigma^2, the bound is known: the reverse SDE matches
#    the time reversal of the forward process but for its start (pi instead of p^ref_T), so
#    ELBO_ref(x) = log p^ref_eps(x) + E[log pi(x_T) - log p^ref_T(x_T)]. Then
#        ELBO(x) = ELBO_ref(x) - 1/2 int g^2 E[h - h_ref] dt,
#    the exact terms E[log pi] and int D f cancelling. h_ref is taken at the same (t, z), with
#    s_ref(y) = -y / v in closed form: (a^2 |x|^2 + c |z|^2) / v^2 - 2 |z|^2 / v (no score call);
#    h - h_ref vanishes where p_t is close to N(0, v I), near T, noise included.
# 3. The time integral: t ~ U(eps, T) or, with importance sampling, t ~ q(t) ~ g^2 / sigma^2
#    (uniform in log-SNR, ``losses.sample_t``), each weighted by 1 / q(t).
# 4. Stratified times. Of K draws per example, draw k takes its quantile u in [k/K, (k+1)/K):
#    the mean over k is still unbiased (each stratum holds 1/K of the density), and the part of
#    the variance that comes from where t falls, most of it on images, shrinks with K (MNIST,
#    K = 16: the std of the mean 0.2-0.26 bits/dim against 1.5-1.7 for independent draws).
ELBO_EPS = 1e-5  # the default start time: that of log_likelihood, so both describe p_eps


def _kernel_from(sde: SDE, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, c)`` of the forward kernel ``p_{s,t}(x_t | x_s) = N(a x_s, c I)``, each ``(B,)``."""
    a = torch.exp(sde.log_alpha(t) - sde.log_alpha(s))
    c = sde.sigma(t) ** 2 - a**2 * sde.sigma(s) ** 2
    return a, c.clamp(min=torch.finfo(c.dtype).tiny)  # c = 0 only at t = s exactly


def _gauss_expect(x2: Tensor, D: int, a: Tensor, c: Tensor, v: Tensor) -> Tensor:
    """``E[log N(y; 0, v I)]`` for ``y ~ N(a x, c I)`` in D dimensions, ``x2 = |x|^2``."""
    return -0.5 * D * torch.log(2 * math.pi * v) - (a**2 * x2 + D * c) / (2 * v)


def _reference_var(sde: SDE, t: Tensor) -> Tensor:
    """``v(t)``: p^ref_t = N(0, v I) is the marginal of data N(0, I)."""
    return sde.alpha(t) ** 2 + sde.sigma(t) ** 2


def _elbo_reference(sde: SDE, x: Tensor, eps: float) -> Tensor:
    """``ELBO_ref(x) = log p^ref_eps(x) + E[log pi(x_T) - log p^ref_T(x_T) | x]``, ``(B,)``."""
    e, T = (torch.full((x.shape[0],), v, dtype=x.dtype, device=x.device) for v in (eps, sde.T))
    a, c = _kernel_from(sde, e, T)
    x2, D, zero = _flat_sum(x**2), x[0].numel(), torch.zeros_like(a)
    prior = torch.full_like(a, sde.prior_std**2)
    log_ref = _gauss_expect(x2, D, torch.ones_like(a), zero, _reference_var(sde, e))
    return (
        log_ref
        + _gauss_expect(x2, D, a, c, prior)
        - _gauss_expect(x2, D, a, c, _reference_var(sde, T))
    )


def _elbo_integrand(
    sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, z: Tensor, eps: float
) -> Tensor:
    """``g^2 (h - E[h_ref | t]) / 2`` with the antithetic h (steps 1-2 above), ``(B,)``, from
    one call of ``score`` on the 2B points ``a x +- sqrt(c) z``."""
    a, c = _kernel_from(sde, torch.full_like(t, eps), t)
    sqrt_c, v = c.sqrt(), _reference_var(sde, t)
    mean, noise = bcast(a, x) * x, bcast(sqrt_c, x) * z
    s_plus, s_minus = score(torch.cat([mean + noise, mean - noise]), torch.cat([t, t])).chunk(2)
    h = 0.5 * (_flat_sum(s_plus**2) + _flat_sum(s_minus**2))
    h = h + _flat_sum((s_plus - s_minus) * z) / sqrt_c
    z2 = _flat_sum(z**2)  # h_ref at the same points, s_ref(y) = -y / v
    h_ref = (a**2 * _flat_sum(x**2) + c * z2) / v**2 - 2 * z2 / v
    return 0.5 * sde.g(t) ** 2 * (h - h_ref)


def elbo_estimates(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    samples: int = 1,
    importance: bool = True,
    generator: torch.Generator | None = None,
    eps: float | None = None,
    stratified: bool = True,
) -> tuple[Tensor, int]:
    """The ``samples`` estimates of the ELBO, one per draw: ``(elbo (K, B), nfe)``.

    Same arguments as :func:`elbo`; K = ``samples``. Row k uses its own time and noise per
    example (the K x B time quantiles first, then the noise of row k = 0, 1, ...), and
    ``elbo.mean(0)`` is the estimate. With ``stratified=False`` the rows are independent and
    ``elbo.std(0) / sqrt(K)`` is its standard error; stratified (row k's time from the k-th of K
    equal parts of its density), that overstates it.
    """
    eps, _ = _check_inputs(sde, x, "exact", ELBO_EPS if eps is None else eps, 1, (0.0, 0.0))
    samples = check_int("samples", samples, 1)
    for name, flag in (("importance", importance), ("stratified", stratified)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    score = CheckedScore(score_fn)
    reference = _elbo_reference(sde, x, eps)
    u = torch.rand((samples, x.shape[0]), generator=generator, device=x.device, dtype=x.dtype)
    if stratified:
        u = (torch.arange(samples, device=x.device, dtype=x.dtype)[:, None] + u) / samples
    rows = []
    with score:
        for u_k in u:
            t = t_of_u(sde, u_k, eps, importance)
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            w = (sde.T - eps) * (importance_weight(sde, t, eps) if importance else 1.0)
            rows.append(reference - w * _elbo_integrand(sde, score, x, t, z, eps))
    return torch.stack(rows), score.finish()


def elbo(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    samples: int = 1,
    importance: bool = True,
    generator: torch.Generator | None = None,
    eps: float | None = None,
    stratified: bool = True,
) -> tuple[Tensor, int]:
    """Per-example evidence lower bound on log p_eps(x) (nats) of the reverse-time SDE model.

    The bound of Song et al. 2021b (Theorem 1, per example; the ELBO of Huang et al. 2021) for
    the reverse SDE that runs from the prior at T to ``eps`` with ``score_fn``; the forward
    process starts at x at time ``eps`` (the kernel p_{eps,t}), so the bound is on the SDE's
    density of ``x`` at ``eps`` (:func:`log_likelihood` gives the ODE's there). In denoising form

        log p^SDE_eps(x) >= E[log pi(x_T)] + int D f dt
                        - 1/2 int g^2 E[|s - grad log p_{eps,t}|^2 - |grad log p_{eps,t}|^2] dt

    (integrals over [eps, T]); the first two terms are exact, the last is a Monte Carlo
    average over t and x_t with antithetic noise and a Gaussian control variate (see the
    comment above :func:`_kernel_from`). The
    estimate is unbiased: its mean is the bound. With the exact score the bound falls short of
    log p_eps(x) only by E[log p_T(x_T) - log pi(x_T)], the prior mismatch at T.

    It bounds the reverse SDE's density, not the probability-flow ODE's: with the same learned
    score the two are different models, and the ELBO may exceed the ODE's
    :func:`log_likelihood` (a linear score -x / w(t) gives both in closed form; see
    ``tests/core/test_elbo.py``).

    Args:
        sde: the SDE; its prior stands in for p_T.
        score_fn: ``score_fn(x, t) -> like x``, the (model) score of p_t.
        x: ``(B, ...)`` float tensor, the points, read as samples at time ``eps``.
        samples: number of draws of (t, x_t) per example, averaged (see ``stratified``).
        importance: draw t from q(t) ~ g(t)^2 / sigma(t)^2 (the likelihood weighting; uniform
            in log-SNR) instead of U(eps, T); the mean is the same, the variance smaller when
            the data has structure below the scale of the prior.
        generator: random source of t and the noise.
        eps: start time in (0, T); ``None`` means 1e-5, the default of :func:`log_likelihood`.
        stratified: draw k of the ``samples`` takes its time from the k-th of as many equal
            parts of the time density (still unbiased; far smaller variance for several
            samples); ``False``: independent draws.

    Returns:
        ``(elbo, nfe)``: ``elbo`` ``(B,)`` in nats, ``nfe`` the number of ``score_fn`` calls
        (``samples``, each on a batch of 2B points). Differentiable in the score's parameters
        where gradients are enabled; wrap the call in ``torch.no_grad()`` to evaluate.
    """
    est, nfe = elbo_estimates(sde, score_fn, x, samples, importance, generator, eps, stratified)
    return est.mean(dim=0), nfe
