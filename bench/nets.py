"""Benchmark of the image networks: forward and forward+backward time per batch, and peak memory.

Each network runs at a shrunk size (the configurations of the official reference checkpoints in
``shared/testdata/score_sde_pytorch``) and at the paper's CIFAR-10 / MNIST size, for batch 1 and 8.
Every (network, size, batch) is measured in a fresh subprocess, so that its peak memory (resident
set on the CPU, allocated memory on CUDA) is its own. Results go to ``bench/results/nets.json`` and
a table is printed.

    python bench/nets.py [--device cpu] [--threads 1] [--only ncsnpp_ve,ddpm] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "nets.json"

_NCSNPP_SMALL = dict(
    nf=16, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8], image_size=16
)
_NCSNPP_PAPER = dict(
    nf=128, ch_mult=[1, 2, 2, 2], num_res_blocks=4, attn_resolutions=[16], image_size=32
)
_VE = dict(
    fir=True,
    resblock_type="biggan",
    progressive_input="residual",
    embedding_type="fourier",
    scale_by_sigma=True,
    centered=False,
)
_VP = dict(
    fir=False,
    resblock_type="biggan",
    progressive_input="none",
    embedding_type="positional",
    scale_by_sigma=False,
    centered=True,
)
_DDPM_SMALL = dict(nf=32, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8], image_size=16)
_DDPM_PAPER = dict(
    nf=128, ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[16], image_size=32
)

# name -> (NETS key, noise label, {size: (params, image shape (C, H, W))})
SPECS = {
    "ncsnpp_ve": (
        "ncsnpp",
        1.0,
        {
            "shrunk": ({**_NCSNPP_SMALL, **_VE}, (3, 16, 16)),
            "paper": ({**_NCSNPP_PAPER, **_VE}, (3, 32, 32)),
        },
    ),
    "ddpmpp_vp": (
        "ncsnpp",
        500.0,
        {
            "shrunk": ({**_NCSNPP_SMALL, **_VP}, (3, 16, 16)),
            "paper": ({**_NCSNPP_PAPER, **_VP}, (3, 32, 32)),
        },
    ),
    "ddpm": (
        "ddpm",
        500.0,
        {"shrunk": (_DDPM_SMALL, (3, 16, 16)), "paper": (_DDPM_PAPER, (3, 32, 32))},
    ),
    "unet_tutorial": (
        "unet_tutorial",
        0.5,
        {
            "shrunk": (dict(channels=[8, 16, 32, 32], embed_dim=32), (1, 28, 28)),
            "paper": ({}, (1, 28, 28)),
        },
    ),
}


def _rss_bytes() -> int:
    """Current resident set size (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _timed(fn, reps: int, budget_s: float, sync) -> list[float]:
    """Wall times of ``reps`` calls after one warm-up, stopping early past ``budget_s``."""
    fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def worker(spec: dict) -> dict:
    """Measure one configuration (run in its own process)."""
    import torch

    from scoresde.nets import build_net

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    net = build_net(spec["net"], spec["params"]).to(device).train()
    B = spec["batch"]
    x = torch.randn(B, *spec["shape"], device=device)
    label = torch.full((B,), spec["label"], device=device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()

    def peak() -> float:
        used = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
        return max(used - base, 0) / 2**20

    def forward():
        with torch.no_grad():
            net(x, label)

    def forward_backward():
        net.zero_grad(set_to_none=True)
        net(x, label).square().mean().backward()

    fwd = _timed(forward, spec["reps"], spec["budget_s"], sync)
    fwd_peak = peak()
    fb = _timed(forward_backward, spec["reps"], spec["budget_s"], sync)
    return {
        "forward_s": statistics.median(fwd),
        "forward_backward_s": statistics.median(fb),
        "forward_peak_mb": fwd_peak,
        "forward_backward_peak_mb": peak(),
        "reps": [len(fwd), len(fb)],
        "params": sum(p.numel() for p in net.parameters()),
    }


def run(args) -> list[dict]:
    rows = []
    for name in args.only:
        net_name, label, sizes = SPECS[name]
        for size, (params, shape) in sizes.items():
            for batch in args.batches:
                spec = dict(
                    net=net_name,
                    params=params,
                    shape=list(shape),
                    batch=batch,
                    label=label,
                    device=args.device,
                    threads=args.threads,
                    reps=args.reps if size == "shrunk" else args.paper_reps,
                    budget_s=args.budget_s,
                )
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode:
                    raise RuntimeError(f"{name} {size} batch {batch} failed:\n{out.stderr}")
                row = {
                    "name": name,
                    "net": net_name,
                    "size": size,
                    "shape": list(shape),
                    "batch": batch,
                    **json.loads(out.stdout.strip().splitlines()[-1]),
                }
                rows.append(row)
                print(_line(row), flush=True)
    return rows


HEADER = (
    f"{'network':<14} {'size':<7} {'image':<9} {'params':>11} {'batch':>5} "
    f"{'fwd [s]':>9} {'fwd+bwd [s]':>12} {'fwd MB':>8} {'fwd+bwd MB':>11}"
)


def _line(r: dict) -> str:
    image = "x".join(str(s) for s in r["shape"])
    return (
        f"{r['name']:<14} {r['size']:<7} {image:<9} {r['params']:>11,} {r['batch']:>5} "
        f"{r['forward_s']:>9.4f} {r['forward_backward_s']:>12.4f} "
        f"{r['forward_peak_mb']:>8.1f} {r['forward_backward_peak_mb']:>11.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--only", default=",".join(SPECS), help="comma-separated: " + ", ".join(SPECS))
    p.add_argument("--batches", default="1,8")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions at the shrunk size")
    p.add_argument("--paper-reps", type=int, default=3, help="timed repetitions at paper size")
    p.add_argument("--budget-s", type=float, default=30.0, help="stop repeating after this")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    args.only = [s for s in args.only.split(",") if s]
    unknown = [s for s in args.only if s not in SPECS]
    if unknown:
        p.error(f"unknown network(s) {unknown}; valid: {', '.join(SPECS)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    import torch

    print(HEADER, flush=True)
    t0 = time.time()
    rows = run(args)
    meta = {
        "torch": torch.__version__,
        "device": args.device,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wall_s": round(time.time() - t0, 1),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "note": "median seconds per batch; peak memory above the model's own footprint "
        "(resident set on CPU, allocated on CUDA); forward without autograd",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {args.out} ({meta['wall_s']} s)")


if __name__ == "__main__":
    main()
