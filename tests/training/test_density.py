"""Densities on a grid against the Gaussian-mixture oracle (DESIGN section 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_sde

from scoresde.core.mixture import GaussianMixture, oracle_mixture_2d
from scoresde.data import Standardizer
from scoresde.data.toy import toy_mixture
from scoresde.training.density import (
    _mesh,
    grid_axes,
    integrate_score,
    log_density_on_grid,
    score_on_grid,
)


class Oracle(torch.nn.Module):
    """The exact score of a mixture's marginals, shaped as a ScoreModel (no weights)."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.mixture, self.sde = mixture, sde

    def score_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mixture.score(x, t, self.sde)


def _exact(mixture, axes, t=None, sde=None) -> np.ndarray:
    P = torch.as_tensor(_mesh(axes))
    lp = mixture.log_prob(P, t, sde).numpy()
    return lp if len(axes) == 1 else lp.reshape(len(axes[1]), len(axes[0]))


@pytest.mark.parametrize("name, points, tol", [("mixture_1d", 200, 1e-4), ("mixture_2d", 48, 0.15)])
def test_integrated_exact_score_is_the_exact_density(name, points, tol):
    m = toy_mixture(name)
    axes = grid_axes(m.sample(4000, torch.Generator().manual_seed(0)), points)
    scores = m.score(torch.as_tensor(_mesh(axes))).numpy()
    scores = scores[:, 0] if len(axes) == 1 else scores.reshape(points, points, 2)
    got, want = integrate_score(scores, axes), _exact(m, axes)
    where = want > want.max() - 6  # the tails hold almost no mass
    assert np.abs(got - want)[where].max() < tol


def test_integrate_score_needs_1d_or_2d():
    with pytest.raises(ValueError, match="1-D or 2-D"):
        integrate_score(np.zeros((3, 3, 3, 3)), [np.arange(3.0)] * 3)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_probability_flow_density_on_a_grid_in_data_units(name):
    """log p_t of a standardized mixture, mapped back to data units, against the exact one."""
    sde, m = make_sde(name), oracle_mixture_2d()
    # as fitted to the data: p_T of the standardized data is then the prior up to ~1e-3 nats
    std = Standardizer(m.mean().float(), m.cov().diagonal().sqrt().float())
    S = torch.diag(1 / std.std.double())  # the model works on the mixture of y = (x - mean) / std
    my = GaussianMixture(m.weights, (m.means - std.mean.double()) @ S, S @ m.covs @ S)
    model = Oracle(my, sde)
    axes = grid_axes(std.inverse(my.sample(3000, torch.Generator().manual_seed(1)).float()), 10)
    t = 0.05
    got = log_density_on_grid(model, std, axes, t, tol=1e-3)
    y = std.forward(torch.as_tensor(_mesh(axes))).double()
    want = (my.log_prob(y, t, sde) + std.log_det().double()).numpy().reshape(10, 10)
    where = want > want.max() - 12  # far tails (-40 nats): the ODE's error grows with the score
    assert np.abs(got - want)[where].max() < 2e-2
    s = score_on_grid(model, std, axes, t)  # the chain rule: grad_x = grad_y / std
    assert s.shape == (10, 10, 2)
    sy = my.score(y, t, sde).numpy().reshape(10, 10, 2)
    assert np.allclose(s, sy / std.std.numpy(), rtol=1e-4, atol=1e-4)
