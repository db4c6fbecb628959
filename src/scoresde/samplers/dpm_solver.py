"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) on the probability-flow ODE.

Exact in the linear part: each step integrates ``x`` in the SDE's log-SNR
``lambda = log(alpha / sigma)`` (``sde.log_snr`` / ``sde.t_of_log_snr``; VE has alpha = 1), with
the noise prediction ``-sigma s`` (single-step DPM-Solver) or the data prediction
``(x + sigma^2 s) / alpha`` (multistep DPM-Solver++); see :mod:`._shared`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_int, lookup, start_state
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
from .grids import check_grid, time_grid

__all__ = ["sample_dpm_solver", "DPM_METHODS"]


# ---- DPM-Solver (noise prediction, single-step) -----------------------------------------------
def _dpm_solver_1(x: Tensor, e_s: Tensor, s: Node, t: Node) -> Tensor:
    """DPM-Solver-1 (Lu et al. 2022, Eq. 3.7), the DDIM step:
    ``x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s`` with ``h = lambda_t - lambda_s``."""
    return math.exp(t.log_alpha - s.log_alpha) * x - t.sigma * math.expm1(t.lam - s.lam) * e_s


def _dpm_solver_2(score: CheckedScore, x: Tensor, s: Node, m: Node, t: Node) -> Tensor:
    """DPM-Solver-2 (Algorithm 1, r1 = 1/2): a DPM-Solver-1 step to the log-SNR midpoint ``m``,
    then ``x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps(u, m)`` (the r1 = 1/2 form of
    ``- sigma_t (e^h - 1) eps_s - sigma_t / (2 r1) (e^h - 1) (eps(u, m) - eps_s)``)."""
    u = _dpm_solver_1(x, noise_pred(score, x, s), s, m)
    return _dpm_solver_1(x, noise_pred(score, u, m), s, t)


def _dpm_solver_3(score: CheckedScore, x: Tensor, s: Node, m1: Node, m2: Node, t: Node) -> Tensor:
    """DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3); ``m1, m2`` at ``lambda_s + r h``."""
    r1, r2, h = 1 / 3, 2 / 3, t.lam - s.lam
    e_s = noise_pred(score, x, s)
    D1 = noise_pred(score, _dpm_solver_1(x, e_s, s, m1), m1) - e_s
    phi_r2 = math.expm1(r2 * h) / (r2 * h) - 1  # (e^{r2 h} - 1) / (r2 h) - 1
    u2 = _dpm_solver_1(x, e_s, s, m2) - m2.sigma * (r2 / r1) * phi_r2 * D1
    D2 = noise_pred(score, u2, m2) - e_s
    return _dpm_solver_1(x, e_s, s, t) - (t.sigma / r2) * (math.expm1(h) / h - 1) * D2


_R = {1: (), 2: (1 / 2,), 3: (1 / 3, 2 / 3)}  # intermediate log-SNR fractions of each order


def _single_orders(steps: int, order: int, method: str) -> list[int]:
    """Orders of the single steps so that they use ``steps`` evaluations in all.

    ``singlestep_fixed``: ``steps / order`` steps of ``order``. ``singlestep``: DPM-Solver's
    'fast' schedule, as many steps of ``order`` as fit and one lower-order step for the rest
    (order 3 with ``steps % 3 == 0`` ends with a 2 and a 1 step, as in DPM-Solver).
    """
    k, r = divmod(steps, order)
    if method == "singlestep_fixed":
        if r:
            raise ValueError(
                f"singlestep_fixed needs steps divisible by order={order}, got {steps}"
            )
        return [order] * k
    if order == 3 and r == 0:
        return [3] * (k - 1) + [2, 1]
    return [order] * k + ([r] if r else [])


def _single_plan(sde: SDE, t: Tensor, orders: list[int]) -> list[list[Node]]:
    """For each step its nodes ``[s, (m1, (m2,)) t]``; intermediate nodes uniform in log-SNR."""
    lam = sde.log_snr(t).tolist()
    plan: list[list[Node]] = []
    for i, k in enumerate(orders):
        mid = torch.tensor([lam[i] + r * (lam[i + 1] - lam[i]) for r in _R[k]], dtype=F64)
        inner = nodes(sde, sde.t_of_log_snr(mid)) if k > 1 else []
        plan.append(nodes(sde, t[i : i + 1]) + inner + nodes(sde, t[i + 1 : i + 2]))
    return plan


def _single_step(score: CheckedScore, x: Tensor, step: list[Node]) -> Tensor:
    """One DPM-Solver step of order ``len(step) - 1`` over its nodes ``[s, (m1, (m2,)) t]``."""
    if len(step) == 2:
        return _dpm_solver_1(x, noise_pred(score, x, step[0]), *step)
    if len(step) == 3:
        return _dpm_solver_2(score, x, *step)
    return _dpm_solver_3(score, x, *step)


# ---- DPM-Solver++ (data prediction, multistep) ------------------------------------------------
def _dpmpp_1(x: Tensor, m0: Tensor, s: Node, t: Node) -> Tensor:
    """DPM-Solver++(1) (Lu et al. 2022b, Eq. 9 at k = 1):
    ``x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s``."""
    return (t.sigma / s.sigma) * x - t.alpha * math.expm1(s.lam - t.lam) * m0


def _dpmpp_2m(x: Tensor, hist: list[tuple[Node, Tensor]], t: Node) -> Tensor:
    """DPM-Solver++(2M) (Algorithm 2): ``D = (1 + 1/(2r)) x0_s - 1/(2r) x0_p``, ``r = h_p / h``."""
    (p, m1), (s, m0) = hist
    r = (s.lam - p.lam) / (t.lam - s.lam)
    return _dpmpp_1(x, (1 + 0.5 / r) * m0 - (0.5 / r) * m1, s, t)


