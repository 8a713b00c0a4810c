"""The scanner on real SYCL libraries from PyPI wheels (tests/data/corpus/).

Each library's expected answer was produced by tests/data/corpus/expected.sh, which reads
the file with binutils, dd and zstd and never with ipex-aot; the scanner must agree with it
field by field, through `ipex-aot scan --json` as a user runs it.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ipex_aot import scan
from ipex_aot.errors import ScanError

DATA = Path(__file__).parent / "data" / "corpus"
MANIFEST = json.loads((DATA / "corpus.json").read_text())
LIBRARIES = sorted(MANIFEST["libraries"])


def test_corpus_spans_ten_libraries_of_four_projects():
    projects = {MANIFEST["wheels"][lib["wheel"]]["project"] for lib in MANIFEST["libraries"].values()}
    assert len(LIBRARIES) >= 10 and len(projects) >= 4
    # Both kinds of answer are in it: libraries with native (AOT) images and JIT-only ones.
    natives = [lib["expected"]["native"] for lib in MANIFEST["libraries"].values()]
    assert any(natives) and not all(natives)


@pytest.mark.parametrize("lib_id", LIBRARIES)
def test_scan_json_gives_the_independent_answer(corpus, lib_id):
    expected = MANIFEST["libraries"][lib_id]["expected"]
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "scan", "--json", str(corpus[lib_id])],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for key in ("native", "jit", "images", "compressed_images", "spirv_images", "native_images", "sections"):
        assert got[key] == expected[key], (key, got[key], expected[key])
    # A table that the dynamic linker fills in (zeros in the file) is not read; the sections are walked.
    assert got["found_by"] == ("tgtimg" if expected["tgtimg_relocated_in_file"] else "sections")
    assert got["device_code"] is True and not got["unresolved"]


@pytest.mark.parametrize("lib_id", ["dpctl", "itex_common", "mkl_datafitting"])
def test_expected_answers_are_what_the_binutils_script_says(corpus, lib_id):
    """The committed answers are reproducible: expected.sh on the cached file gives them again."""
    for tool in ("readelf", "ar", "od", "dd", "zstd", "gawk"):
        assert shutil.which(tool), f"{tool} is missing; setup.sh installs it"
    proc = subprocess.run(["bash", str(DATA / "expected.sh"), str(corpus[lib_id])],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == MANIFEST["libraries"][lib_id]["expected"]


def _section_header(data: bytearray, name: str) -> int:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    str_off = struct.unpack_from("<Q", data, shoff + 64 * shstrndx + 24)[0]
    for i in range(shnum):
        at = shoff + 64 * i
        name_off, = struct.unpack_from("<I", data, at)
        if data[str_off + name_off:str_off + name_off + len(name) + 1] == name.encode() + b"\0":
            return at
    raise AssertionError(f"no section {name}")


def _load_segment_of(data: bytearray, addr: int) -> int:
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phnum, = struct.unpack_from("<H", data, 0x38)
    for i in range(phnum):
        at = phoff + 56 * i
        p_type, _f, _o, vaddr, _p, filesz = struct.unpack_from("<IIQQQQ", data, at)
        if p_type == 1 and vaddr <= addr < vaddr + filesz:
            return at
    raise AssertionError(f"no PT_LOAD holds {addr:#x}")


def test_image_past_its_section_but_inside_its_segment_is_read_with_a_note(corpus, tmp_path):
    """libitex_common.so with its SPIR-V section header cut 64 bytes short: the last image now
    runs past the section, but the PT_LOAD segment still maps it, as the loader would."""
    data = bytearray(corpus["itex_common"].read_bytes())
    sec = _section_header(data, scan.SPIRV_SECTION)
    addr, size = struct.unpack_from("<QQ", data, sec + 16)[0], struct.unpack_from("<Q", data, sec + 32)[0]
    struct.pack_into("<Q", data, sec + 32, size - 64)
    lib = tmp_path / "cut.so"
    lib.write_bytes(data)
    result = scan.scan_file(lib)
    whole = MANIFEST["libraries"]["itex_common"]["expected"]
    assert (result.native, result.jit, result.spirv_images) == (whole["native"], True, whole["spirv_images"])
    assert len(result.notes) == 1
    assert f"runs 64 bytes past the end of section {scan.SPIRV_SECTION} ({addr + size - 64:#x})" in result.notes[0]
    assert "read from PT_LOAD segment" in result.notes[0]
    out = subprocess.run([sys.executable, "-m", "ipex_aot", "scan", "--details", str(lib)],
                         capture_output=True, text=True, check=True).stdout
    assert "note: .tgtimg entry" in out

    # The segment cut short as well: a real inconsistency, named with the entry, the section and the segment.
    seg = _load_segment_of(data, addr)
    filesz, = struct.unpack_from("<Q", data, seg + 32)
    seg_vaddr, = struct.unpack_from("<Q", data, seg + 16)
    struct.pack_into("<Q", data, seg + 32, addr + size - 64 - seg_vaddr)
    lib.write_bytes(data)
    with pytest.raises(ScanError) as e:
        scan.scan_file(lib)
    assert ".tgtimg entry" in e.value.message and "runs 64 bytes past the end of section" in e.value.message
    assert "64 bytes past the file data of PT_LOAD segment" in e.value.message


def test_a_plain_executable_has_no_device_code():
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "scan", "/usr/bin/ls"], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "/usr/bin/ls: no SYCL device code"
    got = json.loads(subprocess.run([sys.executable, "-m", "ipex_aot", "scan", "--json", "/usr/bin/ls"],
                                    capture_output=True, text=True, check=True).stdout)
    assert (got["device_code"], got["native"], got["jit"]) == (False, [], False)


def test_human_output_leads_with_the_answer(corpus):
    out = subprocess.run([sys.executable, "-m", "ipex_aot", "scan", str(corpus["itex_common"])],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == (f"{corpus['itex_common']}: AOT for 12.55.8, 12.56.5, 12.60.7; "
                                   "SPIR-V present, so other GPUs fall back to JIT")
    out = subprocess.run([sys.executable, "-m", "ipex_aot", "scan", str(corpus["dpctl"])],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].endswith(": JIT only: SPIR-V and no native image, so every GPU compiles it on first use")
