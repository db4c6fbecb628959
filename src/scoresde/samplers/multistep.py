"""Multistep samplers of the probability-flow ODE: UniPC, DEIS, iPNDM and linear multistep (lms).

Each reuses the model outputs of earlier steps, so one step costs one score evaluation. All are
written with the SDE's own schedules (see :mod:`._shared`), so one code path serves VE, VP and
sub-VP, and all of them are exponential integrators of the same exact solution,

    ``y_t = y_s + int_{sigma_s}^{sigma_t} eps(sigma) d sigma``,   ``y = x / alpha``,
    ``sigma = sigma_edm = sigma / alpha = exp(-lambda)``,

where the noise prediction ``eps = -sigma(t) s(x, t)`` is also EDM's slope ``dy / d sigma_edm``.
They differ in how ``eps`` (or the data prediction ``x0``) is interpolated over the step:

* DEIS tAB (Zhang & Chen 2022): a Lagrange polynomial in ``t`` through the last ``order`` values;
* lms (k-diffusion's ``sample_lms``): a Lagrange polynomial in ``sigma_edm``;
* iPNDM (Zhang & Chen 2022): the fixed Adams-Bashforth weights of equal steps, times the step in
  ``sigma_edm`` (lower orders while the history is short);
* UniPC (Zhao et al. 2023): ``x0`` in ``lambda``, predictor UniP and corrector UniC (variants
  ``bh1``, ``bh2``).

The weights of every step depend on the grid only: they are computed once per call, in float64
on the host (the polynomial integrals by Gauss-Legendre quadrature in ``lambda``, exact to
round-off for these smooth integrands), and the loop does tensor arithmetic only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core.checks import CheckedScore, lookup, start_state
from ..core.sde import SDE
from ._shared import (
    F64,
    Callback,
    Node,
    ScoreFn,
    data_pred,
    end_node,
    finish,
    nodes,
    noise_pred,
    report,
)
from .grids import time_grid

__all__ = ["sample_unipc", "sample_deis", "sample_ipndm", "sample_lms", "UNIPC_VARIANTS"]

UNIPC_VARIANTS = ("bh1", "bh2")
_QUADRATURE = np.polynomial.legendre.leggauss(32)  # nodes and weights on [-1, 1]

# Adams-Bashforth weights for equal steps (iPNDM), newest value first.
_AB = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def check_order(order: int, valid: tuple[int, ...]) -> int:
    """``order`` if it is one of ``valid``; one ``ValueError`` listing them otherwise."""
    if isinstance(order, bool) or not isinstance(order, int) or order not in valid:
        names = ", ".join(map(str, valid[:-1])) + f" or {valid[-1]}"
        raise ValueError(f"order must be {names}, got {order!r}")
    return order


def combine(weights: list[float] | list[Tensor], values: list[Tensor]) -> Tensor:
    """``sum_j w_j v_j`` for host weights or 0-d tensors (:func:`._shared.on_device`); one
    fused product-sum per term after the first, into the one new tensor."""
    out = weights[0] * values[0]
    for w, v in zip(weights[1:], values[1:]):
        out = out.addcmul_(w, v) if isinstance(w, Tensor) else out.add_(v, alpha=w)
    return out


# ---- exponential Adams-Bashforth in eps: DEIS, lms, iPNDM ---------------------------------------
def _lagrange(u: Tensor, knots: list[float]) -> Tensor:
    """The Lagrange basis polynomials of ``knots`` at the points ``u``: ``(len(knots), len(u))``."""
    rows = []
    for j, kj in enumerate(knots):
        row = torch.ones_like(u)
        for m, km in enumerate(knots):
            if m != j:
                row = row * (u - km) / (kj - km)
        rows.append(row)
    return torch.stack(rows)


def _eps_weights(sde: SDE, lam: list[float], i: int, k: int, variable: str) -> list[float]:
    """Weights ``c_j`` of ``y_{i+1} = y_i + sum_j c_j eps_{i-j}`` (newest first) for the step
    ``lambda_i -> lambda_{i+1}``: ``c_j = -int e^{-lambda} l_j(u(lambda)) d lambda``, ``l_j`` the
    Lagrange basis through the last ``k`` nodes in ``u = t`` (DEIS) or ``u = sigma_edm`` (lms)."""
    a, b = lam[i], lam[i + 1]
    x, w = (torch.from_numpy(v) for v in _QUADRATURE)
    q = 0.5 * (b - a) * x + 0.5 * (a + b)  # Gauss-Legendre nodes in lambda
    knot_lam = torch.tensor(lam[i - k + 1 : i + 1][::-1], dtype=F64)
    to_u = sde.t_of_log_snr if variable == "t" else lambda v: torch.exp(-v)
    basis = _lagrange(to_u(q), to_u(knot_lam).tolist())
    return (-(0.5 * (b - a)) * (basis * (torch.exp(-q) * w)).sum(1)).tolist()


def _ab_plan(sde: SDE, line: list[Node], order: int, variable: str) -> list[list[float]]:
    """For each step the weights of the ``eps`` history (newest first), order capped by it."""
    lam = [n.lam for n in line]
    plan = []
    for i in range(len(line) - 1):
        k = min(order, i + 1)
        if variable == "fixed":  # iPNDM: equal-step weights times the step in sigma_edm
            dsig = line[i + 1].sigma_edm - line[i].sigma_edm
            plan.append([dsig * c for c in _AB[k]])
        else:
            plan.append(_eps_weights(sde, lam, i, k, variable))
    return plan


def _run_ab(
    score: CheckedScore,
    x: Tensor,
    line: list[Node],
    plan: list[list[float]],
    callback: Callback | None,
) -> Tensor:
    """``y_{i+1} = y_i + sum_j c_ij eps_{i-j}`` in ``y = x / alpha``, one evaluation per step."""
    hist: list[Tensor] = []
    y = x / line[0].alpha
    for i, c in enumerate(plan):
        hist = [noise_pred(score, line[i].alpha * y, line[i])] + hist[: len(c) - 1]
        y = y + combine(c, hist)
        x = line[i + 1].alpha * y
        report(callback, i, line[i + 1].t, x, x)
    return x


def _sample_ab(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    variable: str,
    order: int,
    grid: str | Tensor,
    steps: int | None,
    eps: float | None,
    denoise: bool,
    start: tuple,
) -> tuple[Tensor, int]:
    """The exponential Adams-Bashforth family: plan on the grid, then one loop."""
    callback, z, generator, device, dtype = start
    options = {"rho": 7.0} if isinstance(grid, str) and grid == "edm" else {}
    t, eps = time_grid(sde, grid, steps, eps, default=20, **options)
    line = nodes(sde, t)
    plan = _ab_plan(sde, line, order, variable)
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    x = _run_ab(score, x, line, plan, callback)
    return finish(score, x, end_node(sde, eps), denoise)


def sample_deis(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    steps: int | None = None,
    order: int = 3,
    grid: str | Tensor = "logSNR",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """DEIS tAB (Zhang & Chen 2022, Eq. 14): the exponential integrator of the probability-flow
    ODE with ``eps`` extrapolated by the Lagrange polynomial in ``t`` through its last ``order``
    values; ``order=1`` is DDIM. Convergence order ``order``.

    Args:
        steps: steps (= evaluations) from T to ``eps`` (default 20).
        order: 1, 2 or 3; the first steps use the lower orders the history allows.
        grid: a name in :data:`scoresde.samplers.grids.GRIDS` or a decreasing tensor of times
            from T to ``eps`` (``eps=None``: its last time; ``steps=None``: its intervals).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``.
    """
    order = check_order(order, (1, 2, 3))
    start = (callback, z, generator, device, dtype)
    return _sample_ab(sde, score_fn, shape, "t", order, grid, steps, eps, denoise, start)


def sample_lms(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    steps: int | None = None,
    order: int = 4,
    grid: str | Tensor = "edm",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Linear multistep in ``sigma_edm`` (k-diffusion's ``sample_lms``): the variable-step
    Adams-Bashforth method of EDM's ODE ``dy / d sigma_edm = eps`` in ``y = x / alpha``, its
    weights the integrals of the Lagrange basis through the last ``order`` noise levels.
    Convergence order ``order``.

    Args:
        steps: steps (= evaluations) from T to ``eps`` (default 20).
        order: 1 to 4; the first steps use the lower orders the history allows.
        grid: EDM's grid (``rho = 7``) by default; a name in
            :data:`scoresde.samplers.grids.GRIDS` or a decreasing tensor of times.
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation; k-diffusion's
            last step to sigma = 0).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``.
    """
    order = check_order(order, (1, 2, 3, 4))
    start = (callback, z, generator, device, dtype)
    return _sample_ab(sde, score_fn, shape, "sigma", order, grid, steps, eps, denoise, start)


