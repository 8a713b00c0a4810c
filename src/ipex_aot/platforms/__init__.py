"""What differs between Windows and Linux, behind one small interface.

One module per platform (:mod:`.linux`, :mod:`.windows`), as cibuildwheel
does; the pipeline steps ask :func:`host` and never test ``os.name`` or
``sys.platform`` themselves. Each module defines the same functions:

``name``                      ``"linux"`` or ``"windows"``
``finish_output(f)``          make a finished temporary output look like any other file (permissions)
``in_use(path)``              a reason the file cannot be replaced now (a loaded DLL), or None
``stage_file(src, link)``     put a library where 7-Zip packs it without copying (symlink / hard link)
``set_mtime(path, t)``        fix a staged entry's time without touching what it links to
``configure_console(stream)`` keep a text stream from dying on characters its encoding lacks
``liblzma_names()``           where the parallel packer's liblzma may be found
``oneapi_roots()``            the oneAPI installer's standard folders
``activation_suffix``         ``.sh`` or ``.bat``
``capture_activation(script, args, base, timeout)``  the environment an activation script leaves
``compiler(name)``            the DPC++ driver's name (icx on Windows, icpx on Linux)
``library_name(stem)``        ``lib<stem>.so`` or ``<stem>.dll``
"""

from __future__ import annotations

import platform as _platform
import sys
from types import ModuleType


def host() -> ModuleType:
    """The module for the platform this process runs on."""
    return get("windows" if sys.platform == "win32" else "linux")


def get(name: str) -> ModuleType:
    """The module for NAME (``linux``/``windows``, or a ``<system>-<machine>`` tag)."""
    system = name.split("-", 1)[0]
    if system == "windows":
        from ipex_aot.platforms import windows

        return windows
    from ipex_aot.platforms import linux

    return linux


def host_platform() -> str:
    """This host as a recipe's platform tag: ``linux-x86_64``, ``windows-x86_64``."""
    machine = _platform.machine().lower()
    machine = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    system = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")
    return f"{system}-{machine}"
