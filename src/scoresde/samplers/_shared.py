"""What the fast samplers (EDM, DPM-Solver, adaptive, the lambda family) share.

They are written with the SDE's own schedules (``alpha = exp(log_alpha)``, ``sigma``,
``lambda = log(alpha / sigma)`` and its inverse ``t_of_log_snr``), so one code path serves VE
(alpha = 1), VP and sub-VP. A :class:`Node` holds those schedules at one time as host floats,
computed once per sampler call in float64; the loops do tensor arithmetic only. Two quantities of
the score ``s`` recur:

* noise prediction   ``eps_theta(x, t) = -sigma(t) s(x, t)``                    (DPM-Solver)
* data prediction    ``x0_theta(x, t) = (x + sigma(t)^2 s(x, t)) / alpha(t)``   (DPM-Solver++,
  Tweedie's formula; also the optional final denoising step, one more evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..core.checks import CheckedScore
from ..core.sde import SDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor, Tensor], None]
F64 = torch.float64


class Node(NamedTuple):
    """Schedules of the SDE at one time, as host floats."""

    t: float
    log_alpha: float
    sigma: float
    lam: float

    @property
    def alpha(self) -> float:
        """Mean coefficient ``alpha(t) = exp(log_alpha)``."""
        return math.exp(self.log_alpha)

    @property
    def sigma_edm(self) -> float:
        """Noise level of ``x / alpha``: ``sigma / alpha = exp(-lambda)``."""
        return math.exp(-self.lam)


def nodes(sde: SDE, t: Tensor) -> list[Node]:
    """The schedules at each time of the float64 host tensor ``t``."""
    la, sg = sde.log_alpha(t), sde.sigma(t)
    return [Node(*v) for v in zip(t.tolist(), la.tolist(), sg.tolist(), (la - sg.log()).tolist())]


def end_node(sde: SDE, eps: float) -> Node:
    """The node at the final time ``eps``."""
    return nodes(sde, torch.tensor([eps], dtype=F64))[0]


def batch_time(x: Tensor, t: float) -> Tensor:
    """The host time ``t`` as a ``(B,)`` tensor on the device and in the dtype of ``x``."""
    return torch.full(x.shape[:1], t, device=x.device, dtype=x.dtype)


def score_at(score: CheckedScore, x: Tensor, n: Node) -> Tensor:
    """``s(x, t)`` at the node's time."""
    return score(x, batch_time(x, n.t))


def noise_pred(score: CheckedScore, x: Tensor, n: Node) -> Tensor:
    """``eps_theta = -sigma s``."""
    return -n.sigma * score_at(score, x, n)


def data_pred(score: CheckedScore, x: Tensor, n: Node) -> Tensor:
    """``x0_theta = (x + sigma^2 s) / alpha`` (Tweedie: ``E[x_0 | x_t]``)."""
    return (x + n.sigma**2 * score_at(score, x, n)) / n.alpha


def finish(score: CheckedScore, x: Tensor, end: Node, denoise: bool) -> tuple[Tensor, int]:
    """``(x, nfe)`` at the end of a solve, after one Tweedie step at ``end`` where ``denoise``;
    raises if any evaluation of the solve was NaN / inf."""
    if denoise:
        x = data_pred(score, x, end)
    return x, score.finish()


def randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """A standard-normal draw shaped like ``x``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def report(callback: Callback | None, i: int, t: float | Tensor, x: Tensor, x_mean: Tensor) -> None:
    """``callback(i, t, x, x_mean)`` with ``t`` as a ``(B,)`` tensor, if there is a callback."""
    if callback is not None:
        callback(i, t if isinstance(t, Tensor) else batch_time(x, t), x, x_mean)
