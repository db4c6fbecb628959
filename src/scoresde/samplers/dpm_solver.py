"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) on the probability-flow ODE.

Exact in the linear part: each step integrates ``x`` in the SDE's log-SNR
``lambda = log(alpha / sigma)`` (``sde.log_snr`` / ``sde.t_of_log_snr``; VE has alpha = 1), with
the noise prediction ``-sigma s`` (single-step DPM-Solver) or the data prediction
``(x + sigma^2 s) / alpha`` (multistep DPM-Solver++); see :mod:`._shared`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core.checks import CheckedScore, check_eps, check_int, check_range, lookup, start_state
from ..core.sde import SDE
from ._shared import (
    F64,
    Callback,
    Node,
    ScoreFn,
    data_pred,
    data_pred_at,
    end_node,
    finish,
    nodes,
    noise_pred,
    on_device,
    randn,
    report,
    tweedie_at,
)
from .grids import check_grid, time_grid
from .multistep import combine

__all__ = [
    "sample_dpm_solver",
    "sample_dpm_solver_adaptive",
    "sample_dpm_solver_sde",
    "DPM_METHODS",
    "SDE_METHODS",
]


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


def _dpm_solver_2r(x: Tensor, e_s: Tensor, e_m: Tensor, s: Node, t: Node, r: float) -> Tensor:
    """DPM-Solver-2 with any ``r1`` (Algorithm 1): ``e_m`` is the noise prediction at
    ``lambda_s + r h``; ``x_t = DDIM(x_s, eps_s) - sigma_t / (2 r) (e^h - 1) (e_m - eps_s)``."""
    return _dpm_solver_1(x, e_s, s, t) - t.sigma / (2 * r) * math.expm1(t.lam - s.lam) * (e_m - e_s)


def _dpm_solver_3_from(
    score: CheckedScore, x: Tensor, e_s: Tensor, e_1: Tensor, s: Node, m1: Node, m2: Node, t: Node
) -> Tensor:
    """DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3) given ``eps_s`` and the noise prediction
    ``e_1`` at ``m1`` (which the adaptive solver's DPM-Solver-2 shares); one more evaluation."""
    r1, r2, h = 1 / 3, 2 / 3, t.lam - s.lam
    D1 = e_1 - e_s
    phi_r2 = math.expm1(r2 * h) / (r2 * h) - 1  # (e^{r2 h} - 1) / (r2 h) - 1
    u2 = _dpm_solver_1(x, e_s, s, m2) - m2.sigma * (r2 / r1) * phi_r2 * D1
    D2 = noise_pred(score, u2, m2) - e_s
    return _dpm_solver_1(x, e_s, s, t) - (t.sigma / r2) * (math.expm1(h) / h - 1) * D2


def _dpm_solver_3(score: CheckedScore, x: Tensor, s: Node, m1: Node, m2: Node, t: Node) -> Tensor:
    """DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3); ``m1, m2`` at ``lambda_s + r h``."""
    e_s = noise_pred(score, x, s)
    e_1 = noise_pred(score, _dpm_solver_1(x, e_s, s, m1), m1)
    return _dpm_solver_3_from(score, x, e_s, e_1, s, m1, m2, t)


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
    if orders is None:  # DPM-Solver++(kM): the SDE variant without noise
        x = _run_sde(score, x, nodes(sde, t), order, 0.0, generator, callback)
    else:
        x = _run_singlestep(score, x, _single_plan(sde, t, orders), callback)
    return finish(score, x, end_node(sde, eps), denoise)


# ---- adaptive DPM-Solver (Lu et al. 2022, Appendix C, Algorithm 4) ----------------------------
def _adaptive_pair(
    score: CheckedScore, x: Tensor, e_s: Tensor, step: list[Node]
) -> tuple[Tensor, Tensor]:
    """The lower- and higher-order solutions over ``step = [s, (m1, (m2,)) t]`` sharing their
    evaluations: DPM-Solver-1 and -2 (DPM-Solver-12), or DPM-Solver-2 (r1 = 1/3) and -3 (23)."""
    s, *mid, t = step
    e_1 = noise_pred(score, _dpm_solver_1(x, e_s, s, mid[0]), mid[0])
    if len(mid) == 1:
        return _dpm_solver_1(x, e_s, s, t), _dpm_solver_2r(x, e_s, e_1, s, t, 0.5)
    lower = _dpm_solver_2r(x, e_s, e_1, s, t, 1 / 3)
    return lower, _dpm_solver_3_from(score, x, e_s, e_1, s, *mid, t)


