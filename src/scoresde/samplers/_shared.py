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


def on_device(rows: list[list[float]], like: Tensor) -> list[tuple[Tensor, ...]]:
    """Host coefficients (one row per step) as 0-d tensors on the device and in the dtype of
    ``like``, moved in one transfer; row ``i`` keeps its length. A loop multiplying by these does
    no host-to-device work per step (and a 0-d tensor costs less per product than a float)."""
    width = max(map(len, rows), default=0)
    padded = [list(r) + [0.0] * (width - len(r)) for r in rows]
    table = torch.tensor(padded, dtype=like.dtype, device=like.device).reshape(len(rows), width)
    return [tuple(v.unbind(0)[: len(r)]) for v, r in zip(table.unbind(0), rows)]


def tweedie_at(line: list[Node], like: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """For each node, what :func:`data_pred_at` needs: the ``(B,)`` time (a view) and the 0-d
    ``sigma^2`` and ``alpha``, on the device and in the dtype of ``like``, made once per call."""
    times = torch.tensor([n.t for n in line], dtype=like.dtype, device=like.device)
    coef = on_device([[n.sigma**2, n.alpha] for n in line], like)
    return [(t.expand(like.shape[0]), s2, a) for t, (s2, a) in zip(times.unbind(0), coef)]


def data_pred_at(score: CheckedScore, x: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """:func:`data_pred` with the node's values from :func:`tweedie_at`:
    ``x0_theta = (x + sigma^2 s) / alpha``."""
    t, sigma2, alpha = at
    return (x + sigma2 * score(x, t)) / alpha


def finish(score: CheckedScore, x: Tensor, end: Node, denoise: bool) -> tuple[Tensor, int]:
    """``(x, nfe)`` at the end of a solve, after one Tweedie step at ``end`` where ``denoise``;
    raises if any evaluation of the solve was NaN / inf."""
    if denoise:
        x = data_pred(score, x, end)
    return x, score.finish()


def randn(x: Tensor, generator: torch.Generator | SampleStreams | None) -> Tensor:
    """A standard-normal draw shaped like ``x``: from ``generator``, or row ``i`` from stream
    ``i`` of a :class:`SampleStreams`. Every random draw of a sampler's steps goes through here."""
    if isinstance(generator, SampleStreams):
        return generator.randn(x.shape, x.device, x.dtype)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


_MASK64 = (1 << 64) - 1


def _splitmix64(v: int) -> int:
    """One step of SplitMix64: a well-mixed 64-bit integer of ``v``."""
    v = (v + 0x9E3779B97F4A7C15) & _MASK64
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & _MASK64
    return v ^ (v >> 31)


def stream_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``'s stream under ``seed`` (64 bits, mixed: nearby seeds and
    indices give unrelated streams)."""
    return _splitmix64((_splitmix64(seed & _MASK64) + index) & _MASK64)


class SampleStreams:
    """One random stream per sample index, so samples do not depend on batch or chunk.

    Stream ``i`` is a CPU ``torch.Generator`` seeded :func:`stream_seed(seed, i) <stream_seed>`
    for ``i`` in ``indices``; row ``r`` of every draw comes from stream ``indices[r]`` alone, so
    sample ``i`` is the same whichever batch it is drawn in, on any device (draws are made on the
    CPU in the requested dtype, then moved). Pass it as a sampler's ``generator`` together with
    a start latent ``z = streams.prior(sde, shape, ...)``. Draws are made in blocks of several
    steps per stream (a fixed number for a given row shape) to keep the per-row overhead small.
    """

    BLOCK_VALUES = 8192  # values drawn per stream at a time (at least one row's draw)

    def __init__(self, seed: int, indices: range | list[int]) -> None:
        self.seed, self.indices = int(seed), list(indices)
        self.generators = [torch.Generator().manual_seed(stream_seed(seed, i)) for i in indices]
        self._blocks: dict[tuple, list] = {}  # (row shape, dtype, device) -> [block, next]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(
        self,
        shape: tuple[int, ...] | torch.Size,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """A standard-normal ``shape`` draw, row ``r`` from stream ``r`` (``shape[0]`` rows)."""
        if len(shape) < 1 or shape[0] != len(self):
            raise ValueError(f"draws from {len(self)} streams need {len(self)} rows, got {shape}")
        dtype = dtype or torch.get_default_dtype()
        key = (tuple(shape[1:]), dtype, torch.device(device or "cpu"))
        entry = self._blocks.get(key)
        if entry is None or entry[1] == entry[0].shape[1]:
            k = max(1, self.BLOCK_VALUES // max(1, math.prod(key[0])))
            block = [torch.randn((k, *key[0]), generator=g, dtype=dtype) for g in self.generators]
            entry = self._blocks[key] = [torch.stack(block).to(key[2]), 0]
        entry[1] += 1
        return entry[0][:, entry[1] - 1]

    def prior(
        self,
        sde: SDE,
        shape: tuple[int, ...],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """A start latent at T of ``shape`` from the streams: ``N(0, prior_std^2 I)`` per row,
        the first draw of each stream (as :meth:`~scoresde.core.sde.SDE.prior_sampling`)."""
        return self.randn(shape, device, dtype) * sde.prior_std


def report(callback: Callback | None, i: int, t: float | Tensor, x: Tensor, x_mean: Tensor) -> None:
    """``callback(i, t, x, x_mean)`` with ``t`` as a ``(B,)`` tensor, if there is a callback."""
    if callback is not None:
        callback(i, t if isinstance(t, Tensor) else batch_time(x, t), x, x_mean)
