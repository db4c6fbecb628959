"""The probability-flow ODE (the paper's Eq. 13): sampling from T to eps and encoding back.

``dx/dt = f(t) x - g(t)^2 s(x, t) / 2`` has the marginals p_t of the SDE; :func:`sample_ode`
integrates it from a prior draw at T down to ``eps``, :func:`encode` from data at ``eps`` up to T,
both with :func:`scoresde.core.ode.integrate` (on tensors, or scipy).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core import ode
from ..core.checks import CheckedScore, check_eps, start_state
from ..core.sde import SDE
from .pc import reverse_diffusion

__all__ = ["sample_ode", "encode", "flow"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def flow(sde: SDE, score: ScoreFn) -> ode.Func:
    """``dx/dt`` of the probability-flow ODE (Eq. 13): ``f x - g^2 s / 2``, as an ``ode.Func``.

    ``ode.integrate`` keeps every evaluation inside the integration interval. The whole batch
    shares the time ``t``, so ``f(t)`` and ``g(t)^2 / 2`` are taken once per evaluation at that
    one time (0-d, on the device of x) and the drift is two products and a difference on x;
    ``score`` sees ``t`` repeated for the batch (a view, ``(B,)``).
    """

    def f(t: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = y[0]
        tv = t.to(x.dtype).expand(x.shape[0])
        one = tv[:1]
        f_t, half_g2 = sde.f(one).reshape(()), 0.5 * (sde.g(one) ** 2).reshape(())
        return (f_t * x - half_g2 * score(x, tv),)

    return f


def sample_ode(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    z: Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    eps: float | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, int]:
    """Sample by integrating the probability-flow ODE from T to ``eps``.

    Args:
        z: latent at time T (default: a prior draw of ``shape``).
        method: a name in :data:`scoresde.core.ode.METHODS` (adaptive: ``rtol``, ``atol``; fixed
            grid: ``steps`` uniform steps; ``scipy-RK45``: the paper's black-box path).
        eps: final time (default :func:`scoresde.core.checks.default_eps`).
        denoise: finish with one reverse-diffusion mean step at ``eps`` (one more evaluation).

    Returns:
        ``(x, nfe)``: samples and the number of score evaluations made.
    """
    ode.check_method(method, steps)
    eps = check_eps(sde, eps)
    x = start_state(sde, shape, z, generator, device, dtype, "z")
    with CheckedScore(score_fn) as score:
        (x,), _ = ode.integrate(flow(sde, score), (x,), sde.T, eps, method, rtol, atol, steps)
    if denoise:  # the mean of one reverse-diffusion step at eps
        t = torch.full(x.shape[:1], eps, device=x.device, dtype=x.dtype)
        _, x = reverse_diffusion(sde, score, x, t, noise=torch.zeros_like(x))
    return x, score.finish()


def encode(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    eps: float | None = None,
) -> tuple[Tensor, int]:
    """Map data ``x`` at time ``eps`` to its latent at T along the probability-flow ODE.

    The inverse of :func:`sample_ode` (without denoising) up to solver tolerance.
    Returns ``(z, nfe)``.
    """
    ode.check_method(method, steps)
    eps = check_eps(sde, eps)
    x = start_state(sde, None, x, what="x")
    with CheckedScore(score_fn) as score:
        (z,), _ = ode.integrate(flow(sde, score), (x,), eps, sde.T, method, rtol, atol, steps)
    return z, score.finish()
