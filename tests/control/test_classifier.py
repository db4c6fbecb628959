"""The time-dependent classifier: shapes, training against the Bayes-optimal oracle, files."""

from __future__ import annotations

import pytest
import torch
from conftest import make_sde

from scoresde.nets.classifier import NoiseClassifier
from scoresde.training.checkpoint import CheckpointError, save_checkpoint
from scoresde.training.classifier import (
    accuracy_by_noise,
    load_classifier,
    save_classifier,
    train_classifier,
)


def test_shapes_and_errors():
    for shape in [(5,), (3, 8, 8), (1, 28, 28)]:
        net = NoiseClassifier(shape, 4, width=8, depth=2)
        assert net(torch.randn(2, *shape), torch.rand(2)).shape == (2, 4)
    with pytest.raises(ValueError, match="shape"):
        NoiseClassifier((2, 3), 4)
    with pytest.raises(ValueError, match="expects inputs"):
        NoiseClassifier((5,), 4)(torch.randn(2, 6), torch.rand(2))


def _labelled(mixture, n: int, seed: int):
    """``n`` exact draws of the mixture with their component labels (float32 points)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(mixture.weights, n, replacement=True, generator=g)
    L = torch.linalg.cholesky(mixture.covs)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return (mixture.means[k] + torch.einsum("nde,ne->nd", L[k], z)).float(), k


# Bound: within 0.03 of the Bayes-optimal accuracy (argmax of the exact p_t(k | x)) on the same
# 2,000 noisy test points. Measured once (100 steps): 0.996 at t = 0.01 and 0.769 at t = 0.3,
# where Bayes is BAYES_MEASURED; 0.03 is 2.5 binomial SEs at accuracy 0.77 (SE 0.0094).
def test_training_approaches_the_bayes_classifier(mixture, tmp_path):
    sde = make_sde("vp")
    x, k = _labelled(mixture, 6000, 0)
    clf = train_classifier(
        sde, x[:4000], k[:4000], 3, steps=100, batch_size=128, lr=1e-2, width=16, depth=2
    )
    times = [0.01, 0.3]
    rows = accuracy_by_noise(clf, x[4000:], k[4000:], times, seed=5)
    g = torch.Generator().manual_seed(5)  # the same noise as accuracy_by_noise drew
    for t, row in zip(times, rows):
        tt = torch.full((2000,), t)
        mean, std = sde.marginal_prob(x[4000:], tt)
        xt = (mean + std[:, None] * torch.randn(mean.shape, generator=g)).double()
        bayes = (mixture.log_class_prob(xt, tt.double(), sde).argmax(1) == k[4000:]).double()
        print(t, row["accuracy"], float(bayes.mean()))
        assert row["accuracy"] >= float(bayes.mean()) - 0.03, (row, float(bayes.mean()))
    path = save_classifier(tmp_path / "classifier.pt", clf, {"data": "oracle"})
    again, meta = load_classifier(tmp_path)
    assert meta == {"data": "oracle"} and again.sde.config() == sde.config()
    tt = torch.full((5,), 0.2)
    torch.testing.assert_close(again(x[:5], tt), clf(x[:5], tt))
    assert path.is_file()


def test_load_refuses_other_files(tmp_path):
    save_checkpoint(tmp_path / "x.pt", {"a": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not a scoresde classifier"):
        load_classifier(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no classifier"):
        load_classifier(tmp_path)
