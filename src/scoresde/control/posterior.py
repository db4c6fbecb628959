"""The exact posterior of a Gaussian mixture under an :class:`Observation` (the control oracle).

A mixture stays a mixture under a linear Gaussian observation (DESIGN section 5): the operator is
made a dense ``(M, D)`` matrix by applying it to the standard basis (small D only), and
:meth:`GaussianMixture.condition` does the rest. The posterior diffused by the SDE has the exact
conditional score ``grad log p_t(x_t | y)`` (its ``score_fn``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.mixture import GaussianMixture
from .observations import Observation

__all__ = ["dense_operator", "exact_posterior"]


def dense_operator(obs: Observation, sample_shape: tuple[int, ...]) -> Tensor:
    """``A`` as an ``(M, D)`` float64 matrix for samples of one example's ``sample_shape``."""
    D = int(torch.Size(sample_shape).numel())
    basis = torch.eye(D, dtype=torch.float64, device=obs.y.device).reshape(D, *sample_shape)
    return obs.A(basis).reshape(D, -1).T.contiguous()


def exact_posterior(
    mixture: GaussianMixture, obs: Observation, sample_shape: tuple[int, ...] | None = None
) -> GaussianMixture:
    """``p_0(x | y)`` of ``mixture`` for the one observation ``obs.y`` (batch size 1).

    ``sample_shape`` is one example's shape as the operator sees it (default ``(D,)``; e.g.
    ``(3, H, W)`` for an image mixture over ``D = 3 H W`` flattened pixels).
    """
    if obs.y.shape[0] != 1:
        raise ValueError(f"exact_posterior takes one observation, got a batch of {obs.y.shape[0]}")
    shape = (mixture.dim,) if sample_shape is None else tuple(sample_shape)
    A = dense_operator(obs, shape)
    if A.shape[1] != mixture.dim:
        raise ValueError(f"samples of {shape} have {A.shape[1]} entries, the mixture {mixture.dim}")
    return mixture.condition(A, obs.y[0].reshape(-1).double(), obs.noise_std)
