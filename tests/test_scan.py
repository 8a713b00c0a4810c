"""The scanner on real ocloc outputs and on real ELF/PE libraries that embed them (tests/libfixtures.py)."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import py7zr
import pytest

from ipex_aot import scan
from ipex_aot.errors import ScanError
from ipex_aot.fsutil import sha256_file, write_json
from ipex_aot.generation import sort_generations
from ipex_aot.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
import libfixtures as L  # noqa: E402

shared_cache = L.shared_cache
ids = L.ocloc_ids


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings.from_env({"IPEX_AOT_CACHE": str(shared_cache(tmp_path_factory)),
                              "IPEX_AOT_DIST": str(tmp_path_factory.mktemp("dist"))})


@pytest.fixture(scope="module")
def sigs(settings) -> scan.Signatures:
    # The Windows lane has no ocloc: it reads the tables bookworm's ocloc gave on the Linux side.
    data = L._recorded("signatures", lambda: json.dumps(scan.load_signatures(settings).to_json()).encode())
    return scan.Signatures.from_json(json.loads(data))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_fat_binary_entries_name_their_generations(tmp_path, sigs):
    data = L.ocloc_image("acm-g10,tgllp")
    r = scan.scan_file(write(tmp_path, "fat.ar", data), signatures=sigs)
    assert r.format == "ar"
    assert r.generations == sort_generations(ids("acm-g10") + ids("tgllp"))
    assert r.generic_ir  # -spirv_input keeps the SPIR-V as generic_ir
    assert all(r.bytes_per_generation[g] > 0 for g in r.generations)
    no_ir = scan.scan_file(write(tmp_path, "fat2.ar", L.ocloc_image("acm-g10,tgllp", exclude_ir=True)), signatures=sigs)
    assert not no_ir.generic_ir and no_ir.generations == r.generations


@pytest.mark.parametrize("device", ["acm-g10", "pvc", "tgllp"])
def test_single_zebin_is_mapped_by_its_notes(tmp_path, sigs, device):
    r = scan.scan_file(write(tmp_path, "one.bin", L.ocloc_image(device, exclude_ir=True)), signatures=sigs)
    assert r.format == "zebin"
    assert set(ids(device)) <= set(r.generations)
    assert r.native_images == 1 and not r.unresolved


def test_patchtoken_binary_is_mapped_as_far_as_its_header_allows(tmp_path, sigs):
    r = scan.scan_file(write(tmp_path, "pt.bin", L.ocloc_image("acm-g10", fmt="patchtokens")), signatures=sigs)
    assert r.format == "patchtokens"
    assert ids("acm-g10")[0] in r.generations
    assert "GFX core" in r.details[0].how


def test_spirv_is_jit_only(tmp_path, sigs):
    r = scan.scan_file(write(tmp_path, "k.spv", L.ocloc_spirv()), signatures=sigs)
    assert r.format == "spirv" and r.generations == [] and r.spirv_images == 1


def test_without_ocloc_signatures_images_stay_unresolved(tmp_path):
    lib = write(tmp_path, "one.bin", L.ocloc_image("acm-g10", exclude_ir=True, legacy=True))  # no compat note
    r = scan.scan_file(lib, signatures=None, settings=Settings.from_env({"OCLOC": str(tmp_path / "no-ocloc"),
                                                                       "IPEX_AOT_CACHE": str(tmp_path)}))
    assert r.generations == [] and len(r.unresolved) == 1 and "product family" in r.unresolved[0]
    with pytest.raises(ScanError, match="does not hold generation"):
        scan.require_generation(lib, ids("acm-g10")[0], signatures=scan.Signatures("none", {}, {}))


@pytest.mark.parametrize("tgtimg", [True, False])
def test_elf_library(tmp_path, sigs, tgtimg):
    lib = L.build_elf_library(tmp_path / "libx.so", [L.ocloc_image("acm-g10"), L.ocloc_image("pvc,tgllp")],
                              [L.ocloc_spirv()], tgtimg=tgtimg)
    r = scan.scan_file(lib, signatures=sigs)
    assert r.format == "elf" and r.found_by == ("tgtimg" if tgtimg else "sections")
    assert r.generations == sort_generations(set(ids("acm-g10") + ids("pvc") + ids("tgllp")))
    assert r.generic_ir and r.spirv_images == 2  # the JIT image and the fat binary's generic_ir
    assert r.images == 3
    scan.require_generation(lib, ids("pvc")[0], signatures=sigs)
    with pytest.raises(ScanError, match=r"does not hold generation 12\.56\.5"):
        scan.require_generation(lib, "12.56.5", signatures=sigs)


@pytest.mark.parametrize("names,tgtimg,found_by", [("long", True, "tgtimg"), ("long", False, "sections"),
                                                   ("short", False, "sections"), ("none", False, "byte-pattern")])
def test_pe_library(tmp_path, sigs, names, tgtimg, found_by):
    lib = L.build_pe_library(tmp_path / "x.dll", [L.ocloc_image("acm-g10")], [L.ocloc_spirv()], names=names,
                             tgtimg=tgtimg)
    if shutil.which("objdump"):  # binutils reads our layout as a real PE image
        heads = subprocess.run(["objdump", "-h", str(lib)], capture_output=True, text=True, check=True).stdout
        assert "pei-x86-64" in heads
        if names == "long":
            assert L.NATIVE_SECTION in heads
    r = scan.scan_file(lib, signatures=sigs)
    assert r.format == "pe" and r.found_by == found_by
    assert r.generations == ids("acm-g10") and r.spirv_images == 1


def test_pe_without_images_holds_nothing(tmp_path, sigs):
    lib = L.build_pe_library(tmp_path / "x.dll", [], [L.ocloc_spirv()], names="long", tgtimg=False)
    r = scan.scan_file(lib, signatures=sigs)
    assert r.generations == [] and r.spirv_images == 1


def test_truncated_and_corrupt_files_give_one_scan_error(tmp_path, sigs):
    base = L.build_elf_library(tmp_path / "lib.so", [L.ocloc_image("acm-g10,pvc")], [L.ocloc_spirv()]).read_bytes()
    pe = L.build_pe_library(tmp_path / "x.dll", [L.ocloc_image("acm-g10,pvc")], [L.ocloc_spirv()],
                            names="none", tgtimg=False).read_bytes()
    rng = random.Random(4)
    answers = {id(base): scan.scan_file(write(tmp_path, "base.so", base), signatures=sigs),
               id(pe): scan.scan_file(write(tmp_path, "base.dll", pe), signatures=sigs)}
    for i in range(400):
        source = base if i % 4 < 2 else pe
        data = bytearray(source)
        if i % 2:
            # Cut anywhere: an ELF library loses its section table (gcc writes it last), so every cut
            # ELF file must be refused; a PE file may lose only its last section's file-alignment
            # padding, which nothing reads, and must then give the intact file's answer exactly.
            data = data[: rng.randrange(1, len(data))]
        else:
            for _ in range(rng.randrange(1, 30)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        p = write(tmp_path, "bad.bin", bytes(data))
        try:
            got = scan.scan_file(p, signatures=sigs)
        except ScanError as e:
            assert "\n" not in e.message and str(p) in e.message
            continue
        if i % 2:
            intact = answers[id(source)].to_json()
            assert source is pe and {**got.to_json(), "path": ""} == {**intact, "path": ""}, (
                f"cut to {len(data)} of {len(source)} bytes and read as {got.to_json()}")
            continue
        # Flipped bytes that the scanner reads without noticing must at least not invent an answer:
        # the generations found are among those the intact file holds.
        assert set(got.native) <= set(answers[id(source)].native), got.to_json()


def test_cut_fat_binary_member_names_the_offset(tmp_path, sigs):
    data = L.ocloc_image("acm-g10,pvc")
    with pytest.raises(ScanError, match="truncated fat binary"):
        scan.scan_file(write(tmp_path, "cut.ar", data[: len(data) - 100]), signatures=sigs)
    with pytest.raises(ScanError, match="empty file"):
        scan.scan_file(write(tmp_path, "empty", b""), signatures=sigs)
    with pytest.raises(ScanError, match="not a PE DLL"):
        scan.scan_file(write(tmp_path, "text", b"hello world"), signatures=sigs)
    with pytest.raises(ScanError, match="cannot open"):
        scan.scan_file(tmp_path / "missing.so", signatures=sigs)


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_cli_scan_json_and_errors(tmp_path, settings):
    env = {"IPEX_AOT_CACHE": str(settings.cache_dir)}
    lib = L.build_elf_library(tmp_path / "lib.so", [L.ocloc_image("acm-g10,pvc")], [L.ocloc_spirv()])
    proc = cli("scan", str(lib), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["native"] == sort_generations(ids("acm-g10") + ids("pvc"))
    assert out["jit"] is True and out["images"] == 2 and out["device_code"] is True
    assert out["summary"] == f"AOT for {', '.join(out['native'])}; SPIR-V present, so other GPUs fall back to JIT"
    assert set(out["bytes_per_generation"]) == set(out["native"])
    details = json.loads(cli("scan", str(lib), "--json", "--details", env=env).stdout)
    assert details["fat_binary_generic_ir"] is True and details["notes"] == []
    cut = write(tmp_path, "cut.so", lib.read_bytes()[:3000])
    proc = cli("scan", str(cut), env=env, timeout=60)
    assert proc.returncode == ScanError.exit_code
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "cut.so" in proc.stderr


def make_dist(settings: Settings, recipe: str, folders: dict[str, bytes]) -> Path:
    root = settings.dist_dir / recipe
    for gen, image in folders.items():
        lib = L.build_elf_library(root / gen / "libcanary-gpu.so", [image], [L.ocloc_spirv()])
        write_json(root / gen / "build.json", {"schema": 1, "recipe": recipe, "release": "0.1.0", "generation": gen,
                                               "artifact": {"name": lib.name, "sha256": sha256_file(lib),
                                                            "size": lib.stat().st_size,
                                                            "install_path": f"pkg/lib/{lib.name}"}})
    return root


def test_verify_dist_names_the_bad_folder(tmp_path, settings):
    g10, pvc = ids("acm-g10")[0], ids("pvc")[0]
    env = {"IPEX_AOT_CACHE": str(settings.cache_dir), "IPEX_AOT_DIST": str(settings.dist_dir)}
    make_dist(settings, "good", {g10: L.ocloc_image("acm-g10"), pvc: L.ocloc_image("pvc")})
    proc = cli("verify", "recipes/good.yaml", env=env)
    assert proc.returncode == 0, proc.stderr
    assert g10 in proc.stdout and pvc in proc.stdout
    # pvc's folder holding acm-g10's images: the AOT build went wrong.
    make_dist(settings, "bad", {g10: L.ocloc_image("acm-g10"), pvc: L.ocloc_image("acm-g10")})
    proc = cli("verify", "bad", env=env)
    assert proc.returncode == ScanError.exit_code
    assert os.path.join("bad", pvc, "") in proc.stderr and f"does not hold generation {pvc}" in proc.stderr


def make_archive(path: Path, folders: dict[str, Path], install_path: str, tamper: str | None = None) -> Path:
    manifest = {"schema": 1, "recipe": "t", "release": "0.1.0", "artifact_install_path": install_path, "folders": {}}
    with py7zr.SevenZipFile(path, "w") as z:
        for gen, lib in folders.items():
            name = f"{gen}/{lib.name}"
            manifest["folders"][gen] = {"generation": gen, "file": name, "sha256": sha256_file(lib),
                                        "size": lib.stat().st_size, "pci_ids": []}
            data = lib.read_bytes()
            if gen == tamper:
                data = data[:-1] + bytes([data[-1] ^ 1])
            z.writestr(data, name)
        z.writestr(json.dumps(manifest).encode(), "manifest.json")
    return path


def test_verify_archive(tmp_path, settings):
    g10, pvc = ids("acm-g10")[0], ids("pvc")[0]
    env = {"IPEX_AOT_CACHE": str(settings.cache_dir)}
    libs = {g: L.build_elf_library(tmp_path / g / "libx.so", [L.ocloc_image(d)]) for g, d in ((g10, "acm-g10"), (pvc, "pvc"))}
    good = make_archive(tmp_path / "good.7z", libs, "pkg/lib/libx.so")
    proc = cli("verify", str(good), env=env)
    assert proc.returncode == 0, proc.stderr
    swapped = make_archive(tmp_path / "swapped.7z", {g10: libs[pvc], pvc: libs[pvc]}, "pkg/lib/libx.so")
    proc = cli("verify", str(swapped), env=env)
    assert proc.returncode == ScanError.exit_code and f"{g10}/libx.so" in proc.stderr
    bad = make_archive(tmp_path / "bad.7z", libs, "pkg/lib/libx.so", tamper=pvc)
    proc = cli("verify", str(bad), env=env)
    assert proc.returncode == ScanError.exit_code and f"folder {pvc}" in proc.stderr and "sha256" in proc.stderr


def test_gnu_ar_long_member_names(tmp_path, sigs):
    """Members named through the ar '//' long-name table are read (and mapped by content)."""
    (tmp_path / "64.12.55.8").write_bytes(L.ocloc_image("acm-g10", exclude_ir=True))
    (tmp_path / "a-member-name-longer-than-fifteen.bin").write_bytes(L.ocloc_image("pvc", exclude_ir=True))
    subprocess.run(["ar", "rcSD", "fat.a", "64.12.55.8", "a-member-name-longer-than-fifteen.bin"], cwd=tmp_path,
                   check=True)
    assert b"//" in (tmp_path / "fat.a").read_bytes()[:200]
    r = scan.scan_file(tmp_path / "fat.a", signatures=sigs)
    assert r.generations == sort_generations(ids("acm-g10") + ids("pvc"))
    assert any("a-member-name-longer-than-fifteen.bin" in i.how for i in r.details)


def test_product_config_note_gives_the_exact_generation(tmp_path, sigs):
    """Newer ocloc writes the IP version as a product-config note (type 6). Ocloc 22.43 does not, so a real
    22.43 zebin gets its (empty) GFX-core note turned into one, encoded with compute-runtime's
    HardwareIpVersion layout (revision:6, reserved:8, release:8, architecture:10)."""
    data = bytearray(L.ocloc_image("acm-g10", exclude_ir=True))
    want = ids("acm-g10")[0]
    arch, release, revision = (int(x) for x in want.split("."))
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    heads = [struct.unpack_from("<IIQQQQ", data, shoff + 64 * i) for i in range(shnum)]
    strtab = heads[shstrndx][4]
    (off, size), = [(h[4], h[5]) for h in heads
                    if data[strtab + h[0]:].split(b"\0", 1)[0] == b".note.intelgt.compat"]
    pos, patched = off, False
    while pos + 12 <= off + size:
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        desc = pos + 12 + ((namesz + 3) & ~3)
        if ntype == 2 and descsz == 4:  # GFX core family: 0 in 22.43's zebins
            struct.pack_into("<I", data, pos + 8, 6)
            struct.pack_into("<I", data, desc, (arch << 22) | (release << 14) | revision)
            patched = True
        pos = desc + ((descsz + 3) & ~3)
    assert patched
    r = scan.scan_file(write(tmp_path, "pc.bin", bytes(data)), signatures=scan.Signatures("none", {}, {}))
    assert r.generations == [want] and "product-config note" in r.details[0].how


def test_zstd_compressed_fat_binary_is_read_through_the_table_and_the_sections(tmp_path, sigs):
    """DPC++ 2025+ stores images as zstd frames and writes the uncompressed size into .tgtimg (as
    oneMKL 2026's libraries show); a compressed fat binary's entries still name their generations."""
    import zstandard

    fat = L.ocloc_image("acm-g10,pvc")
    packed = zstandard.ZstdCompressor(level=19).compress(fat)
    assert len(packed) < len(fat)
    lib = L.build_elf_library(tmp_path / "libz.so", [packed], [L.ocloc_spirv()])
    data = bytearray(lib.read_bytes())
    # Write the uncompressed size into the table entry that points at the frame, as DPC++ does.
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    names_off = struct.unpack_from("<Q", data, shoff + 64 * shstrndx + 24)[0]
    for i in range(shnum):
        name_off, = struct.unpack_from("<I", data, shoff + 64 * i)
        if bytes(data[names_off + name_off:names_off + name_off + 8]) == b".tgtimg\0":
            table = struct.unpack_from("<Q", data, shoff + 64 * i + 24)[0]
            sizes = [struct.unpack_from("<Q", data, table + 16 * k + 8)[0] for k in range(2)]
            k = sizes.index(len(packed))
            struct.pack_into("<Q", data, table + 16 * k + 8, len(fat))
    lib.write_bytes(data)
    want = sort_generations(ids("acm-g10") + ids("pvc"))
    for method in ("tgtimg", "sections"):
        r = scan.scan_file(lib, signatures=sigs, method=method)
        assert r.found_by == method and r.native == want and r.jit, r.to_json()
        assert r.compressed_images == 1 and r.native_images == 2
        assert all(i.zstd_frame == (i.offset, len(packed)) for i in r.details if i.kind == "native")
    # A table whose size disagrees with the frame's own content size is named as malformed.
    struct.pack_into("<Q", data, table + 16 * k + 8, len(fat) + 1)
    lib.write_bytes(data)
    with pytest.raises(ScanError, match=rf"the table gives {len(fat) + 1} bytes but the zstd frame .* declares {len(fat)}"):
        scan.scan_file(lib, signatures=sigs)
