"""scoresde: score-based generative modeling through SDEs, in pure PyTorch."""

from .control import (
    Colorization,
    Inpainting,
    LinearObservation,
    Observation,
    SuperResolution,
    classifier_guidance,
    sample_conditional,
)
from .core.likelihood import bits_per_dim, elbo, log_likelihood
from .core.metrics import fid, frechet_distance, kid, precision_recall
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
    optimised_grid,
    sample,
    sample_adaptive,
    sample_deis,
    sample_dpm_solver,
    sample_dpm_solver_adaptive,
    sample_dpm_solver_sde,
    sample_heun,
    sample_ipndm,
    sample_lambda,
    sample_lms,
    sample_ode,
    sample_pc,
    sample_unipc,
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
    "elbo",
    "bits_per_dim",
    "fid",
    "kid",
    "frechet_distance",
    "precision_recall",
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
    "sample_unipc",
    "sample_deis",
    "sample_ipndm",
    "sample_lms",
    "sample_dpm_solver_adaptive",
    "sample_dpm_solver_sde",
    "sample_lambda",
    "sample",
    "SAMPLERS",
    "optimised_grid",
    "Observation",
    "Inpainting",
    "Colorization",
    "SuperResolution",
    "LinearObservation",
    "sample_conditional",
    "classifier_guidance",
]
