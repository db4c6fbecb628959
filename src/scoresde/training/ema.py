"""Exponential moving average of a model's parameters with the paper's warm-up.

After the n-th update (n = 1, 2, ...) the shadow weights are
``shadow <- decay shadow + (1 - decay) theta`` with ``decay = min(rate, (1 + n) / (10 + n))``, as in
the official score_sde code, so that early averages are not dominated by the random initialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """Shadow copies of ``model``'s trainable parameters.

    Args:
        model: the model being trained.
        rate: the EMA rate (e.g. 0.999 for toys, 0.9999 for CIFAR-10 in the paper).
    """

    def __init__(self, model: nn.Module, rate: float):
        if not 0 <= rate < 1:
            raise ValueError(f"EMA rate must lie in [0, 1), got {rate}")
        self.rate = float(rate)
        self.num_updates = 0
        self.params: dict[str, Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def decay(self) -> float:
        """The decay of the next update."""
        n = self.num_updates + 1
        return min(self.rate, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards the current parameters of ``model``."""
        weight = 1.0 - self.decay()
        self.num_updates += 1
        for name, p in model.named_parameters():
            if name in self.params:
                self.params[name].lerp_(p.detach(), weight)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the shadow weights into ``model`` (same architecture)."""
        own = dict(model.named_parameters())
        missing = sorted(set(self.params) - set(own))
        if missing:
            raise ValueError(f"model has no parameters {missing[:3]} held by the EMA")
        for name, v in self.params.items():
            own[name].copy_(v)

    def state_dict(self) -> dict:
        """``{"rate", "num_updates", "params": {name: tensor}}``; tensors and numbers only."""
        params = {k: v.clone() for k, v in self.params.items()}
        return {"rate": self.rate, "num_updates": self.num_updates, "params": params}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (parameter names must match this model's)."""
        params = state["params"]
        if set(params) != set(self.params):
            diff = sorted(set(params) ^ set(self.params))
            raise ValueError(f"EMA state does not match the model: differing names {diff[:3]}")
        for name, v in params.items():
            if v.shape != self.params[name].shape:
                raise ValueError(f"EMA state {name}: shape {tuple(v.shape)} is not the model's")
            self.params[name] = v.to(self.params[name]).clone()
        self.rate, self.num_updates = float(state["rate"]), int(state["num_updates"])

    def to(self, device: torch.device | str) -> EMA:
        """Move the shadow weights to ``device``."""
        self.params = {k: v.to(device) for k, v in self.params.items()}
        return self
