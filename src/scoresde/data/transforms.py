"""Maps between stored data and model space: uniform dequantization of integer data.

A ``bits``-bit value x_int becomes u = (x_int + U[0,1)) / 2^bits in [0, 1), the continuous data
whose density bits/dim measures (:func:`scoresde.core.likelihood.bits_per_dim`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dequantize"]


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
