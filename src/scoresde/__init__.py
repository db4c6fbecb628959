"""scoresde: score-based generative modeling through SDEs, in pure PyTorch."""

from .images import IMAGE_DATASETS, load_images
from .likelihood import bits_per_dim, dequantize, log_likelihood
from .mixture import GaussianMixture
from .score import LABELS, PARAMETERIZATIONS, ScoreModel
from .sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "ScoreModel",
    "LABELS",
    "PARAMETERIZATIONS",
    "GaussianMixture",
    "log_likelihood",
    "bits_per_dim",
    "dequantize",
    "load_images",
    "IMAGE_DATASETS",
]
