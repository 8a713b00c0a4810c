"""Small file helpers shared by every step: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ipex_aot import platforms

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    A crash or an exception leaves whatever was at ``path`` untouched and
    removes the temporary file, so readers never see a half-written file.
    """
    if "b" not in mode:
        # Text outputs are UTF-8 with LF on every platform: SUPPORT.md holds "Intel®", which Windows' default
        # (the ANSI code page) would mangle or refuse, and the packed files must be the same bytes everywhere.
        mode_kwargs: dict[str, Any] = {"encoding": "utf-8", "newline": "\n"}
    else:
        mode_kwargs = {}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **mode_kwargs) as f:
            yield f
            f.flush()
            platforms.host().finish_output(f)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_output(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_output(path, "w") as f:
        f.write(text)


def read_json(path: str | os.PathLike[str]) -> Any:
    """JSON from PATH, refusing documents nested deeper than any this project writes (ValueError)."""
    from ipex_aot.untrusted import loads_json

    with open(path, encoding="utf-8") as f:
        return loads_json(f.read())
