"""Fast samplers for score SDEs: EDM's Heun, DPM-Solver(++), adaptive SDE steps, the lambda family.

All follow the contract of :func:`scoresde.sampling.sample_pc`::

    x, nfe = sample_xxx(sde, score_fn, shape, ..., generator=None, callback=None,
                        device=None, dtype=None, z=None)

``z`` is the state at time T (default: a prior draw of ``shape``); device and dtype follow it.
``callback(i, t, x, x_mean)`` is called after step ``i`` with the ``(B,)`` time reached.
``nfe`` counts every call of ``score_fn`` on the batch.

Every sampler is written with the SDE's own schedules (``alpha = exp(log_alpha)``, ``sigma``,
``lambda = log(alpha / sigma)`` and its inverse ``t_of_log_snr``), so one code path serves VE
(alpha = 1), VP and sub-VP. Two quantities of the score ``s`` recur:

* noise prediction   ``eps_theta(x, t) = -sigma(t) s(x, t)``            (DPM-Solver)
* data prediction    ``x0_theta(x, t) = (x + sigma(t)^2 s(x, t)) / alpha(t)``   (DPM-Solver++,
  Tweedie's formula; also the optional final denoising step, one more evaluation).

Per-step coefficients are computed once, in float64 on the host, before the loop; the loop itself
does tensor arithmetic only (the adaptive solver syncs once per attempt to test for the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..core.score import check_score
from ..core.sde import SDE, bcast
from .grids import GRIDS, edm, uniform
from .pc import default_eps

__all__ = [
    "sample_heun",
    "sample_dpm_solver",
    "sample_adaptive",
    "sample_lambda",
    "DPM_METHODS",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor, Tensor], None]
_F64 = torch.float64


# ---- shared pieces ---------------------------------------------------------------------------
class _Node(NamedTuple):
    """Schedules of the SDE at one time, as host floats."""

    t: float
    log_alpha: float
    sigma: float
    lam: float

    @property
    def alpha(self) -> float:
        return math.exp(self.log_alpha)

    @property
    def sigma_edm(self) -> float:
        """Noise level of ``x / alpha``: ``sigma / alpha = exp(-lambda)``."""
        return math.exp(-self.lam)


def _nodes(sde: SDE, t: Tensor) -> list[_Node]:
    """The schedules at each time of the float64 host tensor ``t``."""
    la, sg = sde.log_alpha(t), sde.sigma(t)
    return [_Node(*v) for v in zip(t.tolist(), la.tolist(), sg.tolist(), (la - sg.log()).tolist())]


class _Score:
    """``score_fn`` at a host-float (or ``(B,)``) time, shape-checked, counting evaluations."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        if not isinstance(t, Tensor):
            t = torch.full(x.shape[:1], t, device=x.device, dtype=x.dtype)
        self.nfe += 1
        return check_score(self.score_fn(x, t), x)

    def noise(self, x: Tensor, n: _Node) -> Tensor:
        """``eps_theta = -sigma s``."""
        return -n.sigma * self(x, n.t)

    def data(self, x: Tensor, n: _Node) -> Tensor:
        """``x0_theta = (x + sigma^2 s) / alpha`` (Tweedie)."""
        return (x + n.sigma**2 * self(x, n.t)) / n.alpha


def _eps(sde: SDE, eps: float | None) -> float:
    eps = default_eps(sde) if eps is None else float(eps)
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must satisfy 0 < eps < T={sde.T}, got {eps}")
    return eps


def _integer(name: str, v, low: int) -> int:
    if isinstance(v, bool) or int(v) != v or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


def _start(sde: SDE, shape, z: Tensor | None, generator, device, dtype) -> Tensor:
    """The state at T: ``z`` (checked) or a prior draw."""
    if z is None:
        return sde.prior_sampling(shape, generator, device, dtype)
    if shape is not None and tuple(z.shape) != tuple(shape):
        raise ValueError(f"z has shape {tuple(z.shape)} but shape={tuple(shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains NaN or inf")
    return z


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _report(
    callback: Callback | None, i: int, t: float | Tensor, x: Tensor, x_mean: Tensor
) -> None:
    if callback is not None:
        if not isinstance(t, Tensor):
            t = torch.full(x.shape[:1], t, device=x.device, dtype=x.dtype)
        callback(i, t, x, x_mean)


