"""The run folder: one training process at a time, no run replaced by accident, clear write errors.

- :class:`WorkdirLock`: an exclusive ``flock`` on ``<workdir>/.lock``, held by the training
  process for the whole run. The operating system drops it when the process ends in any way
  (even ``SIGKILL``), so a killed run never leaves the folder locked; the file itself stays and
  records the holder's process id for the message a second process gets.
- :func:`refuse` / :func:`claim`: a folder that already holds a run (a checkpoint, or the metrics
  and config of a run stopped before its first checkpoint) is refused unless the run is resumed or
  overwritten; resuming a folder without a checkpoint is refused too, never started afresh.
- :func:`clear_run` removes the files the trainer writes (``overwrite``), and only those.
- :func:`writing`: an ``OSError`` while writing a run file (full disk, read-only folder) becomes
  one :class:`WorkdirError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import CHECKPOINT, CheckpointError, check_resumable, load_checkpoint
from .config import Config, config_from_dict

try:  # POSIX; elsewhere the folder is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["WorkdirError", "WorkdirLock", "LOCK", "RUN_FILES", "refuse", "claim", "clear_run"]
__all__ += ["writing", "remove_stale_temporaries", "run_files", "saved_run"]

LOCK = ".lock"
# The run files the trainer writes by name (besides samples_* and tb/).
RUN_FILES = ("checkpoint.pt", "config.yaml", "metrics.csv", "curves.png", "density.npz")
_ATOMIC = ("checkpoint.pt", "config.yaml", "metrics.csv", "density.npz")  # via a temporary file


class WorkdirError(ValueError):
    """A run folder that cannot be used as asked: locked by another process, holding a run that
    would be replaced, without the checkpoint to resume, or not writable."""


def _reason(e: OSError) -> str:
    if e.strerror:
        return e.strerror
    return os.strerror(e.errno) if e.errno else str(e) or type(e).__name__


@contextmanager
def writing(path: str | Path, note: str = "") -> Iterator[None]:
    """Turn an ``OSError`` of the block into one :class:`WorkdirError` naming ``path``.

    ``note`` ends the message (e.g. which checkpoint is kept).
    """
    try:
        yield
    except OSError as e:
        raise WorkdirError(f"cannot write {path}: {_reason(e)}{note}") from e


def _flock(fd: int, path: Path) -> None:
    """Take the exclusive lock on ``fd`` (the file ``path``), or say who holds it."""
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        raise WorkdirError(
            f"another process (pid {holder}) is training in {path.parent} (it holds {path}); "
            "wait for it to end or use another workdir"
        ) from None


def _check_unlocked(workdir: Path) -> None:
    """Raise :class:`WorkdirError` if a running process holds ``workdir``'s lock (probed with a
    lock taken and dropped at once; nothing is written)."""
    try:
        fd = os.open(workdir / LOCK, os.O_RDONLY)
    except OSError:  # no lock file (or none readable): nobody holds it
        return
    try:
        _flock(fd, workdir / LOCK)
    finally:
        os.close(fd)


class WorkdirLock:
    """An exclusive, non-blocking ``flock`` on ``<workdir>/.lock`` (creates the folder).

    Raises :class:`WorkdirError` when another process holds it or the folder cannot be created.
    Release with :meth:`release` (also on garbage collection and when the process ends).
    """

    def __init__(self, workdir: str | Path):
        self.path, self._fd = Path(workdir) / LOCK, None
        folder = self.path.parent
        self._made = [] if folder.is_dir() else [folder]  # what undo() removes: the new folder
        with writing(folder):
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "it exists and is not a folder")
            folder.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._made.insert(0, self.path)  # and the new file
        with writing(self.path):
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock()
        except BaseException:
            self._made = []  # another process's lock file
            self.release()
            raise

    def _lock(self) -> None:
        assert self._fd is not None
        _flock(self._fd, self.path)
        with writing(self.path):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (idempotent); the file stays."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def undo(self) -> None:
        """Release, removing the lock file and the folder if this lock created them (a run
        refused before its first file leaves nothing behind)."""
        if self._fd is not None:
            for p in self._made:
                with contextlib.suppress(OSError):  # a folder that is no longer empty stays
                    p.unlink() if p == self.path else p.rmdir()
        self._made = []
        self.release()

    def __del__(self) -> None:
        self.release()


def run_files(workdir: str | Path) -> list[Path]:
    """The files and folders of a run in ``workdir`` that the trainer writes."""
    w = Path(workdir)
    found = [w / name for name in RUN_FILES if (w / name).exists()]
    found += sorted(w.glob("samples_*.npy")) + sorted(w.glob("samples_*.png"))
    return found + ([w / "tb"] if (w / "tb").is_dir() else [])


def _describe(workdir: Path) -> str | None:
    """``"a run at step N (<checkpoint>)"``, the files of a run without checkpoint, or None."""
    ckpt = workdir / CHECKPOINT
    if ckpt.is_file():
        try:
            return f"a run at step {load_checkpoint(ckpt).get('step', '?')} ({ckpt})"
        except CheckpointError:
            return f"a run whose checkpoint cannot be read ({ckpt})"
    files = run_files(workdir)
    if files:
        names = ", ".join(p.name for p in files[:3]) + (", ..." if len(files) > 3 else "")
        return f"the files of a run stopped before its first checkpoint ({names})"
    return None


def refuse(workdir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, what would lose a run or start the wrong one.

    Raises:
        ValueError: both ``resume`` and ``overwrite``.
        WorkdirError: a running process holds the folder's lock; ``resume`` without a checkpoint
            in ``workdir``; neither flag and the folder holds a run (its step named).
    """
    workdir = Path(workdir)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue a run or replace it")
    _check_unlocked(workdir)
    _refuse_run(workdir, resume, overwrite)


