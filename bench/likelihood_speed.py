"""Wall time, NFE and error of the exact likelihood on a shrunk official VP DDPM++ checkpoint.

The workload: the ``vp_ddpmpp_continuous_small`` checkpoint of the official code (random weights,
from ``../shared/testdata/score_sde_pytorch``) with its EMA weights, 8 centred images (the 4 of its
``_io.npz`` and their mirror images), one Rademacher probe (seed 0) shared by every variant, dopri5
at rtol = atol = 1e-5 from eps = 1e-5, i.e. the plain call ``sd.log_likelihood(sde, score_fn, x,
divergence="rademacher", rtol=1e-5, atol=1e-5, eps=1e-5)``. Each variant is compared with a
reference solve of the same probe at ``--ref-tol`` (dopri5, joint scheme), cached in
``bench/results/likelihood_reference.pt``.

Rows:

* ``joint``: the library's call as it is (the paper's one solve of (x, delta_logp));
* ``joint, VJP at every stage (before)``: the same solve as it was before the second dopri5
  stage took the drift alone (its weight in the solution and in the error estimate is zero, so
  its divergence was never used): the same result, one vector-Jacobian product more per step;
* ``joint, K probes``: K Rademacher probes in the same solve (one forward, K vector-Jacobian
  products per evaluation), with the per-image standard error of the bits/dim that buys;
* ``joint, METHOD TOL``: the same solve by another adaptive method or tolerance (``--solvers``),
  the error-against-evaluations frontier that any faster default would have to beat;
* ``deferred``: a variant tried and rejected: dopri5 on the trajectory alone (forward passes,
  steps controlled by x only), then the divergence at the stages of its accepted steps, 8 stages
  (64 images) a call, weighted as the joint solve weights them. Batched, a vector-Jacobian
  product costs less per image, but without delta_logp in the step control the error grows;
* ``split-cc N``: a variant tried and rejected: the trajectory alone (forward passes only) with its
  states at N+1 Clenshaw-Curtis nodes in log-SNR, then the divergence integral by quadrature at
  those nodes (it needs a smooth integrand in t; see the note it prints).

Columns: wall seconds (best of ``--repeat``), NFE, max |error| of log p in nats and of bits/dim
against the reference, max |z - z_ref|, and ``limit_s`` = NFE x the time of one forward and one
vector-Jacobian product of the network at this batch (the floor of a solver that makes this many
evaluations and nothing else). A second table gives the cost of one forward and of one forward
and VJP at batches of 8 to 64 (``--batches``): what evaluating several time points in one call
would cost per point.

Writes ``bench/results/likelihood_speed.json`` (``--out``) and prints a table. Run:
``.venv/bin/python bench/likelihood_speed.py [--threads 2] [--repeat 1] [--ref-tol 1e-7]``
(``--probes``, ``--solvers``, ``--split`` with no values leave those rows out).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

import scoresde as sd
from scoresde.core.likelihood import div_hutchinson
from scoresde.interop.official import load_official

HERE = Path(__file__).resolve().parent
TESTDATA = HERE.parents[1] / "shared" / "testdata" / "score_sde_pytorch"
RESULTS = HERE / "results"
EPS, TOL = 1e-5, 1e-5


def workload() -> tuple:
    """``(model, x, probe)``: the EMA model, the 8 images and the shared Rademacher probe."""
    name = "vp_ddpmpp_continuous_small"
    model = load_official(TESTDATA / f"{name}.pth", TESTDATA / f"{name}_config.json", ema=True)
    d = torch.from_numpy(np.load(TESTDATA / f"{name}_io.npz")["data"])
    x = torch.cat([d, d.flip(-1)])
    r = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0))
    return model, x, (2 * r - 1).to(x.dtype)


def per_eval_seconds(model, x: torch.Tensor, probe: torch.Tensor, repeat: int = 10) -> float:
    """Best time of one forward and one vector-Jacobian product of the score at this batch."""
    t = torch.full((len(x),), 0.5)
    best = math.inf
    for _ in range(repeat + 2):
        t0 = time.perf_counter()
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(model.score_fn(xx, t), xx, probe)
        best = min(best, time.perf_counter() - t0)
    return best


def reference(model, x, probe, tol: float) -> dict:
    """The reference solve (cached by tolerance): log p, z and its NFE."""
    path = RESULTS / "likelihood_reference.pt"
    cache = torch.load(path, weights_only=True) if path.is_file() else {}
    key = f"dopri5-{tol:g}"
    if key not in cache:
        with torch.no_grad():
            logp, z, nfe = sd.log_likelihood(
                model.sde, model.score_fn, x, "rademacher", tol, tol, EPS, noise=probe
            )
        cache[key] = {"logp": logp.double(), "z": z, "nfe": torch.tensor(nfe)}
        RESULTS.mkdir(parents=True, exist_ok=True)
        torch.save(cache, path)
    return cache[key]


def cc_weights(n: int) -> torch.Tensor:
    """Clenshaw-Curtis weights of the nodes ``-cos(pi k / n)``, k = 0..n, on [-1, 1]."""
    k = torch.arange(n + 1, dtype=torch.float64)
    m = torch.arange(1, n // 2 + 1, dtype=torch.float64)
    b = torch.where(m == n // 2, 1.0, 2.0)
    s = (b * torch.cos(2 * m * k[:, None] * math.pi / n) / (4 * m * m - 1)).sum(dim=1)
    return torch.where((k == 0) | (k == n), 1.0, 2.0) / n * (1 - s)


def split_cc(model, x: torch.Tensor, probe: torch.Tensor, n: int) -> tuple:
    """The rejected variant: the trajectory through n+1 Clenshaw-Curtis nodes in u = -lambda
    (dense output of dopri5, forward passes only), then ``int div f~ dt`` at those nodes."""
    import torchdiffeq

    sde, B = model.sde, len(x)
    ends = -sde.log_snr(torch.tensor([EPS, sde.T], dtype=torch.float64))
    u = (ends[0] + ends[1]) / 2 - (ends[1] - ends[0]) / 2 * torch.cos(
        math.pi * torch.arange(n + 1, dtype=torch.float64) / n
    )
    t = sde.t_of_log_snr(-u).clamp(EPS, sde.T)
    t[0], t[-1] = EPS, sde.T

    def drift(y: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return sde.probability_flow_drift(y, tt, model.score_fn(y, tt))

    nfe = [0]

    def field(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nfe[0] += 1
        return drift(y, torch.full((B,), float(s.clamp(EPS, sde.T))))

    with torch.no_grad():
        xs = torchdiffeq.odeint(field, x.clone(), t.float(), rtol=TOL, atol=TOL,
                                options={"step_t": t[-1:].float()})  # fmt: skip
    h = torch.zeros(n + 1, B, dtype=torch.float64)
    for idx in torch.arange(n + 1).split(max(1, 512 // B)):
        xb, tb = xs[idx].flatten(0, 1), t[idx].float().repeat_interleave(B)
        with torch.no_grad():
            div = div_hutchinson(drift, xb, probe.repeat(len(idx), 1, 1, 1), tb)[1]
        td = t[idx].repeat_interleave(B)
        h[idx] = (div.double() * 2 * sde.sigma(td) ** 2 / sde.g(td) ** 2).reshape(len(idx), B)
    integral = (ends[1] - ends[0]) / 2 * (cc_weights(n)[:, None] * h).sum(dim=0)
    z = xs[-1]
    return sde.prior_logp(z).double() + integral, z, nfe[0] + n + 1


def joint_every_stage(model, x: torch.Tensor, probe: torch.Tensor) -> tuple:
    """The library's call as it was: every dopri5 stage with its vector-Jacobian product (the
    solver not told that delta_logp is a quadrature, so the second stage takes one too)."""
    import scoresde.core.likelihood as lik

    lean_solve = lik.integrate
    lik.integrate = lambda *a: lean_solve(*a[:8])  # drop the lean second stage
    try:
        with torch.no_grad():
            return sd.log_likelihood(model.sde, model.score_fn, x, "rademacher", TOL, TOL, EPS,
                                     noise=probe)  # fmt: skip
    finally:
        lik.integrate = lean_solve


def deferred(model, x: torch.Tensor, probe: torch.Tensor, chunk: int = 8) -> tuple:
    """A variant tried and rejected: dopri5 on the trajectory alone (forward passes, steps
    controlled by x only), the divergence afterwards at the stages of its accepted steps with
    their weights h b_i, ``chunk`` stages per batched call. With the same steps this is the joint
    solve exactly; the steps differ because delta_logp no longer takes part in the control."""
    from scoresde.core import ode

    sde, B = model.sde, len(x)
    b = ode._DOPRI5_A[-1]  # the fifth-order weights (b7 = 0)
    nodes, logp, nfe = [], torch.zeros(B, dtype=torch.float64), [0]

    def drift(y: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((len(y),), min(max(t, EPS), sde.T))
        return sde.probability_flow_drift(y, tt, model.score_fn(y, tt))

    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        nfe[0] += 1
        with torch.no_grad():
            return drift(y, t)

    def flush() -> None:
        xs = torch.cat([n[1] for n in nodes])
        ts = torch.tensor([n[0] for n in nodes], dtype=x.dtype).repeat_interleave(B)
        tt = ts.clamp(EPS, sde.T)
        field = lambda y, t: sde.probability_flow_drift(y, t, model.score_fn(y, t))  # noqa: E731
        div = div_hutchinson(field, xs, probe.repeat(len(nodes), 1, 1, 1), tt)[1]
        w = torch.tensor([n[2] for n in nodes], dtype=torch.float64).repeat_interleave(B)
        logp.add_((w * div.double()).reshape(len(nodes), B).sum(dim=0))
        nodes.clear()

    y, t, t1 = x.clone(), EPS, sde.T
    k1 = f(t, y)
    h = ode._initial_step(f, t, y, k1, (TOL, TOL), ode._rms, 1.0)
    while t != t1:
        step = min(h, t1 - t)
        stages, ks, yy = [(t, y)], [k1], y
        for c, a in zip(ode._DOPRI5_C, ode._DOPRI5_A):
            yy = ode._combine(y, ks, a, step)
            ks.append(f(t1 if c == 1.0 and step == t1 - t else t + c * step, yy))
            stages.append((t + c * step, yy))
        err = ode._combine(None, ks, ode._DOPRI5_E, step)
        e = float(ode._rms(err / (TOL + TOL * torch.maximum(y.abs(), yy.abs()))))
        h = ode._next_step(step, e)
        if e <= 1:
            nodes += [(s[0], s[1], step * w) for s, w in zip(stages, b) if w != 0.0]
            if len(nodes) >= chunk:
                flush()
            t, y, k1 = t + step if step != t1 - t else t1, yy, ks[-1]
    if nodes:
        flush()
    return sde.prior_logp(y).double() + logp, y, nfe[0]


def batch_costs(model, x: torch.Tensor, batches: list[int]) -> list[dict]:
    """Best milliseconds of one forward and of one forward + VJP at each batch (x repeated)."""
    out = []
    for b in batches:
        xb = x.repeat(-(-b // len(x)), 1, 1, 1)[:b]
        t = torch.full((b,), 0.5)
        with torch.no_grad():
            fwd = timed(lambda xb=xb, t=t: model.score_fn(xb, t), 5)[1]
        both = per_eval_seconds(model, xb, torch.ones_like(xb), repeat=5)
        out.append({"batch": b, "forward_ms": 1e3 * fwd, "forward_vjp_ms": 1e3 * both,
                    "forward_vjp_ms_per_image": 1e3 * both / b})  # fmt: skip
    return out


def timed(fn, repeat: int) -> tuple:
    """``(result, best wall seconds)`` of ``repeat`` calls of ``fn()``."""
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def rows(model, x, probe, ref: dict, args) -> list[dict]:
    """Every variant's row (see the module docstring)."""
    sde, D, out = model.sde, x[0].numel(), []
    per_eval = per_eval_seconds(model, x, probe)

    def row(name: str, logp, z, nfe: int, wall: float, se=None) -> dict:
        err = (logp.double() - ref["logp"]).abs().max().item() if z is not None else None
        return {
            "variant": name, "wall_s": wall, "nfe": nfe, "limit_s": nfe * per_eval,
            "logp_err_max": err, "bpd_err_max": None if err is None else err / (D * math.log(2)),
            "z_err_max": None if z is None else (z - ref["z"]).abs().max().item(),
            "bpd_se": se,
        }  # fmt: skip

    def joint(noise):
        with torch.no_grad():
            return sd.log_likelihood(sde, model.score_fn, x, "rademacher", TOL, TOL, EPS,
                                     noise=noise)  # fmt: skip

    (logp, z, nfe), wall = timed(lambda: joint(probe), args.repeat)
    out.append(row("joint (the library's call)", logp, z, nfe, wall))
    (logp, z, nfe), wall = timed(lambda: joint_every_stage(model, x, probe), args.repeat)
    out.append(row("joint, VJP at every stage (before)", logp, z, nfe, wall))
    for k in args.probes:
        g = torch.Generator().manual_seed(1)
        noise = (2 * torch.randint(0, 2, (k, *x.shape), generator=g) - 1).to(x.dtype)
        (est, nfe), wall = timed(lambda noise=noise: _estimates(model, x, noise), args.repeat)
        se = (est.std(dim=0) / math.sqrt(k) / (D * math.log(2))).mean().item()
        out.append(row(f"joint, {k} probes", est.mean(0), None, nfe, wall, se))
    for spec in args.solvers:
        method, tol = spec.split(":")
        with torch.no_grad():
            (logp, z, nfe), wall = timed(
                lambda m=method, tl=float(tol): sd.log_likelihood(
                    sde, model.score_fn, x, "rademacher", tl, tl, EPS, method=m, noise=probe
                ),
                args.repeat,
            )
        out.append(row(f"joint, {method} {float(tol):g}", logp, z, nfe, wall))
    if args.deferred:
        (logp, z, nfe), wall = timed(lambda: deferred(model, x, probe), 1)
        out.append(row("deferred, 8 stages a call (rejected)", logp, z, nfe, wall))
    for n in args.split:
        (logp, z, nfe), wall = timed(lambda n=n: split_cc(model, x, probe, n), 1)
        out.append(row(f"split-cc {n + 1} nodes (rejected)", logp, z, nfe, wall))
    return out


