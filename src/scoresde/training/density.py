"""Densities of a learned score model on a grid, and the run's snapshots of them.

Two ways: :func:`log_density_on_grid`, the probability-flow likelihood at every grid point (the
density the model's ODE samples follow; what ``density.png`` and the snapshots show), and
:func:`integrate_score`, the log-density that the score at one t integrates to (``field.png``):
the score ``s(x, t) = grad_x log p_t(x)`` determines ``log p_t`` up to a constant, in 1-D by
the cumulative trapezoid rule along the grid, in 2-D by the least-squares potential whose finite
differences match the score's trapezoid increments along both axes (a learned score is not
exactly a gradient; least squares keeps its curl-free part), normalised on the grid.

Everything is in data units: the model works on ``y = (x - mean) / std`` (a
:class:`~scoresde.data.Standardizer`), so ``grad_x log p_x(x) = s_y(y, t) / std``.

``density.npz`` in a run folder (:func:`snapshot_density`, called by the training loop at every
evaluation of a 1-D or 2-D run): ``steps (K,)``, ``t`` (the time of the density), the grid axes
``x0`` (and ``x1``), and ``log_density (K, G)`` or ``(K, G1, G0)`` (rows along ``x1``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.checks import default_eps
from ..core.likelihood import log_likelihood
from ..core.ode import ODEError
from ..core.score import ScoreModel
from ..data import Standardizer
from .checkpoint import _atomic_write

__all__ = [
    "SNAPSHOT",
    "SNAPSHOT_GRID",
    "grid_axes",
    "integrate_score",
    "score_on_grid",
    "log_density_on_grid",
    "snapshot_density",
    "read_snapshots",
]

SNAPSHOT = "density.npz"
SNAPSHOT_GRID = {1: 200, 2: 40}  # grid points per axis of the training snapshots
SNAPSHOT_TOL = 1e-3  # the snapshots' ODE tolerance: cheap, and far below what a picture shows


def grid_axes(x: np.ndarray | Tensor, points: int, pad: float = 0.25) -> list[np.ndarray]:
    """One axis per coordinate of the ``(N, D)`` points ``x``: ``points`` values spanning their
    0.5-99.5 percentile range widened by ``pad`` times its size on each side."""
    a = np.asarray(torch.as_tensor(x).detach().cpu().double()).reshape(len(x), -1)
    lo, hi = np.percentile(a, 0.5, axis=0), np.percentile(a, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-6)
    return [np.linspace(l - pad * s, h + pad * s, points) for l, h, s in zip(lo, hi, span)]


def _mesh(axes: list[np.ndarray]) -> np.ndarray:
    """``(M, D)`` grid points, the last axis varying slowest (2-D: rows along ``x1``)."""
    if len(axes) == 1:
        return axes[0][:, None]
    return np.stack(np.meshgrid(*axes), -1).reshape(-1, len(axes))


def _normalise(logp: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    """``logp - log Z`` with ``Z`` the trapezoid integral of ``exp(logp)`` over the grid."""
    from scipy.integrate import trapezoid

    m = logp.max()
    z = np.exp(logp - m)
    for ax in axes:  # innermost array axis = first grid axis
        z = trapezoid(z, ax, axis=-1)
    return logp - m - np.log(z)


def _difference(n: int):
    """The ``(n - 1, n)`` sparse forward difference ``phi[i + 1] - phi[i]``."""
    from scipy import sparse

    return sparse.diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(n - 1, n), format="csr")


def _potential_2d(scores: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Least-squares ``phi (G1, G0)`` with differences matching the score's trapezoid increments
    (the normal equations: a discrete Poisson problem, one value pinned to remove the constant)."""
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    s0, s1 = scores[..., 0], scores[..., 1]
    b0 = 0.5 * (s0[:, 1:] + s0[:, :-1]) * np.diff(x0)[None, :]
    b1 = 0.5 * (s1[1:, :] + s1[:-1, :]) * np.diff(x1)[:, None]
    A = sparse.vstack(
        [
            sparse.kron(sparse.identity(len(x1)), _difference(len(x0))),
            sparse.kron(_difference(len(x1)), sparse.identity(len(x0))),
        ]
    ).tocsr()
    b = np.concatenate([b0.ravel(), b1.ravel()])
    pin = sparse.csr_matrix(([1.0], ([0], [0])), shape=(A.shape[1], A.shape[1]))
    phi = spsolve((A.T @ A + pin).tocsc(), A.T @ b)
    return phi.reshape(len(x1), len(x0))


