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
error come from :func:`log_likelihood_estimates`.
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
from .ode import integrate
from .sde import SDE

__all__ = [
    "log_likelihood",
    "log_likelihood_estimates",
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

    K = 1 if probe is None else probe.shape[0]
    with torch.inference_mode(False), score:
        y0 = (x.detach().clone(), x.new_zeros(K, x.shape[0]))
        (z, delta_logp), nfe = integrate(func, y0, eps, sde.T, method, rtol, atol, steps)
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
