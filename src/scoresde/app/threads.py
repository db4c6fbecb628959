"""How many torch threads a command uses: ``--threads N``, else ``$SCORESDE_THREADS``, else the
measured default of :func:`default_threads`.

torch starts one intra-op thread per core. The models of this package's CPU presets are small
(an MLP on batches of 2-D points, a U-Net on 8x8 or 28x28 images): their operations are too short
for a second thread to pay for its synchronisation, and on a machine whose cores are shared a
thread that has to wait for a busy core stalls every parallel region. ``bench/threads.py``
measures it (the table is in :func:`default_threads`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

__all__ = ["ENV_VAR", "default_threads", "resolve_threads", "apply_threads"]

ENV_VAR = "SCORESDE_THREADS"


def default_threads() -> int:
    """One torch thread: the fastest choice for every command measured here.

    ``bench/threads.py`` on a 2-core machine shared with other jobs (load average 4-8 during the
    runs), seconds, "busy" = beside one CPU-bound process the script starts::

        command                          1 thread  2 threads   busy: 1 thread  2 threads
        train toy_swissroll_vp, 300 st.     17.9       >60              >60       >60
        train digits_vp, 30 steps           33.2       >60             30.2      43.4
        sample toy, PC 300 steps, 1000       4.4      10.2             19.0       >60
        sample digits, PC 100 steps, 64      2.1      21.2              2.6       8.4
        likelihood toy, 300 points           1.8       6.0              2.0      39.1

    A second thread never helped, even for the U-Net. Larger convolutions on an idle machine
    with many cores may gain from more threads: measure with ``bench/threads.py`` and set
    ``--threads`` / ``$SCORESDE_THREADS``.
    """
    return 1


def _positive(value: str, where: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{where} must be a whole number >= 1, got {value!r}")
    return n


def resolve_threads(flag: int | None, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """``(threads, where the number came from)``: ``--threads``, else ``$SCORESDE_THREADS``
    (of ``env``, default ``os.environ``), else :func:`default_threads`.

    Raises:
        ValueError: a count that is not a whole number >= 1.
    """
    env = os.environ if env is None else env
    if flag is not None:
        return _positive(str(flag), "--threads"), "--threads"
    if env.get(ENV_VAR, "").strip():
        return _positive(env[ENV_VAR].strip(), ENV_VAR), ENV_VAR
    return default_threads(), "default: fastest for this package's models"


def apply_threads(threads: int) -> None:
    """Set torch's intra-op threads for this process."""
    torch.set_num_threads(threads)
