"""Building blocks of the image score networks (DDPM, NCSN++ / DDPM++), in pure PyTorch.

Module and parameter names follow the official score_sde_pytorch code (``GroupNorm_0``, ``Conv_0``,
``Dense_0``, ``NIN_0`` with weight ``W`` of shape (in, out), ``Conv2d_0`` ...) so that official
checkpoints load key for key. Every block also runs for the option combinations on which the
official code crashes (nearest-neighbour upsampling with ``fir=False``, FIR upsampling with a
convolution); their meaning is the one the official docstrings and its JAX version state.

FIR resampling (StyleGAN2's ``upfirdn2d``: insert zeros, pad, convolve with a fixed 2-D filter, keep
every ``down``-th sample) is written with ``conv2d`` / ``conv_transpose2d``; no compiled extension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "get_act",
    "variance_scaling_",
    "conv3x3",
    "conv1x1",
    "dense",
    "group_norm",
    "fir_kernel2d",
    "upfirdn2d",
    "upsample_2d",
    "downsample_2d",
    "upsample_conv_2d",
    "conv_downsample_2d",
    "naive_upsample_2d",
    "naive_downsample_2d",
    "GaussianFourierProjection",
    "timestep_embedding",
    "NIN",
    "AttnBlock",
    "Combine",
    "FIRConv2d",
    "Upsample",
    "Downsample",
    "ResnetBlockDDPM",
    "ResnetBlockBigGAN",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2),
}


def get_act(name: str) -> nn.Module:
    """The activation module called ``name`` (one of ``ACTIVATIONS``)."""
    if name.lower() not in ACTIVATIONS:
        raise ValueError(f"unknown nonlinearity {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name.lower()]()


# ---- initialisation ---------------------------------------------------------------------------
@torch.no_grad()
def variance_scaling_(w: Tensor, scale: float = 1.0, in_axis: int = 1, out_axis: int = 0) -> Tensor:
    """DDPM's ``default_init``: uniform variance scaling with fan_avg, in place.

    Var(w) = scale / ((fan_in + fan_out) / 2); a scale of 0 becomes 1e-10 as in the official code
    (the layer starts at almost zero but still receives gradients through its weight).
    """
    scale = 1e-10 if scale == 0 else scale
    receptive = w[0, 0].numel() if w.ndim > 2 else 1
    fan_in, fan_out = w.shape[in_axis] * receptive, w.shape[out_axis] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    return w.uniform_(-bound, bound)


def conv3x3(
    in_ch: int, out_ch: int, stride: int = 1, padding: int = 1, init_scale: float = 1.0
) -> nn.Conv2d:
    """3x3 convolution with DDPM initialisation (zero bias)."""
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    """1x1 convolution with DDPM initialisation (zero bias)."""
    conv = nn.Conv2d(in_ch, out_ch, 1)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    """Linear layer with DDPM initialisation (zero bias)."""
    lin = nn.Linear(in_dim, out_dim)
    variance_scaling_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def group_norm(channels: int, num_groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm with eps 1e-6; ``num_groups=None`` is NCSN++'s ``min(channels // 4, 32)``."""
    groups = min(channels // 4, 32) if num_groups is None else num_groups
    if groups < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm needs the channel count {channels} to be a multiple of the group count "
            f"{groups}; choose channel widths accordingly"
        )
    return nn.GroupNorm(groups, channels, eps=1e-6)


# ---- FIR resampling ---------------------------------------------------------------------------
def fir_kernel2d(k: Sequence[float]) -> Tensor:
    """The separable 2-D filter ``outer(k, k) / sum`` (unit DC gain), float32 as in StyleGAN2."""
    k1 = torch.as_tensor(k, dtype=torch.float32)
    if k1.ndim != 1 or k1.numel() < 1:
        raise ValueError(f"fir_kernel must be a non-empty 1-D sequence, got {k!r}")
    k2 = torch.outer(k1, k1)
    return k2 / k2.sum()


def _depthwise(k: Tensor, channels: int) -> Tensor:
    """The same 2-D filter for every channel, shaped for a grouped convolution."""
    return k[None, None].expand(channels, 1, *k.shape)


