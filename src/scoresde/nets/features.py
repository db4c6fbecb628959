"""A small CNN classifier whose penultimate activations are the features of FID, KID and
precision / recall for the MNIST family (28x28) and the 8x8 digits.

Inception-v3 features (the FID of natural images) mean little on 28x28 grey digits; a classifier
trained on the data set itself gives features that separate its classes, as is usual for MNIST
(e.g. the "MNIST FID" of many generative-model papers). Layout: ``x -> 2x - 1``, two 3x3
convolutions with ReLU that each halve the size, rounding up (28x28 -> 14x14 -> 7x7, 8x8 -> 4x4
-> 2x2), one more at that size, then a linear layer with ReLU from the whole map to ``features``
(the features) and a linear head to the ``classes`` logits. Images up to 16x16 halve by a
convolution and 2x2 max-pooling (on the 8x8 digits: test accuracy 0.949 against 0.923 with
strided convolutions); larger ones by stride-2 convolutions, which on the CPU train 2-3 times
faster per step than full-size convolutions with pooling. No normalization layers: the network
has no buffers and behaves the same in train and eval mode.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FeatureNet"]

SMALL = 16  # images up to this size halve by conv + max-pool, larger ones by strided convolutions


def _halving(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
    """A 3x3 convolution with ReLU that halves the size (rounding up): stride 2, or stride 1 and
    a 2x2 max-pool (``pool``)."""
    if pool:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]


class FeatureNet(nn.Module):
    """Logits ``(B, classes)`` and features ``(B, features)`` of images in [0, 1].

    Args:
        channels: image channels C (1 for grey images).
        size: image height and width H = W.
        classes: number of classes K.
        width: channels of the first convolution (the others have ``2 * width``).
        features: size F of the feature vector (the penultimate layer).
    """

    def __init__(
        self, channels: int = 1, size: int = 28, classes: int = 10, width: int = 32,
        features: int = 128,
    ):  # fmt: skip
        super().__init__()
        args = dict(channels=channels, size=size, classes=classes, width=width, features=features)
        for name, v in args.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"FeatureNet {name} must be a positive integer, got {v!r}")
        if classes < 2:
            raise ValueError(f"FeatureNet needs classes >= 2, got {classes}")
        self.channels, self.size, self.classes = channels, size, classes
        self.width, self.num_features = width, features
        w = width
        side = ((size + 1) // 2 + 1) // 2  # after two halvings that round up
        self.body = nn.Sequential(
            *_halving(channels, w, pool=size <= SMALL),
            *_halving(w, 2 * w, pool=size <= SMALL),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * w * side * side, features),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, classes)

    def config(self) -> dict:
        """The constructor arguments: ``FeatureNet(**net.config())`` rebuilds the network."""
        return dict(
            channels=self.channels,
            size=self.size,
            classes=self.classes,
            width=self.width,
            features=self.num_features,
        )

    def _check(self, x: Tensor) -> None:
        """One-line ValueError unless ``x`` is ``(B, channels, size, size)``."""
        shape = (self.channels, self.size, self.size)
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"FeatureNet expects images (B, {shape}), got {tuple(x.shape)}")

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``(B, features)`` (non-negative: after a ReLU) of images
        ``x`` ``(B, channels, size, size)`` with values in [0, 1]."""
        self._check(x)
        return self.body(2 * x - 1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, classes)`` of images ``x`` in [0, 1]."""
        return self.head(self.features(x))
