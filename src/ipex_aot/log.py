"""Framing for long work: a titled step with a duration, progress lines, log files.

Modelled on cibuildwheel's logger: every long step opens with a title and
closes with its duration and a clear verdict, so a CI log reads top to bottom.
Messages go to stderr; stdout is kept for machine-readable output (--json).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


def _stream() -> TextIO:
    return sys.stderr


def info(message: str) -> None:
    print(message, file=_stream(), flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=_stream(), flush=True)


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Frame a unit of work: ``==> title`` … ``<== title: ok (1.2 s)``."""
    info(f"==> {title}")
    start = time.monotonic()
    try:
        yield
    except BaseException:
        info(f"<== {title}: FAILED after {time.monotonic() - start:.1f} s")
        raise
    info(f"<== {title}: ok ({time.monotonic() - start:.1f} s)")


class Progress:
    """A one-line progress counter: ``what: done/total (pct) elapsed, eta``.

    On a terminal the line is rewritten in place; elsewhere (CI logs) it is
    printed at most every ``every`` seconds so logs stay short.
    """

    def __init__(self, what: str, total: int, every: float = 5.0) -> None:
        self.what = what
        self.total = max(total, 1)
        self.done = 0
        self.start = time.monotonic()
        self.every = every
        self._last = 0.0
        self._tty = _stream().isatty()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= (0.2 if self._tty else self.every):
            self._last = now
            self._print(note)

    def _print(self, note: str) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = f"{self.what}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%) {elapsed:.1f} s, eta {eta:.0f} s"
        if note:
            line += f" {note}"
        if self._tty:
            end = "\n" if self.done >= self.total else ""
            print(f"\r{line}\x1b[K", end=end, file=_stream(), flush=True)
        else:
            print(line, file=_stream(), flush=True)