def upfirdn2d(
    x: Tensor, k: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """Upsample by zero insertion, pad, convolve with the 2-D filter ``k``, keep every ``down``-th.

    Exactly StyleGAN2's ``upfirdn2d`` (same padding on both spatial axes): with the zero-stuffed
    signal s[up*q] = x[q] of length H*up, padded by ``pad``, the output is the *true* convolution
    y[n] = sum_j s_pad[n + j] k[K-1-j], of length (H*up + pad0 + pad1 - K) // down + 1.
    Upsampling uses ``conv_transpose2d`` (no multiplications by the inserted zeros).
    """
    if up > 1 and down > 1:
        raise ValueError("upfirdn2d here resamples in one direction at a time (up or down)")
    C, K = x.shape[1], k.shape[-1]
    k = k.to(device=x.device, dtype=x.dtype)
    p0, p1 = pad
    if up > 1:
        # conv_transpose2d gives t[m] = sum_q x[q] k[m - up q] (length (H-1) up + K), and
        # y[n] = t[n + K - 1 - p0]: shift and crop/zero-extend to the output length.
        t = F.conv_transpose2d(x, _depthwise(k, C), stride=up, groups=C)
        start = K - 1 - p0
        out_h = x.shape[2] * up + p0 + p1 - K + 1
        out_w = x.shape[3] * up + p0 + p1 - K + 1
        return F.pad(t, (-start, out_w + start - t.shape[3], -start, out_h + start - t.shape[2]))
    x = F.pad(x, (p0, p1, p0, p1))
    return F.conv2d(x, _depthwise(k.flip(0, 1), C), stride=down, groups=C)


def upsample_2d(x: Tensor, k: Tensor, factor: int = 2) -> Tensor:
    """FIR upsampling by ``factor`` (filter times factor^2: a constant image stays constant)."""
    p = k.shape[0] - factor
    return upfirdn2d(x, k * factor**2, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, k: Tensor, factor: int = 2) -> Tensor:
    """FIR downsampling by ``factor``."""
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: Tensor, w: Tensor, k: Tensor, factor: int = 2) -> Tensor:
    """Fused FIR upsampling followed by a ``w`` convolution, padded once (StyleGAN2).

    The transposed convolution with the flipped, in/out-swapped kernel is the full correlation of
    the zero-stuffed image with ``w``; the FIR filter then interpolates. (The official PyTorch port
    flips with a negative-step slice, which PyTorch rejects; ``torch.flip`` is the same operation.)
    """
    conv_k = w.shape[-1]
    p = (k.shape[0] - factor) - (conv_k - 1)
    w_t = w.flip(2, 3).transpose(0, 1)
    x = F.conv_transpose2d(x, w_t, stride=factor)
    return upfirdn2d(x, k * factor**2, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: Tensor, w: Tensor, k: Tensor, factor: int = 2) -> Tensor:
    """FIR filtering followed by a strided ``w`` convolution, padded once (StyleGAN2)."""
    p = (k.shape[0] - factor) + (w.shape[-1] - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=factor)


def naive_upsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour upsampling (each pixel repeated factor x factor times)."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Mean over factor x factor blocks."""
    return F.avg_pool2d(x, factor, stride=factor)


