"""Linux (and other POSIX hosts): see :mod:`ipex_aot.platforms` for the interface."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ipex_aot.errors import ToolchainError

name = "linux"
activation_suffix = ".sh"
#: Variables the capturing shell itself sets; they are not part of oneAPI's environment.
_SHELL_NOISE = frozenset({"_", "SHLVL", "PWD", "OLDPWD"})


def finish_output(f: IO[Any]) -> None:
    """mkstemp makes 0600 files; outputs are meant to be shared like any other file (umask applies)."""
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(f.fileno(), 0o666 & ~mask)


def in_use(path: Path) -> str | None:
    """Never: renaming over a loaded shared object gives it a new inode; running processes keep the old one."""
    return None


def stage_file(source: Path, link: Path) -> None:
    """Put SOURCE at LINK for 7-Zip without copying gigabytes: a symlink (7-Zip stores what it points to)."""
    link.symlink_to(source.resolve())


def set_mtime(path: Path, mtime: int) -> None:
    """Set PATH's own times, not a symlink target's."""
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def configure_console(stream: Any) -> None:
    """Under LANG=C the streams are ASCII: print what cannot be encoded as escapes instead of dying."""
    if getattr(stream, "errors", "strict") == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


def liblzma_names() -> list[str]:
    import ctypes.util

    return [n for n in (ctypes.util.find_library("lzma"), "liblzma.so.5") if n]


def oneapi_roots() -> list[Path]:
    return [Path("/opt/intel/oneapi"), Path.home() / "intel" / "oneapi"]


def compiler(name: str) -> str:
    """icx/icpx name the DPC++ compiler; its C++ driver on Linux is icpx."""
    return "icpx" if name in ("icx", "icpx") else name


def library_name(stem: str) -> str:
    return f"lib{stem}.so"


def parse_env0(data: bytes) -> dict[str, str]:
    """``env -0`` output: NUL-separated KEY=VALUE (values may hold newlines)."""
    out: dict[str, str] = {}
    for item in data.decode("utf-8", "surrogateescape").split("\0"):
        key, sep, value = item.partition("=")
        if sep and key and key not in _SHELL_NOISE:
            out[key] = value
    return out


def activation_args(script: Path) -> list[str]:
    # --force: setvars.sh refuses to run twice in one shell, and CI shells may have run it.
    return ["--force"] if script.name == "setvars.sh" else []


def capture_activation(script: Path, args: Sequence[str] = (), base: Mapping[str, str] | None = None,
                       timeout: float = 300) -> dict[str, str]:
    """Source SCRIPT in bash and return the environment it leaves (ToolchainError if it fails)."""
    bash = shutil.which("bash") or "/bin/bash"
    # The script's own output goes to stderr so that stdout is only env -0.
    code = '. "$0" "$@" 1>&2 || exit $?; exec env -0'
    try:
        proc = subprocess.run([bash, "-c", code, str(script), *args], capture_output=True,
                              env=None if base is None else dict(base), timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"{script}: could not run it in bash: {e}") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ToolchainError(f"{script} failed (exit {proc.returncode}): {' / '.join(tail) or 'no output'}; "
                             "run it by hand in bash to see why")
    return parse_env0(proc.stdout)
