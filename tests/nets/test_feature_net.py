"""The feature network of the sample-quality metrics: shapes, sizes, rebuild from its config."""

from __future__ import annotations

import pytest
import torch

from scoresde.nets.features import FeatureNet


@pytest.mark.parametrize("channels, size", [(1, 28), (1, 8), (3, 8), (1, 7)])
def test_shapes(channels, size):
    net = FeatureNet(channels=channels, size=size, classes=10, width=8, features=24)
    x = torch.rand(5, channels, size, size, generator=torch.Generator().manual_seed(0))
    assert net(x).shape == (5, 10)
    f = net.features(x)
    assert f.shape == (5, 24) and (f >= 0).all()  # after a ReLU
    assert torch.allclose(net.head(f), net(x))  # the logits read the features


def test_default_is_the_mnist_shape():
    net = FeatureNet()
    assert net.config() == dict(channels=1, size=28, classes=10, width=32, features=128)
    assert net.features(torch.rand(2, 1, 28, 28)).shape == (2, 128)


def test_config_rebuilds_the_same_network():
    torch.manual_seed(0)
    net = FeatureNet(size=8, width=4, features=16)
    twin = FeatureNet(**net.config())
    twin.load_state_dict(net.state_dict())
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(twin(x), net(x))
    assert all(v.dtype == torch.float32 for v in net.state_dict().values())


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="width must be a positive integer"):
        FeatureNet(width=0)
    with pytest.raises(ValueError, match="classes >= 2"):
        FeatureNet(classes=1)
    with pytest.raises(ValueError, match=r"expects images \(B, \(1, 8, 8\)\)"):
        FeatureNet(size=8)(torch.rand(2, 1, 28, 28))
