"""The small time-conditional U-Net of the score-SDE tutorial notebook (``ScoreNet``, 28x28 MNIST).

Four conv / GroupNorm / swish stages down (strides 1, 2, 2, 2), three transposed-conv stages up with
skip connections by concatenation, and a time embedding added as a per-channel bias at every stage.
The output is the raw network output: the tutorial's division by sigma(t) is the ``scaled``
parameterization of :class:`scoresde.core.score.ScoreModel` (label ``t``), not part of the network.

Two options address what was seen training it on MNIST (DESIGN section 4):

* ``padded=True``: 'same'-padded convolutions. The tutorial's unpadded convolutions never see the
  border pixels as centre pixels, and trained samples carried bright specks in the image corners.
  Padded, the net runs on any image side >= 8; unpadded, on any side >= 17 (28 for MNIST).
* ``embedding='positional'``: a smooth deterministic sinusoidal embedding (DDPM's, with frequencies
  from ``positional_scale`` down to ``positional_scale / 10^4`` per unit label), instead of random
  Fourier features of scale ``fourier_scale`` whose high frequencies (2 pi |W|, ~50-150 per unit
  t at scale 8) make the output jump with small changes of the label (a rough field the ODE
  solver must resolve).

The defaults are the tutorial's layout; parameter names are the tutorial's (``embed.W``,
``conv1``, ``dense1.dense``, ``gnorm1``, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .layers import GaussianFourierProjection, timestep_embedding

__all__ = ["UNetTutorialConfig", "ScoreNet"]

_EMBEDDINGS = ("fourier", "positional")


@dataclass
class UNetTutorialConfig:
    """Architecture of the tutorial U-Net.

    Attributes:
        num_channels: image channels (1 for MNIST).
        channels: widths of the four stages.
        embed_dim: size of the time embedding.
        embedding: 'fourier' (the tutorial's) or 'positional' (smooth).
        fourier_scale: std of the random Fourier frequencies (the seed notebook's value 8).
        positional_scale: the positional embedding is of ``positional_scale * label``: its highest
            frequency, in radians per unit label.
        padded: 'same'-padded convolutions instead of the tutorial's unpadded ones.
    """

    num_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128, 256)
    embed_dim: int = 256
    embedding: str = "fourier"
    fourier_scale: float = 8.0
    positional_scale: float = 10.0
    padded: bool = False

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ValueError(f"channels must be four positive widths, got {self.channels}")
        if self.embedding not in _EMBEDDINGS:
            raise ValueError(
                f"unknown embedding {self.embedding!r}; valid: {', '.join(_EMBEDDINGS)}"
            )
        if self.embed_dim < 4 or self.embed_dim % 2:
            raise ValueError(f"embed_dim must be even and >= 4, got {self.embed_dim}")


def _groups(channels: int, preferred: int) -> int:
    """The largest group count <= preferred that divides ``channels`` (the tutorial's 4 and 32)."""
    return max(g for g in range(1, min(preferred, channels) + 1) if channels % g == 0)


class Dense(nn.Module):
    """Linear map of the embedding to a per-channel bias, shaped (B, C, 1, 1)."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.dense = nn.Linear(input_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(x)[..., None, None]


class ScoreNet(nn.Module):
    """The tutorial U-Net: ``net(x, noise_label) -> tensor shaped like x`` (label: t in [0, 1]).

    Args:
        config: a :class:`UNetTutorialConfig`; or keyword arguments with its field names.
    """

    Config = UNetTutorialConfig

    def __init__(self, config: UNetTutorialConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = UNetTutorialConfig(**kwargs)
        elif kwargs:
            raise ValueError("pass either a config or keyword arguments, not both")
        self.config = c = config
        ch, E, p = c.channels, c.embed_dim, int(c.padded)
        if c.embedding == "fourier":
            self.embed = GaussianFourierProjection(E // 2, scale=c.fourier_scale)
        # Encoder: resolution 1, 1/2, 1/4, 1/8.
        self.conv1 = nn.Conv2d(c.num_channels, ch[0], 3, stride=1, padding=p, bias=False)
        self.dense1, self.gnorm1 = Dense(E, ch[0]), nn.GroupNorm(_groups(ch[0], 4), ch[0])
        self.conv2 = nn.Conv2d(ch[0], ch[1], 3, stride=2, padding=p, bias=False)
        self.dense2, self.gnorm2 = Dense(E, ch[1]), nn.GroupNorm(_groups(ch[1], 32), ch[1])
        self.conv3 = nn.Conv2d(ch[1], ch[2], 3, stride=2, padding=p, bias=False)
        self.dense3, self.gnorm3 = Dense(E, ch[2]), nn.GroupNorm(_groups(ch[2], 32), ch[2])
        self.conv4 = nn.Conv2d(ch[2], ch[3], 3, stride=2, padding=p, bias=False)
        self.dense4, self.gnorm4 = Dense(E, ch[3]), nn.GroupNorm(_groups(ch[3], 32), ch[3])
        # Decoder: transposed convolutions; output sizes are matched to the skip tensors.
        self.tconv4 = nn.ConvTranspose2d(ch[3], ch[2], 3, stride=2, padding=p, bias=False)
        self.dense5, self.tgnorm4 = Dense(E, ch[2]), nn.GroupNorm(_groups(ch[2], 32), ch[2])
        self.tconv3 = nn.ConvTranspose2d(2 * ch[2], ch[1], 3, stride=2, padding=p, bias=False)
        self.dense6, self.tgnorm3 = Dense(E, ch[1]), nn.GroupNorm(_groups(ch[1], 32), ch[1])
        self.tconv2 = nn.ConvTranspose2d(2 * ch[1], ch[0], 3, stride=2, padding=p, bias=False)
        self.dense7, self.tgnorm2 = Dense(E, ch[0]), nn.GroupNorm(_groups(ch[0], 32), ch[0])
        self.tconv1 = nn.ConvTranspose2d(2 * ch[0], c.num_channels, 3, stride=1, padding=p)
        self.act = nn.SiLU()

    def _embedding(self, label: Tensor, dtype: torch.dtype) -> Tensor:
        c = self.config
        if c.embedding == "fourier":
            return self.embed(label.to(dtype))
        return timestep_embedding(label.to(dtype) * c.positional_scale, c.embed_dim)

    def _stage(self, h: Tensor, dense: Dense, norm: nn.GroupNorm, embed: Tensor) -> Tensor:
        """act(GroupNorm(h + Dense(embed)))."""
        return self.act(norm(h + dense(embed)))

    def forward(self, x: Tensor, noise_label: Tensor) -> Tensor:
        """Network output for images ``x`` (B, C, H, W) and per-example labels (B,)."""
        if noise_label.ndim != 1 or noise_label.shape[0] != x.shape[0]:
            raise ValueError(
                f"noise_label must have shape ({x.shape[0]},), got {tuple(noise_label.shape)}"
            )
        embed = self.act(self._embedding(noise_label, x.dtype))
        h1 = self._stage(self.conv1(x), self.dense1, self.gnorm1, embed)
        h2 = self._stage(self.conv2(h1), self.dense2, self.gnorm2, embed)
        h3 = self._stage(self.conv3(h2), self.dense3, self.gnorm3, embed)
        h4 = self._stage(self.conv4(h3), self.dense4, self.gnorm4, embed)
        h = self.tconv4(h4, output_size=h3.shape[-2:])
        h = self._stage(h, self.dense5, self.tgnorm4, embed)
        h = self.tconv3(torch.cat([h, h3], dim=1), output_size=h2.shape[-2:])
        h = self._stage(h, self.dense6, self.tgnorm3, embed)
        h = self.tconv2(torch.cat([h, h2], dim=1), output_size=h1.shape[-2:])
        h = self._stage(h, self.dense7, self.tgnorm2, embed)
        return self.tconv1(torch.cat([h, h1], dim=1), output_size=x.shape[-2:])

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
