"""Every fixed-NFE sampler here beside k-diffusion's and diffusers', on mixtures with exact scores.

Targets: the 2-D, three-component mixture of the tests under VE and VP, and the 64-D, eight-
component mixture of ``fast_samplers.py`` under VP. All samplers start from the same exact draws
of p_T, end at p_eps (no final denoising step) and get the same exact denoiser, so the errors are
the samplers' own. For each NFE in 5, 10, 20, 50:

* ``logp_gap``: mean log p_eps(x) of the samples minus that of as many exact draws of p_eps, in
  nats (negative: mass in low-density regions; positive: collapsed onto the modes);
* ``sw1``: sliced 1-Wasserstein distance (128 fixed directions) to exact draws of p_eps;
* the noise floor: both statistics between independent sets of exact draws, with their mean
  and standard deviation over 20 such sets (a sampler within about two of these of the mean is
  at the floor).

Peers (the ``[peers]`` extra and ``pip install --no-deps k-diffusion==0.1.1.post1``; each is
skipped with a note when absent): k-diffusion 0.1.1's samplers in
its own parameterisation (``y = x / alpha``, sigma = sigma_edm, a denoiser ``D(y, sigma)``), on
EDM's grid from sigma_edm(T) to sigma_edm(eps); its ``sampling`` module is loaded without the
package ``__init__`` (which imports torchvision). diffusers' UniPC, DEIS and DPM-Solver++
schedulers on VP only (they are discrete-time DDPM schedulers: the DDPM chain of the VP SDE with
N = 1000, whose alphas_cumprod are the SDE's alpha(t)^2 at the times we evaluate), ending at their
last timestep (``final_sigmas_type="sigma_min"``), scored against p at that time.
The NFE of a 2-evaluation step method is rounded down to an even number.

Also: ``path_err``, mean ||x - x_ode||^2 against the accurate probability-flow solve from the same
draws (DPM-Solver++(3M), 1000 steps; not for diffusers, which end at another time); rows
``NAME+fit``, ours on a grid of :func:`scoresde.optimised_grid` fitted to that sampler at that NFE
from ``--warmup`` prior draws apart from the evaluation draws (its cost in ``fit_calls``, batched
evaluations, and ``fit_seconds``); and the two DPM-Solver++(3M) updates on one grid, ours (exact
third order) and k-diffusion's (``dpmpp_3m_sde`` with eta = 0), on EDM's grid and on the log-SNR
one. After the full tables: each library's best sampler per NFE, and the 3M path errors.

Writes ``bench/results/peers.json`` and prints one table per target. Run:
``.venv/bin/python bench/peers.py [--n2 N] [--n64 N] [--nfe 5 10 20 50] [--warmup 256]``
(minutes; the fits are most of it).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import platform
import sys
import time
import types
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from common import mixture_2d
from fast_samplers import mixture_64d

import scoresde as sd
from scoresde.core.metrics import sliced_wasserstein
from scoresde.samplers import default_eps, grids

F64 = torch.float64
SDES = {"ve": lambda: sd.VESDE(0.01, 50.0, 1000), "vp": lambda: sd.VPSDE(0.1, 20.0, 1000)}
TARGETS = [("2d", "ve"), ("2d", "vp"), ("64d", "vp")]

# ours: name -> (sampler, options, evaluations per step)
OURS: dict[str, tuple[str, dict, int]] = {
    "heun": ("heun", dict(denoise=False), 2),
    "dpm_solver_3": ("dpm_solver", dict(order=3), 1),
    "dpm_solver++2M": ("dpm_solver", dict(order=2, method="multistep"), 1),
    "dpm_solver++3M": ("dpm_solver", dict(order=3, method="multistep"), 1),
    "unipc_bh2_2": ("unipc", dict(order=2), 1),
    "unipc_bh1_3": ("unipc", dict(order=3, variant="bh1"), 1),
    "deis_3": ("deis", dict(order=3), 1),
    "ipndm_4": ("ipndm", dict(order=4), 1),
    "lms_4": ("lms", dict(order=4), 1),
    "dpm_solver++2M_sde": ("dpm_solver_sde", dict(order=2, eta=1.0), 1),
    "dpm_solver++2S_anc": ("dpm_solver_sde", dict(order=2, method="ancestral"), 2),
    # the exact 3M on k-diffusion's grid (EDM, rho = 7): the two 3M updates on one grid
    "dpm_solver++3M_edm": ("dpm_solver", dict(order=3, method="multistep", grid="edm"), 1),
}
# ours on a grid fitted by sd.optimised_grid to the sampler (warm-up draws apart from z)
FITTED = ("deis_3", "unipc_bh2_2", "dpm_solver++3M", "ipndm_4")
K_SAMPLERS = {  # k-diffusion row -> (its function's suffix, options, evaluations per step)
    "euler": ("euler", {}, 1),
    "heun": ("heun", {}, 2),
    "dpm_2": ("dpm_2", {}, 2),
    "lms": ("lms", {}, 1),
    "dpmpp_2m": ("dpmpp_2m", {}, 1),
    "dpmpp_3m": ("dpmpp_3m_sde", dict(eta=0.0), 1),  # eta = 0: its (damped) 3M of the ODE
    "dpmpp_3m_logsnr": ("dpmpp_3m_sde", dict(eta=0.0), 1),  # the same on our default grid
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", {}, 2),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {}, 1),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {}, 1),
}
K_GRIDS = {"dpmpp_3m_logsnr": grids.log_snr}  # k-diffusion rows off EDM's grid
D_SCHEDULERS = {  # diffusers row -> (scheduler, options)
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "DPMSolver": ("DPMSolverMultistepScheduler", {}),
    "DPMSolver3": ("DPMSolverMultistepScheduler", dict(solver_order=3)),
    # the same on Karras et al.'s sigmas (rho = 7), diffusers' best few-step setting
    "UniPC_karras": ("UniPCMultistepScheduler", dict(use_karras_sigmas=True)),
    "DEIS_karras": ("DEISMultistepScheduler", dict(use_karras_sigmas=True)),
    "DPMSolver_karras": ("DPMSolverMultistepScheduler", dict(use_karras_sigmas=True)),
    "DPMSolver3_karras": (
        "DPMSolverMultistepScheduler",
        dict(solver_order=3, use_karras_sigmas=True),
    ),
}


# ---- peers --------------------------------------------------------------------------------------
def k_sampling() -> types.ModuleType | None:
    """k-diffusion's ``sampling`` module, loaded from its file with a one-function ``utils``."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(folder)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules.setdefault("k_diffusion", pkg)
    sys.modules.setdefault("k_diffusion.utils", utils)
    s = importlib.util.spec_from_file_location("k_diffusion.sampling", folder / "sampling.py")
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module


