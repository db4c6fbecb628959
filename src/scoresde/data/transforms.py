"""Maps between stored data and model space, and uniform dequantization of integer data.

Model space is ``y = scale * u + shift`` with ``u`` in [0, 1] (:data:`SCALING`: ``[0, 1]`` as is,
or centered ``[-1, 1]``). A ``bits``-bit value x_int becomes u = (x_int + U[0,1)) / 2^bits in
[0, 1), the continuous data whose density bits/dim measures
(:func:`scoresde.core.likelihood.bits_per_dim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .images import DataError

if TYPE_CHECKING:
    from .spec import DataConfig

__all__ = [
    "SCALING",
    "dequantize",
    "to_float",
    "from_model",
    "random_hflip",
    "check_images",
    "images_to_model",
]

SCALING = {False: (1.0, 0.0), True: (2.0, -1.0)}
"""``centered -> (scale, shift)``: model space ``y = scale * u + shift``, ``u`` in [0, 1]."""


def to_float(x: Tensor, centered: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images -> model space: ``u = x / 255`` in [0, 1], then ``scale * u + shift``."""
    if x.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {x.dtype}")
    scale, shift = SCALING[bool(centered)]
    return x.to(dtype) / 255 * scale + shift


def from_model(y: Tensor, centered: bool = False) -> Tensor:
    """Model space -> uint8: ``u = (y - shift) / scale``, pixel ``floor(256 u)`` clipped to 0..255.

    ``floor(256 u)`` is the dequantization cell ``[k/256, (k+1)/256)`` that holds ``u``. Since
    ``k/255`` lies in cell ``k`` at least 1/65280 from its edges (255/255 = 1 is clipped to 255),
    far beyond float32 round-off, this inverts :func:`to_float` exactly, centered or not. It
    inverts :func:`dequantize` exactly for ``centered=False``; centered, ``2u - 1`` may round a
    draw at a cell's upper edge onto the edge.
    """
    scale, shift = SCALING[bool(centered)]
    u = (y.to(torch.promote_types(y.dtype, torch.float32)) - shift) / scale
    return torch.floor(u * 256).clamp(0, 255).to(torch.uint8)


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image of ``x`` (B, ..., W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


def check_images(x: Tensor, shape: Sequence[int]) -> None:
    """Raise a :class:`DataError` unless ``x`` is (N, C, H, W) with (C, H, W) == ``shape``."""
    got = tuple(x.shape[1:]) if x.ndim == 4 else tuple(x.shape)
    want = tuple(shape)
    if got != want:
        raise DataError(
            f"images of shape (C, H, W) = {got}, but the preset expects {want}: use images of "
            f"{want[1]}x{want[2]} pixels with {want[0]} channel(s) (an image folder is resized "
            "and converted to the preset's size and channels), or a preset for this data"
        )


def dequantize(x_int: Tensor, generator: torch.Generator | None = None, bits: int = 8) -> Tensor:
    """Uniform dequantization ``u = (x_int + U[0,1)) / 2^bits``, each u in [x/2^bits, (x+1)/2^bits).

    ``x_int``: integer tensor (e.g. uint8) or a float tensor holding integers in
    [0, 2^bits - 1]. The result has the dtype of a float input, else the default float dtype.
    Rounding of x + U may land on the upper end (x + 1) / 2^bits; such draws are moved to the
    largest float below it, so u stays inside its cell.
    """
    levels = 2**bits
    if x_int.is_floating_point():
        if not (torch.isfinite(x_int).all() and (x_int == x_int.round()).all()):
            raise ValueError("x_int must hold integer values (got non-integer or non-finite)")
        x = x_int
    elif x_int.is_complex() or x_int.dtype == torch.bool:
        raise ValueError(f"x_int must be an integer or float tensor, got {x_int.dtype}")
    else:
        x = x_int.to(torch.get_default_dtype())
    if x.numel() and (x.min() < 0 or x.max() > levels - 1):
        raise ValueError(f"x_int must lie in [0, {levels - 1}], got [{x.min()}, {x.max()}]")
    U = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    upper = (x + 1) / levels
    return torch.minimum((x + U) / levels, torch.nextafter(upper, torch.zeros_like(upper)))


def images_to_model(
    x: Tensor, cfg: DataConfig, generator: torch.Generator | None = None, flip: bool = False
) -> Tensor:
    """uint8 images -> model space ``scale * u + shift`` with ``u = (x + U[0,1)) / 256``.

    ``flip`` mirrors each image left-right with probability 1/2 first. All randomness comes
    from ``generator``; the result is float32 on ``x``'s device.
    """
    if flip:
        x = random_hflip(x, generator)
    return dequantize(x.to(torch.float32), generator) * cfg.scale + cfg.shift
