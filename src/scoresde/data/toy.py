"""Toy distributions: 1-D and 2-D sets with known geometry, three with an exact density.

Generators take ``(n, generator=None)`` and return ``(n, D)`` tensors of the default dtype; they
are listed in ``TOY``. The 2-D sets follow FFJORD's ``toy_data`` (as used by sdeflow-light). Three
of them are Gaussian mixtures with an exact density, available as ``scoresde.GaussianMixture``
objects through :func:`toy_mixture` (``TOY_MIXTURES``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import lookup
from ..core.mixture import GaussianMixture

__all__ = [
    "swiss_roll",
    "moons",
    "checkerboard",
    "eight_gaussians",
    "mixture_1d",
    "mixture_2d",
    "TOY",
    "TOY_MIXTURES",
    "toy_mixture",
    "swiss_roll_mixture",
]


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _randn(*shape: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _out(x: Tensor) -> Tensor:
    return x.to(torch.get_default_dtype())


# ---- 2-D toys (FFJORD's toy_data) --------------------------------------------------------------
def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 1.0) -> Tensor:
    """Swiss roll: angle s = 1.5 pi (1 + 2u), point (s cos s, s sin s) + N(0, noise^2), all / 5."""
    s = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    x = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1)
    return _out((x + noise * _randn(n, 2, generator=generator)) / 5)


def swiss_roll_mixture(k: int = 2000, noise: float = 1.0) -> GaussianMixture:
    """The density of :func:`swiss_roll` as a mixture of ``k`` equal Gaussians, to judge samples.

    The roll's density is ``E_s N(x; (s cos s, s sin s) / 5, (noise / 5)^2 I)`` with s uniform
    on [1.5 pi, 4.5 pi]: here the midpoint rule in s. Neighbouring means lie at most
    ``4.5 pi * 3 pi / (5 k)`` apart (0.02 for k = 2000, a tenth of the noise's std 0.2), so the
    mean log-density of data changes by less than 1e-7 nats from k = 2000 to 8000.
    """
    s = 1.5 * math.pi * (1 + 2 * (torch.arange(k, dtype=torch.float64) + 0.5) / k)
    means = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1) / 5
    covs = torch.eye(2, dtype=torch.float64).expand(k, 2, 2) * (noise / 5) ** 2
    return GaussianMixture(torch.full((k,), 1 / k, dtype=torch.float64), means, covs)


def moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> Tensor:
    """Two interleaved half circles (scikit-learn's ``make_moons``), scaled by 2 and centred."""
    theta = math.pi * _rand(n, generator)
    lower = _rand(n, generator) < 0.5
    upper_arc = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    lower_arc = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    x = torch.where(lower[:, None], lower_arc, upper_arc) + noise * _randn(
        n, 2, generator=generator
    )
    return _out(2 * x + torch.tensor([-1.0, -0.2], dtype=torch.float64))


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 checkerboard of side 2 on [-4, 4]^2 (density 1/32)."""
    x1 = 4 * _rand(n, generator) - 2
    row = 2 * torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64)
    x2 = _rand(n, generator) - row + torch.floor(x1) % 2
    return _out(2 * torch.stack([x1, x2], dim=1))


# ---- Gaussian mixtures with exact densities -----------------------------------------------------
def _mixture_1d() -> GaussianMixture:
    # The Julia seed's target: two modes at -1 and +1 with std 0.2, equal weights.
    return GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [0.2**2, 0.2**2])


def _mixture_2d() -> GaussianMixture:
    # Three unequal, correlated components: a test density with a known entropy.
    return GaussianMixture(
        weights=[0.35, 0.40, 0.25],
        means=[[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]],
        covs=[
            [[0.30, 0.20], [0.20, 0.40]],
            [[0.50, -0.30], [-0.30, 0.40]],
            [[0.2, 0.0], [0.0, 0.2]],
        ],
    )


def _eight_gaussians() -> GaussianMixture:
    # FFJORD: centres 4 (cos, sin) of multiples of 45 degrees, std 0.5, everything divided by 1.414.
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = 4 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) / 1.414
    return GaussianMixture(torch.ones(8), means, torch.full((8,), (0.5 / 1.414) ** 2))


TOY_MIXTURES: dict[str, Callable[[], GaussianMixture]] = {
    "mixture_1d": _mixture_1d,
    "mixture_2d": _mixture_2d,
    "eight_gaussians": _eight_gaussians,
}


def toy_mixture(name: str) -> GaussianMixture:
    """The exact ``GaussianMixture`` (float64) behind a toy data set of ``TOY_MIXTURES``."""
    return lookup(TOY_MIXTURES, name, "toy mixture", callables=False, sort=True)()


def mixture_1d(n: int, generator: torch.Generator | None = None) -> Tensor:
    """The 1-D two-component mixture of the Julia seed, ``(n, 1)``."""
    return _out(_mixture_1d().sample(n, generator))


def mixture_2d(n: int, generator: torch.Generator | None = None) -> Tensor:
    """The 2-D three-component mixture ``toy_mixture("mixture_2d")``, ``(n, 2)``."""
    return _out(_mixture_2d().sample(n, generator))


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Eight Gaussians on a circle of radius 2.83 (FFJORD), ``(n, 2)``."""
    return _out(_eight_gaussians().sample(n, generator))


TOY: dict[str, Callable[..., Tensor]] = {
    "swissroll": swiss_roll,
    "moons": moons,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "mixture_1d": mixture_1d,
    "mixture_2d": mixture_2d,
}