def _step_nodes(sde: SDE, lam_s: float, h: float, order: int, end: Node) -> list[Node]:
    """Nodes ``[(m1, (m2,)) t]`` of an adaptive step of size ``h`` in lambda; ``t`` is the end
    node itself when the step reaches it."""
    lam = torch.tensor([lam_s + r * h for r in _R[order]] + [lam_s + h], dtype=F64)
    inner = nodes(sde, sde.t_of_log_snr(lam))
    return inner[:-1] + [end] if lam_s + h >= end.lam else inner


def _error(lower: Tensor, higher: Tensor, x_prev: Tensor, rtol: float, atol: float) -> float:
    """``E = max_b ||(x_low - x_high) / delta||_rms`` with ``delta = max(atol, rtol max(|x_low|,
    |x_prev|))`` (Algorithm 4): the whole batch takes one step. One host sync."""
    delta = torch.clamp(rtol * torch.maximum(lower.abs(), x_prev.abs()), min=atol)
    v = ((lower - higher) / delta).reshape(lower.shape[0], -1)
    return float(v.square().mean(dim=1).sqrt().max())


def _run_adaptive(sde, score, x, ends, order, control, callback) -> Tensor:
    """Algorithm 4's loop: accept where ``E <= 1``, then ``h <- min(theta h E^(-1/order),
    lambda_eps - lambda_s)``. A rejected step keeps ``eps_s``: a retry costs ``order - 1``."""
    rtol, atol, h, theta = control
    s, end = ends
    x_prev, e_s, i = x, None, 0
    while s.t != end.t:
        step = [s] + _step_nodes(sde, s.lam, min(h, end.lam - s.lam), order, end)
        e_s = noise_pred(score, x, s) if e_s is None else e_s
        lower, higher = _adaptive_pair(score, x, e_s, step)
        E = _error(lower, higher, x_prev, rtol, atol)
        if not math.isfinite(E) or h < 1e-12:
            raise RuntimeError("dpm_solver_adaptive: the error estimate broke down")
        if E <= 1:
            x, x_prev, s, e_s = higher, lower, step[-1], None
            report(callback, i, s.t, x, x)
            i += 1
        h = min(theta * h * max(E, 1e-12) ** (-1 / order), end.lam - s.lam)
    return x


