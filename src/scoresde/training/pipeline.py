"""The Python entry point to a trained run: ``model = load(workdir)``, then samples and
likelihoods in data units.

A :class:`TrainedModel` holds what a checkpoint holds (the score model, its SDE, the resolved
config, the standardizer of vector data) and maps between model units, where the SDE lives, and
data units, where the user's data live:

- vectors: ``x = standardizer.inverse(y)``, and ``log p_x(x) = log p_y(y) + log_det``;
- images: ``u = (y - shift) / scale`` in [0, 1] (``data.scale``, ``data.shift``), given as
  floats in [0, 1] or as uint8 pixels ``floor(256 u)`` (the dequantization cell holding ``u``,
  :func:`scoresde.data.from_model`); uint8 pixels are dequantized for a likelihood.

Samples are drawn as ``scoresde sample`` draws them (:func:`.evaluate.draw_samples`: sample ``i``
from its own random stream of ``seed``, whatever the chunk size) and likelihoods computed as
``scoresde likelihood`` computes them (:func:`.evaluate.dataset_nll`), so the same seed gives the
same numbers here and there.

:func:`training_data` turns the ``data`` argument of :func:`scoresde.training.loop.train` (one
array or tensor held in memory) into the loop's ``(train, test, standardizer)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.score import ScoreModel
from ..core.sde import SDE
from ..data import Standardizer, from_model, load_data, split
from .checkpoint import load_model
from .config import Config
from .evaluate import NLL, dataset_nll, draw_samples

__all__ = ["TrainedModel", "load", "training_data", "OUTPUTS"]

OUTPUTS = ("float", "uint8")  # how image samples come back: [0, 1] floats or 8-bit pixels
Data = tuple[Tensor, Tensor, Standardizer | None]  # (train, test, standardizer), data units


def _as_tensor(x: np.ndarray | Tensor, what: str = "data") -> Tensor:
    """A tensor sharing ``x``'s values (numpy arrays are copied only when they must be)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}")