def sample_ipndm(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    steps: int | None = None,
    order: int = 4,
    grid: str | Tensor = "edm",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """iPNDM (Zhang & Chen 2022): Adams-Bashforth with the fixed weights of equal steps
    (``1``; ``3/2, -1/2``; ``23/12, -16/12, 5/12``; ``55/24, -59/24, 37/24, -9/24``) on EDM's ODE
    in ``sigma_edm``, lower orders while the history is short (no Runge-Kutta warm start).

    The fixed weights are exact for equal steps only: on a grid ``sigma_i = phi(i / N)`` with
    smooth ``phi`` the moment conditions beyond the second fail by O(1/N), so the method
    converges with order ``min(order, 2)`` (the tests fit 2 for ``order >= 2``); at the small N it
    is used with (5-20 steps) the higher weights still pay off. :func:`sample_lms` is the same
    method with the weights of the actual steps.

    Args:
        steps: steps (= evaluations) from T to ``eps`` (default 20).
        order: 1 to 4.
        grid: EDM's grid (``rho = 7``) by default; a name in
            :data:`scoresde.samplers.grids.GRIDS` or a decreasing tensor of times.
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``.
    """
    order = check_order(order, (1, 2, 3, 4))
    start = (callback, z, generator, device, dtype)
    return _sample_ab(sde, score_fn, shape, "fixed", order, grid, steps, eps, denoise, start)


# ---- UniPC ----------------------------------------------------------------------------------
def _unipc_weights(line: list[Node], i: int, p: int, variant: str) -> tuple[list, list]:
    """UniPC's step ``s = line[i] -> t = line[i + 1]`` with ``p`` data predictions (newest
    first) as weights (Zhao et al. 2023, Algorithms 2-3 in data prediction, ``hh = -h``):

    ``x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) m_0 - alpha_t B(h) sum_k rho_k D_k``,
    ``D_k = (m_k - m_0) / r_k``, ``r_k = (lambda_k - lambda_s) / h`` (``r = 1`` at t, corrector),
    ``B(h) = -h`` (bh1) or ``e^{-h} - 1`` (bh2); the ``rho`` solve ``R rho = b`` with
    ``R_ik = r_k^(i-1)`` and ``b_i = i! phi_{i+1}(hh) / B(h)``. UniP-2 uses ``rho = 1/2``, UniC-1
    too. Returns the weights of ``[x_s, m_0, ..., m_{p-1}]`` for the predictor and of
    ``[x_s, m_0, ..., m_{p-1}, m_t]`` for the corrector.
    """
    s, t = line[i], line[i + 1]
    h = t.lam - s.lam
    hh = -h
    r = [(line[i - k].lam - s.lam) / h for k in range(1, p)] + [1.0]
    B = hh if variant == "bh1" else math.expm1(hh)
    R, b, phi, fact = [], [], math.expm1(hh) / hh - 1, 1
    for j in range(1, p + 1):
        R.append([rk ** (j - 1) for rk in r])
        b.append(phi * fact / B)
        fact *= j + 1
        phi = phi / hh - 1 / fact
    R, b = np.array(R), np.array(b)
    rho_p = [0.5] if p == 2 else (np.linalg.solve(R[:-1, :-1], b[:-1]) if p > 2 else [])
    rho_c = [0.5] if p == 1 else np.linalg.solve(R, b)
    c = -t.alpha * B  # x_t = ... + c sum_k rho_k (m_k - m_0) / r_k
    pred = [-t.alpha * math.expm1(hh)] + [0.0] * (p - 1)
    corr = pred + [0.0]
    for w, rho in ((pred, rho_p), (corr, rho_c)):
        for k, rk in enumerate(r[: len(rho)]):  # D_k of m_{k+1}; the last r = 1 is m_t
            w[k + 1] += c * rho[k] / rk
            w[0] -= c * rho[k] / rk
    a = t.sigma / s.sigma
    return [a] + pred, [a] + corr


def _unipc_plan(line: list[Node], order: int, variant: str) -> list[tuple[list, list]]:
    """UniPC's weights for every step; the order is capped by the history (warm-up)."""
    return [_unipc_weights(line, i, min(order, i + 1), variant) for i in range(len(line) - 1)]


def _run_unipc(
    score: CheckedScore,
    x: Tensor,
    line: list[Node],
    plan: list[tuple[list, list]],
    corrector: bool,
    callback: Callback | None,
) -> Tensor:
    """UniPC's loop. The model output at the predicted point, which the next predictor step needs
    anyway, also feeds the corrector of this step: no extra evaluation; none after the last."""
    hist, m = [], data_pred(score, x, line[0])
    for i, (wp, wc) in enumerate(plan):
        hist = [m] + hist[: len(wp) - 2]
        x_pred = combine(wp, [x] + hist)
        if i < len(plan) - 1:
            m = data_pred(score, x_pred, line[i + 1])
            x = combine(wc, [x] + hist + [m]) if corrector else x_pred
        else:
            x = x_pred
        report(callback, i, line[i + 1].t, x, x)
    return x


def sample_unipc(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    steps: int | None = None,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
    grid: str | Tensor = "logSNR",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """UniPC (Zhao et al. 2023) in data prediction: the multistep predictor UniP-``order`` and
    the corrector UniC, which raises the order by one at no extra evaluation (it reuses the
    model output at the predicted point, which the next step needs anyway; skipped after the last
    step). Convergence order ``order + 1`` with the corrector, ``order`` without.

    Args:
        steps: steps (= evaluations) from T to ``eps`` (default 20).
        order: predictor order 1, 2 or 3; the first steps use the lower orders the history
            allows.
        variant: ``bh1`` (``B(h) = h``) or ``bh2`` (``B(h) = e^h - 1``, the paper's choice for
            few steps).
        corrector: apply UniC (``False``: UniP alone).
        grid: a name in :data:`scoresde.samplers.grids.GRIDS` or a decreasing tensor of times
            from T to ``eps`` (``eps=None``: its last time; ``steps=None``: its intervals).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``.
    """
    order = check_order(order, (1, 2, 3))
    lookup(dict.fromkeys(UNIPC_VARIANTS), variant, "variant", callables=False)
    t, eps = time_grid(sde, grid, steps, eps, default=20)
    line = nodes(sde, t)
    plan = _unipc_plan(line, order, variant)
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    x = _run_unipc(score, x, line, plan, bool(corrector), callback)
    return finish(score, x, end_node(sde, eps), denoise)