def _refuse_run(workdir: Path, resume: bool, overwrite: bool) -> None:
    """:func:`refuse` without the lock probe (for the holder of the lock)."""
    ckpt = workdir / CHECKPOINT
    if resume and not ckpt.is_file():
        found = _describe(workdir)
        held = f"; it holds {found}" if found else ""
        raise WorkdirError(
            f"nothing to resume: no checkpoint at {ckpt}{held} (train without resume to start "
            "a run, with overwrite to replace one)"
        )
    found = None if resume or overwrite else _describe(workdir)
    if found:
        raise WorkdirError(
            f"{workdir} already holds {found}: continue it with resume (--resume) or replace it "
            "with overwrite (--overwrite)"
        )


def claim(workdir: str | Path, resume: bool, overwrite: bool) -> WorkdirLock:
    """Lock ``workdir`` for this process after :func:`refuse` found nothing against the run.

    Nothing is created in a folder that is refused. The check is repeated under the lock, so a
    run that another process finished in between is never replaced.
    """
    refuse(workdir, resume, overwrite)
    lock = WorkdirLock(workdir)
    try:
        _refuse_run(Path(workdir), resume, overwrite)
    except BaseException:
        lock.undo()
        raise
    return lock


def saved_run(workdir: str | Path) -> tuple[Config, int]:
    """``(config, step)`` of the checkpoint that ``workdir`` holds, for resuming it.

    Raises :class:`WorkdirError` when there is none (as :func:`refuse` with ``resume``), and
    :class:`~scoresde.training.checkpoint.CheckpointError` when it cannot be resumed (no EMA, RNG
    or optimizer state, weights that do not fit, a malformed config; see
    :func:`~scoresde.training.checkpoint.check_resumable`).
    """
    _refuse_run(Path(workdir), resume=True, overwrite=False)  # every rank: no lock probe
    path = Path(workdir) / CHECKPOINT
    state = load_checkpoint(path)
    check_resumable(state, path)  # what resuming reads, checked as sampling checks it
    return config_from_dict(state["config"]), int(state["step"])


def clear_run(workdir: str | Path) -> None:
    """Remove the run files of ``workdir`` (:func:`run_files`); other files stay."""
    for p in run_files(workdir):
        with writing(p):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def remove_stale_temporaries(workdir: str | Path) -> None:
    """Remove the temporary files that a write killed before its rename left behind."""
    for name in _ATOMIC:
        for stale in Path(workdir).glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