def _denoise(score: _Score, x: Tensor, n: _Node) -> Tensor:
    """One Tweedie step at ``eps``: ``E[x_0 | x_eps] = (x + sigma^2 s) / alpha``."""
    return score.data(x, n)


# ---- EDM's Heun sampler ----------------------------------------------------------------------
def _slope(score: _Score, y: Tensor, n: _Node) -> Tensor:
    """``dy / dsigma_edm`` of the probability-flow ODE in ``y = x / alpha``.

    ``y`` has noise level ``sigma_edm = sigma / alpha``, and EDM's ODE (Karras et al. 2022, Eq. 4
    with s = 1) reads ``dy/dsigma_edm = -sigma_edm grad_y log p(y) = -sigma_edm alpha s(alpha y, t)
    = -sigma s(x, t)``, which equals EDM's ``(y - D(y)) / sigma_edm`` with ``D = x0_theta``.
    """
    return -n.sigma * score(n.alpha * y, n.t)


def _churn_levels(
    sde: SDE, t: Tensor, churn: float, s_tmin: float, s_tmax: float
) -> tuple[list[_Node], list[float]]:
    """EDM's raised levels ``sigma_hat = (1 + gamma_i) sigma_i`` (Algorithm 2, lines 4-6).

    ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` where ``S_tmin <= sigma_i <= S_tmax``, else 0; it is
    also capped so that ``sigma_hat`` never exceeds ``sigma_edm(T)`` (no time past T).
    Returns the nodes at ``t_hat`` and the std ``sqrt(sigma_hat^2 - sigma_i^2)`` of the added noise.
    """
    sig = torch.exp(-sde.log_snr(t[:-1]))
    inside = (sig >= s_tmin) & (sig <= s_tmax)
    gamma = torch.where(inside, min(churn / len(sig), math.sqrt(2) - 1), 0.0)
    gamma = torch.minimum(gamma, sig[0] / sig - 1).clamp(min=0)
    sig_hat = sig * (1 + gamma)
    t_hat = torch.where(gamma > 0, sde.t_of_log_snr(-sig_hat.log()), t[:-1])
    return _nodes(sde, t_hat), torch.sqrt(sig_hat**2 - sig**2).tolist()


