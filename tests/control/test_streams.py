"""Conditional samples drawn with one stream per sample index do not depend on the batch."""

from __future__ import annotations

import pytest
import torch

import scoresde as sd
from scoresde.samplers import SampleStreams

SDE = sd.VPSDE(0.1, 20.0, 1000)
SHAPE = (1, 4, 4)


def _score(x, t):
    """A smooth score that mixes the pixels of each sample (the score of a correlated Gaussian)."""
    return -x - 0.3 * torch.roll(x, 1, dims=-1) * t.reshape(-1, 1, 1, 1)


def _obs():
    y = torch.linspace(-1, 1, 16).reshape(1, *SHAPE)
    mask = torch.zeros(1, *SHAPE, dtype=torch.bool)
    mask[..., :2] = True  # the left half observed, one observation for every sample
    return sd.Inpainting(y, mask)


def _draw(indices, method, options):
    x, _ = sd.sample_conditional(
        SDE, _score, (len(indices), *SHAPE), _obs(), method=method, steps=30,
        generator=SampleStreams(7, indices), **options,
    )  # fmt: skip
    return x


@pytest.mark.parametrize(
    "method, options",
    [
        ("pc", dict(corrector="none")),
        ("pc", dict(corrector="ald")),
        ("dps", dict(zeta=0.5)),
        ("repaint", dict(jump=5, resample=2)),
    ],
)
def test_batch_of_four_equals_two_batches_of_two(method, options):
    whole = _draw(range(4), method, options)
    parts = torch.cat([_draw(range(0, 2), method, options), _draw(range(2, 4), method, options)])
    torch.testing.assert_close(whole, parts, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(whole[0], whole[1])  # the streams differ per index
    assert torch.equal(whole[..., :2], _obs().y.expand(4, *SHAPE)[..., :2])


def test_streams_are_the_seed_and_index_not_the_order():
    a = _draw([3, 1], "pc", dict(corrector="none"))
    b = _draw([1, 3], "pc", dict(corrector="none"))
    torch.testing.assert_close(a, b.flip(0), rtol=1e-6, atol=1e-6)
