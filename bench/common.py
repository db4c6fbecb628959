"""Shared pieces of the benchmarks (run as ``python bench/NAME.py``; imported as ``common``)."""

from __future__ import annotations

import scoresde as sd
from scoresde.core.mixture import oracle_mixture_2d


def mixture_2d() -> sd.GaussianMixture:
    """The 2-D, three-component mixture of the test suite (:func:`oracle_mixture_2d`)."""
    return oracle_mixture_2d()
