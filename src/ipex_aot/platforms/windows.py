"""Windows: see :mod:`ipex_aot.platforms` for the interface.

Tested under Wine with CPython's embeddable Windows build (``nox -s
tests-windows``), which keeps Windows' rules that matter here: no
``os.fchmod`` before CPython 3.13, a loaded DLL cannot be replaced or deleted
(only renamed), standard streams in the ANSI code page when redirected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ipex_aot.errors import ToolchainError

name = "windows"
activation_suffix = ".bat"


def finish_output(f: IO[Any]) -> None:
    """Nothing to do: a new file takes its folder's ACL, and mkstemp's mode bits mean nothing here."""


def in_use(path: Path) -> str | None:
    """Why PATH cannot be replaced now, or None.

    Windows refuses to overwrite or delete a DLL that a running process has
    loaded (ERROR_ACCESS_DENIED / ERROR_SHARING_VIOLATION), but opening it for
    writing fails the same way, so asking first lets install stop before it
    has changed anything.
    """
    try:
        with open(path, "r+b"):
            return None
    except FileNotFoundError:
        return None
    except PermissionError as e:
        return e.strerror or str(e)


def stage_file(source: Path, link: Path) -> None:
    """A hard link (same volume), else a copy: symlinks need a privilege most Windows users lack."""
    try:
        os.link(source, link)
    except OSError:
        shutil.copyfile(source, link)


def set_mtime(path: Path, mtime: int) -> None:
    """Windows' os.utime cannot leave a link's target alone; a hard-linked library keeps its time (7-Zip
    is told not to store file times, -mtm=off, so nothing in the archive depends on it)."""
    if path.is_file() and os.stat(path).st_nlink > 1:
        return
    os.utime(path, (mtime, mtime))


def configure_console(stream: Any) -> None:
    """A console takes any text (CPython writes UTF-16 to it), but a pipe or file gets the ANSI code page
    (cp1252, cp936, …): keep its encoding, so the reader decodes it as usual, and escape what it lacks."""
    if getattr(stream, "errors", "strict") == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


def liblzma_names() -> list[str]:
    """CPython for Windows links liblzma into _lzma.pyd; a separate DLL is there only if someone put it there."""
    import ctypes.util

    return [n for n in (ctypes.util.find_library("lzma"), ctypes.util.find_library("liblzma"), "liblzma.dll") if n]


def oneapi_roots() -> list[Path]:
    return [Path(r"C:\Program Files (x86)\Intel\oneAPI"), Path(r"C:\Program Files\Intel\oneAPI")]


def compiler(name: str) -> str:
    """icx in clang-cl mode is the DPC++ compiler on Windows."""
    return "icx" if name in ("icx", "icpx") else name


def library_name(stem: str) -> str:
    return f"{stem}.dll"


def parse_set_output(text: str) -> dict[str, str]:
    """cmd's ``set`` output: one KEY=VALUE per line; cmd values cannot span lines.

    Lines before the first KEY=VALUE (the scripts' own chatter, should any leak)
    and cmd's hidden per-drive variables (``=C:=C:\\``) are skipped.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key or key.startswith("=") or " " in key.strip() or key != key.strip():
            continue
        out[key] = value
    return out


def activation_args(script: Path) -> list[str]:
    # setvars.bat/oneapi-vars.bat take the target architecture; the component vars.bat takes none.
    return [] if script.name.lower() == "vars.bat" else ["intel64"]


def capture_activation(script: Path, args: Sequence[str] = (), base: Mapping[str, str] | None = None,
                       timeout: float = 300) -> dict[str, str]:
    """``cmd /c "call SCRIPT ARGS >nul && set"`` and the environment it prints."""
    quoted = " ".join([f'"{script}"', *args])
    # One string, not a list: Python would escape the inner quotes as \" for the C runtime,
    # which cmd does not understand. /s strips the outer pair and runs the rest as written.
    command_line = f'cmd.exe /d /s /c "call {quoted} >nul 2>&1 && set"'
    try:
        proc = subprocess.run(command_line, capture_output=True, stdin=subprocess.DEVNULL,
                              env=None if base is None else dict(base), timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"{script}: could not run it in cmd.exe: {e}") from None
    if proc.returncode != 0:
        raise ToolchainError(f"{script} failed (exit {proc.returncode}); run it in a Developer Command Prompt "
                             "to see why (Visual Studio's C++ tools must be installed for icx)")
    # cmd writes `set` in the ANSI code page ("mbcs" in Python's names).
    return parse_set_output(proc.stdout.decode("mbcs", "replace"))
