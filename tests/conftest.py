"""Each lane names the tools it needs and stops with one line when one is missing (no silent skips).

The Linux lane runs everything with the real tools; the Windows lane (``nox -s
tests-windows``: CPython for Windows under Wine) runs the files listed in
``tools/winlane.py`` with 7-Zip's Windows command line and the artifacts the
Linux side built for it.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

WINDOWS = sys.platform == "win32"
LINUX_TOOLS = ("ocloc", "gcc", "objdump", "git", "x86_64-w64-mingw32-gcc")
WINDOWS_TOOLS = ("7za",)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("IPEX_AOT_TEST_NO_TOOL_CHECK") == "1":  # tests of this check itself
        return
    tools = WINDOWS_TOOLS if WINDOWS else LINUX_TOOLS
    missing = [t for t in tools if shutil.which(t) is None]
    if not (WINDOWS or shutil.which("7zz") or shutil.which("7z")):
        missing.append("7zz or 7z")
    if missing:
        lane = "Windows" if WINDOWS else "Linux"
        pytest.exit(f"error: the {lane} test lane needs {', '.join(missing)}; run ./setup.sh", returncode=4)
