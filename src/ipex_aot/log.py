"""Framing for long work: a titled step with a duration, progress lines, log files.

Modelled on cibuildwheel's logger: every long step opens with a title and
closes with its duration and a clear verdict, so a CI log reads top to bottom.
Messages go to stderr; stdout is kept for machine-readable output (--json).

Under GitHub Actions (``configure(github_actions=True)``, from the settings)
each outermost step is a collapsible log group (``::group::``/``::endgroup::``)
and warnings become ``::warning::`` annotations, as cibuildwheel does; errors
are printed by the CLI through :func:`error`. Elsewhere the output is plain.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from ipex_aot.untrusted import printable

_github = False
_depth = 0


def configure(*, github_actions: bool) -> None:
    """Use GitHub Actions' workflow commands (log groups, annotations); the CLI calls this once."""
    global _github
    _github = github_actions


def _stream() -> TextIO:
    return sys.stderr


def _escape(message: str) -> str:
    # A workflow command's data ends at the line end; GitHub's own encoding keeps a message on one line.
    return message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _safe(message: str) -> str:
    # Messages quote file names, archive entries and tool output: a terminal escape in them is data, not a command.
    return printable(message, keep="\n")


def info(message: str) -> None:
    print(_safe(message), file=_stream(), flush=True)


def _annotated(kind: str, message: str) -> None:
    message = _safe(message)
    line = f"::{kind}::{_escape(message)}" if _github else f"{kind}: {message}"
    print(line, file=_stream(), flush=True)


def warn(message: str) -> None:
    _annotated("warning", message)


def error(message: str) -> None:
    """The one line of a failed command: ``error: …``, an ``::error::`` annotation under GitHub Actions."""
    _annotated("error", message)


class StepOutcome:
    """What the closing line of a :func:`step` says when it ends without an exception (``ok`` by default)."""

    verdict = "ok"


@contextlib.contextmanager
def step(title: str) -> Iterator[StepOutcome]:
    """Frame a unit of work: ``==> title`` … ``<== title: ok (1.2 s)``.

    The step's body may set ``outcome.verdict`` (``with step(t) as outcome``) when "ok" would be
    untrue, e.g. ``skipped``: a frame never says ok about work that did not run.

    Under GitHub Actions the outermost step is also a log group (groups do not
    nest there); its closing line stays outside the group, so the verdict shows
    with the group folded.
    """
    global _depth
    group = _github and _depth == 0
    if group:
        info(f"::group::{title}")
    info(f"==> {title}")
    start = time.monotonic()
    _depth += 1
    outcome = StepOutcome()
    try:
        yield outcome
    except BaseException:
        _depth -= 1
        if group:
            info("::endgroup::")
        info(f"<== {title}: FAILED after {time.monotonic() - start:.1f} s")
        raise
    _depth -= 1
    if group:
        info("::endgroup::")
    info(f"<== {title}: {outcome.verdict} ({time.monotonic() - start:.1f} s)")


class Progress:
    """The one progress line of long work, in two forms.

    :meth:`advance` counts: ``what: done/total (pct) elapsed, eta``. :meth:`show` follows a
    running tool (a build): ``[what]   12.3 s  <its latest output line>``. On a terminal the
    line is rewritten in place; elsewhere (CI logs) it is printed at most every ``every``
    seconds so logs stay short, and a followed tool's first line waits that long too (a
    heartbeat, not its chatter).
    """

    def __init__(self, what: str, total: int = 1, every: float = 5.0) -> None:
        self.what = what
        self.total = max(total, 1)
        self.done = 0
        self.start = time.monotonic()
        self.every = every
        self.last_line = ""
        self._last = 0.0
        self._tty = _stream().isatty()
        self._open = False  # a terminal line that show() left without its end

    def _due(self, now: float, tty_every: float) -> bool:
        if now - self._last < (tty_every if self._tty else self.every):
            return False
        self._last = now
        return True

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or self._due(now, 0.2):
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

    def show(self, line: str) -> None:
        """Follow a running tool: LINE is its latest output (a blank one keeps the line before)."""
        self.last_line = line.strip() or self.last_line
        now = time.monotonic()
        if not self._tty and not self._last:
            self._last = self.start  # the first heartbeat comes after ``every`` seconds
        if not self._due(now, 0.1):
            return
        text = f"[{self.what}] {now - self.start:6.1f} s  {_safe(self.last_line)}"
        if self._tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            print(f"\r{text[:width]}\x1b[K", end="", file=_stream(), flush=True)
            self._open = True
        else:
            print(text[:200], file=_stream(), flush=True)

    def close(self) -> None:
        """Clear the line :meth:`show` left on a terminal, so the next message starts clean."""
        if self._open:
            print("\r\x1b[K", end="", file=_stream(), flush=True)
            self._open = False
