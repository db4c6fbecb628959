"""A time grid fitted to the model and the sampler: dynamic programming over a fine candidate grid.

After GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling"):

1. warm-up: ``M`` latents at T are carried by a teacher, DPM-Solver++(3M) on the ``C``
   candidate times refined ``substeps`` times in log-SNR, which records its states ``x_i`` and
   its scores at the candidates (one evaluation per teacher node, reused: no extra cost);
2. cost ``c(i, j) = mean_m ||DDIM(x_i; t_i -> t_j) - x_j||^2``, the error of one DDIM step
   (DPM-Solver-1) from the teacher state at candidate ``i`` to candidate ``j``; it needs only the
   score at ``x_i``, already recorded;
3. dynamic programming: the path ``0 = i_0 < i_1 < ... < i_K = C`` of exactly ``K`` steps with the
   least sum (or maximum) of costs, ``O(K C^2)``.

The DDIM-optimal grid suits DDIM and iPNDM but not every higher-order method: on the 2-D mixture
at NFE 10 it makes DPM-Solver++(3M) and UniPC worse than their log-SNR grids (they want small
last steps, which DDIM does not need). So a step 4 fits the grid to the ``sampler`` itself:

4. coordinate descent on the candidate lattice: starting from the better of the DP path and the
   equally spaced one, move one inner time at a time by 4, 2, then 1 candidates while the
   sampler's own end-point error ``mean_m ||sampler(grid)(z_m) - x_C||^2`` against the teacher
   falls (at most ``max_runs`` sampler runs on the warm-up latents). This is the global error of
   the method as it will run, multistep history included, which no local cost of one step gives.

The result is a float64 host tensor of ``K + 1`` times from T to ``eps``: pass it as ``grid=`` to
any fixed-step sampler, without ``steps`` (each sampler then takes one of its steps per interval).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from ..core.checks import check_eps, check_int, lookup, start_state
from ..core.sde import SDE
from ._shared import F64, ScoreFn
from .dpm_solver import sample_dpm_solver
from .grids import check_grid, log_snr
from .table import SAMPLERS

__all__ = [
    "optimised_grid",
    "GRID_SEARCH_SAMPLERS",
    "fitted_sampler",
    "PATH_COSTS",
    "candidate_times",
    "teacher_trajectory",
    "ddim_costs",
    "best_path",
]

Sampler = Callable[..., tuple[Tensor, int]]

# The deterministic fixed-step samplers of ``scoresde.samplers.SAMPLERS`` a grid can be fitted to,
# and ``ddim``: DPM-Solver++(1), i.e. DEIS of order 1.
GRID_SEARCH_SAMPLERS = ("ddim", "dpm_solver", "unipc", "deis", "ipndm", "lms", "heun")
PATH_COSTS = ("sum", "max")
_SET_HERE = ("grid", "steps", "z", "eps", "denoise", "generator", "callback", "device", "dtype")
_SCALES = (4, 2, 1)  # moves of the descent, in candidates
_BLOCK = 1 << 22  # values of one vectorised block of DDIM steps (bounds the memory of the costs)


def candidate_times(sde: SDE, candidates: int | Tensor, eps: float) -> Tensor:
    """The ``C + 1`` candidate times from T to ``eps`` (float64, host): ``candidates`` intervals
    uniform in log-SNR, or a given decreasing tensor (checked by :func:`~.grids.check_grid`)."""
    if isinstance(candidates, Tensor):
        return check_grid(sde, candidates, eps)[0]
    return log_snr(sde, check_int("candidates", candidates, 1), eps, dtype=F64)


def _refine(sde: SDE, t: Tensor, substeps: int) -> Tensor:
    """``t`` with ``substeps - 1`` times inserted in each interval, uniform in log-SNR; every
    ``substeps``-th time is ``t`` itself, exactly."""
    lam = sde.log_snr(t)
    frac = torch.arange(substeps, dtype=F64) / substeps
    inner = (lam[:-1, None] + frac * lam.diff()[:, None]).reshape(-1)
    fine = torch.cat([sde.t_of_log_snr(inner), t[-1:]])
    fine[::substeps] = t
    return fine


def teacher_trajectory(
    sde: SDE, score_fn: ScoreFn, z: Tensor, t: Tensor, substeps: int = 2
) -> tuple[Tensor, Tensor]:
    """The teacher's states ``X (C + 1, M, ...)`` at the candidate times ``t`` and its scores
    ``S (C, M, ...)`` at ``(X_i, t_i)``, ``i < C``.

    The teacher is DPM-Solver++(3M) on ``t`` refined ``substeps`` times in log-SNR: ``C substeps``
    evaluations of ``score_fn`` (batches of the ``M`` latents ``z``). Its evaluation at each node
    is at the node's state, so the scores at the candidates are the teacher's own (kept, not
    recomputed).
    """
    substeps = check_int("substeps", substeps, 1)
    states, scores, calls = [z], [], [0]

    def recorded(x: Tensor, tt: Tensor) -> Tensor:
        s = score_fn(x, tt)
        if calls[0] % substeps == 0:  # the teacher is at a candidate node
            scores.append(s)
        calls[0] += 1
        return s

    def keep(i: int, tt: Tensor, x: Tensor, x_mean: Tensor) -> None:
        if (i + 1) % substeps == 0:
            states.append(x)

    fine = _refine(sde, t, substeps)
    teacher = dict(order=3, method="multistep", grid=fine, z=z, callback=keep)
    sample_dpm_solver(sde, recorded, None, **teacher)
    if calls[0] != len(fine) - 1 or len(states) != len(t):
        raise RuntimeError("the teacher did not evaluate once per node")  # a changed solver
    return torch.stack(states), torch.stack(scores)


def _schedules(sde: SDE, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(log alpha, sigma, lambda)`` at the float64 times ``t``."""
    la, sg = sde.log_alpha(t), sde.sigma(t)
    return la, sg, la - sg.log()


