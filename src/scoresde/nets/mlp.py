"""A small MLP score network for vector data ``(B, D)`` (1-D and 2-D toys, tabular data).

The time (noise label) enters through a Gaussian Fourier embedding as in the seed notebook
(Tancik et al. 2020): fixed random frequencies ``W ~ N(0, scale^2)`` and features
``[sin(2 pi W t), cos(2 pi W t)]``. The embedding is mapped to the hidden width once and added
before every hidden layer's activation, so each layer sees the time.

The frequencies are a buffer: saved in the state dict, never trained. A small ``fourier_scale``
keeps the network smooth in t (the probability-flow ODE then needs fewer steps); the labels fed to
it here are ``t`` in ``[0, 1]`` (see ``scoresde.core.score.LABELS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .layers import GaussianFourierProjection

__all__ = ["MLP", "MLPConfig", "GaussianFourierProjection"]


@dataclass
class MLPConfig:
    """Constructor arguments of :class:`MLP` (``dim`` is the data dimension D)."""

    dim: int
    hidden: int = 128
    depth: int = 3
    embed_dim: int = 64
    fourier_scale: float = 4.0


class MLP(nn.Module):
    """Score network ``(x, label) -> (B, D)`` with ``depth`` time-conditioned SiLU layers.

    Args:
        dim: data dimension D (inputs may be ``(B, D)`` or any ``(B, ...)`` with D entries).
        hidden: width of the hidden layers.
        depth: number of hidden layers (>= 1).
        embed_dim: size of the Fourier time embedding (even).
        fourier_scale: std of the random Fourier frequencies W.
    """

    Config = MLPConfig

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        embed_dim: int = 64,
        fourier_scale: float = 4.0,
    ):
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MLP {name} must be a positive integer, got {v!r}")
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even number >= 2, got {embed_dim}")
        if not fourier_scale > 0:
            raise ValueError(f"fourier_scale must be > 0, got {fourier_scale}")
        self.config = MLPConfig(dim, hidden, depth, embed_dim, float(fourier_scale))
        self.embed = GaussianFourierProjection(embed_dim // 2, fourier_scale, buffer=True)
        self.temb = nn.Sequential(nn.Linear(embed_dim, hidden), nn.SiLU())
        widths = [dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.time_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        """Network output shaped like ``x`` for noise labels ``label`` ``(B,)``."""
        h = x.reshape(x.shape[0], -1)
        if h.shape[1] != self.config.dim:
            raise ValueError(f"MLP expects {self.config.dim} entries per example, got {h.shape[1]}")
        temb = self.temb(self.embed(label))
        for layer, proj in zip(self.layers, self.time_proj):
            h = self.act(layer(h) + proj(temb))
        return self.out(h).reshape(x.shape)
