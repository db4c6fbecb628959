"""Linear observations ``y = A x + sigma_y n`` of a sample ``x`` (the inverse problems of control).

An :class:`Observation` holds ``y`` and three linear maps on batches: the forward operator ``A``,
its adjoint ``At`` and the pseudo-inverse ``pinv = A^+`` (so ``P = A^+ A`` is the orthogonal
projection onto the observed subspace, the row space of ``A``). Everything the conditional
samplers need follows from them:

* :meth:`Observation.impose` ``(x, v) = x + A^+ (v - A x)`` replaces the observed part of ``x`` so
  that ``A x = v`` and keeps the unobserved part ``(I - P) x``;
* the observation diffused to time t, ``v = alpha(t) y + sigma(t) A z`` with ``z ~ N(0, I)`` in
  sample space, is what ``A x_t`` looks like under the forward SDE (projection samplers).

Four observations: :class:`Inpainting` (a boolean mask, ``A = A^T = A^+`` = masking),
:class:`Colorization` (the grey channel of the official colorizer's orthogonal colour transform),
:class:`SuperResolution` (average pooling) and :class:`LinearObservation` (a user's operator;
its pseudo-inverse by conjugate gradients on ``A A^T``). All are shape-generic: ``(B, D)``
vectors and ``(B, C, H, W)`` images; an observation with batch size 1 serves any batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..core.checks import check_int, check_range

__all__ = [
    "Observation",
    "Inpainting",
    "Colorization",
    "SuperResolution",
    "LinearObservation",
    "COLOUR_MATRIX",
    "decouple",
    "couple",
]

Operator = Callable[[Tensor], Tensor]

# The official colorizer's colour-decoupling matrix M (score_sde_pytorch, get_pc_colorizer), in
# closed form: column 0 is the grey direction (1, 1, 1)/sqrt(3), columns 1-2 an orthonormal basis
# of the chroma plane. Equal to the official float32 table to 1e-7; orthogonal, so M^-1 = M^T.
_S3, _S6, _S2 = math.sqrt(3.0), math.sqrt(6.0), math.sqrt(2.0)
COLOUR_MATRIX = torch.tensor(
    [
        [1 / _S3, -2 / _S6, 0.0],
        [1 / _S3, 1 / _S6, 1 / _S2],
        [1 / _S3, 1 / _S6, -1 / _S2],
    ],
    dtype=torch.float64,
)


def decouple(x: Tensor) -> Tensor:
    """RGB ``(B, 3, ...)`` -> decoupled colour space: ``out_j = sum_i x_i M_ij``; channel 0 is
    ``sqrt(3)`` times the grey value."""
    M = COLOUR_MATRIX.to(x)
    return torch.einsum("bi...,ij->bj...", x, M)


def couple(u: Tensor) -> Tensor:
    """Decoupled colour space -> RGB, the inverse (and transpose) of :func:`decouple`."""
    M = COLOUR_MATRIX.to(u)
    return torch.einsum("bj...,ij->bi...", u, M)


def _floating(name: str, v) -> Tensor:
    if not isinstance(v, Tensor) or v.ndim < 2 or not v.is_floating_point():
        got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"{name} must be a floating (B, ...) tensor with B >= 1, got {got}")
    return v


class Observation:
    """``y = A x + sigma_y n``: the observation ``y`` and the maps ``A``, ``At``, ``pinv``.

    Subclasses set ``y``, ``noise_std`` and implement the maps and :meth:`check`.
    """

    y: Tensor
    noise_std: float = 0.0

    def A(self, x: Tensor) -> Tensor:
        """The forward operator on a batch ``(B, ...)`` of samples."""
        raise NotImplementedError

    def At(self, v: Tensor) -> Tensor:
        """The adjoint ``A^T`` on a batch of observations."""
        raise NotImplementedError

    def pinv(self, v: Tensor) -> Tensor:
        """The pseudo-inverse ``A^+ v`` (minimum-norm solution of ``A x = v``)."""
        raise NotImplementedError

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless samples of ``shape`` can be observed by this operator."""
        raise NotImplementedError

    def impose(self, x: Tensor, v: Tensor) -> Tensor:
        """``x + A^+ (v - A x)``: the observed part of ``x`` set to ``v``, the rest kept."""
        return x + self.pinv(v - self.A(x))

    def diffused(self, x: Tensor, alpha: Tensor, sigma: Tensor, z: Tensor | None) -> Tensor:
        """``alpha y + sigma A z``: ``y`` carried to time t by the forward SDE (``alpha``,
        ``sigma`` are ``(B,)``; ``z`` a standard-normal draw like ``x``, or None for the mean)."""
        ay = self.y.to(x)
        v = alpha.reshape(-1, *[1] * (ay.ndim - 1)) * ay
        if z is None:
            return v.expand(x.shape[0], *v.shape[1:])
        return v + sigma.reshape(-1, *[1] * (ay.ndim - 1)) * self.A(z)

    def residual(self, x: Tensor) -> Tensor:
        """Per-example ``||y - A x||`` (``(B,)``), the distance of ``x`` to the observation."""
        r = self.y.to(x) - self.A(x)
        return torch.linalg.vector_norm(r.reshape(x.shape[0], -1), dim=1)

    def _check_batch(self, shape: tuple[int, ...]) -> None:
        b = self.y.shape[0]
        if len(shape) < 2 or (b != 1 and b != shape[0]):
            raise ValueError(
                f"samples of shape {tuple(shape)} do not fit the observation's batch of {b} "
                f"(give one observation, or one per sample)"
            )