@dataclass(eq=False)
class TrainedModel:
    """A trained score model with its SDE, config and standardizer (see :func:`load`).

    Attributes:
        score_model: the network wrapped as ``score_fn(x, t)`` (eval mode).
        config: the run's resolved :class:`~scoresde.training.config.Config`.
        standardizer: the map of vector data to model units (None: images, or unscaled data).
    """

    score_model: ScoreModel
    config: Config
    standardizer: Standardizer | None = None

    # ---- what the model is ---------------------------------------------------------------------
    @property
    def sde(self) -> SDE:
        """The SDE the model was trained with (the one source of truth for t and noise)."""
        return self.score_model.sde

    @property
    def score_fn(self) -> Callable[[Tensor, float | Tensor], Tensor]:
        """``score_fn(x, t)`` in model units; ``t`` is ``(B,)`` or one number."""
        return self.score_model

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example, ``(D,)`` or ``(C, H, W)``."""
        shape = self.config.data.shape
        if not shape:
            raise ValueError("the checkpoint's config does not record the data shape")
        return tuple(int(s) for s in shape)

    @property
    def images(self) -> bool:
        """Whether the model is one of 8-bit images (model space ``scale * u + shift``)."""
        return self.config.data.scale is not None and len(self.shape) == 3

    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        weight = next(self.score_model.parameters(), None)
        return weight.device if weight is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> TrainedModel:
        """Move the model to ``device`` (in place); returns ``self``."""
        self.score_model.to(device)
        return self

    def __repr__(self) -> str:
        m = self.config.model
        return (
            f"TrainedModel(sde={self.sde!r}, model={m.name!r}, parameterization="
            f"{m.parameterization!r}, shape={self.shape}, device={str(self.device)!r})"
        )

    # ---- units ---------------------------------------------------------------------------------
    def to_data_units(self, y: Tensor, output: str = "float") -> Tensor:
        """Model units -> data units: vectors by the standardizer's inverse; images as ``u`` in
        [0, 1] (``output="float"``, clamped) or uint8 pixels ``floor(256 u)`` (``"uint8"``)."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if not self.images:
            if output != "float":
                raise ValueError("output='uint8' is for image models; this one models vectors")
            return self.standardizer.inverse(y) if self.standardizer is not None else y
        data = self.config.data
        u = (y - (data.shift or 0.0)) / data.scale
        return u.clamp(0, 1) if output == "float" else from_model(u)  # u in [0, 1]: not centered

    # ---- samples -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        sampler: str = "pc",
        generator: torch.Generator | None = None,
        seed: int = 0,
        chunk: int = 1000,
        output: str = "float",
        **options,
    ) -> Tensor:
        """``n`` samples in data units, on the model's device.

        Args:
            n: number of samples.
            sampler: a name in :data:`scoresde.SAMPLERS` (or a sampler function).
            generator: draw all ``n`` in one call from this generator (one stream for the
                batch); without one, draw as ``scoresde sample --seed seed`` does (sample ``i``
                from its own stream, :class:`scoresde.samplers.SampleStreams`), so the samples
                equal the ones it writes, for any ``chunk`` (and any ``--chunk``).
            seed: the seed of the per-sample streams used when ``generator`` is None.
            chunk: samples per sampler call (memory; the samples do not depend on it).
            output: images: ``"float"`` (pixels in [0, 1]) or ``"uint8"`` (0..255).
            **options: the sampler's options (``steps``, ``eps``, ``denoise``, ``z``, ...;
                :func:`scoresde.samplers.sampler_options` lists them).
        """
        if output not in OUTPUTS:  # before the work
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        options = {"device": self.device, **options}
        if generator is None:
            y, _ = draw_samples(
                self.score_model, self.shape, n, sampler=sampler, chunk=chunk, seed=seed, **options
            )
        else:
            from ..samplers import sample

            y, _ = sample(self.sde, self.score_fn, (n, *self.shape), sampler, generator, **options)
        return self.to_data_units(y, output)

    # ---- likelihoods ---------------------------------------------------------------------------
    def _data(self, x: np.ndarray | Tensor) -> Tensor:
        """``x`` checked against the model: uint8 ``(N, C, H, W)`` images or ``(N, D)`` vectors."""
        x = _as_tensor(x, "x")
        if x.ndim < 1 or tuple(x.shape[1:]) != self.shape:
            want = f"(N, {', '.join(map(str, self.shape))})"
            raise ValueError(f"x must have shape {want} for this model, got {tuple(x.shape)}")
        if self.images and x.dtype != torch.uint8:
            raise ValueError(
                f"an image model's likelihood takes uint8 pixels (they are dequantized), got "
                f"{x.dtype}; for pixels in [0, 1] pass (x * 255).round().to(torch.uint8)"
            )
        if not self.images and not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return x

    def nll(self, x: np.ndarray | Tensor, **options) -> NLL:
        """The per-example NLL of ``x`` (data units) by the probability-flow ODE, as
        ``scoresde likelihood`` computes it; ``.summary()`` is the JSON it writes.

        ``options`` go to :func:`scoresde.training.evaluate.dataset_nll`: ``divergence``
        (default exact for vectors, Rademacher for images), ``repeats``, ``batch_size``,
        ``rtol``, ``atol``, ``eps``, ``seed`` (0, as the command's ``--seed``), ``callback``.
        """
        return dataset_nll(
            self.score_model, self._data(x), self.config.data, self.standardizer, **options
        )

    def log_likelihood(self, x: np.ndarray | Tensor, **options) -> Tensor:
        """Per-example ``log p(x)`` in nats (float64, on the CPU), as ``scoresde likelihood``
        reports it (its ``nll`` is the mean of ``-log p``).

        Vectors: the density of ``x`` itself, in data units (the standardizer's log-determinant
        added). Images: uint8 pixels, dequantized with the generator seeded ``seed``; the density
        of the model-space ``y = scale * u + shift`` of ``u = (x + U[0, 1)) / 256``, which is the
        density of ``u`` when ``data.scale`` is 1 (:meth:`bits_per_dim` turns either into
        bits/dim). ``options`` as :meth:`nll`.
        """
        return -self.nll(x, **options).nll

    def bits_per_dim(self, x: np.ndarray | Tensor, **options) -> Tensor:
        """Per-example bits/dim of uint8 images ``x`` (DESIGN section 4); ``options`` as
        :meth:`nll`. Vector models have no bits/dim (their data are not 8-bit): ValueError."""
        if not self.images:
            raise ValueError("bits_per_dim is for 8-bit image models; use log_likelihood")
        return self.nll(x, **options).bpd


