"""ScoreModel: a raw network plus an SDE plus an explicit parameterization gives ``score_fn(x, t)``.

A network sees ``(x_in, label)`` where the *noise label* is a documented function of t (``LABELS``),
and its output becomes a score through a documented *parameterization* (``PARAMETERIZATIONS``).
A parameterization may also scale the network's input (``INPUTS``); all others feed x as it is.

==============  =====================================================  ==========================
name            score s(x, t) from the network output o                 used by
==============  =====================================================  ==========================
``score``       s = o                                                  NCSN++ with scale_by_sigma
``noise``       s = -o / sigma(t)       (o predicts the noise z)        DDPM++, VP / sub-VP
``scaled``      s = o / sigma(t)                                       the seed notebook's U-Net
``drift``       s = o / g(t)            (o is the drift a = g s)        sdeflow-light
``noise_ddpm``  s = -o / sqrt(1 - prod alpha_i)  (DDPM chain, VP)      official discrete DDPM
``edm``         s = (alpha D - x) / sigma^2,  D = c_skip x^ + c_out o   EDM (Karras et al. 2022)
                (input c_in x^, see below)
==============  =====================================================  ==========================

==============  ===========================================  ==========================
label           fed to the network                            used by
==============  ===========================================  ==========================
``t``           t itself                                      MLP, the tutorial U-Net
``timestep``    (N - 1) t, a float (the paper's ``999 t``)    official VP / sub-VP / DDPM
``sigma``       sigma(t) = marginal std                       official VE (NCSN++)
``edm``         c_noise = ln(sigma^) / 4 = -log_snr(t) / 4    EDM
==============  ===========================================  ==========================

EDM preconditioning (Karras et al. 2022, Table 1) for any SDE here. The marginal is
``x = alpha x0 + sigma z``, so ``x^ = x / alpha = x0 + sigma^ z`` is EDM's variance-exploding
variable at the noise level ``sigma^ = sigma / alpha = exp(-log_snr)`` (VE: alpha = 1, x^ = x).
The network predicts the denoiser ``D(x^; sigma^) = c_skip x^ + c_out F(c_in x^, c_noise)`` of
E[x0 | x], with

    c_skip = sigma_d^2 / (sigma^^2 + sigma_d^2),
    c_out = sigma^ sigma_d / sqrt(sigma^^2 + sigma_d^2),
    c_in = 1 / sqrt(sigma^^2 + sigma_d^2),
    c_noise = ln(sigma^) / 4,

and Tweedie's formula ``E[x0 | x] = (x + sigma^2 grad log p_t(x)) / alpha`` turns it into the exact
score ``s = (alpha D - x) / sigma^2``, so every sampler and the likelihood take it unchanged.
sigma_d should be the standard deviation of the data: :data:`SIGMA_DATA` = 0.5 by default, EDM's
choice for images in [-1, 1], and about right for the standardized toy sets too (their std is 1:
the inputs and targets of F are then of unit scale within a factor 2). Data of another scale set
``ScoreModel(..., sigma_data=...)`` (``model.sigma_data`` in a config); the model keeps it as
``model.sigma_data`` and the ``edm`` loss weighting reads it from there.

Every entry of ``PARAMETERIZATIONS`` takes ``(o, x, t, sde, sigma_d)`` and every entry of
``INPUTS`` ``(x, t, sde, sigma_d)``, with ``sigma_d`` defaulting to :data:`SIGMA_DATA`; only the
``edm`` entries use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .checks import check_range, lookup, short
from .sde import SDE, bcast

__all__ = [
    "ScoreModel",
    "LABELS",
    "PARAMETERIZATIONS",
    "INPUTS",
    "SIGMA_DATA",
    "batch_times",
    "edm_sigma",
    "edm_coefficients",
    "check_sigma_data",
]

SIGMA_DATA = 0.5  # EDM's default sigma_d, the std of the data (module docstring)


def check_sigma_data(sigma_data: float) -> float:
    """``sigma_data`` as a float if it is a positive finite number (EDM's sigma_d), else
    ``ValueError`` naming the value."""
    try:
        return check_range("sigma_data", sigma_data, 0.0, math.inf, open_low=True, open_high=True)
    except ValueError:
        raise ValueError(
            f"sigma_data (EDM's std of the data) must be a positive finite number, "
            f"got {short(sigma_data)}"
        ) from None


def batch_times(t: float | Tensor, x: Tensor) -> Tensor:
    """``t`` as the ``(B,)`` times of the batch ``x``: a Python number or a 0-d tensor is
    repeated for every example (in ``x``'s dtype and device); a ``(B,)`` tensor is returned as is.
    """
    if isinstance(t, Tensor) and t.ndim > 0:
        return t
    return torch.as_tensor(t, dtype=x.dtype, device=x.device).repeat(x.shape[0])


def edm_sigma(sde: SDE, t: Tensor) -> Tensor:
    """EDM's noise level ``sigma^ = sigma(t) / alpha(t) = exp(-log_snr(t))`` of ``x / alpha``."""
    return torch.exp(-sde.log_snr(t))


def edm_coefficients(
    sigma_hat: Tensor, sigma_data: float = SIGMA_DATA
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM's ``(c_skip, c_out, c_in, c_noise)`` at the noise levels ``sigma_hat`` (Karras et al.
    2022, Table 1); ``sigma_data`` is the std of the data."""
    var = sigma_hat**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma_hat * sigma_data / torch.sqrt(var)
    c_in = 1 / torch.sqrt(var)
    c_noise = 0.25 * torch.log(sigma_hat)
    return c_skip, c_out, c_in, c_noise


def _label_t(sde: SDE, t: Tensor) -> Tensor:
    return t


def _label_timestep(sde: SDE, t: Tensor) -> Tensor:
    return t * (sde.N - 1)


def _label_sigma(sde: SDE, t: Tensor) -> Tensor:
    return sde.sigma(t)


def _label_edm(sde: SDE, t: Tensor) -> Tensor:
    return -0.25 * sde.log_snr(t)  # c_noise = ln(sigma^) / 4, sigma^ = exp(-log_snr)


LABELS: dict[str, Callable[[SDE, Tensor], Tensor]] = {
    "t": _label_t,
    "timestep": _label_timestep,
    "sigma": _label_sigma,
    "edm": _label_edm,
}


def _score(o: Tensor, x: Tensor, t: Tensor, sde: SDE, sigma_d: float = SIGMA_DATA) -> Tensor:
    return o


def _noise(o: Tensor, x: Tensor, t: Tensor, sde: SDE, sigma_d: float = SIGMA_DATA) -> Tensor:
    return -o / bcast(sde.sigma(t), o)


def _scaled(o: Tensor, x: Tensor, t: Tensor, sde: SDE, sigma_d: float = SIGMA_DATA) -> Tensor:
    return o / bcast(sde.sigma(t), o)


def _drift(o: Tensor, x: Tensor, t: Tensor, sde: SDE, sigma_d: float = SIGMA_DATA) -> Tensor:
    return o / bcast(sde.g(t), o)


def _noise_ddpm(o: Tensor, x: Tensor, t: Tensor, sde: SDE, sigma_d: float = SIGMA_DATA) -> Tensor:
    if not hasattr(sde, "discrete_sigma"):
        raise ValueError(f"parameterization 'noise_ddpm' needs a VP-type SDE, got {sde!r}")
    return -o / bcast(sde.discrete_sigma(t), o)


def _edm(o: Tensor, x: Tensor, t: Tensor, sde: SDE, sigma_d: float = SIGMA_DATA) -> Tensor:
    # s = (alpha D - x) / sigma^2 with D = c_skip x / alpha + c_out o. Since 1 - c_skip =
    # sigma^^2 / (sigma^^2 + sigma_d^2), s = alpha c_out o / sigma^2 - x / (sigma^2 + alpha^2
    # sigma_d^2): no difference of nearly equal terms as sigma -> 0.
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    _, c_out, _, _ = edm_coefficients(sigma / alpha, sigma_d)
    o_coef = alpha * c_out / sigma**2
    x_coef = 1 / (sigma**2 + (alpha * sigma_d) ** 2)
    return bcast(o_coef, o) * o - bcast(x_coef, x) * x


# (o, x, t, sde, sigma_d) -> score; sigma_d is EDM's std of the data (only ``edm`` uses it)
PARAMETERIZATIONS: dict[str, Callable[[Tensor, Tensor, Tensor, SDE, float], Tensor]] = {
    "score": _score,
    "noise": _noise,
    "scaled": _scaled,
    "drift": _drift,
    "noise_ddpm": _noise_ddpm,
    "edm": _edm,
}


def _edm_input(x: Tensor, t: Tensor, sde: SDE, sigma_d: float = SIGMA_DATA) -> Tensor:
    # c_in x^ = x / (alpha sqrt(sigma^^2 + sigma_d^2)) = x / sqrt(sigma^2 + alpha^2 sigma_d^2)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    return x / bcast(torch.sqrt(sigma**2 + (alpha * sigma_d) ** 2), x)


# What the network sees in place of x, for the parameterizations that scale their input:
# (x, t, sde, sigma_d) -> x_in.
INPUTS: dict[str, Callable[[Tensor, Tensor, SDE, float], Tensor]] = {"edm": _edm_input}


class ScoreModel(nn.Module):
    """Wrap ``net(x, label[, y])`` into ``score_fn(x, t)`` for a given SDE.

    Args:
        net: the raw network; called as ``net(x_in, label)`` with ``x_in = INPUTS[p](x, t, sde)``
            for a parameterization ``p`` in ``INPUTS`` (``edm``: c_in x^), else ``x`` itself.
        sde: the SDE whose sigma(t), g(t) and N the parameterization and label use.
        parameterization: one of ``PARAMETERIZATIONS``.
        label: one of ``LABELS``.
        sigma_data: EDM's sigma_d, the std of the data (a positive finite number), used by the
            ``edm`` parameterization and read by the ``edm`` loss weighting; kept as
            ``self.sigma_data`` (a plain attribute, not in the state dict).
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        parameterization: str = "score",
        label: str = "t",
        sigma_data: float = SIGMA_DATA,
    ):
        super().__init__()
        self.net, self.sde = net, sde
        self.parameterization, self.label = parameterization, label
        self.sigma_data = check_sigma_data(sigma_data)
        self._out = lookup(
            PARAMETERIZATIONS, parameterization, "parameterization", callables=False, sort=True
        )
        self._label = lookup(LABELS, label, "noise label", callables=False, sort=True)
        self._in = INPUTS.get(parameterization)

    def noise_label(self, t: Tensor) -> Tensor:
        """What the network is fed for time ``t``."""
        return self._label(self.sde, t)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        """The score s_theta(x, t), shaped like ``x``; ``t`` is ``(B,)``, or one number (a float
        or a 0-d tensor) for the whole batch."""
        t = batch_times(t, x)
        x_in = x if self._in is None else self._in(x, t, self.sde, self.sigma_data)
        o = self.net(x_in, self.noise_label(t))
        return self._out(o, x, t, self.sde, self.sigma_data)

    score_fn = forward

    def denoise(self, x: Tensor, t: float | Tensor) -> Tensor:
        """The denoiser ``E[x0 | x_t = x] = (x + sigma^2 s_theta(x, t)) / alpha`` (Tweedie's
        formula), shaped like ``x``; for ``edm`` it is D of the module docstring. ``t`` as in
        :meth:`forward`."""
        t = batch_times(t, x)
        alpha, sigma = self.sde.alpha(t), self.sde.sigma(t)
        return (x + bcast(sigma**2, x) * self(x, t)) / bcast(alpha, x)

    def extra_repr(self) -> str:
        p, lab, sd = self.parameterization, self.label, self.sigma_data
        return f"sde={self.sde!r}, parameterization={p!r}, label={lab!r}, sigma_data={sd!r}"