class Inpainting(Observation):
    """Masking: ``A x = mask * x`` with ``mask`` boolean like ``y`` (True = observed).

    ``mask`` is shaped like ``y`` or like one example of it (``(1, ...)``, shared by the batch).
    ``A`` is its own adjoint and pseudo-inverse; :meth:`impose` copies the observed coordinates
    exactly (``torch.where``), so a noiseless mask keeps them bit for bit.
    """

    def __init__(self, y: Tensor, mask: Tensor, noise_std: float = 0.0):
        self.y = _floating("y", y)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean tensor, got {getattr(mask, 'dtype', mask)}")
        if mask.shape != y.shape and mask.shape != (1, *y.shape[1:]):
            raise ValueError(
                f"mask must be shaped like y {tuple(y.shape)} (or (1, ...) of one example), "
                f"got {tuple(mask.shape)}"
            )
        self.mask = mask
        self.y = torch.where(mask, y, torch.zeros_like(y))
        self.noise_std = check_range("noise_std", noise_std, 0)

    def A(self, x: Tensor) -> Tensor:
        """``mask * x``."""
        return torch.where(self.mask.to(x.device), x, torch.zeros_like(x))

    At = A
    pinv = A

    def impose(self, x: Tensor, v: Tensor) -> Tensor:
        """``x`` with its observed coordinates replaced by those of ``v`` (exact copy)."""
        return torch.where(self.mask.to(x.device), v.to(x), x)

    def check(self, shape: tuple[int, ...]) -> None:
        """Samples must be shaped like ``y`` (any batch size where ``y`` has one example)."""
        self._check_batch(shape)
        if tuple(shape[1:]) != tuple(self.y.shape[1:]):
            raise ValueError(
                f"mask and observation are {tuple(self.y.shape[1:])} per example but the "
                f"samples are {tuple(shape[1:])}"
            )