def sample_heun(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    steps: int = 18,
    eps: float | None = None,
    rho: float = 7.0,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """EDM's Heun sampler (Karras et al. 2022, Algorithm 2) on the probability-flow ODE of ``sde``.

    Works in ``y = x / alpha(t)``, whose noise level is ``sigma_edm = sigma / alpha`` (VE: y = x),
    on EDM's grid of ``steps + 1`` levels from ``sigma_edm(T)`` to ``sigma_edm(eps)``
    (:func:`scoresde.timesteps.edm`, exponent ``rho``). Each step is a Heun (trapezoidal) step,
    second order; with ``churn > 0`` noise first lifts ``sigma_i`` to ``(1 + gamma_i) sigma_i``.
    ``denoise`` adds EDM's last step, the Euler step from ``sigma_edm(eps)`` to 0, which is exactly
    Tweedie's ``x0 = (x + sigma^2 s) / alpha``. EDM's N noise levels (35 NFE at N = 18) are
    ``steps = N - 1`` with ``denoise=True`` here.

    Args:
        steps: number of Heun steps between T and ``eps``.
        eps: final time (default :func:`scoresde.sampling.default_eps`).
        rho: exponent of the EDM grid (7 in the paper).
        churn, s_tmin, s_tmax, s_noise: EDM's ``S_churn, S_tmin, S_tmax, S_noise`` (levels in
            ``sigma_edm``); ``churn=0`` is the deterministic sampler.
        denoise: finish with the Euler step to ``sigma_edm = 0`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = 2 steps + denoise``.
    """
    steps, eps = _integer("steps", steps, 1), _eps(sde, eps)
    if not (churn >= 0 and s_noise >= 0 and s_tmin <= s_tmax):
        raise ValueError(
            f"need churn >= 0, s_noise >= 0 and s_tmin <= s_tmax; got {churn}, {s_noise}, "
            f"{s_tmin}, {s_tmax}"
        )
    t = edm(sde, steps, eps, rho, dtype=_F64)
    grid = _nodes(sde, t)
    hat, lift = _churn_levels(sde, t, churn, s_tmin, s_tmax)
    x = _start(sde, shape, z, generator, device, dtype)
    score = _Score(score_fn)
    y = x / grid[0].alpha
    for i in range(steps):
        if lift[i] > 0:  # Algorithm 2, line 5: raise the noise level to sigma_hat
            y = y + lift[i] * s_noise * _randn(y, generator)
        dsig = grid[i + 1].sigma_edm - hat[i].sigma_edm
        d = _slope(score, y, hat[i])
        d2 = _slope(score, y + dsig * d, grid[i + 1])  # slope at the Euler end point (line 8-10)
        y = y + dsig * 0.5 * (d + d2)
        _report(callback, i, grid[i + 1].t, grid[i + 1].alpha * y, grid[i + 1].alpha * y)
    x = grid[-1].alpha * y
    return (_denoise(score, x, grid[-1]) if denoise else x), score.nfe


# ---- DPM-Solver (noise prediction, single-step) -----------------------------------------------
def _dpm_solver_1(x: Tensor, e_s: Tensor, s: _Node, t: _Node) -> Tensor:
    """DPM-Solver-1 (Lu et al. 2022, Eq. 3.7), the DDIM step:
    ``x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s`` with ``h = lambda_t - lambda_s``."""
    return math.exp(t.log_alpha - s.log_alpha) * x - t.sigma * math.expm1(t.lam - s.lam) * e_s


def _dpm_solver_2(score: _Score, x: Tensor, s: _Node, m: _Node, t: _Node) -> Tensor:
    """DPM-Solver-2 (Algorithm 1, r1 = 1/2): a DPM-Solver-1 step to the log-SNR midpoint ``m``,
    then ``x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps(u, m)`` (the r1 = 1/2 form of
    ``- sigma_t (e^h - 1) eps_s - sigma_t / (2 r1) (e^h - 1) (eps(u, m) - eps_s)``)."""
    u = _dpm_solver_1(x, score.noise(x, s), s, m)
    return _dpm_solver_1(x, score.noise(u, m), s, t)


def _dpm_solver_3(score: _Score, x: Tensor, s: _Node, m1: _Node, m2: _Node, t: _Node) -> Tensor:
    """DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3); ``m1, m2`` at ``lambda_s + r h``."""
    r1, r2, h = 1 / 3, 2 / 3, t.lam - s.lam
    e_s = score.noise(x, s)
    D1 = score.noise(_dpm_solver_1(x, e_s, s, m1), m1) - e_s
    phi_r2 = math.expm1(r2 * h) / (r2 * h) - 1  # (e^{r2 h} - 1) / (r2 h) - 1
    u2 = _dpm_solver_1(x, e_s, s, m2) - m2.sigma * (r2 / r1) * phi_r2 * D1
    D2 = score.noise(u2, m2) - e_s
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


def _single_plan(sde: SDE, t: Tensor, orders: list[int]) -> list[list[_Node]]:
    """For each step its nodes ``[s, (m1, (m2,)) t]``; intermediate nodes uniform in log-SNR."""
    lam = sde.log_snr(t).tolist()
    plan = []
    for i, k in enumerate(orders):
        mid = torch.tensor([lam[i] + r * (lam[i + 1] - lam[i]) for r in _R[k]], dtype=_F64)
        inner = _nodes(sde, sde.t_of_log_snr(mid)) if k > 1 else []
        plan.append(_nodes(sde, t[i : i + 1]) + inner + _nodes(sde, t[i + 1 : i + 2]))
    return plan


def _single_step(score: _Score, x: Tensor, nodes: list[_Node]) -> Tensor:
    if len(nodes) == 2:
        return _dpm_solver_1(x, score.noise(x, nodes[0]), *nodes)
    if len(nodes) == 3:
        return _dpm_solver_2(score, x, *nodes)
    return _dpm_solver_3(score, x, *nodes)


# ---- DPM-Solver++ (data prediction, multistep) ------------------------------------------------
def _dpmpp_1(x: Tensor, m0: Tensor, s: _Node, t: _Node) -> Tensor:
    """DPM-Solver++(1) (Lu et al. 2022b, Eq. 9 at k = 1):
    ``x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s``."""
    return (t.sigma / s.sigma) * x - t.alpha * math.expm1(s.lam - t.lam) * m0


def _dpmpp_2m(x: Tensor, hist: list[tuple[_Node, Tensor]], t: _Node) -> Tensor:
    """DPM-Solver++(2M) (Algorithm 2): ``D = (1 + 1/(2r)) x0_s - 1/(2r) x0_p``, ``r = h_p / h``."""
    (p, m1), (s, m0) = hist
    r = (s.lam - p.lam) / (t.lam - s.lam)
    return _dpmpp_1(x, (1 + 0.5 / r) * m0 - (0.5 / r) * m1, s, t)


def _dpmpp_3m(x: Tensor, hist: list[tuple[_Node, Tensor]], t: _Node) -> Tensor:
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


def _multistep(x: Tensor, hist: list[tuple[_Node, Tensor]], t: _Node) -> Tensor:
    if len(hist) == 1:
        return _dpmpp_1(x, hist[0][1], hist[0][0], t)
    return _dpmpp_2m(x, hist, t) if len(hist) == 2 else _dpmpp_3m(x, hist, t)


DPM_METHODS = ("singlestep", "singlestep_fixed", "multistep")


def _check_dpm(steps, order, method, grid) -> int:
    if method not in DPM_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(DPM_METHODS)}")
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    steps = _integer("steps", steps, 1)
    if steps < order:
        raise ValueError(f"steps must be >= order={order}, got {steps}")
    return steps


