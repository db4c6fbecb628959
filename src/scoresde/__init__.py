"""scoresde: score-based generative modeling through SDEs, in pure PyTorch."""

from .core.likelihood import bits_per_dim, log_likelihood
from .core.mixture import GaussianMixture
from .core.score import LABELS, PARAMETERIZATIONS, ScoreModel
from .core.sde import SDE, VESDE, VPSDE, SubVPSDE
from .data.datasets import IMAGE_DATASETS, load_images
from .data.transforms import dequantize
from .interop.official import DDPM, NCSNpp, ScoreNet, convert_official, load_official, model_summary
from .samplers import (
    CORRECTORS,
    PREDICTORS,
    SAMPLERS,
    sample,
    sample_adaptive,
    sample_dpm_solver,
    sample_heun,
    sample_lambda,
    sample_ode,
    sample_pc,
)
from .training.checkpoint import load_model
from .training.config import Config, apply_overrides, load_config
from .training.loop import train
from .training.pipeline import load

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
    "load_official",
    "convert_official",
    "model_summary",
    "NCSNpp",
    "DDPM",
    "ScoreNet",
    "Config",
    "load_config",
    "apply_overrides",
    "load_model",
    "train",
    "load",
    "sample_pc",
    "sample_ode",
    "PREDICTORS",
    "CORRECTORS",
    "sample_heun",
    "sample_dpm_solver",
    "sample_adaptive",
    "sample_lambda",
    "sample",
    "SAMPLERS",
]
