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
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fakegpu  # noqa: E402

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
    if not WINDOWS:
        # The device database is tested with both oclocs: PATH's (bookworm 22.43) and Debian sid's.
        from libfixtures import MODERN_OCLOC_DEST

        from ipex_aot.ocloc_fetch import installed

        if installed(MODERN_OCLOC_DEST) is None:
            missing.append(f"the modern ocloc in {MODERN_OCLOC_DEST} (ipex-aot ocloc fetch)")
        if not any(Path(d, "libOpenCL.so.1").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")):
            missing.append("libOpenCL.so.1 (ocl-icd-libopencl1)")
    if missing:
        lane = "Windows" if WINDOWS else "Linux"
        pytest.exit(f"error: the {lane} test lane needs {', '.join(missing)}; run ./setup.sh", returncode=4)


@pytest.fixture(scope="session")
def fake_icd(tmp_path_factory) -> Path:
    """The fake OpenCL ICD (tests/fakegpu.py), built once per session with gcc."""
    return fakegpu.build_fake_icd(tmp_path_factory.mktemp("fake-icd"))


@pytest.fixture(scope="session")
def fake_level_zero(tmp_path_factory) -> Path:
    """The fake Level Zero loader (tests/fakegpu.py), built once per session with gcc."""
    return fakegpu.build_fake_level_zero(tmp_path_factory.mktemp("fake-ze"))


@pytest.fixture
def fake_gpus(fake_icd, tmp_path, monkeypatch):
    """``fake_gpus(*gpus, icd=True)``: register the fake ICD reporting GPUS (fakegpu.gpu_spec tuples) in this
    process's environment, so child processes (the driver probe, the CLI) see it; ``icd=False`` registers none."""

    def apply(*gpus: tuple, icd: bool = True) -> dict[str, str]:
        env = fakegpu.icd_env(fake_icd if icd else None, fakegpu.gpu_spec(*gpus), vendors_dir=tmp_path / "vendors")
        for key in ("OCL_ICD_VENDORS", "OCL_ICD_FILENAMES", "FAKE_GPUS"):
            if key in env:
                monkeypatch.setenv(key, env[key])
            else:
                monkeypatch.delenv(key, raising=False)
        return env

    return apply