def sample_dpm_solver(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    steps: int = 20,
    order: int = 3,
    method: str = "singlestep",
    grid: str = "logSNR",
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) on the probability-flow ODE.

    Exact in the linear part: each step integrates ``x`` in the SDE's log-SNR
    ``lambda = log(alpha / sigma)`` (``sde.log_snr`` / ``sde.t_of_log_snr``; VE has alpha = 1).
    ``steps`` is the budget of score evaluations (NFE) in every method:

    * ``singlestep``: DPM-Solver-``order`` (noise prediction ``-sigma s``), DPM-Solver's 'fast'
      schedule: ``floor(steps / order)`` steps of ``order`` (k evaluations each, intermediate
      points uniform in lambda) plus one lower-order step for the rest; the outer grid has one
      point per step.
    * ``singlestep_fixed``: ``steps / order`` steps all of ``order`` (``steps`` a multiple of it).
    * ``multistep``: DPM-Solver++(``order``M) with data prediction ``(x + sigma^2 s) / alpha``,
      one evaluation per step on a grid of ``steps`` intervals; the first steps use the lower
      orders the history allows (order 2 is the paper's 2M; 3M integrates the quadratic).
      DPM-Solver's ``lower_order_final`` (lower orders in the last steps) is not applied.

    Args:
        order: 1, 2 or 3.
        grid: the outer time grid, a name in :data:`scoresde.timesteps.GRIDS`
            (``logSNR``, ``time_uniform``, ``time_quadratic``, ``edm``).
        eps: final time (default :func:`scoresde.sampling.default_eps`).
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``.
    """
    steps = _check_dpm(steps, order, method, grid)
    eps = _eps(sde, eps)
    x = _start(sde, shape, z, generator, device, dtype)
    score = _Score(score_fn)
    if method == "multistep":
        nodes = _nodes(sde, GRIDS[grid](sde, steps, eps, dtype=_F64))
        hist: list[tuple[_Node, Tensor]] = []
        for i in range(steps):
            hist = (hist + [(nodes[i], score.data(x, nodes[i]))])[-order:]
            x = _multistep(x, hist, nodes[i + 1])
            _report(callback, i, nodes[i + 1].t, x, x)
    else:
        orders = _single_orders(steps, order, method)
        plan = _single_plan(sde, GRIDS[grid](sde, len(orders), eps, dtype=_F64), orders)
        for i, nodes in enumerate(plan):
            x = _single_step(score, x, nodes)
            _report(callback, i, nodes[-1].t, x, x)
    end = _nodes(sde, torch.tensor([eps], dtype=_F64))[0]
    return (_denoise(score, x, end) if denoise else x), score.nfe


# ---- adaptive SDE steps (Gotta Go Fast) --------------------------------------------------------
def _flat_rms(v: Tensor) -> Tensor:
    """Per-example root mean square ``sqrt(||v||^2 / n)``: the paper's scaled L2 norm."""
    return v.reshape(v.shape[0], -1).square().mean(dim=1).sqrt()


def _em_heun(
    sde: SDE, score: _Score, x: Tensor, t: Tensor, h: Tensor, w: Tensor
) -> tuple[Tensor, Tensor]:
    """Euler-Maruyama ``x'`` and stochastic improved Euler ``x''`` of the reverse SDE over ``h``,
    both driven by the same ``w ~ N(0, I)`` (Jolicoeur-Martineau et al. 2021, Algorithm 1)."""
    hb, sq = bcast(h, x), bcast(h.sqrt(), x)
    k1 = -hb * sde.reverse_drift(x, t, score(x, t)) + bcast(sde.g(t), x) * sq * w
    x1, t1 = x + k1, t - h
    k2 = -hb * sde.reverse_drift(x1, t1, score(x1, t1)) + bcast(sde.g(t1), x) * sq * w
    return x1, x + 0.5 * (k1 + k2)


def sample_adaptive(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    rtol: float = 0.05,
    atol: float | None = None,
    eps: float | None = None,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Adaptive-step reverse-SDE solver of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast",
    Algorithm 1).

    Each attempt takes an Euler-Maruyama step ``x'`` and a stochastic improved-Euler step ``x''``
    with the same noise; the error ``E = ||(x' - x'') / delta||`` (root mean square over the
    entries of one example) with ``delta = max(atol, rtol max(|x'|, |x'_prev|))`` decides
    acceptance (``E <= 1``; then the higher-order ``x''`` is kept: extrapolation), and the next step
    is ``h <- min(t - eps, safety h E^(-exponent))``. Every example has its own ``t`` and ``h``, as
    in the authors' code; each attempt evaluates the whole batch (2 evaluations), until every
    example has reached ``eps`` (one host sync per attempt, to test for the end).

    Dimension matters: ``E`` is driven by the noise ``w`` itself, and a rejected attempt draws new
    noise, so acceptance favours small draws. Where ``E`` averages over many entries (images, the
    design regime) that selection is negligible; on the 2-D test mixture it shrinks the covariance
    by about 0.27 at rtol = 0.05, while on 64-D copies of it the error stays below 0.01. The
    algorithm is kept as published.

    Args:
        rtol, atol: relative and absolute tolerances; ``atol=None`` is the paper's 0.0078
            (about one 8-bit level of data scaled to [-1, 1]; state it in data units otherwise).
        h_init: first step size; ``safety``, ``exponent``: theta and r of the step update.
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = 2 attempts + denoise``.
    """
    eps = _eps(sde, eps)
    atol = 0.0078 if atol is None else float(atol)
    if not (rtol > 0 and atol >= 0 and h_init > 0 and 0 < safety <= 1 and exponent > 0):
        raise ValueError(
            "need rtol > 0, atol >= 0, h_init > 0, 0 < safety <= 1 and exponent > 0; got "
            f"rtol={rtol}, atol={atol}, h_init={h_init}, safety={safety}, exponent={exponent}"
        )
    x = _start(sde, shape, z, generator, device, dtype)
    score = _Score(score_fn)
    t = torch.full(x.shape[:1], sde.T, device=x.device, dtype=x.dtype)
    h = torch.clamp(torch.full_like(t, h_init), max=sde.T - eps)
    x_prev, i = x, 0
    while True:
        x1, x2 = _em_heun(sde, score, x, t, h, _randn(x, generator))
        delta = torch.clamp(rtol * torch.maximum(x1.abs(), x_prev.abs()), min=atol)
        E = _flat_rms((x2 - x1) / delta)
        ok = E <= 1
        x, x_prev = torch.where(bcast(ok, x), x2, x), torch.where(bcast(ok, x), x1, x_prev)
        t = torch.where(ok, torch.where(h >= t - eps, eps, t - h), t)
        # h <- theta h E^(-r); examples already at eps keep h = 0 (and 0 * inf is avoided)
        h = torch.minimum(t - eps, torch.where(h > 0, safety * h * E.pow(-exponent), h))
        _report(callback, i, t, x, x)
        i += 1
        running, broken = torch.stack([(t > eps).any(), ~torch.isfinite(h).all()]).tolist()
        if broken:
            raise RuntimeError("sample_adaptive: the step size became NaN or inf (check score_fn)")
        if not running:
            break
    end = _nodes(sde, torch.tensor([eps], dtype=_F64))[0]
    return (_denoise(score, x, end) if denoise else x), score.nfe


# ---- the plug-in reverse-SDE family (sdeflow-light) -------------------------------------------
def sample_lambda(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    lam: float = 0.0,
    steps: int = 1000,
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Euler-Maruyama on the reverse-time SDEs with the marginals ``p_t`` of ``sde`` (Huang et al.
    2021, Appendix C; the sampling family of sdeflow-light), for ``lam`` in [0, 1]:

        dx = [f(t) x - (1 - lam / 2) g(t)^2 s(x, t)] dt + sqrt(1 - lam) g(t) dw_bar.

    Why every member keeps ``p_t``: with ``nu = 1 - lam >= 0``, adding
    ``nu g^2 / 2 (laplace p - div(s p)) = 0`` (as ``s p = grad p``) to the Fokker-Planck equation
    of the probability-flow ODE, ``dp/dt = -div((f x - g^2 s / 2) p)``, and reading it backward in
    time gives drift ``f x - (1 + nu) / 2 g^2 s`` and diffusion ``sqrt(nu) g``. ``lam = 0`` is the
    reverse SDE (Song et al. 2021, Eq. 6), ``lam = 1`` the probability-flow ODE (Eq. 13).

    Args:
        lam: the family parameter in [0, 1].
        steps: Euler-Maruyama steps on the uniform grid from T to ``eps``.
        denoise: finish with one Tweedie step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)`` with ``nfe = steps + denoise``; the last step's noise is kept (``x_mean``,
        without it, goes to the callback).
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
    steps, eps = _integer("steps", steps, 1), _eps(sde, eps)
    ts = uniform(sde, steps, eps, dtype=_F64).tolist()
    x = _start(sde, shape, z, generator, device, dtype)
    score = _Score(score_fn)
    c, nu = 1 - lam / 2, 1 - lam
    for i in range(steps):
        dt = ts[i] - ts[i + 1]
        t = torch.full(x.shape[:1], ts[i], device=x.device, dtype=x.dtype)
        drift, g = sde.sde(x, t)
        g = bcast(g, x)
        x_mean = x - (drift - c * g**2 * score(x, t)) * dt
        x = x_mean + math.sqrt(nu * dt) * g * _randn(x, generator) if nu > 0 else x_mean
        _report(callback, i, ts[i + 1], x, x_mean)
    end = _nodes(sde, torch.tensor([eps], dtype=_F64))[0]
    return (_denoise(score, x, end) if denoise else x), score.nfe