class Counted:
    """A callable counted: ``calls`` is the NFE."""

    def __init__(self, f: Callable):
        self.f, self.calls = f, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.f(*a, **k)


def k_denoiser(sde: sd.SDE, score_fn: Callable) -> Callable:
    """k-diffusion's model: ``D(y, sigma_edm) = x0_theta`` with ``x = alpha y`` at
    ``t = t(lambda = -log sigma_edm)``."""

    def model(y, sigma, **_):
        t = sde.t_of_log_snr(-sigma.to(F64).log()).to(y.dtype)
        a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        x = a * y
        return (x + s**2 * score_fn(x, t)) / a

    return model


def run_k(ks, name: str, sde, score_fn, z: torch.Tensor, nfe: int, eps: float, seed: int):
    """One k-diffusion sampler on EDM's grid (rho = 7; :data:`K_GRIDS` for the others) in
    sigma_edm, T to eps."""
    suffix, options, per = K_SAMPLERS[name]
    t = K_GRIDS.get(name, grids.edm)(sde, max(nfe // per, 1), eps, dtype=F64)
    sigmas = torch.exp(-sde.log_snr(t)).to(z.dtype)
    model = Counted(k_denoiser(sde, score_fn))
    torch.manual_seed(seed)  # k-diffusion draws from the global generator
    sample = getattr(ks, f"sample_{suffix}")
    y = sample(model, z / _alpha(sde, sde.T), sigmas, disable=True, **options)
    return y * _alpha(sde, eps), model.calls


def _alpha(sde: sd.SDE, t: float) -> float:
    return sde.alpha(torch.tensor([t], dtype=F64)).item()


def run_diffusers(name: str, sde, score_fn, z: torch.Tensor, nfe: int):
    """One diffusers scheduler (VP): eps-prediction at the continuous time whose alpha^2 is the
    scheduler's alphas_cumprod. Returns ``(x, nfe, t_end)``."""
    import diffusers

    scheduler, extra = D_SCHEDULERS[name]
    cls = getattr(diffusers, scheduler)
    options = dict(
        num_train_timesteps=sde.N,
        beta_start=sde.beta_min / sde.N,
        beta_end=sde.beta_max / sde.N,
        beta_schedule="linear",
        **extra,
    )
    if "final_sigmas_type" in inspect.signature(cls.__init__).parameters:
        options["final_sigmas_type"] = "sigma_min"
    sched = cls(**options)
    sched.set_timesteps(nfe)
    abar = sched.alphas_cumprod.to(F64)
    t_of = lambda k: sde._t_of_log_alpha(0.5 * abar[k].log())  # noqa: E731
    model, x = Counted(score_fn), z
    for k in sched.timesteps:
        t = t_of(int(k)).expand(len(x)).to(x.dtype)
        eps_pred = -sde.sigma(t)[:, None] * model(x, t)
        x = sched.step(eps_pred, k, x).prev_sample
    return x, model.calls, float(t_of(int(sched.timesteps[-1])))


# ---- statistics ---------------------------------------------------------------------------------
class Scorer:
    """logp gap and sliced W1 of a sample against exact draws of p at time ``t``."""

    def __init__(self, mix: sd.GaussianMixture, sde: sd.SDE, t: float, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.mix, self.sde, self.t = mix, sde, t
        self.exact = mix.sample_t(n, sde, t, g)
        self.logp = self._logp(self.exact).mean().item()
        self.dirs_seed = seed + 1

    def _logp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix.log_prob(x.to(F64), self.t, self.sde)

    def __call__(self, x: torch.Tensor) -> dict:
        g = torch.Generator().manual_seed(self.dirs_seed)
        ok = torch.isfinite(x).all().item()
        if not ok:
            return {"logp_gap": math.nan, "sw1": math.nan}
        return {
            "logp_gap": self._logp(x).mean().item() - self.logp,
            "sw1": sliced_wasserstein(x.to(F64), self.exact, 128, g).item(),
        }

    def floor(self, seed: int, repeats: int = 20) -> dict:
        """Both statistics of ``repeats`` independent exact sets against the reference one:
        the first set's values (``logp_gap``, ``sw1``), and the mean and standard deviation over
        all of them (``*_mean``, ``*_sd``), the spread a sampler at the floor shows."""
        sets = [self(self.mix.sample_t(len(self.exact), self.sde, self.t,
                                       torch.Generator().manual_seed(seed + k)))
                for k in range(repeats)]  # fmt: skip
        out = dict(sets[0])
        for key in ("logp_gap", "sw1"):
            v = torch.tensor([r[key] for r in sets], dtype=F64)
            out[f"{key}_mean"], out[f"{key}_sd"] = v.mean().item(), v.std().item()
        return out


def fit_grid(sde, score_fn, nfe: int, warmup: torch.Tensor, name: str) -> tuple[torch.Tensor, dict]:
    """The grid of :func:`scoresde.optimised_grid` for row ``name`` of :data:`OURS` at ``nfe``,
    and its cost (batched warm-up evaluations, seconds)."""
    sampler, options, _ = OURS[name]
    counted, t0 = Counted(score_fn), time.perf_counter()
    t = sd.optimised_grid(sde, counted, warmup, nfe, sampler=sampler, options=options)
    return t, {"fit_calls": counted.calls, "fit_seconds": time.perf_counter() - t0}


def sweep(target: str, sde_name: str, n: int, nfes: list[int], seed: int, ks, warm: int):
    """Every sampler at every NFE on one (target, SDE)."""
    mix = mixture_2d() if target == "2d" else mixture_64d()
    sde = SDES[sde_name]()
    eps, score_fn = default_eps(sde), mix.score_fn(sde)
    z = mix.sample_t(n, sde, sde.T, torch.Generator().manual_seed(seed))
    scorer = Scorer(mix, sde, eps, n, seed + 10)
    # the accurate probability-flow solve from z: what path_err is measured against
    x_ode, _ = sd.sample_dpm_solver(sde, score_fn, None, steps=1000, order=3, method="multistep",
                                    z=z)  # fmt: skip
    warmup = sde.prior_sampling(
        (warm, mix.dim), torch.Generator().manual_seed(seed + 30), dtype=F64
    )
    rows, floor = [], scorer.floor(seed + 20)

    def record(lib, name, nfe, run, scorer=scorer, path=True, **extra):
        t0 = time.perf_counter()
        x, used = run()
        err = (x - x_ode).square().sum(-1).mean().item() if path else math.nan
        rows.append({"target": target, "sde": sde_name, "lib": lib, "sampler": name,
                     "nfe": used, "nfe_asked": nfe, "seconds": time.perf_counter() - t0,
                     "path_err": err, **scorer(x), **extra})  # fmt: skip
        print(f"{target} {sde_name} {lib:9} {name:20} nfe {used:3d} "
              f"gap {rows[-1]['logp_gap']:+.4f} sw1 {rows[-1]['sw1']:.4f} err {err:.2e}",
              flush=True)  # fmt: skip

    for nfe in nfes:
        for name, (sampler, opts, per) in OURS.items():
            g = torch.Generator().manual_seed(seed + nfe)
            kw = dict(sampler=sampler, steps=max(nfe // per, 1), z=z, generator=g, **opts)
            record("scoresde", name, nfe, partial(sd.sample, sde, score_fn, None, **kw))
        for name in FITTED if warm > 0 else ():
            sampler, opts, _ = OURS[name]
            t, cost = fit_grid(sde, score_fn, nfe, warmup, name)
            kw = dict(sampler=sampler, grid=t, z=z, **opts)
            record("scoresde", f"{name}+fit", nfe, partial(sd.sample, sde, score_fn, None, **kw),
                   times=t.tolist(), **cost)  # fmt: skip
        for name in K_SAMPLERS if ks is not None else []:
            record("k-diff", name, nfe, partial(run_k, ks, name, sde, score_fn, z, nfe, eps, seed))
        if sde_name == "vp" and _has("diffusers"):
            for name in D_SCHEDULERS:
                x, used, t_end = run_diffusers(name, sde, score_fn, z, nfe)
                end = Scorer(mix, sde, t_end, n, seed + 10)
                record("diffusers", name, nfe, partial(tuple, (x, used)), end, path=False)
    return rows, floor


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def print_table(rows: list[dict], floors: dict, nfes: list[int]) -> None:
    """One table per (target, SDE): log p gap and sliced W1 by NFE."""
    for key, fl in floors.items():
        target, sde_name = key.split("/")
        print(f"\n{target} {sde_name}: logp gap (nats) | sliced W1; noise floor (mean ± sd of "
              f"20 exact sets) gap {fl['logp_gap_mean']:+.4f} ± {fl['logp_gap_sd']:.4f} sw1 "
              f"{fl['sw1_mean']:.4f} ± {fl['sw1_sd']:.4f}")  # fmt: skip
        print(f"{'lib':9} {'sampler':20}" + "".join(f"{'NFE ' + str(n):>17}" for n in nfes))
        mine = [r for r in rows if (r["target"], r["sde"]) == (target, sde_name)]
        for lib, name in dict.fromkeys((r["lib"], r["sampler"]) for r in mine):
            cells = []
            for n in nfes:
                r = next((r for r in mine if (r["lib"], r["sampler"], r["nfe_asked"]) ==
                          (lib, name, n)), None)  # fmt: skip
                cells.append(f"{r['logp_gap']:+8.3f} {r['sw1']:7.4f}" if r else " " * 16)
            print(f"{lib:9} {name:20}" + "".join(f"{c:>17}" for c in cells))


def print_best(rows: list[dict], floors: dict, nfes: list[int]) -> None:
    """Each library's best row per NFE: least sliced W1 (its gap beside it), and least |gap|."""
    for key in floors:
        target, sde_name = key.split("/")
        print(f"\n{target} {sde_name}: each library's best sampler (least sliced W1 | least |gap|)")
        mine = [r for r in rows if (r["target"], r["sde"]) == (target, sde_name)]
        for n in nfes:
            at = [r for r in mine if r["nfe_asked"] == n and math.isfinite(r["sw1"])]
            for lib in dict.fromkeys(r["lib"] for r in at):
                own = [r for r in at if r["lib"] == lib]
                w = min(own, key=lambda r: r["sw1"])
                g = min(own, key=lambda r: abs(r["logp_gap"]))
                print(f"NFE {n:3d} {lib:9} {w['sampler']:20} sw1 {w['sw1']:.4f} gap "
                      f"{w['logp_gap']:+.3f} | {g['sampler']:20} gap {g['logp_gap']:+.3f} "
                      f"sw1 {g['sw1']:.4f}")  # fmt: skip


def print_3m(rows: list[dict], floors: dict, nfes: list[int]) -> None:
    """The two DPM-Solver++(3M) updates on one grid (EDM's, rho 7; then the log-SNR one), and
    ours on a fitted grid: mean ||x - x_ode||^2 against the accurate solve from the same draws."""
    names = [("scoresde", "dpm_solver++3M_edm"), ("k-diff", "dpmpp_3m"),
             ("scoresde", "dpm_solver++3M"), ("k-diff", "dpmpp_3m_logsnr"),
             ("scoresde", "dpm_solver++3M+fit")]  # fmt: skip
    for key in floors:
        target, sde_name = key.split("/")
        print(f"\n{target} {sde_name}: 3M path error (mean squared distance to the ODE solve)")
        print(f"{'':30}" + "".join(f"{'NFE ' + str(n):>11}" for n in nfes))
        for lib, name in names:
            cells = [next((f"{r['path_err']:11.2e}" for r in rows if (r["target"], r["sde"],
                     r["lib"], r["sampler"], r["nfe_asked"]) == (target, sde_name, lib, name, n)),
                     f"{'':11}") for n in nfes]  # fmt: skip
            print(f"{lib + ' ' + name:30}" + "".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n2", type=int, default=4000, help="samples on the 2-D target")
    p.add_argument("--n64", type=int, default=2000, help="samples on the 64-D target")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--warmup", type=int, default=256,
                   help="warm-up draws of the fitted grids (0: no fitted rows)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # torchsde's Brownian tree warns when a query time rounds past its ends (1e-16)
    warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
    ks = k_sampling()
    if ks is None:
        print("k-diffusion not installed (pip install --no-deps k-diffusion==0.1.1.post1): skipped")
    if not _has("diffusers"):
        print("diffusers not installed (pip install -e '.[peers]'): its schedulers are skipped")
    rows, floors = [], {}
    for target, sde_name in TARGETS:
        n = args.n2 if target == "2d" else args.n64
        key = f"{target}/{sde_name}"
        r, floors[key] = sweep(target, sde_name, n, args.nfe, args.seed, ks, args.warmup)
        rows += r
    print_table(rows, floors, args.nfe)
    print_best(rows, floors, args.nfe)
    print_3m(rows, floors, args.nfe)
    meta = {"torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
            "dtype": "float64", "n2": args.n2, "n64": args.n64, "seed": args.seed,
            "warmup": args.warmup}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "peers.json"
    path.write_text(json.dumps({"meta": meta, "floors": floors, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
