"""Observation operators: adjointness, the colour matrix, pseudo-inverses, shapes, errors."""

from __future__ import annotations

import pytest
import torch

import scoresde as sd
from scoresde.control import COLOUR_MATRIX, couple, decouple
from scoresde.control.posterior import dense_operator

F64 = torch.float64

# The official colorizer's float32 table (score_sde_pytorch, controllable_generation.py).
OFFICIAL_M = [
    [5.7735014e-01, -8.1649649e-01, 4.7008697e-08],
    [5.7735026e-01, 4.0824834e-01, 7.0710671e-01],
    [5.7735026e-01, 4.0824822e-01, -7.0710683e-01],
]


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _operators(dtype):
    """(observation, sample shape) for each kind, on images and on vectors."""
    img = torch.rand(2, 3, 4, 6, generator=_g(1), dtype=dtype)
    vec = torch.randn(2, 12, generator=_g(2), dtype=dtype)
    W = torch.randn(5, 12, generator=_g(3), dtype=dtype)
    return {
        "inpaint_img": (
            sd.Inpainting(img, torch.rand(img.shape, generator=_g(4)) < 0.5),
            img.shape,
        ),
        "inpaint_vec": (sd.Inpainting(vec, torch.rand(1, 12, generator=_g(5)) < 0.5), vec.shape),
        "colour": (sd.Colorization(img.mean(1, keepdim=True)), img.shape),
        "superres_img": (sd.SuperResolution(img[:, :, :2, :3], 2), img.shape),
        "superres_vec": (sd.SuperResolution(vec[:, :4], 3), vec.shape),
        "linear": (sd.LinearObservation(vec[:, :5], lambda x: x @ W.T, lambda v: v @ W), vec.shape),
    }


KINDS = list(_operators(F64))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_adjoint_pinv_and_impose(kind, dtype):
    obs, shape = _operators(dtype)[kind]
    u = torch.randn(shape, generator=_g(6), dtype=dtype)
    Au = obs.A(u)
    v = torch.randn(Au.shape, generator=_g(7), dtype=dtype)
    tol = 1e-12 if dtype == F64 else 1e-5
    lhs, rhs = (Au * v).sum(), (u * obs.At(v)).sum()
    assert abs(float(lhs - rhs)) <= tol * float(Au.norm() * v.norm())  # <A u, v> = <u, At v>
    assert Au.dtype == dtype and obs.At(v).shape == shape and obs.pinv(v).dtype == dtype
    w = obs.A(obs.pinv(obs.A(u)))  # A A^+ A = A on the range of A
    torch.testing.assert_close(w, Au, rtol=10 * tol, atol=10 * tol)
    target = obs.A(torch.randn(shape, generator=_g(8), dtype=dtype))  # in the range of A
    x = obs.impose(u, target)
    torch.testing.assert_close(obs.A(x), target, rtol=10 * tol, atol=10 * tol)
    # impose keeps the unobserved part: x - u lies in the row space of A (P (x - u) = x - u)
    torch.testing.assert_close(obs.pinv(obs.A(x - u)), x - u, rtol=100 * tol, atol=100 * tol)


def test_colour_matrix_is_orthogonal_and_the_official_one():
    M = COLOUR_MATRIX
    torch.testing.assert_close(M @ M.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(M, torch.tensor(OFFICIAL_M, dtype=F64), rtol=0, atol=2e-7)
    x = torch.rand(2, 3, 4, 4, generator=_g(8), dtype=F64)
    torch.testing.assert_close(couple(decouple(x)), x)
    gray = x.mean(1, keepdim=True)
    # the grey channel of the decoupled image is sqrt(3) times the channel mean; 3-channel grey
    # (the official form) gives the same observation
    obs1, obs3 = sd.Colorization(gray), sd.Colorization(gray.repeat(1, 3, 1, 1))
    torch.testing.assert_close(obs1.A(x), obs1.y)
    torch.testing.assert_close(obs3.y, obs1.y)


def test_inpainting_impose_is_exact():
    y = torch.rand(3, 1, 5, 5, generator=_g(9))
    mask = torch.rand(y.shape, generator=_g(10)) < 0.3
    obs = sd.Inpainting(y, mask)
    x = torch.randn(y.shape, generator=_g(11))
    out = obs.impose(x, obs.y)
    assert torch.equal(out[mask], y[mask]) and torch.equal(out[~mask], x[~mask])


def test_dense_operator_of_superresolution():
    obs = sd.SuperResolution(torch.zeros(1, 2), 2)
    A = dense_operator(obs, (4,))
    torch.testing.assert_close(A, torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], dtype=F64))


def test_cg_pinv_matches_the_dense_pseudo_inverse():
    W = torch.randn(3, 7, generator=_g(12), dtype=F64)
    obs = sd.LinearObservation(torch.randn(2, 3, dtype=F64), lambda x: x @ W.T, lambda v: v @ W)
    v = torch.randn(2, 3, generator=_g(13), dtype=F64)
    torch.testing.assert_close(obs.pinv(v), v @ torch.linalg.pinv(W).T, rtol=1e-9, atol=1e-9)


def test_errors():
    y = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="mask must be shaped like y"):
        sd.Inpainting(y, torch.ones(2, 1, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        sd.Inpainting(y, torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match="3-channel"):
        sd.Colorization(y).check((2, 1, 4, 4))
    with pytest.raises(ValueError, match="samples are"):
        sd.Inpainting(y, y > 0).check((2, 1, 4, 5))
    with pytest.raises(ValueError, match="batch"):
        sd.Inpainting(y, y > 0).check((3, 1, 4, 4))
    with pytest.raises(ValueError, match="pooled by 2"):
        sd.SuperResolution(y, 2).check((2, 1, 4, 4))
    W = torch.randn(3, 5, generator=_g(14))
    with pytest.raises(ValueError, match="not the adjoint"):
        sd.LinearObservation(torch.zeros(1, 3), lambda x: x @ W.T, lambda v: 2 * v @ W)
    with pytest.raises(ValueError, match="floating"):
        sd.Inpainting(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool))
