"""NCSN++ and DDPM++ (Song et al. 2021, appendix H): one U-Net class with the paper's options.

NCSN++ (the VE model) is the default configuration: FIR resampling, BigGAN residual blocks,
``progressive_input='residual'``, Gaussian Fourier embedding of log sigma and the output divided by
sigma. DDPM++ (the VP / sub-VP model) is ``fir=False, progressive_input='none',
embedding_type='positional', scale_by_sigma=False``.

The layers sit in one ``nn.ModuleList`` called ``all_modules`` in the official construction order,
so that an official state dict (after stripping ``module.``) loads key for key; ``forward`` walks
the list in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .layers import (
    AttnBlock,
    Combine,
    Downsample,
    GaussianFourierProjection,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    Upsample,
    conv3x3,
    dense,
    get_act,
    group_norm,
    timestep_embedding,
)

__all__ = ["NCSNppConfig", "NCSNpp", "smld_sigmas"]

_CHOICES = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
}


@dataclass
class NCSNppConfig:
    """Architecture of NCSN++ / DDPM++ (field names as in the official ``config.model``).

    Attributes:
        image_size: side of the training images; decides which levels get attention (the levels
            whose side ``image_size / 2**level`` is in ``attn_resolutions``). Inputs of any size
            divisible by ``2**(len(ch_mult) - 1)`` run.
        num_channels: image channels.
        centered: inputs are already in [-1, 1]; if False the net maps [0, 1] inputs by 2x - 1.
        nf, ch_mult, num_res_blocks: base width, width multiplier per level, blocks per level.
        attn_resolutions: image sides at which self-attention follows each block.
        dropout: dropout rate inside residual blocks.
        resamp_with_conv: resampling layers of 'ddpm' blocks carry a convolution.
        conditional: condition on the noise label (time embedding added in every block).
        fir, fir_kernel: FIR resampling with this 1-D kernel (outer product), else nearest/mean.
        skip_rescale: divide residual sums by sqrt(2).
        resblock_type: 'biggan' (resample inside blocks) or 'ddpm' (separate resample layers).
        progressive: output pyramid 'none' | 'output_skip' | 'residual'.
        progressive_input: input pyramid 'none' | 'input_skip' | 'residual'.
        progressive_combine: how 'input_skip' merges the pyramid: 'sum' | 'cat'.
        embedding_type: 'fourier' (of log label; label = sigma) or 'positional' (of the label).
        fourier_scale: std of the Fourier frequencies.
        init_scale: init scale of the last layer of each residual/attention branch and the output.
        scale_by_sigma: divide the output by sigma (the label for 'fourier'; the SMLD table
            ``sigmas[label]`` for 'positional').
        nonlinearity: 'swish' | 'elu' | 'relu' | 'lrelu'.
        sigma_min, sigma_max, num_scales: the SMLD noise table kept as the buffer ``sigmas``.
    """

    image_size: int = 32
    num_channels: int = 3
    centered: bool = True
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    scale_by_sigma: bool = True
    nonlinearity: str = "swish"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000

    def __post_init__(self):
        self.ch_mult, self.attn_resolutions = tuple(self.ch_mult), tuple(self.attn_resolutions)
        self.fir_kernel = tuple(self.fir_kernel)
        for name, valid in _CHOICES.items():
            value = getattr(self, name).lower()
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
            setattr(self, name, value)
        get_act(self.nonlinearity)
        levels = len(self.ch_mult)
        if levels < 1 or self.nf < 1 or self.num_res_blocks < 0 or min(self.ch_mult) < 1:
            raise ValueError("need nf >= 1, num_res_blocks >= 0 and a non-empty positive ch_mult")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**(len(ch_mult)-1) = "
                f"{2 ** (levels - 1)}"
            )


def smld_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> Tensor:
    """The SMLD noise levels, geometric from sigma_max down to sigma_min (float64)."""
    return torch.exp(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64)
    )


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ U-Net: ``net(x, noise_label) -> tensor shaped like x``.

    Args:
        config: an :class:`NCSNppConfig`; or keyword arguments with its field names.
    """

    Config = NCSNppConfig

    def __init__(self, config: NCSNppConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = NCSNppConfig(**kwargs)
        elif kwargs:
            raise ValueError("pass either a config or keyword arguments, not both")
        self.config = c = config
        self.act = get_act(c.nonlinearity)
        self.register_buffer("sigmas", smld_sigmas(c.sigma_min, c.sigma_max, c.num_scales))
        levels = len(c.ch_mult)
        self.attn_levels = [c.image_size // 2**i in c.attn_resolutions for i in range(levels)]
        if c.progressive == "output_skip":
            self.pyramid_upsample = Upsample(c.num_channels, fir=c.fir, fir_kernel=c.fir_kernel)
        if c.progressive_input == "input_skip":
            self.pyramid_downsample = Downsample(c.num_channels, fir=c.fir, fir_kernel=c.fir_kernel)
        self.all_modules = nn.ModuleList(self._build())

    # ---- construction (official module order) ------------------------------------------------
    def _resblock(self, in_ch: int, out_ch: int | None = None, up: bool = False, down=False):
        c = self.config
        temb_dim = 4 * c.nf if c.conditional else None
        common = dict(
            act=self.act,
            in_ch=in_ch,
            out_ch=out_ch,
            temb_dim=temb_dim,
            dropout=c.dropout,
            skip_rescale=c.skip_rescale,
            init_scale=c.init_scale,
        )
        if c.resblock_type == "ddpm":
            return ResnetBlockDDPM(**common)
        return ResnetBlockBigGAN(**common, up=up, down=down, fir=c.fir, fir_kernel=c.fir_kernel)

    def _attn(self, ch: int) -> AttnBlock:
        c = self.config
        return AttnBlock(ch, skip_rescale=c.skip_rescale, init_scale=c.init_scale)

    def _build(self) -> list[nn.Module]:
        c = self.config
        nf, C = c.nf, c.num_channels
        m: list[nn.Module] = []
        if c.embedding_type == "fourier":
            m.append(GaussianFourierProjection(nf, scale=c.fourier_scale))
        if c.conditional:
            embed_dim = 2 * nf if c.embedding_type == "fourier" else nf
            m += [dense(embed_dim, 4 * nf), dense(4 * nf, 4 * nf)]
        m.append(conv3x3(C, nf))
        hs_c, in_ch, pyramid_ch = [nf], nf, C
        for level, mult in enumerate(c.ch_mult):
            for _ in range(c.num_res_blocks):
                m.append(self._resblock(in_ch, nf * mult))
                in_ch = nf * mult
                if self.attn_levels[level]:
                    m.append(self._attn(in_ch))
                hs_c.append(in_ch)
            if level != len(c.ch_mult) - 1:
                if c.resblock_type == "ddpm":
                    m.append(
                        Downsample(
                            in_ch, with_conv=c.resamp_with_conv, fir=c.fir, fir_kernel=c.fir_kernel
                        )
                    )
                else:
                    m.append(self._resblock(in_ch, down=True))
                if c.progressive_input == "input_skip":
                    m.append(Combine(pyramid_ch, in_ch, method=c.progressive_combine))
                    in_ch *= 2 if c.progressive_combine == "cat" else 1
                elif c.progressive_input == "residual":
                    m.append(
                        Downsample(
                            pyramid_ch, in_ch, with_conv=True, fir=c.fir, fir_kernel=c.fir_kernel
                        )
                    )
                    pyramid_ch = in_ch
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        m += [self._resblock(in_ch), self._attn(in_ch), self._resblock(in_ch)]
        m += self._build_up(hs_c, in_ch)
        return m

    def _build_up(self, hs_c: list[int], in_ch: int) -> list[nn.Module]:
        c = self.config
        nf, C = c.nf, c.num_channels
        m: list[nn.Module] = []
        pyramid_ch = 0
        top = len(c.ch_mult) - 1
        for level in reversed(range(len(c.ch_mult))):
            for _ in range(c.num_res_blocks + 1):
                m.append(self._resblock(in_ch + hs_c.pop(), nf * c.ch_mult[level]))
                in_ch = nf * c.ch_mult[level]
            if self.attn_levels[level]:
                m.append(self._attn(in_ch))
            if c.progressive == "output_skip":
                m += [group_norm(in_ch), conv3x3(in_ch, C, init_scale=c.init_scale)]
                pyramid_ch = C
            elif c.progressive == "residual" and level == top:
                m += [group_norm(in_ch), conv3x3(in_ch, in_ch)]
                pyramid_ch = in_ch
            elif c.progressive == "residual":
                m.append(
                    Upsample(pyramid_ch, in_ch, with_conv=True, fir=c.fir, fir_kernel=c.fir_kernel)
                )
                pyramid_ch = in_ch
            if level != 0:
                if c.resblock_type == "ddpm":
                    m.append(
                        Upsample(
                            in_ch, with_conv=c.resamp_with_conv, fir=c.fir, fir_kernel=c.fir_kernel
                        )
                    )
                else:
                    m.append(self._resblock(in_ch, up=True))
        assert not hs_c
        if c.progressive != "output_skip":
            m += [group_norm(in_ch), conv3x3(in_ch, C, init_scale=c.init_scale)]
        return m

    # ---- forward ---------------------------------------------------------------------------------
    def _embed(self, label: Tensor, m: Iterator[nn.Module], dtype: torch.dtype):
        """Time embedding and the sigma that ``scale_by_sigma`` divides by."""
        c = self.config
        label = label.to(dtype) if label.is_floating_point() else label
        if c.embedding_type == "fourier":
            # The label is sigma; the embedding is of log sigma.
            temb, sigma = next(m)(torch.log(label)), label
        else:
            temb = timestep_embedding(label.to(dtype), c.nf)
            sigma = self.sigmas[label.long()].to(dtype) if c.scale_by_sigma else None
        if c.conditional:
            temb = next(m)(temb)
            temb = next(m)(self.act(temb))
        else:
            temb = None
        return temb, sigma

    def forward(self, x: Tensor, noise_label: Tensor) -> Tensor:
        """Network output for images ``x`` (B, C, H, W) and per-example noise labels (B,)."""
        c = self.config
        if noise_label.ndim != 1 or noise_label.shape[0] != x.shape[0]:
            raise ValueError(
                f"noise_label must have shape ({x.shape[0]},), got {tuple(noise_label.shape)}"
            )
        m = iter(self.all_modules)
        temb, sigma = self._embed(noise_label, m, x.dtype)
        if not c.centered:
            x = 2 * x - 1.0  # [0, 1] data -> [-1, 1]
        hs, pyramid_in = [next(m)(x)], x
        top = len(c.ch_mult) - 1
        for level in range(top + 1):
            for _ in range(c.num_res_blocks):
                h = next(m)(hs[-1], temb)
                if self.attn_levels[level]:
                    h = next(m)(h)
                hs.append(h)
            if level != top:
                h = next(m)(hs[-1]) if c.resblock_type == "ddpm" else next(m)(hs[-1], temb)
                if c.progressive_input == "input_skip":
                    pyramid_in = self.pyramid_downsample(pyramid_in)
                    h = next(m)(pyramid_in, h)
                elif c.progressive_input == "residual":
                    pyramid_in = h = self._skip(next(m)(pyramid_in), h)
                hs.append(h)
        h = next(m)(hs[-1], temb)
        h = next(m)(h)
        h = next(m)(h, temb)
        h = self._up(h, hs, temb, m)
        if next(m, None) is not None:
            raise RuntimeError("NCSNpp.forward did not use every module")  # construction bug
        if c.scale_by_sigma:
            h = h / sigma.reshape(-1, *([1] * (h.ndim - 1)))
        return h

    def _skip(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / math.sqrt(2.0) if self.config.skip_rescale else a + b

    def _up(self, h: Tensor, hs: list[Tensor], temb, m: Iterator[nn.Module]) -> Tensor:
        c = self.config
        pyramid = None
        top = len(c.ch_mult) - 1
        for level in reversed(range(top + 1)):
            for _ in range(c.num_res_blocks + 1):
                h = next(m)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[level]:
                h = next(m)(h)
            if c.progressive == "output_skip":
                out = self._norm_act_conv(h, m)
                pyramid = out if level == top else self.pyramid_upsample(pyramid) + out
            elif c.progressive == "residual" and level == top:
                pyramid = self._norm_act_conv(h, m)
            elif c.progressive == "residual":
                pyramid = h = self._skip(next(m)(pyramid), h)
            if level != 0:
                h = next(m)(h) if c.resblock_type == "ddpm" else next(m)(h, temb)
        if c.progressive == "output_skip":
            return pyramid
        return self._norm_act_conv(h, m)

    def _norm_act_conv(self, h: Tensor, m: Iterator[nn.Module]) -> Tensor:
        """conv(act(GroupNorm(h))) with the next two modules."""
        norm, conv = next(m), next(m)
        return conv(self.act(norm(h)))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
