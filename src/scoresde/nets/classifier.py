"""A small noise-conditional classifier ``net(x, noise_label) -> (B, K)`` logits.

For classifier guidance (Song et al. 2021, Appendix I.4) a classifier must read noisy inputs
``x_t`` at every noise level, so the noise label enters as in the score networks here: a Gaussian
Fourier embedding of the label (fixed frequencies, a buffer), mapped once to the width and added
to every block. Vectors ``(B, D)`` go through an MLP; images ``(B, C, H, W)`` through a few
GroupNorm-SiLU-conv blocks that halve the resolution down to 4x4 or less, then a global mean.
The network knows no SDE: the input scaling and the time -> label map live with its trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import GaussianFourierProjection

__all__ = ["NoiseClassifier", "NoiseClassifierConfig"]


@dataclass
class NoiseClassifierConfig:
    """Constructor arguments of :class:`NoiseClassifier`."""

    shape: tuple[int, ...]
    num_classes: int
    width: int = 64
    depth: int = 3
    embed_dim: int = 32
    fourier_scale: float = 1.0


class _Block(nn.Module):
    """``h + conv(SiLU(GroupNorm(h)) + time)``, then 2x average pooling where ``down``."""

    def __init__(self, width: int, down: bool):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, width // 4) or 1, width)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.time = nn.Linear(width, width)
        self.down = nn.AvgPool2d(2) if down else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        """The block's output for features ``h`` and the time features ``temb`` ``(B, width)``."""
        h = h + self.conv(self.act(self.norm(h)) + self.time(temb)[:, :, None, None])
        return self.down(h)


class NoiseClassifier(nn.Module):
    """Logits ``(B, num_classes)`` of noisy inputs.

    Args:
        shape: one example's shape, ``(D,)`` or ``(C, H, W)``.
        num_classes: K.
        width: hidden width (channels of the image blocks).
        depth: hidden layers (MLP) or blocks (images), >= 1.
        embed_dim: size of the Fourier embedding of the noise label (even).
        fourier_scale: std of its frequencies (small: smooth in the label).
    """

    Config = NoiseClassifierConfig

    def __init__(
        self,
        shape,
        num_classes: int,
        width: int = 64,
        depth: int = 3,
        embed_dim: int = 32,
        fourier_scale: float = 1.0,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise ValueError(f"shape must be (D,) or (C, H, W), got {shape}")
        for name, v in (("num_classes", num_classes), ("width", width), ("depth", depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"NoiseClassifier {name} must be a positive integer, got {v!r}")
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even number >= 2, got {embed_dim}")
        self.config = NoiseClassifierConfig(
            shape, num_classes, width, depth, embed_dim, float(fourier_scale)
        )
        self.embed = GaussianFourierProjection(embed_dim // 2, fourier_scale, buffer=True)
        self.temb = nn.Sequential(nn.Linear(embed_dim, width), nn.SiLU())
        self.act = nn.SiLU()
        if len(shape) == 1:
            widths = [shape[0]] + [width] * depth
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
            self.time_proj = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        else:
            self.stem = nn.Conv2d(shape[0], width, 3, padding=1)
            sizes = [min(shape[1:]) // 2**i for i in range(depth)]
            self.blocks = nn.ModuleList(_Block(width, s > 4) for s in sizes)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        """Logits ``(B, K)`` for inputs ``x`` ``(B, *shape)`` and noise labels ``(B,)``."""
        shape = self.config.shape
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"NoiseClassifier expects inputs (B, {shape}), got {tuple(x.shape)}")
        temb = self.temb(self.embed(label))
        if len(shape) == 1:
            h = x
            for layer, proj in zip(self.layers, self.time_proj):
                h = self.act(layer(h) + proj(temb))
            return self.head(h)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.head(self.act(torch.mean(h, dim=(2, 3))))
