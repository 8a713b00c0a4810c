"""Child processes that die with their parent, and SIGTERM treated like Ctrl-C.

A build runs ``pip wheel`` (which runs a build backend), install runs ``7zz e``, pack may run ``7zz a``.
Killed, ipex-aot must not leave them writing gigabytes into a temp folder. So every child:

* runs in a process group of its own (POSIX: a new session), which :func:`kill` ends as a whole,
  the child's own children included;
* on Linux gets ``PR_SET_PDEATHSIG`` = SIGKILL, so even a ``kill -9`` of ipex-aot (no handler runs)
  takes the direct child with it; its children then lose the pipe they write to.

:func:`terminate_like_interrupt` makes SIGTERM raise :class:`Terminated` (a KeyboardInterrupt), so the
same ``finally``/``except BaseException`` paths that clean up after Ctrl-C run after ``kill PID``:
children killed, temp folders removed, the finished generations kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def terminate_like_interrupt() -> None:
    """Turn SIGTERM into :class:`Terminated` in the main thread (call once, from the CLI's main)."""
    if hasattr(signal, "SIGTERM"):
        with contextlib.suppress(ValueError):  # not the main thread (an embedding caller): leave it as it is
            signal.signal(signal.SIGTERM, _on_sigterm)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def popen_options() -> dict[str, Any]:
    """Keyword arguments for ``subprocess.Popen`` that put the child in its own group and tie it to us."""
    if os.name != "posix":
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    options: dict[str, Any] = {"start_new_session": True}
    if sys.platform.startswith("linux"):
        options["preexec_fn"] = _die_with_parent
    return options


def kill(proc: subprocess.Popen[Any]) -> None:
    """Kill PROC and every process in its group, then reap it."""
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)


def run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` with :func:`popen_options`; the child's group is killed if we are interrupted."""
    timeout = kwargs.pop("timeout", None)
    check = kwargs.pop("check", False)
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    proc = subprocess.Popen(list(cmd), **popen_options(), **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill(proc)
        raise
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result