class Colorization(Observation):
    """Colorization (Song et al. 2021, Appendix I.2): the grey channel of the decoupled colour
    space is observed, ``A x = decouple(x)[:, :1] = sqrt(3) mean_c x_c``.

    Args:
        gray: the grey image, ``(B, 1, H, W)`` (the channel mean) or ``(B, 3, H, W)`` with three
            equal channels as in the official code; then ``y = sqrt(3) gray``.
        noise_std: std of the observation noise of ``y``.

    ``A`` has orthonormal rows (``A A^T = I``), so ``A^+ = A^T``. Samples must have 3 channels.
    """

    def __init__(self, gray: Tensor, noise_std: float = 0.0):
        gray = _floating("gray", gray)
        if gray.ndim < 3 or gray.shape[1] not in (1, 3):
            raise ValueError(
                f"gray must be (B, 1, H, W) or (B, 3, H, W) with equal channels, got "
                f"{tuple(gray.shape)}"
            )
        self.y = _S3 * gray.mean(dim=1, keepdim=True)
        self.noise_std = check_range("noise_std", noise_std, 0)

    def A(self, x: Tensor) -> Tensor:
        """The grey channel of :func:`decouple`."""
        return decouple(x)[:, :1]

    def At(self, v: Tensor) -> Tensor:
        """``couple([v, 0, 0])``: ``v`` spread on the grey direction."""
        return v * COLOUR_MATRIX[:, 0].to(v).reshape(1, 3, *[1] * (v.ndim - 2))

    pinv = At

    def check(self, shape: tuple[int, ...]) -> None:
        """Samples must be ``(B, 3, ...)`` with the grey image's spatial size."""
        self._check_batch(shape)
        if shape[1] != 3:
            raise ValueError(
                f"colorization needs a 3-channel (RGB) model, but the samples have {shape[1]} "
                "channel(s)"
            )
        if tuple(shape[2:]) != tuple(self.y.shape[2:]):
            raise ValueError(
                f"grey image is {tuple(self.y.shape[2:])} but the samples are {tuple(shape[2:])}"
            )


class SuperResolution(Observation):
    """Average pooling by ``factor``: ``y`` is ``x`` averaged over ``factor x factor`` blocks of an
    image ``(B, C, H, W)``, or over runs of ``factor`` coordinates of a vector ``(B, D)``.

    ``A A^T = I / factor^d`` (d = 2 for images, 1 for vectors), so ``A^+ = factor^d A^T``, the
    nearest-neighbour upsampling.
    """

    def __init__(self, y: Tensor, factor: int, noise_std: float = 0.0):
        self.y = _floating("y", y)
        if y.ndim not in (2, 4):
            raise ValueError(f"y must be (B, D) or (B, C, h, w), got {tuple(y.shape)}")
        self.factor = check_int("factor", factor, 1)
        self.noise_std = check_range("noise_std", noise_std, 0)
        self._d = 1 if y.ndim == 2 else 2

    def A(self, x: Tensor) -> Tensor:
        """Block means of ``x``."""
        f = self.factor
        if x.ndim == 2:
            return x.reshape(x.shape[0], -1, f).mean(-1)
        B, C, H, W = x.shape
        return x.reshape(B, C, H // f, f, W // f, f).mean(dim=(3, 5))

    def pinv(self, v: Tensor) -> Tensor:
        """Nearest-neighbour upsampling of ``v`` (each block filled with its value)."""
        f = self.factor
        if v.ndim == 2:
            return v.repeat_interleave(f, dim=1)
        return v.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)

    def At(self, v: Tensor) -> Tensor:
        """``A^T v = upsample(v) / factor^d``."""
        return self.pinv(v) / self.factor**self._d

    def check(self, shape: tuple[int, ...]) -> None:
        """Samples must be ``y``'s shape times ``factor`` in each pooled dimension."""
        self._check_batch(shape)
        f, ys = self.factor, tuple(self.y.shape)
        want = (ys[1] * f,) if len(ys) == 2 else (ys[1], ys[2] * f, ys[3] * f)
        if tuple(shape[1:]) != want:
            raise ValueError(
                f"an observation {ys[1:]} pooled by {f} needs samples of {want} per example, "
                f"got {tuple(shape[1:])}"
            )


