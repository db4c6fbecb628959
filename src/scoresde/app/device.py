"""``--device`` of the verbs that compute: ``auto`` or a device this machine has."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), or a device this machine has (one ``ValueError``
    for an unknown name, with "did you mean", or for one this build lacks)."""
    from ..training.config import check_device

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return check_device(name, "--device")
