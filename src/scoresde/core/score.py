"""ScoreModel: a raw network plus an SDE plus an explicit parameterization gives ``score_fn(x, t)``.

A network sees ``(x, label)`` where the *noise label* is a documented function of t (``LABELS``),
and its output becomes a score through a documented *parameterization* (``PARAMETERIZATIONS``):

==============  =====================================================  ==========================
name            score s(x, t) from the network output o                 used by
==============  =====================================================  ==========================
``score``       s = o                                                  NCSN++ with scale_by_sigma
``noise``       s = -o / sigma(t)       (o predicts the noise z)        DDPM++, VP / sub-VP
``scaled``      s = o / sigma(t)                                       the seed notebook's U-Net
``drift``       s = o / g(t)            (o is the drift a = g s)        sdeflow-light
``noise_ddpm``  s = -o / sqrt(1 - prod alpha_i)  (DDPM chain, VP)      official discrete DDPM
==============  =====================================================  ==========================

==============  ===========================================  ==========================
label           fed to the network                            used by
==============  ===========================================  ==========================
``t``           t itself                                      MLP, the tutorial U-Net
``timestep``    (N - 1) t, a float (the paper's ``999 t``)    official VP / sub-VP / DDPM
``sigma``       sigma(t) = marginal std                       official VE (NCSN++)
==============  ===========================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .checks import lookup
from .sde import SDE, bcast

__all__ = ["ScoreModel", "LABELS", "PARAMETERIZATIONS", "batch_times"]


def batch_times(t: float | Tensor, x: Tensor) -> Tensor:
    """``t`` as the ``(B,)`` times of the batch ``x``: a Python number or a 0-d tensor is
    repeated for every example (in ``x``'s dtype and device); a ``(B,)`` tensor is returned as is.
    """
    if isinstance(t, Tensor) and t.ndim > 0:
        return t
    return torch.as_tensor(t, dtype=x.dtype, device=x.device).repeat(x.shape[0])


def _label_t(sde: SDE, t: Tensor) -> Tensor:
    return t


def _label_timestep(sde: SDE, t: Tensor) -> Tensor:
    return t * (sde.N - 1)


def _label_sigma(sde: SDE, t: Tensor) -> Tensor:
    return sde.sigma(t)


LABELS: dict[str, Callable[[SDE, Tensor], Tensor]] = {
    "t": _label_t,
    "timestep": _label_timestep,
    "sigma": _label_sigma,
}


def _score(o: Tensor, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
    return o


def _noise(o: Tensor, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
    return -o / bcast(sde.sigma(t), o)


def _scaled(o: Tensor, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
    return o / bcast(sde.sigma(t), o)


def _drift(o: Tensor, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
    return o / bcast(sde.g(t), o)


def _noise_ddpm(o: Tensor, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
    if not hasattr(sde, "discrete_sigma"):
        raise ValueError(f"parameterization 'noise_ddpm' needs a VP-type SDE, got {sde!r}")
    return -o / bcast(sde.discrete_sigma(t), o)


PARAMETERIZATIONS: dict[str, Callable[[Tensor, Tensor, Tensor, SDE], Tensor]] = {
    "score": _score,
    "noise": _noise,
    "scaled": _scaled,
    "drift": _drift,
    "noise_ddpm": _noise_ddpm,
}


class ScoreModel(nn.Module):
    """Wrap ``net(x, label[, y])`` into ``score_fn(x, t)`` for a given SDE.

    Args:
        net: the raw network; called as ``net(x, label)``.
        sde: the SDE whose sigma(t), g(t) and N the parameterization and label use.
        parameterization: one of ``PARAMETERIZATIONS``.
        label: one of ``LABELS``.
    """

    def __init__(self, net: nn.Module, sde: SDE, parameterization: str = "score", label: str = "t"):
        super().__init__()
        self.net, self.sde = net, sde
        self.parameterization, self.label = parameterization, label
        self._out = lookup(
            PARAMETERIZATIONS, parameterization, "parameterization", callables=False, sort=True
        )
        self._label = lookup(LABELS, label, "noise label", callables=False, sort=True)

    def noise_label(self, t: Tensor) -> Tensor:
        """What the network is fed for time ``t``."""
        return self._label(self.sde, t)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        """The score s_theta(x, t), shaped like ``x``; ``t`` is ``(B,)``, or one number (a float
        or a 0-d tensor) for the whole batch."""
        t = batch_times(t, x)
        o = self.net(x, self.noise_label(t))
        return self._out(o, x, t, self.sde)

    score_fn = forward

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}, parameterization={self.parameterization!r}, label={self.label!r}"
