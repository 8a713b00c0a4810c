"""The canary package built for real with the installed ocloc and gcc.

These tests drive the canary's own build (pip wheel + setup.py) directly,
without ipex_aot, and read the produced library with readelf/ar and through
the package's own ctypes loader.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANARY = REPO / "canary"
LIB_MEMBER = "ipex_aot_canary/lib/libcanary-gpu.so"
NATIVE = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen"
SPIRV = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64"



def build_wheel(tmp: Path, devlist: str, build_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, USE_AOT_DEVLIST=devlist, CANARY_BUILD_DIR=str(build_dir), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index", str(CANARY),
         "-w", str(tmp / "wheels")],
        env=env, capture_output=True, text=True,
    )


def unpack(wheel_dir: Path, dest: Path) -> Path:
    (wheel,) = wheel_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest)
    return dest


def sections(lib: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (address, file offset, size), from readelf."""
    out = subprocess.run(["readelf", "-SW", str(lib)], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 6 and parts[0].startswith("[") and parts[0] != "[Nr]":
            found[parts[1]] = (int(parts[3], 16), int(parts[4], 16), int(parts[5], 16))
    return found


def tgtimg_entries(lib: Path) -> list[tuple[int, int]]:
    addr, offset, size = sections(lib)[".tgtimg"]
    data = lib.read_bytes()[offset : offset + size]
    return [struct.unpack_from("<QQ", data, i) for i in range(0, size, 16)]


@pytest.fixture(scope="module")
def fat_build(tmp_path_factory):
    """One build for two generations at once: a fat binary per kernel."""
    tmp = tmp_path_factory.mktemp("canary-fat")
    proc = build_wheel(tmp, "acm-g10,tgllp", tmp / "tree")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp, proc, unpack(tmp / "wheels", tmp / "site")


@pytest.mark.slow
def test_library_embeds_images_like_the_offload_wrapper(fat_build):
    tmp, _, site = fat_build
    lib = site / LIB_MEMBER
    secs = sections(lib)
    assert NATIVE in secs and SPIRV in secs and ".tgtimg" in secs
    entries = tgtimg_entries(lib)
    kernels = len(list((CANARY / "kernels").glob("*.cl")))
    assert len(entries) == 2 * kernels  # one native + one SPIR-V image per kernel file
    data = lib.read_bytes()
    native_addr, native_off, native_size = secs[NATIVE]
    spirv_addr, spirv_off, spirv_size = secs[SPIRV]
    for i, (address, size) in enumerate(entries):
        # Every table entry points inside its section, at a real image.
        if i < kernels:
            assert native_addr <= address and address + size <= native_addr + native_size
            image = data[native_off + address - native_addr :][:size]
            assert image.startswith(b"!<arch>\n")  # several devices: an ar fat binary
            fat = tmp / f"image{i}.ar"
            fat.write_bytes(image)
            names = subprocess.run(["ar", "t", str(fat)], capture_output=True, text=True, check=True).stdout.split()
            assert "generic_ir" in names
            assert "64.12.0.0" in names  # tgllp
            assert any(n.startswith("64.12.55.") for n in names)  # acm-g10
        else:
            assert spirv_addr <= address and address + size <= spirv_addr + spirv_size
            image = data[spirv_off + address - spirv_addr :][:size]
            assert image[:4] == struct.pack("<I", 0x07230203)  # SPIR-V magic


@pytest.mark.slow
def test_loader_reads_images_and_cpu_reference_is_right(fat_build):
    _, _, site = fat_build
    code = (
        "import ipex_aot_canary as c, json; "
        "print(json.dumps([c.devlist(), [k for k, _ in c.images()], c.vadd([1, 2], [3, 4]), "
        "c.saxpy(2.0, [1, 2], [10, 20]), c.total([0.5] * 8)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=site, capture_output=True, text=True, check=True).stdout
    devlist, kinds, vadd, saxpy, total = json.loads(out)
    assert devlist == "acm-g10,tgllp"
    assert kinds == ["native"] * 3 + ["spirv"] * 3
    assert vadd == [4.0, 6.0] and saxpy == [12.0, 24.0] and total == 4.0


@pytest.mark.slow
def test_second_device_list_reuses_the_tree_and_only_relinks(fat_build):
    tmp, first, _ = fat_build
    assert "recompiled 4, reused 0" in first.stdout + first.stderr
    proc = build_wheel(tmp / "again", "12.60.7", tmp / "tree")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "spirv vadd.cl: reused" in output and "host canary.c: reused" in output
    assert "device vadd [12.60.7]: compiled" in output
    assert "recompiled 0, reused 4" in output
    site = unpack(tmp / "again" / "wheels", tmp / "again" / "site")
    lib = site / LIB_MEMBER
    address, size = tgtimg_entries(lib)[0]
    native_addr, native_off, _ = sections(lib)[NATIVE]
    fat = tmp / "again" / "image0.ar"
    fat.write_bytes(lib.read_bytes()[native_off + address - native_addr :][:size])
    # One device: ocloc's zebin, wrapped in the fat-binary layout that names its generation.
    names = subprocess.run(["ar", "t", str(fat)], capture_output=True, text=True, check=True).stdout.split()
    assert [n for n in names if not n.startswith("pad_")] == ["64.12.60.7", "generic_ir"]
    zebin = subprocess.run(["ar", "p", str(fat), "64.12.60.7"], capture_output=True, check=True).stdout
    assert zebin[:4] == b"\x7fELF" and struct.unpack_from("<H", zebin, 18)[0] == 205  # EM_INTELGT


@pytest.mark.slow
def test_unknown_device_fails_with_ocloc_message_and_no_wheel(tmp_path):
    proc = build_wheel(tmp_path, "no-such-gpu", tmp_path / "tree")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "canary: error:" in output and "-device no-such-gpu" in output
    assert not list(tmp_path.glob("wheels/*.whl"))


@pytest.mark.slow
def test_empty_devlist_builds_a_jit_only_library(tmp_path):
    # What IPEX builds without USE_AOT_DEVLIST: SPIR-V only (the wheel variants' JIT fallback).
    proc = build_wheel(tmp_path, "", tmp_path / "tree")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "JIT-only" in proc.stdout + proc.stderr
    site = unpack(tmp_path / "wheels", tmp_path / "site")
    code = "import ipex_aot_canary as c, json; print(json.dumps([c.devlist(), [k for k, _ in c.images()]]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=site, capture_output=True, text=True, check=True).stdout
    devlist, kinds = json.loads(out)
    kernels = len(list((CANARY / "kernels").glob("*.cl")))
    assert devlist == "" and kinds == ["spirv"] * kernels
    data = (site / LIB_MEMBER).read_bytes()
    spirv_addr, spirv_off, _ = sections(site / LIB_MEMBER)[SPIRV]
    for address, _size in tgtimg_entries(site / LIB_MEMBER):
        assert data[spirv_off + address - spirv_addr :][:4] == struct.pack("<I", 0x07230203)  # SPIR-V magic


def test_build_leaves_the_source_folder_clean(fat_build):
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--", "."], cwd=CANARY, capture_output=True, text=True
    ).stdout
    assert "build/" not in status and "egg-info" not in status


def test_pe_image_source_lays_out_the_same_table(fat_build, tmp_path):
    """The Windows variant is not compiled here (no MSVC/clang-cl); its generated C is checked instead."""
    tmp, _, _ = fat_build
    sys.path.insert(0, str(CANARY))
    try:
        import canary_build
    finally:
        sys.path.remove(str(CANARY))
    natives = sorted((tmp / "tree" / "canary" / "device").glob("*/*.gen"))
    spirvs = sorted((tmp / "tree" / "canary" / "spirv").glob("*.spv"))
    out = tmp_path / "images_pe.c"
    canary_build.write_pe_images(out, natives, spirvs, "acm-g10,tgllp")
    text = out.read_text()
    assert f'#pragma section("{NATIVE}", read)' in text and f'#pragma section("{SPIRV}", read)' in text
    assert '__declspec(allocate(".tgtimg")) const struct canary_image canary_tgtimg[]' in text
    assert f"canary_tgtimg_count = {len(natives) + len(spirvs)};" in text
    first = natives[0].read_bytes()
    assert f"canary_img0[{len(first)}] = {{{','.join(str(b) for b in first[:16])}," in text
