"""One progress reporter for every long command: a tqdm bar with ETA on a terminal, else a plain
line on stderr every ``interval`` seconds (position, rate, ETA and the latest values such as the
loss); ``quiet`` silences both. Progress goes to stderr so that results on stdout stay clean.

Library functions never print: they take a ``callback`` and the command line turns it into
:meth:`Progress.set` calls. The run's header line (the thread choice) is written before the
first progress output, once the work has started, so a command that fails while loading its
inputs prints only its one error line.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["INTERVAL", "Progress", "format_seconds"]

INTERVAL = 5.0  # seconds between plain progress lines when stderr is not a terminal


def format_seconds(s: float) -> str:
    """``s`` seconds as ``M:SS`` or ``H:MM:SS`` (``?`` when unknown)."""
    if not math.isfinite(s) or s < 0:
        return "?"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
    """Progress of one command over ``total`` units of ``unit`` (steps, samples, examples).

    Args:
        total: units of the whole command.
        desc: its name at the start of every line (``train``, ``sample``, ...).
        unit: what is counted.
        quiet: show nothing (neither bar nor lines, nor the header).
        interval: seconds between plain lines (default :data:`INTERVAL`, read at creation).
        stream: where progress goes (default ``sys.stderr``).
        tty: bar (True) or plain lines (False); default: whether ``stream`` is a terminal.
        header: a line written once before the first progress output (e.g. the thread choice).
    """

    def __init__(self, total: float, desc: str, *, unit: str = "it", quiet: bool = False,
                 interval: float | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, header: str | None = None) -> None:  # fmt: skip
        self.total, self.desc, self.unit, self.quiet = total, desc, unit, quiet
        self.interval = INTERVAL if interval is None else interval
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self.header, self.done, self.info = header, 0.0, {}
        self._bar, self._start, self._last = None, time.perf_counter(), -math.inf
        self._shown: float | None = None  # ``done`` of the last plain line
        self._first: tuple[float, float] | None = None  # (time, done) of the first update
        self._lock, self._closed, self._beating = threading.Lock(), threading.Event(), False

    def start(self) -> None:
        """Write the header (once) and open the bar: the work has begun."""
        if self.quiet:
            return
        if self.header is not None:
            print(self.header, file=self.stream, flush=True)
            self.header = None
        if self.tty and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream,
                             dynamic_ncols=True, leave=False)  # fmt: skip
        elif not self.tty and self.total and not self._closed.is_set() and not self._beating:
            self._beating = True
            threading.Thread(target=self._beat, daemon=True).start()

    def set(self, done: float, **info: Any) -> None:
        """Move to ``done`` units; ``info`` holds the latest values to show (e.g. ``loss``)."""
        self.done = done
        self.info.update(info)
        if self._first is None:  # the rate counts from here: set-up time is not work
            self._first = (time.perf_counter(), done)
        if self.quiet:
            return
        self.start()
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix({k: _value(v) for k, v in self.info.items()}, refresh=False)
            self._bar.update(0)  # redraws at most every tqdm ``mininterval``
        else:
            self._tick()

    def _tick(self) -> None:
        """A plain line if ``interval`` seconds have passed since the last one."""
        now = time.perf_counter()
        with self._lock:
            if now - self._last < self.interval:
                return
            self._last, self._shown = now, self.done
        print(self.line(now), file=self.stream, flush=True)

    def _beat(self) -> None:
        """Plain lines keep coming while one unit of work runs long (a big likelihood batch)."""
        while not self._closed.wait(max(self.interval, 0.05)):
            self._tick()

    # the calls a tqdm bar takes, so that code written for tqdm can drive this reporter
    @property
    def n(self) -> float:
        """Units done so far (tqdm's name)."""
        return self.done

    @n.setter
    def n(self, done: float) -> None:
        self.done = done

    def set_postfix(self, info: dict | None = None, refresh: bool = True, **kw: Any) -> None:
        """Values shown after the position (tqdm's call); shown at the next update."""
        self.info.update(info or {}, **kw)

    def update(self, k: float = 1) -> None:
        """Advance by ``k`` units (tqdm's call); ``update(0)`` redraws."""
        self.set(self.done + k)

    def line(self, now: float | None = None) -> str:
        """The plain progress line: position, percentage, rate, ETA and the latest values."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self._start
        t0, n0 = self._first or (now, self.done)
        rate = (self.done - n0) / (now - t0) if now > t0 and self.done > n0 else math.nan
        eta = (self.total - self.done) / rate if rate > 0 else math.nan
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{self.desc}: {self.done:.0f}/{self.total:.0f} {self.unit} ({pct:.0f}%)",
                 f"{rate:.3g} {self.unit}/s" if math.isfinite(rate) else f"? {self.unit}/s",
                 f"elapsed {format_seconds(elapsed)}",
                 f"ETA {format_seconds(eta)}"]  # fmt: skip
        parts += [f"{k} {_value(v)}" for k, v in self.info.items()]
        return ", ".join(parts)

    def close(self) -> None:
        """Close the bar, or write the final plain line if the last one is out of date."""
        self._closed.set()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._shown is not None and self._shown != self.done:
            print(self.line(), file=self.stream, flush=True)
            self._shown = self.done

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
