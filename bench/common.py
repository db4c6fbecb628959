"""Shared pieces of the benchmarks (run as ``python bench/NAME.py``; imported as ``common``)."""

from __future__ import annotations

import scoresde as sd


def mixture_2d() -> sd.GaussianMixture:
    """The 2-D, three-component mixture of the test suite (unequal weights, full covariances)."""
    return sd.GaussianMixture(
        weights=[0.5, 0.3, 0.2],
        means=[[-1.5, 0.0], [1.0, 1.0], [1.0, -1.5]],
        covs=[
            [[0.20, 0.05], [0.05, 0.10]],
            [[0.10, 0.0], [0.0, 0.30]],
            [[0.15, -0.05], [-0.05, 0.15]],
        ],
    )