def _dpmpp_3m(x: Tensor, hist: list[tuple[Node, Tensor]], t: Node) -> Tensor:
    """DPM-Solver++(3M): exact integral of the quadratic through the last three ``x0``.

    With ``x_t = (sigma_t / sigma_s) x_s + sigma_t int e^lambda x0(lambda) d lambda`` and
    ``x0(lambda)`` expanded at ``lambda_s``, the terms are ``-alpha_t phi_1 x0``,
    ``+alpha_t phi_2 h x0'`` and ``-alpha_t phi_3 h^2 x0''`` with ``phi_1 = e^{-h} - 1``,
    ``phi_2 = phi_1 / h + 1``, ``phi_3 = phi_2 / h - 1/2``; the derivatives come from Newton's
    divided differences: ``h x0' = D1_0 + r0 Dq``, ``h^2 x0'' = 2 Dq``. (The factor 2 matters:
    with ``phi_3 Dq`` alone the step is second order only, as the order test shows.)
    """
    (q, m2), (p, m1), (s, m0) = hist
    h = t.lam - s.lam
    r0, r1 = (s.lam - p.lam) / h, (p.lam - q.lam) / h
    D1_0, D1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    Dq = (D1_0 - D1_1) / (r0 + r1)
    phi_2 = math.expm1(-h) / h + 1
    phi_3 = phi_2 / h - 0.5
    return _dpmpp_1(x, m0, s, t) + t.alpha * (phi_2 * (D1_0 + r0 * Dq) - 2 * phi_3 * Dq)


def _multistep(x: Tensor, hist: list[tuple[Node, Tensor]], t: Node) -> Tensor:
    """One DPM-Solver++ step to ``t`` of the order that the history of ``x0`` allows."""
    if len(hist) == 1:
        return _dpmpp_1(x, hist[0][1], hist[0][0], t)
    return _dpmpp_2m(x, hist, t) if len(hist) == 2 else _dpmpp_3m(x, hist, t)


DPM_METHODS = ("singlestep", "singlestep_fixed", "multistep")


def _plan(
    sde: SDE, grid: str | Tensor, steps: int | None, order: int, method: str, eps: float | None
) -> tuple[Tensor, float, list[int] | None]:
    """``(t, eps, orders)``: the outer grid, its end and the orders of the single steps (None for
    multistep). A grid tensor without ``steps`` gives one step of ``order`` per interval."""
    lookup(dict.fromkeys(DPM_METHODS), method, "method", callables=False)
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    multi = method == "multistep"
    if isinstance(grid, Tensor) and steps is None:
        t, eps = check_grid(sde, grid, eps)
        n = len(t) - 1
        return t, eps, None if multi else [order] * n
    steps = check_int("steps", 20 if steps is None else steps, 1)
    if steps < order:
        raise ValueError(f"steps must be >= order={order}, got {steps}")
    orders = None if multi else _single_orders(steps, order, method)
    n = steps if multi else len(orders)
    if isinstance(grid, Tensor) and len(grid) != n + 1:
        raise ValueError(
            f"steps={steps} with order={order} and method={method!r} needs a grid of {n + 1} "
            f"times, got {len(grid)}"
        )
    return (*time_grid(sde, grid, n, eps), orders)


def _run_multistep(
    score: CheckedScore, x: Tensor, line: list[Node], order: int, callback: Callback | None
) -> Tensor:
    """DPM-Solver++(``order``M) along the nodes ``line``, one evaluation per step."""
    hist: list[tuple[Node, Tensor]] = []
    for i in range(len(line) - 1):
        hist = (hist + [(line[i], data_pred(score, x, line[i]))])[-order:]
        x = _multistep(x, hist, line[i + 1])
        report(callback, i, line[i + 1].t, x, x)
    return x


def _run_singlestep(
    score: CheckedScore, x: Tensor, plan: list[list[Node]], callback: Callback | None
) -> Tensor:
    """The single steps of ``plan``, each over its nodes ``[s, (m1, (m2,)) t]``."""
    for i, step in enumerate(plan):
        x = _single_step(score, x, step)
        report(callback, i, step[-1].t, x, x)
    return x


def sample_dpm_solver(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    steps: int | None = None,
    order: int = 3,
    method: str = "singlestep",
    grid: str | Tensor = "logSNR",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """DPM-Solver(++) from T to ``eps``; ``steps`` (default 20) is the budget of score
    evaluations (NFE) in every ``method``:

    * ``singlestep``: DPM-Solver-``order`` with DPM-Solver's 'fast' schedule:
      ``floor(steps / order)`` steps of ``order`` (intermediate points uniform in lambda) plus
      one lower-order step for the rest; the outer grid has one interval per step.
    * ``singlestep_fixed``: ``steps / order`` steps all of ``order`` (``steps`` a multiple of it).
    * ``multistep``: DPM-Solver++(``order``M), one evaluation per interval of the grid; the
      first steps use the lower orders the history allows. DPM-Solver's ``lower_order_final``
      is not applied.

    Args:
        order: 1, 2 or 3.
        grid: the outer time grid, a name in :data:`scoresde.samplers.grids.GRIDS` (``logSNR``,
            ``time_uniform``, ``time_quadratic``, ``edm``) or a decreasing tensor of times from
            T to ``eps`` (``eps=None``: its last time; ``steps=None``: one step of ``order`` per
            interval).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``.
    """
    t, eps, orders = _plan(sde, grid, steps, order, method, eps)
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    if orders is None:
        x = _run_multistep(score, x, nodes(sde, t), order, callback)
    else:
        x = _run_singlestep(score, x, _single_plan(sde, t, orders), callback)
    return finish(score, x, end_node(sde, eps), denoise)