def _estimates(model, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(K per-probe estimates of log p (K, B), nfe)`` of one joint solve with K probes."""
    from scoresde.core.likelihood import log_likelihood_estimates

    with torch.no_grad():
        logp, _, nfe = log_likelihood_estimates(
            model.sde, model.score_fn, x, "rademacher", TOL, TOL, EPS, noise=noise
        )
    return logp.double(), nfe


def table(result: dict) -> str:
    """The printed table."""
    head = f"{'variant':34} {'wall_s':>8} {'nfe':>6} {'limit_s':>8} {'logp_err':>9} "
    lines = [head + f"{'bpd_err':>9} {'z_err':>9} {'bpd_se':>8}"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in result["rows"]:
        lines.append(
            f"{r['variant']:34} {r['wall_s']:8.2f} {r['nfe']:6d} {r['limit_s']:8.2f} "
            f"{fmt(r['logp_err_max'], '9.2e')} {fmt(r['bpd_err_max'], '9.2e')} "
            f"{fmt(r['z_err_max'], '9.2e')} {fmt(r['bpd_se'], '8.4f')}"
        )
    lines += ["", f"{'batch':>5} {'fwd_ms':>8} {'fwd+vjp_ms':>11} {'per_image_ms':>13}"]
    for c in result["batch_costs"]:
        lines.append(f"{c['batch']:5d} {c['forward_ms']:8.1f} {c['forward_vjp_ms']:11.1f} "
                     f"{c['forward_vjp_ms_per_image']:13.2f}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run every variant, write the JSON and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="timed calls per variant (default 1)")
    p.add_argument("--ref-tol", type=float, default=1e-7, help="reference rtol = atol")
    p.add_argument("--probes", type=int, nargs="*", default=[2, 4], help="K of the K-probe rows")
    p.add_argument("--split", type=int, nargs="*", default=[128], help="CC intervals tried")
    p.add_argument("--no-deferred", dest="deferred", action="store_false",
                   help="leave out the deferred-divergence row")  # fmt: skip
    p.add_argument(
        "--solvers",
        nargs="*",
        default=["dopri5:1e-4", "dopri5:1e-6", "dopri8:1e-3"],
        help="METHOD:TOL rows of the joint solve (default: %(default)s)",
    )
    p.add_argument(
        "--batches",
        type=int,
        nargs="*",
        default=[8, 16, 32, 64],
        help="batches of the cost table (default 8 16 32 64)",
    )
    p.add_argument("--out", default=str(RESULTS / "likelihood_speed.json"), help="JSON path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, x, probe = workload()
    t0 = time.perf_counter()
    ref = reference(model, x, probe, args.ref_tol)
    result = {
        "workload": "vp_ddpmpp_continuous_small (EMA), 8 images, Rademacher, rtol=atol=1e-5",
        "reference": {"method": "dopri5", "tol": args.ref_tol, "nfe": int(ref["nfe"])},
        "reference_s": time.perf_counter() - t0,
        "threads": args.threads,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "rows": rows(model, x, probe, ref, args),
        "batch_costs": batch_costs(model, x, args.batches),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
