# ruff: noqa: F811 - the fixtures imported from test_install are parameters of the tests here
"""Hostile or damaged archives and odd files for install, verify and scan (issue 12, High and Medium).

Every refusal is one line, names the file, leaves the installed library byte-identical, and comes fast:
a FIFO or a device is never opened for reading, a damaged stream is never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import py7zr
import pytest

from ipex_aot import install
from ipex_aot.errors import ArchiveError, IpexAotError, ScanError
from ipex_aot.scan import scan_file

sys.path.insert(0, str(Path(__file__).parent))
import libfixtures as L  # noqa: E402
from libfixtures import INSTALL_PATH, site  # noqa: E402

ENGINES = ["py7zr", "7z"]


def _cli(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    # The step frame (==> / <==) and warnings may precede the error; the error itself is one line.
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith(("==>", "<==", "warning:"))]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# --- damaged streams: every engine error is one line ------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_flipped_bytes_in_the_packed_stream_are_one_line_errors(tmp_path, settings, release, engine):
    archive, libs = release
    data = archive.read_bytes()
    root, lib = site(tmp_path)
    before = lib.read_bytes()
    gen = next(iter(libs))
    seen = set()
    # Flip one byte at a spread of places inside the packed data (past the 32-byte signature header).
    for frac in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8):
        bad = bytearray(data)
        at = 32 + int((len(data) - 32) * frac * 0.9)
        bad[at] ^= 0xFF
        damaged = tmp_path / f"bad-{frac}.7z"
        damaged.write_bytes(bytes(bad))
        try:
            install.install(damaged, settings, ipex_dir=root, generation=gen, engine=engine)
        except IpexAotError as e:
            assert "\n" not in e.message and str(damaged) in e.message, e.message
            seen.add(type(e).__name__)
        assert lib.read_bytes() == before
    assert seen, "some flipped byte must be noticed"


def test_a_7zip_error_is_one_line_and_not_cut_mid_word(tmp_path, settings, release):
    archive, libs = release
    bad = bytearray(archive.read_bytes())
    bad[40:400] = b"\0" * 360
    damaged = tmp_path / "zeroed.7z"
    damaged.write_bytes(bytes(bad))
    with pytest.raises(ArchiveError) as info:
        install.extract_member(damaged, f"{next(iter(libs))}/libgpu.so", tmp_path / "out", settings, engine="7z")
    message = info.value.message
    assert "\n" not in message and "  " not in message
    # 7-Zip's own words, whole, then what to do: never its output cut at a fixed width.
    assert "Data Error" in message and message.endswith("download it again"), message


# --- JSON depth in manifest.json ------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_a_200000_deep_manifest_is_refused_by_install_and_verify(tmp_path, settings, release, engine):
    _, libs = release
    archive = tmp_path / "deep.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        for gen, lib in libs.items():
            z.write(lib, f"{gen}/libgpu.so")
        z.writestr(b"[" * 200_000 + b"]" * 200_000, "manifest.json")
    root, lib = site(tmp_path)
    with pytest.raises(ArchiveError, match="manifest.json.*nested deeper"):
        install.install(archive, settings, ipex_dir=root, generation=next(iter(libs)), engine=engine)
    line = _one_line(_cli("verify", str(archive)))
    assert "nested deeper" in line


# --- not a regular file ---------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no FIFOs in the file system (named pipes live in \\\\.\\pipe\\, not beside files)")
def test_a_fifo_as_the_archive_says_so(tmp_path):
    fifo = tmp_path / "release.7z"
    os.mkfifo(fifo)
    for args in (("install", str(fifo), "--ipex-dir", str(tmp_path)), ("verify", str(fifo))):
        line = _one_line(_cli(*args, timeout=20))
        assert "FIFO" in line and "no such archive" not in line, line


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no FIFOs in the file system (named pipes live in \\\\.\\pipe\\, not beside files)")
def test_scan_of_a_fifo_refuses_at_once(tmp_path):
    fifo = tmp_path / "lib.so"
    os.mkfifo(fifo)
    line = _one_line(_cli("scan", str(fifo), timeout=60))  # before the fix: a hang, ended by the timeout
    assert "FIFO" in line


def test_scan_of_dev_zero_says_device_not_empty():
    line = _one_line(_cli("scan", "/dev/zero", timeout=20))
    assert "character device" in line and "empty" not in line


def test_scan_of_a_7z_points_to_verify(tmp_path, release):
    archive, _ = release
    line = _one_line(_cli("scan", str(archive)))
    assert "7z archive" in line and "ipex-aot verify" in line and "377abcaf" not in line


def test_control_bytes_in_section_names_are_escaped(tmp_path):
    lib = L.build_elf_library(tmp_path / "libx.so", [L.ocloc_image("acm-g10")])
    data = bytearray(lib.read_bytes())
    # Rename .eh_frame to a terminal escape sequence and point its data past the end of the file.
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    str_off = struct.unpack_from("<Q", data, shoff + 64 * shstrndx + 0x18)[0]
    for i in range(shnum):
        head = shoff + 64 * i
        name_off = struct.unpack_from("<I", data, head)[0]
        if bytes(data[str_off + name_off:str_off + name_off + 10]) == b".eh_frame\0":
            data[str_off + name_off:str_off + name_off + 8] = b"\x1b[2J\x07\r\x08x"
            struct.pack_into("<I", data, head + 4, 1)  # SHT_PROGBITS: has data
            struct.pack_into("<Q", data, head + 0x18, len(data) + 4096)
            break
    else:
        pytest.fail("no .eh_frame section in the test library")
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(data))
    with pytest.raises(ScanError) as info:
        scan_file(bad)
    assert "\\x1b[2J" in info.value.message
    proc = _cli("scan", str(bad))
    assert not any(c in proc.stderr + proc.stdout for c in "\x1b\x07\r\x08"), repr(proc.stderr)
    assert json.dumps  # stdout JSON already escapes; the plain text must too


# --- what the archive holds must be what the manifest lists ------------------------------------

def _archive(tmp_path: Path, libs: dict[str, Path], *, extra: list[tuple[str, bytes]] = (),
             sizes: dict | None = None, dup: bool = False) -> Path:
    manifest = {"schema": 1, "recipe": "fixture", "release": "0.1.0", "artifact_install_path": INSTALL_PATH,
                "folders": {g: {"generation": g, "file": f"{g}/libgpu.so", "sha256": install.sha256_file(lib),
                                "size": (sizes or {}).get(g, lib.stat().st_size)} for g, lib in libs.items()}}
    path = tmp_path / "a.7z"
    with py7zr.SevenZipFile(path, "w") as z:
        for gen, lib in libs.items():
            z.write(lib, f"{gen}/libgpu.so")
        if dup:
            other = list(libs.values())[-1]
            z.write(other, f"{next(iter(libs))}/libgpu.so")
        for name, data in extra:
            z.writestr(data, name)
        z.writestr(json.dumps(manifest).encode(), "manifest.json")
    return path


def _refused_by_install_and_verify(tmp_path: Path, settings, archive: Path, gen: str, words: str,
                                   monkeypatch) -> None:
    root, lib = site(tmp_path)
    before = lib.read_bytes()

    def no_extraction(*a, **k):
        raise AssertionError("extracted before the archive was checked")

    for engine in ENGINES:
        with monkeypatch.context() as m:
            m.setattr(install, "extract_member", no_extraction)
            with pytest.raises(ArchiveError, match=words):
                install.install(archive, settings, ipex_dir=root, generation=gen, engine=engine)
        assert lib.read_bytes() == before
    assert re.search(words, _one_line(_cli("verify", str(archive))))


def test_duplicate_entries_for_one_folder_are_refused(tmp_path, settings, release, monkeypatch):
    _, libs = release
    archive = _archive(tmp_path, libs, dup=True)
    _refused_by_install_and_verify(tmp_path, settings, archive, next(iter(libs)), "more than once", monkeypatch)


@pytest.mark.parametrize("name", ["12.55.08/libgpu.so", "12.55.8\\libgpu.so", "notes.txt", "12.55.8/other.so"])
def test_entries_the_manifest_does_not_list_are_refused(tmp_path, settings, release, monkeypatch, name):
    _, libs = release
    archive = _archive(tmp_path, libs, extra=[(name, b"not listed\n")])
    # py7zr reads a backslash as a separator, which makes that name a second copy of a listed file.
    _refused_by_install_and_verify(tmp_path, settings, archive, next(iter(libs)),
                                   "not listed in manifest.json|stored more than once", monkeypatch)


@pytest.mark.parametrize("size", [-1, 10**18, 44_000, "17552", None])
def test_a_manifest_size_that_disagrees_with_the_archive_is_refused_before_writing(tmp_path, settings, release,
                                                                                   monkeypatch, size):
    _, libs = release
    gen = next(iter(libs))
    archive = _archive(tmp_path, libs, sizes={gen: size})
    _refused_by_install_and_verify(tmp_path, settings, archive, gen, "size", monkeypatch)


def test_a_big_entry_the_manifest_calls_small_is_never_written(tmp_path, settings, release, monkeypatch):
    _, libs = release
    gen = next(iter(libs))
    big = tmp_path / "zeros"
    with open(big, "wb") as f:
        f.truncate(64 << 20)  # 64 MiB of zeros; the archive header says so, the manifest says 44 KB
    archive = _archive(tmp_path, {gen: big}, sizes={gen: 44_000})
    _refused_by_install_and_verify(tmp_path, settings, archive, gen, "size", monkeypatch)


def test_both_engines_install_the_same_bytes(tmp_path, settings, release):
    archive, libs = release
    gen = next(iter(libs))
    got = []
    for engine in ENGINES:
        root, lib = site(tmp_path / engine)
        install.install(archive, settings, ipex_dir=root, generation=gen, engine=engine)
        got.append(lib.read_bytes())
    assert got[0] == got[1] == libs[gen].read_bytes()


def test_names_from_the_archive_are_escaped_before_printing(tmp_path, settings, release):
    _, libs = release
    gen = next(iter(libs))
    name = f"{gen}/lib\x1b[2J\x07.so"
    manifest = {"schema": 1, "recipe": "fixture", "release": "0.1.0", "artifact_install_path": INSTALL_PATH,
                "folders": {gen: {"generation": gen, "file": name, "sha256": install.sha256_file(libs[gen]),
                                  "size": libs[gen].stat().st_size}}}
    archive = tmp_path / "esc.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(libs[gen], name)
        z.writestr(json.dumps(manifest).encode(), "manifest.json")
    root, _ = site(tmp_path)
    proc = _cli("install", str(archive), "--ipex-dir", str(root), "--generation", gen, "--engine", "py7zr")
    out = proc.stdout + proc.stderr
    assert "\\x1b[2J\\x07" in out and "\x1b" not in out and "\x07" not in out, out
    proc = _cli("verify", str(archive))
    assert "\x1b" not in proc.stdout + proc.stderr