def _ddim_row(sched: tuple[Tensor, Tensor, Tensor], X: Tensor, s_i: Tensor, i: int) -> Tensor:
    """``c(i, j)`` for every ``j > i``: one DDIM step (Lu et al. 2022, Eq. 3.7)
    ``x_j = (alpha_j / alpha_i) x_i - sigma_j (e^{h} - 1) eps_i``, ``h = lambda_j - lambda_i``,
    ``eps_i = -sigma_i s_i``, against the teacher's ``x_j``; blocks of ``j`` bound the memory."""
    la, sg, lam = sched
    e_i, x_i = -float(sg[i]) * s_i, X[i]
    block = max(1, _BLOCK // max(1, x_i.numel()))
    row = []
    for lo in range(i + 1, len(X), block):
        j = slice(lo, min(lo + block, len(X)))
        shape = (-1,) + (1,) * x_i.ndim
        a = torch.exp(la[j] - la[i]).to(x_i).reshape(shape)
        b = (sg[j] * torch.expm1(lam[j] - lam[i])).to(x_i).reshape(shape)
        err = (a * x_i - b * e_i - X[j]).reshape(len(a), len(x_i), -1)
        row.append(err.to(F64).square().sum(-1).mean(-1).cpu())
    return torch.cat(row)


def ddim_costs(sde: SDE, t: Tensor, X: Tensor, S: Tensor) -> Tensor:
    """The ``(C + 1, C + 1)`` float64 host matrix of one-step DDIM costs ``c(i, j)``: the mean over
    the warm-up latents of ``||DDIM(X_i; t_i -> t_j) - X_j||^2`` for ``j > i``, ``inf`` elsewhere.

    ``t``: the candidate times; ``X``, ``S``: the teacher's states and scores
    (:func:`teacher_trajectory`). No evaluations of the score.
    """
    sched = _schedules(sde, t)
    cost = torch.full((len(t), len(t)), math.inf, dtype=F64)
    for i in range(len(t) - 1):
        cost[i, i + 1 :] = _ddim_row(sched, X, S[i], i)
    return cost


def best_path(cost: Tensor, steps: int, path_cost: str = "sum") -> list[int]:
    """The path ``0 = i_0 < ... < i_steps = C`` through the ``(C + 1, C + 1)`` matrix ``cost``
    (``cost[i, j]`` for the step ``i -> j``; ``inf`` forbids it) whose total is least: the sum of
    its costs (``path_cost="sum"``) or the largest one (``"max"``). Dynamic programming: the best
    total of ``k`` steps ending at ``j`` is ``min_i`` of the best of ``k - 1`` at ``i`` with
    ``cost[i, j]``, in ``O(steps C^2)``."""
    lookup(dict.fromkeys(PATH_COSTS), path_cost, "path_cost", callables=False)
    C = len(cost) - 1
    steps = check_int("steps", steps, 1)
    if steps > C:
        raise ValueError(f"steps={steps} needs at least as many candidate intervals, got {C}")
    join = torch.add if path_cost == "sum" else torch.maximum
    best = torch.full((C + 1,), math.inf, dtype=F64)
    best[0] = 0.0
    back = []
    for _ in range(steps):
        best, arg = join(best[:, None], cost.to(F64)).min(dim=0)
        back.append(arg)
    path = [C]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1]


def _fit_options(fn: Sampler, options: dict | None) -> dict:
    """The sampler's own options (``order``, ``method``, ...), checked against its signature."""
    options = dict(options or {})
    clash = sorted(set(options) & set(_SET_HERE))
    if clash:
        raise ValueError(f"option {clash[0]!r} is set by optimised_grid; give the others only")
    try:
        inspect.signature(fn).bind_partial(None, None, None, **options)
    except TypeError as err:
        raise ValueError(f"options do not fit the sampler: {err}") from None
    return options


