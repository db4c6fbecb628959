"""The Inception-v3 feature network of the FID (Heusel et al. 2017), in plain PyTorch.

This is the network of the TensorFlow FID code (the 2015-12-05 Inception graph), laid out as
torchvision's ``Inception3`` so that the widely used port of its weights,
``pt_inception-2015-12-05-6726825d.pth``, loads by name: every parameter and buffer is called as
in that file (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ...,
``fc.weight``). It differs from torchvision's ImageNet model in three ways that change the
features:

- ``fc`` has 1008 outputs (the TF graph's classes) and there is no auxiliary head;
- the pooling branch of the InceptionA, InceptionC and first InceptionE blocks averages only
  over the pixels inside the image (``count_include_pad=False``, as TF's average pool does);
- the pooling branch of the last block (``Mixed_7c``) takes a 3x3 *max*, not an average.

:meth:`InceptionFeatures.features` returns the 2048-d "pool3" features (the global average of
``Mixed_7c``), the vectors FID and KID compare. Images go in with values in ``[0, 1]``; they are
resized to 299x299 (bilinear, ``align_corners=False``) and mapped to ``[-1, 1]`` inside. Loading
the weights file lives in :mod:`scoresde.training.inception`; this module reads no files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "InceptionFeatures",
    "BasicConv2d",
    "InceptionA",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "POOL_MODES",
    "pool3x3",
    "FEATURE_DIM",
    "INPUT_SIZE",
    "NUM_CLASSES",
]

FEATURE_DIM = 2048  # width of the pool3 features
INPUT_SIZE = 299  # the network's input resolution
NUM_CLASSES = 1008  # outputs of the TF graph's classifier (1000 ImageNet classes + 8 unused)
BN_EPS = 1e-3  # the batch-norm epsilon of the TF graph
POOL_MODES = ("avg", "max")


def pool3x3(x: Tensor, mode: str) -> Tensor:
    """The 3x3, stride-1, padding-1 pool of a block's pooling branch (keeps the spatial size).

    ``"avg"`` averages over the window's pixels that lie inside the image (TF's ``AvgPool`` with
    ``SAME`` padding: ``count_include_pad=False``); ``"max"`` takes the window's maximum (padding
    never wins).
    """
    if mode == "avg":
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    if mode == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    raise ValueError(f"unknown pool mode {mode!r}; valid: {', '.join(POOL_MODES)}")


class BasicConv2d(nn.Module):
    """``ReLU(BatchNorm(conv(x)))``: a bias-free convolution, batch norm with eps 0.001."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: object):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """Apply convolution, batch norm and ReLU."""
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled 1x1 branches; ``224 + pool_features`` out."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)
        self.pool_mode = "avg"

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches along the channels."""
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(pool3x3(x, self.pool_mode))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3 and a strided 3x3 max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the three branches along the channels."""
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], dim=1)


def _seven(c_in: int, c_out: int, vertical: bool) -> BasicConv2d:
    """A factorized 7-tap convolution: 7x1 (``vertical``) or 1x7, keeping the spatial size."""
    if vertical:
        return BasicConv2d(c_in, c_out, kernel_size=(7, 1), padding=(3, 0))
    return BasicConv2d(c_in, c_out, kernel_size=(1, 7), padding=(0, 3))


class InceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions of width ``channels_7x7``; 768 out."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = _seven(c7, c7, vertical=False)
        self.branch7x7_3 = _seven(c7, 192, vertical=True)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = _seven(c7, c7, vertical=True)
        self.branch7x7dbl_3 = _seven(c7, c7, vertical=False)
        self.branch7x7dbl_4 = _seven(c7, c7, vertical=True)
        self.branch7x7dbl_5 = _seven(c7, 192, vertical=False)
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)
        self.pool_mode = "avg"

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches along the channels."""
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            bd = layer(bd)
        bd = self.branch7x7dbl_5(bd)
        bp = self.branch_pool(pool3x3(x, self.pool_mode))
        return torch.cat([b1, b7, bd, bp], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1 + strided 3x3, 1x1 + 1x7 + 7x1 + strided 3x3, 3x3 max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = _seven(192, 192, vertical=False)
        self.branch7x7x3_3 = _seven(192, 192, vertical=True)
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the three branches along the channels."""
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], dim=1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs; 2048 out. ``pool_mode``: its pooling branch."""

    def __init__(self, in_channels: int, pool_mode: str = "avg"):
        super().__init__()
        if pool_mode not in POOL_MODES:
            raise ValueError(f"unknown pool mode {pool_mode!r}; valid: {', '.join(POOL_MODES)}")
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)
        self.pool_mode = pool_mode

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches (six outputs) along the channels."""
        b1 = self.branch1x1(x)
        h = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(h), self.branch3x3_2b(h)], dim=1)
        h = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(h), self.branch3x3dbl_3b(h)], dim=1)
        bp = self.branch_pool(pool3x3(x, self.pool_mode))
        return torch.cat([b1, b3, bd, bp], dim=1)


class InceptionFeatures(nn.Module):
    """The FID Inception-v3: images in ``[0, 1]`` -> 2048-d pool3 features.

    Parameter names equal the keys of ``pt_inception-2015-12-05-6726825d.pth``. ``fc`` (1008
    classes) is kept so that the file loads as is, but :meth:`features` never uses it. With
    ``check_range`` (the default) inputs outside ``[0, 1]`` (beyond a rounding slack of
    :attr:`RANGE_SLACK`) raise a ValueError: data in ``[0, 255]`` or ``[-1, 1]`` would give
    features silently wrong; clamp or rescale first.
    """

    RANGE_SLACK = 1e-3

    def __init__(self, check_range: bool = True):
        super().__init__()
        self.check_range = check_range
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool_mode="avg")
        self.Mixed_7c = InceptionE(2048, pool_mode="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def _check(self, x: Tensor) -> Tensor:
        """Validate the shape (and range) of ``x``; repeat a grey channel to RGB."""
        if x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
            raise ValueError(
                f"InceptionFeatures takes images (B, C, H, W) with B >= 1 and C in (1, 3); "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"InceptionFeatures takes float images in [0, 1]; got {x.dtype}")
        if self.check_range:
            lo, hi = float(x.min()), float(x.max())
            s = self.RANGE_SLACK
            if not (lo >= -s and hi <= 1 + s):
                raise ValueError(
                    f"InceptionFeatures takes images with values in [0, 1]; got [{lo:.4g}, "
                    f"{hi:.4g}] (clamp samples, divide 0-255 data by 255, map [-1, 1] by (x+1)/2)"
                )
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def features(self, x: Tensor) -> Tensor:
        """Pool3 features ``(B, 2048)`` of images ``x`` ``(B, C, H, W)``, C in (1, 3), in [0, 1].

        Grey images (C = 1) are repeated to three channels; any size is resized to 299x299.
        """
        x = self._check(x)
        w = self.fc.weight
        x = x.to(device=w.device, dtype=w.dtype)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(
                x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
            )
        h = 2 * x - 1  # [0, 1] -> [-1, 1], the range the TF graph was trained on
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
            h = getattr(self, name)(h)
        h = F.max_pool2d(h, kernel_size=3, stride=2)
        h = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(h))
        h = F.max_pool2d(h, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            h = getattr(self, f"Mixed_{name}")(h)
        return h.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`features`."""
        return self.features(x)