# ---- noise-level embeddings -------------------------------------------------------------------
class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin(2 pi W x), cos(2 pi W x)], W ~ N(0, scale^2) frozen.

    The one Fourier embedding of the networks here (Tancik et al. 2020): ``embedding_size``
    frequencies give ``2 * embedding_size`` features. ``W`` is saved in the state dict under
    ``W`` and never trained: by default a parameter with ``requires_grad=False`` (as in the
    official code, so NCSN++ and the tutorial U-Net list it among their parameters and
    official checkpoints load key for key); with ``buffer=True`` a buffer (the MLP keeps it
    there). Labels are cast to ``W``'s dtype and device. The two kinds also keep their own
    order of the products, ``((x W) 2) pi`` as the official code and ``(2 pi x) W`` for the
    MLP: they differ by float32 rounding only, and each keeps its saved models' outputs exact.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0, *, buffer: bool = False):
        super().__init__()
        W = torch.randn(embedding_size) * scale
        self.buffer = buffer
        if buffer:
            self.register_buffer("W", W)
        else:
            self.W = nn.Parameter(W, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, 2 * embedding_size)`` of the labels ``x`` ``(B,)``."""
        x = x[:, None].to(self.W)
        # The phases reach hundreds of radians, so the order of the products shows in float32.
        x_proj = (
            2 * math.pi * x * self.W[None, :] if self.buffer else x * self.W[None, :] * 2 * math.pi
        )
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)


def timestep_embedding(t: Tensor, dim: int, max_positions: int = 10000) -> Tensor:
    """Sinusoidal embedding of (B,) timesteps (Transformer / DDPM), computed in t's float dtype.

    emb_i = t * max_positions^(-i / (dim/2 - 1)), output [sin(emb), cos(emb)] (zero-padded if odd).
    """
    if t.ndim != 1:
        raise ValueError(f"timesteps must be a (B,) tensor, got shape {tuple(t.shape)}")
    t = t if t.is_floating_point() else t.float()
    half = dim // 2
    rate = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=t.dtype, device=t.device) * -rate)
    emb = t[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return F.pad(emb, (0, dim % 2))


# ---- layers and blocks ------------------------------------------------------------------------
class NIN(nn.Module):
    """Per-pixel linear map ("network in network"); weight ``W`` stored (in, out) as in DDPM."""

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(variance_scaling_(torch.empty(in_dim, out_dim), init_scale))
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        # y[b, o, h, w] = sum_c x[b, c, h, w] W[c, o] + b[o]: a 1x1 convolution with W^T.
        return F.conv2d(x, self.W.t()[:, :, None, None], self.b)


class AttnBlock(nn.Module):
    """Self-attention over all pixels (single head), residual; DDPM's block.

    ``num_groups=None`` gives NCSN++'s GroupNorm(min(C/4, 32)); DDPM uses 32. ``skip_rescale``
    divides the residual sum by sqrt(2).
    """

    def __init__(
        self,
        channels: int,
        skip_rescale: bool = False,
        init_scale: float = 0.0,
        num_groups: int | None = None,
    ):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, num_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(2, 3) for m in self._qkv())
        # softmax(q k^T / sqrt(C)) v over the H*W positions
        a = F.scaled_dot_product_attention(q, k, v)
        h = self.NIN_3(a.transpose(2, 3).reshape(B, C, H, W))
        return _residual(x, h, self.skip_rescale)

    def _qkv(self) -> tuple[NIN, NIN, NIN]:
        return self.NIN_0, self.NIN_1, self.NIN_2


def _residual(x: Tensor, h: Tensor, skip_rescale: bool) -> Tensor:
    """x + h, divided by sqrt(2) when ``skip_rescale`` (keeps the variance of two unit signals)."""
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


class Combine(nn.Module):
    """Merge an input-pyramid image into a feature map: 1x1 conv ``Conv_0``, then cat or add.

    ``cat`` puts the convolved pyramid image first: ``[Conv_0(x), y]`` (``dim2 + channels of y``
    channels out); ``sum`` returns ``Conv_0(x) + y``. The convolution is called ``Conv_0`` as in
    the official ``layerspp.Combine``; ``load_state_dict`` also accepts the former name ``Conv``
    (a key check run before ``load_state_dict`` sees the old names as they are).
    """

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"unknown combine method {method!r}; valid: cat, sum")
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Earlier versions of this class named the convolution ``Conv``; rename in place.
        for name in ("weight", "bias"):
            old = f"{prefix}Conv.{name}"
            if old in state_dict and f"{prefix}Conv_0.{name}" not in state_dict:
                state_dict[f"{prefix}Conv_0.{name}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class FIRConv2d(nn.Module):
    """Odd-size convolution fused with FIR up- or downsampling (parameters ``weight``, ``bias``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        up: bool = False,
        down: bool = False,
        resample_kernel: Sequence[int] = (1, 3, 3, 1),
    ):
        super().__init__()
        if up and down or kernel < 1 or kernel % 2 == 0:
            raise ValueError("FIRConv2d needs an odd kernel and at most one of up/down")
        self.weight = nn.Parameter(variance_scaling_(torch.empty(out_ch, in_ch, kernel, kernel)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("fir_k", fir_kernel2d(resample_kernel), persistent=False)
        self.up, self.down = up, down

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, self.fir_k)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, self.fir_k)
        else:
            x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
        return x + self.bias[None, :, None, None]