def integrate_score(scores: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    """Normalised log-density on the grid of ``axes`` whose gradient is ``scores``.

    1-D: ``scores (G,)`` on ``axes[0]``, cumulative trapezoid rule. 2-D: ``scores (G1, G0, 2)``
    (rows along ``axes[1]``), least squares (module docstring). Returns ``(G,)`` or ``(G1, G0)``.
    """
    from scipy.integrate import cumulative_trapezoid

    s = np.asarray(scores, dtype=np.float64)
    if len(axes) == 1:
        logp = cumulative_trapezoid(s.reshape(-1), axes[0], initial=0.0)
    elif len(axes) == 2:
        logp = _potential_2d(s, axes[0], axes[1])
    else:
        raise ValueError(f"integrate_score needs 1-D or 2-D grids, got {len(axes)} axes")
    return _normalise(logp, axes)


@torch.no_grad()
def score_on_grid(
    model: ScoreModel, standardizer: Standardizer | None, axes: list[np.ndarray], t: float
) -> np.ndarray:
    """The learned score ``grad_x log p_t`` in data units on the grid, ``(G,)`` or
    ``(G1, G0, 2)``."""
    weight = next(model.parameters(), None)
    device = weight.device if weight is not None else torch.device("cpu")
    x = torch.as_tensor(_mesh(axes), dtype=torch.float32, device=device)
    y = x if standardizer is None else standardizer.forward(x)
    s = model.score_fn(y, torch.full((len(y),), float(t), device=device))
    if standardizer is not None:  # chain rule of y = (x - mean) / std
        s = s / standardizer.std.to(s)
    s = s.double().cpu().numpy()
    return s[:, 0] if len(axes) == 1 else s.reshape(len(axes[1]), len(axes[0]), 2)


def log_density_on_grid(
    model: ScoreModel,
    standardizer: Standardizer | None,
    axes: list[np.ndarray],
    t: float | None = None,
    tol: float = 1e-4,
) -> np.ndarray:
    """The model's ``log p_t`` on the grid in data units, ``(G,)`` or ``(G1, G0)``: the
    probability-flow likelihood (exact divergence, dopri5 at ``rtol = atol = tol``) from ``t``
    (default: the sampler's final time :func:`~scoresde.core.checks.default_eps`) to T.

    Not the integral of the score at ``t`` itself: with a noise-predicting network the score at
    a small t is its output divided by a tiny sigma(t), so its errors are large there, while the
    ODE weighs the score by g(t)^2 and gives the density the model's ODE samples follow.
    Falls back to :func:`integrate_score` when the solver cannot finish (a diverging model).
    """
    t = default_eps(model.sde) if t is None else t
    weight = next(model.parameters(), None)
    device = weight.device if weight is not None else torch.device("cpu")
    x = torch.as_tensor(_mesh(axes), dtype=torch.float32, device=device)
    y = x if standardizer is None else standardizer.forward(x)
    try:
        lp, _, _ = log_likelihood(model.sde, model.score_fn, y, divergence="exact", eps=t,
                                  rtol=tol, atol=tol)  # fmt: skip
    except (ODEError, ValueError):
        return integrate_score(score_on_grid(model, standardizer, axes, t), axes)
    lp = lp.detach().double().cpu().numpy()
    if standardizer is not None:
        lp = lp + standardizer.log_det().item()  # log p_x = log p_y + log |dy/dx|
    return lp if len(axes) == 1 else lp.reshape(len(axes[1]), len(axes[0]))


def read_snapshots(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a ``density.npz`` (module docstring)."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _same_grid(old: dict, axes: list[np.ndarray], t: float) -> bool:
    keys = [f"x{i}" for i in range(len(axes))]
    return (
        set(keys) == {k for k in old if k.startswith("x")}
        and float(old["t"]) == t
        and all(old[k].shape == a.shape and np.allclose(old[k], a) for k, a in zip(keys, axes))
    )


def snapshot_density(
    model: ScoreModel,
    standardizer: Standardizer | None,
    data: Tensor,
    step: int,
    path: str | Path,
) -> Path:
    """Append the density of ``model`` at ``step`` to the snapshot file ``path`` (atomically).

    The grid (:data:`SNAPSHOT_GRID` points per axis) spans ``data`` (``(N, 1|2)``, data units),
    so it is the same at every evaluation of a run. Snapshots of steps ``>= step`` (a resumed run
    repeats them, bit for bit) and a file on another grid are replaced.
    """
    path = Path(path)
    axes = grid_axes(data, SNAPSHOT_GRID[data.shape[1]])
    t = default_eps(model.sde)
    logp = log_density_on_grid(model, standardizer, axes, t, tol=SNAPSHOT_TOL)
    steps, stack = np.zeros(0, dtype=np.int64), np.zeros((0, *logp.shape))
    if path.is_file():
        old = read_snapshots(path)
        if _same_grid(old, axes, t):
            keep = old["steps"] < step
            steps, stack = old["steps"][keep], old["log_density"][keep]
    arrays = {f"x{i}": a for i, a in enumerate(axes)}
    arrays |= {"t": np.float64(t), "steps": np.append(steps, step)}
    arrays["log_density"] = np.concatenate([stack, logp[None]]).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path
