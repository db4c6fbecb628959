"""Classifier guidance (Song et al. 2021, Section 5 and Appendix I.4; Dhariwal & Nichol 2021).

By Bayes, ``grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)``: a time-dependent
classifier ``log p_t(k | x_t)`` turns an unconditional score into a class-conditional one. With a
``scale`` s the guided score is ``score + s grad log p_t(y | x)`` (s = 1 is the exact conditional
score where the classifier is exact; s > 1 sharpens). It is just a score function, so every
sampler of :mod:`scoresde.samplers` takes it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import check_range, short

__all__ = ["classifier_guidance"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _labels(y) -> Tensor:
    """``y`` as a 0-d or ``(B,)`` int64 tensor; ``ValueError`` for anything else."""
    try:
        v = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"y must be a class index or a (B,) tensor of them, got {short(y)}"
        ) from None
    if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool or v.ndim > 1:
        raise ValueError(f"y must be a class index or a (B,) tensor of them, got {short(y)}")
    return v.long()


def _selected(logp, labels: Tensor, x: Tensor) -> Tensor:
    """``sum_b log p(y_b | x_b)``, after checking the classifier's output and the labels."""
    B = x.shape[0]
    if not isinstance(logp, Tensor) or logp.ndim != 2 or logp.shape[0] != B:
        got = tuple(logp.shape) if isinstance(logp, Tensor) else type(logp).__name__
        raise ValueError(f"log_prob_fn must return (B, K) = ({B}, K) log-probabilities, got {got}")
    K = logp.shape[1]
    lab = labels.to(logp.device).expand(B) if labels.ndim == 0 else labels.to(logp.device)
    if lab.shape != (B,):
        raise ValueError(f"y has {lab.shape[0]} labels for a batch of {B}")
    if bool(((lab < 0) | (lab >= K)).any()):
        raise ValueError(f"class index out of range: y must lie in [0, {K - 1}]")
    return logp.gather(1, lab[:, None]).sum()


def classifier_guidance(
    score_fn: ScoreFn,
    log_prob_fn: Callable[[Tensor, Tensor], Tensor],
    y,
    scale: float = 1.0,
) -> ScoreFn:
    """The guided score ``guided(x, t) = score_fn(x, t) + scale * grad_x log p_t(y | x)``.

    Args:
        score_fn: the unconditional score ``(B, ...) x (B,) -> like x``.
        log_prob_fn: ``log_prob_fn(x, t) -> (B, K)`` log-probabilities ``log p_t(k | x)``,
            differentiable in ``x`` (a time-dependent classifier; its log-softmax).
        y: the class, an int for every sample or a ``(B,)`` tensor of class indices.
        scale: guidance scale s >= 0.

    Returns:
        A score function for any sampler; a class index out of ``[0, K)`` or a classifier
        output that is not ``(B, K)`` raises ``ValueError`` at the first call.
    """
    labels = _labels(y)
    scale = check_range("scale", scale, 0)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        s = score_fn(x, t)
        with torch.inference_mode(False), torch.enable_grad():
            xr = x.detach().clone().requires_grad_(True)
            tt = t.detach().clone() if isinstance(t, Tensor) else t
            (g,) = torch.autograd.grad(_selected(log_prob_fn(xr, tt), labels, xr), xr)
        return s + scale * g.to(s)

    return guided
