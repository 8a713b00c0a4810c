"""The scanner on libraries the canary really builds (pip wheel of canary/ with the installed ocloc and gcc)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ipex_aot import scan
from ipex_aot.errors import ScanError
from ipex_aot.generation import sort_generations
from ipex_aot.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
import libfixtures as L  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LIB_MEMBER = "ipex_aot_canary/lib/libcanary-gpu.so"

pytestmark = [pytest.mark.slow]


shared_cache = L.shared_cache
ids = L.ocloc_ids


def canary_library(tmp: Path, devlist: str, tree: Path) -> Path:
    wheels = tmp / "wheels"
    env = dict(os.environ, USE_AOT_DEVLIST=devlist, CANARY_BUILD_DIR=str(tree), PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           str(REPO / "canary"), "-w", str(wheels)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(LIB_MEMBER, tmp)
    return tmp / LIB_MEMBER


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings.from_env({"IPEX_AOT_CACHE": str(shared_cache(tmp_path_factory))})


@pytest.mark.parametrize("devlist", ["acm-g10,pvc", "pvc", "tgllp"])
def test_canary_libraries_hold_their_device_list(tmp_path_factory, settings, devlist):
    tree = tmp_path_factory.getbasetemp() / "canary-tree"  # shared: later lists only relink
    tmp = tmp_path_factory.mktemp("canary")
    lib = canary_library(tmp, devlist, tree)
    expected = sort_generations({g for name in devlist.split(",") for g in (ids(name) or [name])})
    result = scan.scan_file(lib, settings=settings)
    assert result.format == "elf" and result.found_by == "tgtimg"
    assert set(expected) <= set(result.generations)
    assert result.spirv_images >= 1  # the canary always carries its SPIR-V for JIT
    for gen in expected:
        scan.require_generation(lib, gen, settings=settings)
    other = "12.55.8" if "12.55.8" not in result.generations else "12.0.0"
    with pytest.raises(ScanError, match=f"does not hold generation {other}"):
        scan.require_generation(lib, other, settings=settings)
