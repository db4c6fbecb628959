"""The DDPM U-Net of Ho et al. (2020), as the official score_sde ``ddpm`` model.

Sinusoidal embedding of the timestep label, DDPM residual blocks (GroupNorm with 32 groups),
single-head attention at the chosen resolutions, strided-conv downsampling and nearest + conv
upsampling. Layers sit in ``all_modules`` in the official order so official checkpoints load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .layers import (
    AttnBlock,
    Downsample,
    ResnetBlockDDPM,
    Upsample,
    conv3x3,
    dense,
    get_act,
    group_norm,
    timestep_embedding,
)
from .ncsnpp import smld_sigmas

__all__ = ["DDPMConfig", "DDPM"]


@dataclass
class DDPMConfig:
    """Architecture of the DDPM U-Net (field names as in the official ``config.model``).

    Attributes:
        image_size: side of the training images; decides the attention levels.
        num_channels: image channels.
        centered: inputs already in [-1, 1]; if False the net maps [0, 1] inputs by 2x - 1.
        nf, ch_mult, num_res_blocks: base width, width multiplier per level, blocks per level.
        attn_resolutions: image sides at which self-attention follows each block.
        dropout: dropout rate inside residual blocks.
        resamp_with_conv: resampling layers carry a 3x3 convolution.
        num_groups: GroupNorm groups (32 in DDPM; every width must be a multiple).
        scale_by_sigma: divide the output by the SMLD table ``sigmas[label]`` (NCSN-style training).
        nonlinearity: 'swish' | 'elu' | 'relu' | 'lrelu'.
        sigma_min, sigma_max, num_scales: the SMLD noise table kept as the buffer ``sigmas``.
    """

    image_size: int = 32
    num_channels: int = 3
    centered: bool = True
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    num_groups: int = 32
    scale_by_sigma: bool = False
    nonlinearity: str = "swish"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000

    def __post_init__(self):
        self.ch_mult, self.attn_resolutions = tuple(self.ch_mult), tuple(self.attn_resolutions)
        get_act(self.nonlinearity)
        levels = len(self.ch_mult)
        if levels < 1 or self.nf < 1 or self.num_res_blocks < 0 or min(self.ch_mult) < 1:
            raise ValueError("need nf >= 1, num_res_blocks >= 0 and a non-empty positive ch_mult")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**(len(ch_mult)-1) = "
                f"{2 ** (levels - 1)}"
            )
        bad = [self.nf * k for k in (1, *self.ch_mult) if (self.nf * k) % self.num_groups]
        if bad:
            raise ValueError(
                f"every width must be a multiple of num_groups={self.num_groups}; got widths {bad}"
            )


class DDPM(nn.Module):
    """DDPM U-Net: ``net(x, noise_label) -> tensor shaped like x`` (label = timestep, float).

    Args:
        config: a :class:`DDPMConfig`; or keyword arguments with its field names.
    """

    Config = DDPMConfig

    def __init__(self, config: DDPMConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = DDPMConfig(**kwargs)
        elif kwargs:
            raise ValueError("pass either a config or keyword arguments, not both")
        self.config = c = config
        self.act = get_act(c.nonlinearity)
        self.register_buffer("sigmas", smld_sigmas(c.sigma_min, c.sigma_max, c.num_scales))
        self.attn_levels = [
            c.image_size // 2**i in c.attn_resolutions for i in range(len(c.ch_mult))
        ]
        self.all_modules = nn.ModuleList(self._build())

    def _resblock(self, in_ch: int, out_ch: int | None = None) -> ResnetBlockDDPM:
        c = self.config
        return ResnetBlockDDPM(
            self.act, in_ch, out_ch, temb_dim=4 * c.nf, dropout=c.dropout, num_groups=c.num_groups
        )

    def _attn(self, ch: int) -> AttnBlock:
        return AttnBlock(ch, num_groups=self.config.num_groups)

    def _build(self) -> list[nn.Module]:
        c = self.config
        nf, top = c.nf, len(c.ch_mult) - 1
        m: list[nn.Module] = [dense(nf, 4 * nf), dense(4 * nf, 4 * nf), conv3x3(c.num_channels, nf)]
        hs_c, in_ch = [nf], nf
        for level, mult in enumerate(c.ch_mult):
            for _ in range(c.num_res_blocks):
                m.append(self._resblock(in_ch, nf * mult))
                in_ch = nf * mult
                if self.attn_levels[level]:
                    m.append(self._attn(in_ch))
                hs_c.append(in_ch)
            if level != top:
                m.append(Downsample(in_ch, with_conv=c.resamp_with_conv))
                hs_c.append(in_ch)
        m += [self._resblock(in_ch), self._attn(in_ch), self._resblock(in_ch)]
        for level in reversed(range(top + 1)):
            for _ in range(c.num_res_blocks + 1):
                m.append(self._resblock(in_ch + hs_c.pop(), nf * c.ch_mult[level]))
                in_ch = nf * c.ch_mult[level]
            if self.attn_levels[level]:
                m.append(self._attn(in_ch))
            if level != 0:
                m.append(Upsample(in_ch, with_conv=c.resamp_with_conv))
        m += [group_norm(in_ch, c.num_groups), conv3x3(in_ch, c.num_channels, init_scale=0.0)]
        return m

    def forward(self, x: Tensor, noise_label: Tensor) -> Tensor:
        """Network output for images ``x`` (B, C, H, W) and per-example timestep labels (B,)."""
        c = self.config
        if noise_label.ndim != 1 or noise_label.shape[0] != x.shape[0]:
            raise ValueError(
                f"noise_label must have shape ({x.shape[0]},), got {tuple(noise_label.shape)}"
            )
        m = iter(self.all_modules)
        label = noise_label.to(x.dtype) if noise_label.is_floating_point() else noise_label
        temb = next(m)(timestep_embedding(label.to(x.dtype), c.nf))
        temb = next(m)(self.act(temb))
        h = x if c.centered else 2 * x - 1.0  # [0, 1] data -> [-1, 1]
        hs = [next(m)(h)]
        top = len(c.ch_mult) - 1
        for level in range(top + 1):
            for _ in range(c.num_res_blocks):
                h = next(m)(hs[-1], temb)
                if self.attn_levels[level]:
                    h = next(m)(h)
                hs.append(h)
            if level != top:
                hs.append(next(m)(hs[-1]))
        h = next(m)(hs[-1], temb)
        h = next(m)(h)
        h = next(m)(h, temb)
        for level in reversed(range(top + 1)):
            for _ in range(c.num_res_blocks + 1):
                h = next(m)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[level]:
                h = next(m)(h)
            if level != 0:
                h = next(m)(h)
        norm, conv = next(m), next(m)
        h = conv(self.act(norm(h)))
        if next(m, None) is not None:
            raise RuntimeError("DDPM.forward did not use every module")  # construction bug
        if c.scale_by_sigma:
            h = h / self.sigmas[noise_label.long()].to(h.dtype).reshape(-1, 1, 1, 1)
        return h

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