def _end_error(fn: Sampler, sde, score_fn, t, z, x_end, options) -> Callable[[list[int]], float]:
    """``path -> mean_m ||x_m - x_end_m||^2``: the sampler run on the grid ``t[path]`` from the
    warm-up latents ``z``, against the teacher's end states (``inf`` where it is not finite)."""

    def error(path: list[int]) -> float:
        x, _ = fn(sde, score_fn, None, grid=t[path], z=z, denoise=False, **options)
        e = (x - x_end).reshape(len(x), -1).to(F64).square().sum(-1).mean().item()
        return e if math.isfinite(e) else math.inf

    return error


def _slide(error, path: list[int], best: float, k: int, d: int, runs: list[int], limit: int):
    """Move time ``k`` of ``path`` by ``d`` candidates while the error falls (and the budget of
    runs lasts); returns the new ``(path, best)``."""
    while runs[0] < limit:
        q = path[:k] + [path[k] + d] + path[k + 1 :]
        if not q[k - 1] < q[k] < q[k + 1]:
            break
        e = error(q)
        runs[0] += 1
        if not e < best:
            break
        path, best = q, e
    return path, best


def _descend(error: Callable[[list[int]], float], starts: list[list[int]], limit: int) -> list[int]:
    """Coordinate descent on the lattice from the best of ``starts``: sweeps over the inner times
    at each scale of :data:`_SCALES` until a sweep moves none; at most ``limit`` runs in all."""
    scored = [(error(p), p) for p in starts]
    best, path = min(scored, key=lambda v: v[0])
    runs = [len(starts)]
    for h in _SCALES:
        moved = True
        while moved and runs[0] < limit:
            before = best
            for k in range(1, len(path) - 1):
                for d in (-h, h):
                    path, best = _slide(error, path, best, k, d, runs, limit)
            moved = best < before
    return path


def fitted_sampler(sampler: str | Sampler) -> Sampler:
    """The function of a name in :data:`GRID_SEARCH_SAMPLERS` (``ddim`` is DEIS of order 1),
    from the one sampler table; a sampler function is returned as it is."""
    if callable(sampler):
        return sampler
    lookup(dict.fromkeys(GRID_SEARCH_SAMPLERS), sampler, "sampler", callables=False)
    return partial(SAMPLERS["deis"], order=1) if sampler == "ddim" else SAMPLERS[sampler]


def optimised_grid(
    sde: SDE,
    score_fn: ScoreFn,
    warmup: tuple[int, ...] | Tensor,
    steps: int,
    *,
    sampler: str | Sampler = "ddim",
    options: dict | None = None,
    candidates: int | Tensor = 120,
    substeps: int = 2,
    path_cost: str = "sum",
    max_runs: int = 300,
    eps: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """A grid of ``steps`` intervals fitted to ``score_fn`` and ``sampler`` (module docstring).

    Args:
        warmup: the shape ``(M, ...)`` of the warm-up latents (prior draws from ``generator``,
            on ``device`` in ``dtype``), or the latents at T themselves; a few hundred suffice.
        steps: intervals of the grid, at most the candidates' (``sampler`` takes one of its steps
            per interval: NFE ``steps`` for the multistep methods, ``2 steps`` for ``heun``,
            ``order steps`` for single-step ``dpm_solver``).
        sampler: a name in :data:`GRID_SEARCH_SAMPLERS` or a deterministic sampler function
            with the samplers' contract; the grid is fitted to its end-point error.
        options: its keyword options (``order``, ``method``, ``variant``, ...).
        candidates: the number ``C`` of candidate intervals, uniform in log-SNR, or the
            decreasing tensor of candidate times from T to ``eps``.
        substeps: teacher steps per candidate interval.
        path_cost: the DP minimises the ``sum`` or the ``max`` of the DDIM costs.
        max_runs: sampler runs of the descent; 0 keeps the DDIM path of the DP (GITS).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).

    Returns:
        The float64 host tensor of ``steps + 1`` times, ``T`` first and ``eps`` last exactly. Its
        cost is ``C substeps`` batched evaluations of ``score_fn`` (the teacher) plus at most
        ``max_runs`` runs of ``sampler`` on the warm-up latents.
    """
    fn = fitted_sampler(sampler)
    options = _fit_options(fn, options)
    lookup(dict.fromkeys(PATH_COSTS), path_cost, "path_cost", callables=False)
    max_runs = check_int("max_runs", max_runs, 0)
    eps = check_eps(sde, eps)
    t = candidate_times(sde, candidates, eps)
    steps = check_int("steps", steps, 1)
    if steps > len(t) - 1:
        raise ValueError(f"steps={steps} exceeds the {len(t) - 1} candidate intervals")
    shape = tuple(warmup) if not isinstance(warmup, Tensor) else None
    z = start_state(sde, shape, warmup if shape is None else None, generator, device, dtype)
    X, S = teacher_trajectory(sde, score_fn, z, t, substeps)
    path = best_path(ddim_costs(sde, t, X, S), steps, path_cost)
    if max_runs > 0 and steps > 1:
        even = [round(k * (len(t) - 1) / steps) for k in range(steps + 1)]
        error = _end_error(fn, sde, score_fn, t, z, X[-1], options)
        path = _descend(error, [path, even], max_runs)
    return t[path].clone()