def sample_dpm_solver_adaptive(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    safety: float = 0.9,
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Adaptive DPM-Solver (Lu et al. 2022, Appendix C, Algorithm 4) in log-SNR: DPM-Solver-12
    (``order=2``) or DPM-Solver-23 (``order=3``), the lower-order solution as the error estimate
    of the higher one, which is kept. The whole batch takes each step (``E`` is the largest of the
    per-example RMS errors), one host sync per attempt.

    Args:
        order: 2 or 3 (2 or 3 evaluations per accepted step).
        rtol, atol: the mixed tolerance ``delta = max(atol, rtol max(|x_low|, |x_prev|))``;
            ``atol=0.0078`` is the paper's (one 8-bit level of data in [-1, 1]).
        h_init: the first step in lambda; ``safety``: theta of the step update.
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)``.
    """
    if isinstance(order, bool) or order not in (2, 3):
        raise ValueError(f"order must be 2 or 3 (DPM-Solver-12 or -23), got {order!r}")
    control = (
        check_range("rtol", rtol, 0, open_low=True),
        check_range("atol", atol, 0),
        check_range("h_init", h_init, 0, open_low=True),
        check_range("safety", safety, 0, 1, open_low=True),
    )
    eps = check_eps(sde, eps)
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    ends = (nodes(sde, torch.tensor([sde.T], dtype=F64))[0], end_node(sde, eps))
    with score:
        x = _run_adaptive(sde, score, x, ends, order, control, callback)
    return finish(score, x, ends[1], denoise)


# ---- DPM-Solver++ SDE and ancestral (stochastic, with eta) ------------------------------------
SDE_METHODS = ("sde", "ancestral")


def _sde_weights(hist: list[Node], t: Node, eta: float) -> tuple[float, list[float], float]:
    """SDE-DPM-Solver++(kM) with ``eta`` (Lu et al. 2022b, Appendix; eta as k-diffusion's
    ``dpmpp_2m_sde`` / ``3m_sde``) from ``s = hist[0]`` (history newest first) to ``t``:

    ``x_t = (sigma_t / sigma_s) e^{-eta h} x_s + alpha_t [phi_1 x0_s + ...] + sigma_t
    sqrt(1 - e^{-2 eta h}) z``, the exact solution of ``dy = -(1 + eta)(y - x0) d lambda +
    sqrt(2 eta) sigma_edm dw`` in ``y = x / alpha`` with ``x0`` interpolated in lambda:
    ``phi_1 = 1 - e^{-h_eta}``, ``h_eta = (1 + eta) h``; order 2 adds ``phi_1 D1 / 2`` (the
    2M midpoint form: ``D = (1 + 1/(2 r)) x0_s - 1/(2 r) x0_p``, ``r = h_p / h``), order 3
    ``phi_2 (D1_0 + r0 Dq) - 2 phi_3 Dq``: the exact integral of the quadratic through the last
    three ``x0`` in lambda, with ``phi_2 = (e^{-h_eta} - 1) / h_eta + 1``, ``phi_3 = phi_2 / h_eta
    - 1/2`` and Newton's divided differences ``h x0' = D1_0 + r0 Dq``, ``h^2 x0'' = 2 Dq`` (the
    factor 2 matters: with ``phi_3 Dq`` alone the step is second order only, as the order test
    shows). Every eta >= 0 keeps the marginals (eta = 0: DPM-Solver++(kM) of the ODE, Lu et al.
    2022b, Algorithm 2 for k = 2; eta = 1: the reverse SDE). Returns ``(a, weights of x0 newest
    first, noise std)``.
    """
    s, k = hist[0], len(hist)
    h = t.lam - s.lam
    he = (1 + eta) * h
    m = np.eye(k)  # x0 values as unit vectors: the formula yields their weights
    phi_1 = -math.expm1(-he)
    x0 = phi_1 * m[0]
    if k >= 2:
        r0 = (s.lam - hist[1].lam) / h
        D1_0 = (m[0] - m[1]) / r0
    if k == 2:
        x0 = x0 + 0.5 * phi_1 * D1_0
    if k == 3:
        r1 = (hist[1].lam - hist[2].lam) / h
        Dq = (D1_0 - (m[1] - m[2]) / r1) / (r0 + r1)
        phi_2 = math.expm1(-he) / he + 1
        phi_3 = phi_2 / he - 0.5
        x0 = x0 + phi_2 * (D1_0 + r0 * Dq) - 2 * phi_3 * Dq
    noise = t.sigma * math.sqrt(-math.expm1(-2 * eta * h))
    return (t.sigma / s.sigma) * math.exp(-eta * h), (t.alpha * x0).tolist(), noise


def _run_sde(score, x, line, order, eta, generator, callback) -> Tensor:
    """SDE-DPM-Solver++(``order``M): one evaluation per step, fresh noise after each (none at
    eta = 0). The weights of every step are computed first and moved to the device of x once,
    with the times and Tweedie coefficients of the nodes; the loop does tensor arithmetic only."""
    ks = [min(order, i + 1) for i in range(len(line) - 1)]
    plan = [_sde_weights(line[i - k + 1 : i + 1][::-1], line[i + 1], eta) for i, k in enumerate(ks)]
    weights = on_device([[a, *w] for a, w, _ in plan], x)
    at = tweedie_at(line[:-1], x)
    hist: list[Tensor] = []
    for i, ((a, *w), (_, _, std)) in enumerate(zip(weights, plan)):
        hist = [data_pred_at(score, x, at[i])] + hist[: len(w) - 1]
        x = combine([a, *w], [x, *hist])
        x_mean = x
        if std > 0:
            x = x + std * randn(x, generator)
        report(callback, i, line[i + 1].t, x, x_mean)
    return x


def _down_nodes(sde: SDE, s: Node, t: Node, eta: float, order: int) -> tuple[list[Node], float]:
    """The ancestral split of ``s -> t`` in ``sigma_edm`` (k-diffusion's ``get_ancestral_step``):
    ``sigma_up = eta sigma_t sqrt(1 - sigma_t^2 / sigma_s^2)``, ``sigma_down = sqrt(sigma_t^2 -
    sigma_up^2)``. Returns the nodes ``[(mid,) down]`` (mid: halfway in lambda, for 2S) and
    ``sigma_up``; the down node may lie before eps (its time is never evaluated)."""
    st = t.sigma_edm
    up = eta * st * math.sqrt(-math.expm1(2 * (s.lam - t.lam)))
    lam_d = -0.5 * math.log(st**2 - up**2)
    lam = [0.5 * (s.lam + lam_d)] * (order - 1) + [lam_d]
    return nodes(sde, sde.t_of_log_snr(torch.tensor(lam, dtype=F64))), up


def _run_ancestral(sde, score, x, line, order, eta, generator, callback) -> Tensor:
    """DPM-Solver++(1) (DDIM) or ++(2S) down to ``sigma_down``, then ``sigma_up`` of noise:
    ``order`` evaluations per step (k-diffusion's ``dpmpp_2s_ancestral`` for order 2)."""
    plan = [_down_nodes(sde, line[i], line[i + 1], eta, order) for i in range(len(line) - 1)]
    for i, (down, up) in enumerate(plan):
        s, t = line[i], line[i + 1]
        m0 = data_pred(score, x, s)
        if order == 2:
            m0 = data_pred(score, _dpmpp_1(x, m0, s, down[0]), down[0])
        y = _dpmpp_1(x, m0, s, down[-1]) / down[-1].alpha
        x_mean = t.alpha * y
        x = t.alpha * (y + up * randn(y, generator)) if up > 0 else x_mean
        report(callback, i, t.t, x, x_mean)
    return x


def sample_dpm_solver_sde(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    steps: int | None = None,
    order: int = 2,
    eta: float = 1.0,
    method: str = "sde",
    grid: str | Tensor = "logSNR",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Stochastic DPM-Solver++: ``eta`` sets the noise (0: the deterministic solver).

    * ``sde``: SDE-DPM-Solver++(``order``M), multistep, one evaluation per step (k-diffusion's
      ``dpmpp_2m_sde`` / ``dpmpp_3m_sde``, midpoint form; eta = 0 is ``sample_dpm_solver``'s
      ``multistep``); any ``eta >= 0`` samples the right marginals, eta = 1 the reverse SDE.
    * ``ancestral``: a DDIM (``order=1``) or DPM-Solver++(2S) (``order=2``, two evaluations)
      step down to ``sigma_down``, then ``sigma_up`` of fresh noise; ``eta`` in [0, 1], 1 the
      DDPM posterior step (DDIM's eta).

    Args:
        steps: steps from T to ``eps`` (default 20).
        order: 1, 2 or 3 (``sde``); 1 or 2 (``ancestral``).
        eta: amount of noise, ``>= 0`` (``sde``) or in [0, 1] (``ancestral``).
        method: ``sde`` or ``ancestral``.
        grid: a name in :data:`scoresde.samplers.grids.GRIDS` or a decreasing tensor of times
            from T to ``eps`` (``eps=None``: its last time; ``steps=None``: its intervals).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).
        generator: the source of the noise (the prior too, unless ``z`` is given).

    Returns:
        ``(x, nfe)``: ``nfe = steps + denoise`` (``sde``), ``order steps + denoise``
        (``ancestral``).
    """
    lookup(dict.fromkeys(SDE_METHODS), method, "method", callables=False)
    valid = (1, 2, 3) if method == "sde" else (1, 2)
    if isinstance(order, bool) or order not in valid:
        names = ", ".join(map(str, valid[:-1])) + f" or {valid[-1]}"
        raise ValueError(f"order must be {names} with method={method!r}, got {order!r}")
    eta = check_range("eta", eta, 0, math.inf if method == "sde" else 1)
    t, eps = time_grid(sde, grid, steps, eps, default=20)
    line = nodes(sde, t)
    x = start_state(sde, shape, z, generator, device, dtype)
    score = CheckedScore(score_fn)
    if method == "sde":
        x = _run_sde(score, x, line, order, eta, generator, callback)
    else:
        x = _run_ancestral(sde, score, x, line, order, eta, generator, callback)
    return finish(score, x, end_node(sde, eps), denoise)