class Upsample(nn.Module):
    """2x upsampling: nearest (+ 3x3 conv ``Conv_0``) or FIR (+ fused conv ``Conv2d_0``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        with_conv: bool = False,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError("Upsample without a convolution cannot change the channel count")
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, up=True, resample_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        if fir and not with_conv:
            self.register_buffer("fir_k", fir_kernel2d(fir_kernel), persistent=False)
        self.fir, self.with_conv = fir, with_conv

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else upsample_2d(x, self.fir_k)
        h = naive_upsample_2d(x)
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """2x downsampling: strided 3x3 conv ('SAME' padding) or 2x2 mean, or FIR (+ fused conv)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        with_conv: bool = False,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError("Downsample without a convolution cannot change the channel count")
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, down=True, resample_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        if fir and not with_conv:
            self.register_buffer("fir_k", fir_kernel2d(fir_kernel), persistent=False)
        self.fir, self.with_conv = fir, with_conv

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else downsample_2d(x, self.fir_k)
        if self.with_conv:
            # TF 'SAME' padding of a stride-2 3x3 conv on an even size: one row/column after.
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return naive_downsample_2d(x)


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block: GN-act-conv, + Dense(act(temb)), GN-act-dropout-conv, + shortcut.

    The shortcut is identity, or ``NIN_0`` (``Conv_2``, a 3x3 conv, with ``conv_shortcut``) when the
    channel count changes. ``temb_dim=None`` builds an unconditional block (no ``Dense_0``).
    """

    def __init__(
        self,
        act: nn.Module,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        conv_shortcut: bool = False,
        dropout: float = 0.1,
        skip_rescale: bool = False,
        init_scale: float = 0.0,
        num_groups: int | None = None,
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, num_groups)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, num_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.skip_rescale = act, skip_rescale
        self.in_ch, self.out_ch, self.conv_shortcut = in_ch, out_ch, conv_shortcut

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        h = _add_temb(self, h, temb)
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return _residual(x, h, self.skip_rescale)


def _add_temb(block: nn.Module, h: Tensor, temb: Tensor | None) -> Tensor:
    """Add the per-channel bias Dense(act(temb)) of a conditional block."""
    if temb is None or not hasattr(block, "Dense_0"):
        return h
    return h + block.Dense_0(block.act(temb))[:, :, None, None]


class ResnetBlockBigGAN(nn.Module):
    """BigGAN residual block of NCSN++, optionally resampling 2x up or down inside the block.

    Resampling happens after the first GN-act, on both the branch and the shortcut (FIR or
    nearest / mean); the shortcut gets a 1x1 conv ``Conv_2`` whenever shape or width changes.
    """

    def __init__(
        self,
        act: nn.Module,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.1,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        init_scale: float = 0.0,
    ):
        super().__init__()
        if up and down:
            raise ValueError("a block resamples up or down, not both")
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.resample = in_ch != out_ch or up or down
        if self.resample:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        if fir and (up or down):
            self.register_buffer("fir_k", fir_kernel2d(fir_kernel), persistent=False)
        self.act, self.skip_rescale = act, skip_rescale
        self.up, self.down, self.fir = up, down, fir

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return upsample_2d(x, self.fir_k) if self.fir else naive_upsample_2d(x)
        if self.down:
            return downsample_2d(x, self.fir_k) if self.fir else naive_downsample_2d(x)
        return x

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = _add_temb(self, self.Conv_0(h), temb)
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.resample:
            x = self.Conv_2(x)
        return _residual(x, h, self.skip_rescale)