def load(
    workdir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu"
) -> TrainedModel:
    """The trained model of ``<workdir>/checkpoint.pt`` (or a checkpoint file) on ``device``.

    ``ema``: the EMA weights (as ``scoresde sample`` uses them) instead of the raw ones.
    """
    score_model, config, standardizer = load_model(workdir, ema=ema)
    return TrainedModel(score_model.eval(), config, standardizer).to(device)


# ---- in-memory training data --------------------------------------------------------------------
def _image_problem(x: Tensor, cfg: Config) -> str | None:
    """What keeps ``x`` from being this image config's data (None: it fits)."""
    shape = cfg.data.shape
    want = f"(N, {', '.join(map(str, shape))})" if shape else "(N, C, H, W)"
    if x.dtype != torch.uint8 or x.ndim != 4 or (shape and list(x.shape[1:]) != list(shape)):
        return (
            f"this config trains on 8-bit images (data.name {cfg.data.name!r}): pass uint8 "
            f"images of shape {want} (pixels in [0, 1]: (x * 255).round() as uint8)"
        )
    return None


def _vector_problem(x: Tensor, cfg: Config) -> str | None:
    """What keeps ``x`` from being this vector config's data (None: it fits)."""
    if x.dtype == torch.uint8 and x.ndim == 4:
        return (
            "uint8 images need an image config (data.name an image set, as in the digits_vp "
            "preset, which sets data.scale and data.shift)"
        )
    if x.ndim != 2 or x.dtype == torch.bool or x.is_complex():
        return "this config trains on vectors: pass real numbers of shape (N, D) (or (N,))"
    D, shape, dim = x.shape[1], cfg.data.shape, cfg.model.params.get("dim")
    if shape and list(shape) != [D]:
        return f"data.shape is {list(shape)} but the data have D = {D}"
    if dim is not None and dim != D:
        return f"model.params.dim is {dim} but the data have D = {D}"
    if not bool(torch.isfinite(x).all()):
        return "it holds NaN or inf entries"
    return None


def training_data(cfg: Config, data: Data | np.ndarray | Tensor | None) -> Data:
    """The training loop's ``(train, test, standardizer)`` in data units.

    ``data`` is None (the config's own data, :func:`scoresde.data.load_data`), such a tuple
    (returned as is), or one array or tensor (numpy or torch) held in memory: float ``(N, D)``
    vectors (``(N,)`` is N points in 1-D) for a vector config, uint8 ``(N, C, H, W)`` images for
    an image config (``data.scale`` set, as image presets do). Its rows are split with
    ``data.test_fraction`` and the generator seeded ``data.seed``, as a data file is (all rows
    are used: ``n_train`` / ``n_test`` size only toy and named sets); a vector config with
    ``data.standardize`` gets a standardizer fitted on the training rows.

    Raises:
        ValueError: one message when the array does not fit the config (dtype, shape,
            ``data.shape``, ``model.params.dim``, non-finite entries).
    """
    if data is None:
        return load_data(cfg.data)
    if isinstance(data, tuple | list) and len(data) == 3:
        return tuple(data)
    x = _as_tensor(data)
    images = cfg.data.scale is not None
    if not images and x.ndim == 1:
        x = x[:, None]
    problem = (_image_problem if images else _vector_problem)(x, cfg)
    if problem is not None:
        raise ValueError(
            f"data of shape {tuple(x.shape)} and dtype {x.dtype} do not fit the config: {problem}"
        )
    if not images:
        x = x.to(torch.get_default_dtype())
    train, test = split(x, cfg.data.test_fraction, torch.Generator().manual_seed(cfg.data.seed))
    standardizer = Standardizer.fit(train) if cfg.data.standardize and not images else None
    return train, test, standardizer
