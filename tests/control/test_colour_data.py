"""The coloured digits: deterministic with the seed, the grey channel keeps the digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.data.colour import hsv_to_rgb, tint


def test_hsv_primaries():
    h = np.array([0.0, 1 / 3, 2 / 3, 0.5])
    rgb = hsv_to_rgb(h, np.ones(4), np.ones(4))
    np.testing.assert_allclose(rgb, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], atol=1e-12)
    np.testing.assert_allclose(hsv_to_rgb(h, np.zeros(4), np.full(4, 0.5)), np.full((4, 3), 0.5))


def test_tint_is_deterministic_and_keeps_the_digit():
    g = np.random.default_rng(0).integers(0, 256, (20, 8, 8)).astype(np.uint8)
    a, b, c = tint(g, 3), tint(g, 3), tint(g, 4)
    assert a.shape == (20, 3, 8, 8) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # per image, the grey value is an affine function of the digit's intensity (a blend of two
    # fixed colours): correlation 1 up to the uint8 rounding
    for img, src in zip(a.astype(float).mean(1), g.astype(float)):
        assert np.corrcoef(img.ravel(), src.ravel())[0, 1] > 0.99


def test_colour_digits_data_set():
    pytest.importorskip("sklearn")
    x, y = sd.load_images("colour_digits", "test")
    assert x.shape == (297, 3, 8, 8) and x.dtype == torch.uint8 and y.shape == (297,)
    assert sd.IMAGE_DATASETS["colour_digits"].shape == (3, 8, 8)
    x2, _ = sd.load_images("colour_digits", "test")
    assert torch.equal(x, x2)