class LinearObservation(Observation):
    """A user's linear operator: ``A`` and its adjoint ``At`` as callables on batches.

    Args:
        y: the observation ``(B, ...)``.
        A: ``A(x)``: samples ``(B, ...)`` -> observations shaped like ``y``.
        At: the adjoint, observations -> samples; ``At(y)`` fixes the sample shape.
        noise_std: std of the observation noise.
        pinv: optional ``A^+``; by default conjugate gradients on ``A A^T w = v``, then
            ``A^+ v = A^T w``.

    The adjoint is checked once on random vectors: ``<A u, v> = <u, At v>`` to a relative 1e-4
    (float32; 1e-10 in float64), else ``ValueError``.
    """

    def __init__(
        self,
        y: Tensor,
        A: Operator,
        At: Operator,
        noise_std: float = 0.0,
        pinv: Operator | None = None,
    ):
        self.y = _floating("y", y)
        if not callable(A) or not callable(At):
            raise ValueError("A and At must be callables on batches")
        self._A, self._At, self._pinv = A, At, pinv
        self.noise_std = check_range("noise_std", noise_std, 0)
        self.x_shape = tuple(At(y).shape)
        _check_adjoint(A, At, y, self.x_shape)

    def A(self, x: Tensor) -> Tensor:
        """The user's ``A``."""
        return self._A(x)

    def At(self, v: Tensor) -> Tensor:
        """The user's ``At``."""
        return self._At(v)

    def pinv(self, v: Tensor) -> Tensor:
        """The given ``pinv``, or ``A^T (A A^T)^+ v`` by conjugate gradients."""
        if self._pinv is not None:
            return self._pinv(v)
        return self._At(_cg(lambda w: self._A(self._At(w)), v))

    def check(self, shape: tuple[int, ...]) -> None:
        """Samples must be shaped like ``At(y)`` per example."""
        self._check_batch(shape)
        if tuple(shape[1:]) != self.x_shape[1:]:
            raise ValueError(
                f"At(y) is {self.x_shape[1:]} per example but the samples are {tuple(shape[1:])}"
            )


def _check_adjoint(A: Operator, At: Operator, y: Tensor, x_shape: tuple[int, ...]) -> None:
    """``ValueError`` unless ``<A u, v> = <u, At v>`` on one random pair."""
    g = torch.Generator(device=y.device).manual_seed(0)
    u = torch.randn(x_shape, generator=g, device=y.device, dtype=y.dtype)
    v = torch.randn(y.shape, generator=g, device=y.device, dtype=y.dtype)
    Au = A(u)
    if tuple(Au.shape) != tuple(y.shape):
        raise ValueError(f"A(x) must be shaped like y {tuple(y.shape)}, got {tuple(Au.shape)}")
    lhs, rhs = (Au * v).sum(), (u * At(v)).sum()
    tol = 1e-10 if y.dtype == torch.float64 else 1e-4
    scale = Au.norm() * v.norm() + 1e-30
    if abs(float(lhs - rhs)) > tol * float(scale):
        raise ValueError(
            f"At is not the adjoint of A: <A u, v> = {float(lhs):.6g} but <u, At v> = "
            f"{float(rhs):.6g} on random u, v"
        )


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-example inner products, shaped to broadcast against ``a``."""
    d = (a * b).reshape(a.shape[0], -1).sum(1)
    return d.reshape(-1, *[1] * (a.ndim - 1))


def _cg(op: Operator, v: Tensor, iters: int = 200) -> Tensor:
    """Conjugate gradients for the PSD system ``op(w) = v``, per example, from ``w = 0``
    (the minimum-norm solution where ``op`` is singular and the system consistent)."""
    tol = (1e-12 if v.dtype == torch.float64 else 1e-6) ** 2 * _dot(v, v).amax()
    w, r = torch.zeros_like(v), v.clone()
    p, rr = r.clone(), _dot(r, r)
    for _ in range(min(iters, v[0].numel())):
        if bool((rr <= tol).all()):
            break
        q = op(p)
        a = rr / _dot(p, q).clamp(min=1e-300)
        w, r = w + a * p, r - a * q
        rr_new = _dot(r, r)
        p, rr = r + (rr_new / rr.clamp(min=1e-300)) * p, rr_new
    return w
