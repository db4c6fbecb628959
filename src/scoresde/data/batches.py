"""Endless shuffled batches of uint8 images for training, resumable exactly."""

from __future__ import annotations

import torch
from torch import Tensor

from .transforms import SCALING, dequantize, random_hflip, to_float

__all__ = ["ImageBatches"]


class ImageBatches:
    """Endless shuffled batches of uint8 images, flipped and dequantized on the fly.

    Every epoch draws a permutation from the batches' own generator and cuts it into full
    batches of ``batch_size`` (the last ``N mod batch_size`` images of that epoch are skipped).
    A batch is mapped to model space ``scale * u + shift`` (:data:`SCALING`) with
    ``u = (x + U) / 256`` (``dequantize=True``) or ``u = x / 255``; it is float32 on the images'
    device. ``state_dict()`` / ``load_state_dict()`` resume the exact same stream.
    """

    def __init__(
        self,
        x: Tensor,
        batch_size: int,
        labels: Tensor | None = None,
        *,
        centered: bool = False,
        flip: bool = False,
        dequantize: bool = True,
        seed: int = 0,
    ):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if not 1 <= batch_size <= len(x):
            raise ValueError(
                f"batch_size must be in [1, {len(x)}] (the image count), got {batch_size}"
            )
        if labels is not None and labels.shape != (len(x),):
            raise ValueError(f"labels must have shape ({len(x)},), got {tuple(labels.shape)}")
        self.x, self.labels, self.batch_size = x, labels, batch_size
        self.centered, self.flip, self.dequantize = bool(centered), flip, dequantize
        self.generator = torch.Generator(device=x.device).manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long, device=x.device)
        self.pos, self.epoch = 0, 0

    def __iter__(self) -> ImageBatches:
        return self

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.x) // self.batch_size

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        if self.pos + self.batch_size > len(self.perm):
            self.perm = torch.randperm(len(self.x), generator=self.generator, device=self.x.device)
            self.pos, self.epoch = 0, self.epoch + 1
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        xb = self.x[idx]
        if self.flip:
            xb = random_hflip(xb, self.generator)
        if self.dequantize:
            scale, shift = SCALING[self.centered]
            y = dequantize(xb.to(torch.float32), self.generator) * scale + shift
        else:
            y = to_float(xb, self.centered)
        return y, None if self.labels is None else self.labels[idx]

    def state_dict(self) -> dict:
        """Generator state, the current permutation, the position in it and the epoch count."""
        return {
            "generator": self.generator.get_state(),
            "perm": self.perm.cpu(),
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; the next batch is the one that would have come."""
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].to(self.x.device)
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])
