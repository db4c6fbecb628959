"""Wall time of everyday commands with 1 and 2 torch threads, on an idle and on a loaded machine.

Commands (each through :func:`scoresde.app.cli.main`, in a fresh process, with
``torch.set_num_threads(N)`` before it; only the command itself is timed, not the imports):

* ``toy_train``: ``train --config toy_swissroll_vp`` (a 3-layer MLP on 2-D points), 300 steps;
* ``digits_train``: ``train --config digits_vp`` (the tutorial U-Net on 8x8 digits), 30 steps;
* ``toy_sample``: ``sample`` 1000 points from a toy run, PC, 300 steps;
* ``digits_sample``: ``sample`` 64 digits, PC, 100 steps;
* ``toy_likelihood``: ``likelihood`` of 300 toy test points (exact divergence, dopri5).

A run that takes longer than ``--timeout`` seconds (default 120) is stopped and recorded as
``null`` (shown as ``>TIMEOUT``): two threads beside a busy process can be that slow.

"Loaded" runs start a CPU-bound pure-Python loop in a subprocess first (one busy core, ended by
its own deadline and killed after the run), the situation of a machine shared with another job.
The machine's 1-minute load average before each run is recorded: "idle" means nothing started
by this script, not an empty machine. Each run is repeated ``--repeats`` times; the median is
kept. Writes ``bench/results/threads.json`` and prints a table.
Run: ``.venv/bin/python bench/threads.py [--repeats 2] [--only toy_train,toy_sample]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "threads.json"
TIMEOUT = 120.0  # seconds allowed per run
QUIET = ["--set", "train.sample_every=0", "--set", "train.tensorboard=false"]
SETUP = {  # run folder -> training command (1 thread, not timed)
    "toy": ["train", "--config", "toy_swissroll_vp", "--set", "train.steps=300", *QUIET],
    "digits": ["train", "--config", "digits_vp", "--set", "train.steps=50", *QUIET],
}
COMMANDS = {  # name -> (run folder it reads or writes, argv after the verb's --workdir)
    "toy_train": ("new", ["train", "--config", "toy_swissroll_vp", "--set", "train.steps=300",
                          *QUIET]),
    "digits_train": ("new", ["train", "--config", "digits_vp", "--set", "train.steps=30",
                             *QUIET]),
    "toy_sample": ("toy", ["sample", "--sampler", "pc", "--steps", "300", "--n", "1000"]),
    "digits_sample": ("digits", ["sample", "--sampler", "pc", "--steps", "100", "--n", "64"]),
    "toy_likelihood": ("toy", ["likelihood", "--n", "300"]),
}  # fmt: skip

# One process: set the threads, then time the command alone (imports excluded).
RUNNER = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from scoresde.app.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[2:])
print("WALL", time.perf_counter() - t0, torch.get_num_threads(), file=sys.stderr)
sys.exit(rc)
"""
BUSY = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"


def run_cli(argv: list[str], threads: int, timeout: float | None = None) -> float | None:
    """Seconds that ``scoresde ARGV`` took in a fresh process with ``threads`` torch threads
    (None: stopped after ``timeout`` seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SCORESDE_THREADS": str(threads)}
    try:
        p = subprocess.run(
            [sys.executable, "-c", RUNNER, str(threads), *argv, "--quiet"],
            capture_output=True, text=True, env=env, check=False, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:  # subprocess.run kills the child
        return None
    if p.returncode != 0:
        raise RuntimeError(f"scoresde {' '.join(argv)} failed:\n{p.stderr[-2000:]}")
    line = [s for s in p.stderr.splitlines() if s.startswith("WALL ")][-1]
    return float(line.split()[1])


def timed(name: str, threads: int, loaded: bool, runs: dict[str, str], tmp: Path,
          timeout: float) -> float | None:  # fmt: skip
    """One run of ``COMMANDS[name]``; beside a busy process when ``loaded``."""
    folder, argv = COMMANDS[name]
    wd = str(tmp / f"{name}-{threads}-{int(loaded)}-{time.monotonic_ns()}") if folder == "new" \
        else runs[folder]  # fmt: skip
    argv = [argv[0], "--workdir", wd, *argv[1:]]
    if argv[0] == "sample":
        argv += ["--out", str(tmp / "s.npy")]
    if argv[0] == "likelihood":
        argv += ["--out", str(tmp / "ll.json")]
    busy = subprocess.Popen([sys.executable, "-c", BUSY, str(timeout + 30)]) if loaded else None
    try:
        if busy is not None:
            time.sleep(0.5)  # let it reach full speed
        return run_cli(argv, threads, timeout)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def measure(names: list[str], repeats: int, tmp: Path, timeout: float) -> list[dict]:
    """Every command at 1 and 2 threads, idle and loaded; the median of ``repeats`` runs."""
    runs = {}
    for folder, argv in SETUP.items():
        runs[folder] = str(tmp / folder)
        run_cli([argv[0], "--workdir", runs[folder], *argv[1:]], 1)
    rows = []
    for name in names:
        for loaded in (False, True):
            for threads in (1, 2):
                load = os.getloadavg()[0]
                walls = [timed(name, threads, loaded, runs, tmp, timeout) for _ in range(repeats)]
                done = [w for w in walls if w is not None]
                seconds = statistics.median(done) if len(done) == len(walls) else None
                rows.append({"command": name, "threads": threads, "loaded": loaded,
                             "seconds": seconds, "runs": walls, "timeout": timeout,
                             "load_before": load})  # fmt: skip
                print(f"  {name:15s} threads={threads} loaded={loaded!s:5s} "
                      f"{_cell(seconds, timeout)} s", file=sys.stderr)  # fmt: skip
    return rows


def _cell(seconds: float | None, timeout: float) -> str:
    return f"{seconds:8.2f}" if seconds is not None else f"{'>' + format(timeout, 'g'):>8s}"


def _ratio(a: float | None, b: float | None, timeout: float) -> str:
    """``b / a``; a lower bound ``>timeout / a`` when ``b`` timed out."""
    if a and b:
        return f"{b / a:6.2f}"
    return f"{'>' + format(timeout / a, '.1f'):>6s}" if a else f"{'?':>6s}"


def table(rows: list[dict]) -> str:
    """One line per command: seconds at 1 / 2 threads, idle and loaded, and the 2t/1t ratios."""
    by = {(r["command"], r["threads"], r["loaded"]): r["seconds"] for r in rows}
    t = rows[0]["timeout"]
    head = f"{'command':15s} {'idle 1t':>8s} {'idle 2t':>8s} {'2t/1t':>6s} " \
           f"{'load 1t':>8s} {'load 2t':>8s} {'2t/1t':>6s}"  # fmt: skip
    lines = [head, "-" * len(head)]
    for name in dict.fromkeys(r["command"] for r in rows):
        i1, i2, b1, b2 = (by[(name, n, ld)] for ld in (False, True) for n in (1, 2))
        lines.append(f"{name:15s} {_cell(i1, t)} {_cell(i2, t)} {_ratio(i1, i2, t)} "
                     f"{_cell(b1, t)} {_cell(b2, t)} {_ratio(b1, b2, t)}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Parse the options, measure, write the JSON and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="runs per cell; the median is kept")
    p.add_argument("--only", help="comma-separated commands (default: all of them)")
    p.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds allowed per run")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(COMMANDS)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(names, args.repeats, Path(tmp), args.timeout)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": __import__("torch").__version__, "repeats": args.repeats}  # fmt: skip
    OUT.write_text(json.dumps({"machine": meta, "results": rows}, indent=2) + "\n")
    print(table(rows))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
