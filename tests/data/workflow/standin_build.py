"""STAND-IN build for the two-platform workflow test (tests/data/workflow/canary-two-platforms.yaml).

    python standin_build.py SOURCE WHEEL_DIR

linux-x86_64 (CANARY_STANDIN_PLATFORM): the canary's own build, exactly the shipped recipe's
command (pip wheel of the canary). windows-x86_64: a wheel holding a PE32+ DLL made by
tests/libfixtures.build_pe_library from REAL ocloc images for $USE_AOT_DEVLIST (the sections
and .tgtimg table DPC++ writes), because this machine has no Windows compiler wired into the
canary yet (the Windows issue adds a mingw-built canary DLL; with it this stand-in goes).
The DLL has no working host code: the workflow's conformance of that folder can only run its
static half here, which is what the test asserts.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def windows_wheel(wheel_dir: Path, devlist: str) -> Path:
    sys.path.insert(0, str(TESTS))
    import libfixtures

    with tempfile.TemporaryDirectory() as tmp:
        dll = libfixtures.build_pe_library(Path(tmp) / "canary-gpu.dll", [libfixtures.ocloc_image(devlist)],
                                           libfixtures.ocloc_spirv())
        files = {
            "ipex_aot_canary/__init__.py": b"",
            "ipex_aot_canary/bin/canary-gpu.dll": dll.read_bytes(),
            "ipex_aot_canary-0.1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ipex_aot_canary\nVersion: 0.1.0\n",
            "ipex_aot_canary-0.1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: standin_build\nRoot-Is-Purelib: false\n"
                                                     b"Tag: py3-none-win_amd64\n",
        }
    wheel = wheel_dir / "ipex_aot_canary-0.1.0-py3-none-win_amd64.whl"
    record = "ipex_aot_canary-0.1.0.dist-info/RECORD"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(record, "\n".join([*(record_line(n, d) for n, d in files.items()), f"{record},,"]) + "\n")
    print(f"standin_build: {wheel.name} with a PE DLL for {devlist}")
    return wheel


def main(argv: list[str]) -> int:
    source, wheel_dir = Path(argv[0]), Path(argv[1])
    platform = os.environ["CANARY_STANDIN_PLATFORM"]
    if platform == "windows-x86_64":
        windows_wheel(wheel_dir, os.environ["USE_AOT_DEVLIST"])
        return 0
    return subprocess.call([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                            "--no-index", str(source), "-w", str(wheel_dir)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
