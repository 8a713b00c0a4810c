"""Build real test libraries that embed real ocloc outputs, like the DPC++ offload wrapper does.

Shared by the scan, pack, install and conformance tests. Nothing here is a
stub: device images come from the installed ``ocloc``, ELF libraries are
linked by ``gcc``, and PE files are laid out byte for byte as the PE/COFF
specification says (readable by ``objdump -h``, which the scan tests check).

API
---
``ocloc_image(devices, *, fmt="zebin", spirv_input=True, exclude_ir=False) -> bytes``
    What ``ocloc compile -device DEVICES`` produces for a tiny kernel: a zebin
    (``fmt="zebin"``) or legacy OpenCL-ELF/patch-token binary
    (``fmt="patchtokens"``) for one device, an ``!<arch>`` fat binary with
    ``64.<generation>`` entries for several (plus ``generic_ir`` when
    ``spirv_input`` and not ``exclude_ir``). Cached per process.
``ocloc_spirv() -> bytes``
    The kernel as SPIR-V (``-spv_only``).
``build_elf_library(path, native, spirv=None, *, tgtimg=True, pad_to=0, section_names=None) -> Path``
    A real x86-64 ELF shared object (gcc ``-shared``) with ``native`` images in
    ``__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen``, ``spirv`` images in
    ``__CLANG_OFFLOAD_BUNDLE__sycl-spir64`` and a ``.tgtimg`` table of
    (u64 address, u64 size) pairs, the linker's real addresses. ``native`` is
    either ``{generation: image bytes}`` (values are images, keys only
    document intent) or a sequence of image bytes / paths of ocloc outputs;
    ``spirv`` likewise, or one ``bytes``. ``pad_to`` appends a zero-filled
    ``.ipex_aot_pad`` section so the file reaches that size (benchmarks),
    written sparse. ``section_names`` overrides the two bundle section names.
``build_pe_library(path, native, spirv=None, *, names="long", tgtimg=True) -> Path``
    A PE32+ DLL image (x86-64) with the same content. ``names``: ``"long"``
    puts the full bundle names in the COFF string table (``/4`` style, as
    lld-link and MinGW ld write them), ``"short"`` truncates them to 8 bytes
    (``__CLANG_``) like link.exe, ``"none"`` puts all images in ``.rdata``
    with no telling name (only the byte-pattern fallback finds them).
    ``.tgtimg`` entries hold virtual addresses (image base + RVA).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

NATIVE_SECTION = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen"
SPIRV_SECTION = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64"
KERNEL = (
    "kernel void scale(global float *a, float s) { a[get_global_id(0)] *= s; }\n"
    "kernel void add(global const float *a, global float *b) { b[get_global_id(0)] += a[get_global_id(0)]; }\n"
)

Images = Mapping[str, bytes] | Sequence[bytes | os.PathLike[str] | str] | bytes | None


# --- the Windows lane: artifacts built by the Linux side -----------------------------------
#
# ocloc and gcc have no Windows build here, so under the Windows lane (CPython for Windows under
# Wine) the functions below return what the same call returned on Linux: `tools/winlane.py test`
# first runs the lane's files on Linux with IPEX_AOT_TEST_ARTIFACTS set, which stores every result
# under a digest of the call, then runs them on Windows, which reads them back. A call the Linux
# side did not make fails the test (never a skip).

ARTIFACTS = os.environ.get("IPEX_AOT_TEST_ARTIFACTS")
REPLAY = sys.platform == "win32"


def _digest(name: str, *parts: object) -> str:
    h = hashlib.sha256(name.encode())
    for part in parts:
        if isinstance(part, bytes | bytearray):
            h.update(b"B" + hashlib.sha256(part).digest())
        elif isinstance(part, list):
            h.update(b"L%d" % len(part))
            for item in part:
                h.update(hashlib.sha256(item).digest())
        else:
            h.update(b"R" + repr(part).encode())
    return f"{name}-{h.hexdigest()[:32]}"


def _recorded(key: str, make: Callable[[], bytes]) -> bytes:
    if REPLAY:
        if not ARTIFACTS:
            raise RuntimeError("the Windows lane reads ocloc/gcc outputs built on Linux: run `python tools/winlane.py "
                               "test` (nox -s tests-windows), which builds them first")
        path = Path(ARTIFACTS) / key
        if not path.is_file():
            raise RuntimeError(f"{path} was not built by the Linux side of the Windows lane; run "
                               "`python tools/winlane.py test` again (it rebuilds them when tests change)")
        return path.read_bytes()
    data = make()
    if ARTIFACTS:
        Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        tmp = Path(ARTIFACTS) / f".{key}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, Path(ARTIFACTS) / key)
    return data


def _ocloc_exe(legacy: bool = False) -> str:
    """bookworm's ocloc, or, when building for the Windows lane, Debian sid's: its zebins carry the
    .note.intelgt.compat note, so the scanner maps them with no ocloc at all, as on a user's Windows machine.
    LEGACY asks for bookworm's in both lanes (patch tokens, zebins without the note)."""
    return str(modern_ocloc()) if ARTIFACTS and not legacy else "ocloc"


def have_tools() -> bool:
    if REPLAY:
        return bool(ARTIFACTS)
    return bool(shutil.which("ocloc") and shutil.which("gcc"))


#: Where setup.sh puts the modern ocloc (`ipex-aot ocloc fetch --dest .venv/ocloc`).
MODERN_OCLOC_DEST = Path(__file__).resolve().parent.parent / ".venv" / "ocloc"


def modern_ocloc() -> Path:
    """The wrapper of the ocloc that setup.sh fetched from Debian sid; fails (never skips) when it is missing."""
    import pytest

    from ipex_aot.ocloc_fetch import installed

    got = installed(MODERN_OCLOC_DEST)
    if got is None:
        pytest.fail(f"no modern ocloc under {MODERN_OCLOC_DEST}: the device-database tests run with bookworm's "
                    "ocloc AND Debian sid's; run ./setup.sh (it runs `ipex-aot ocloc fetch --dest .venv/ocloc`)")
    return got.wrapper


def shared_cache(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """One ipex-aot cache per test session (under pytest's base temp), so ocloc signatures are made once."""
    path = tmp_path_factory.getbasetemp() / "ipex-aot-cache"
    path.mkdir(exist_ok=True)
    return path


def ocloc_ids(name: str) -> list[str]:
    """What ocloc itself says a device name stands for (`ocloc ids NAME`)."""
    def run() -> bytes:
        return subprocess.run([_ocloc_exe(), "ids", name], capture_output=True).stdout

    out = _recorded(_digest("ids", name), run).decode()
    return [line.strip() for line in out.splitlines() if line.strip()[:1].isdigit()]


@functools.cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ipex-aot-libfixtures-"))


def _ocloc(args: list[str], cwd: Path, legacy: bool = False) -> None:
    proc = subprocess.run([_ocloc_exe(legacy), *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ocloc {' '.join(args)} failed: {proc.stdout}{proc.stderr}")


@functools.cache
def ocloc_spirv() -> bytes:
    return _recorded(_digest("spirv", KERNEL), _ocloc_spirv)


def _ocloc_spirv() -> bytes:
    work = Path(tempfile.mkdtemp(dir=_workdir()))
    (work / "k.cl").write_text(KERNEL)
    _ocloc(["compile", "-file", "k.cl", "-device", "tgllp", "-spv_only", "-q", "-output", "k", "-output_no_suffix"], work)
    return (work / "k.spv").read_bytes()


@functools.cache
def ocloc_image(devices: str, *, fmt: str = "zebin", spirv_input: bool = True, exclude_ir: bool = False,
                legacy: bool = False) -> bytes:
    """Real ocloc output for DEVICES (see the module docstring); LEGACY: bookworm's ocloc in every lane."""
    legacy = legacy or fmt == "patchtokens"  # only the old ocloc still writes patch tokens
    return _recorded(_digest("image", KERNEL, devices, fmt, spirv_input, exclude_ir, legacy),
                     functools.partial(_ocloc_image, devices, fmt, spirv_input, exclude_ir, legacy))


def _ocloc_image(devices: str, fmt: str, spirv_input: bool, exclude_ir: bool, legacy: bool) -> bytes:
    work = Path(tempfile.mkdtemp(dir=_workdir()))
    if spirv_input:
        (work / "k.spv").write_bytes(ocloc_spirv())
        args = ["compile", "-file", "k.spv", "-spirv_input"]
    else:
        (work / "k.cl").write_text(KERNEL)
        args = ["compile", "-file", "k.cl"]
    args += ["-device", devices, "--format", fmt, "-q", "-output", "img", "-output_no_suffix"]
    if exclude_ir:
        args.append("-exclude_ir")
    _ocloc(args, work, legacy)
    produced = sorted(p for p in work.iterdir() if p.is_file() and p.name.startswith("img"))
    if len(produced) != 1:
        raise RuntimeError(f"ocloc -device {devices} produced {[p.name for p in produced]}, expected one binary")
    return produced[0].read_bytes()


def _blobs(images: Images) -> list[bytes]:
    if images is None:
        return []
    if isinstance(images, bytes | bytearray):
        return [bytes(images)]
    if isinstance(images, Mapping):
        return [bytes(v) for v in images.values()]
    out = []
    for item in images:
        out.append(bytes(item) if isinstance(item, bytes | bytearray) else Path(item).read_bytes())
    return out


def build_elf_library(path: str | os.PathLike[str], native: Images, spirv: Images = None, *, tgtimg: bool = True,
                      pad_to: int = 0, section_names: tuple[str, str] | None = None) -> Path:
    """A gcc-linked shared object embedding the images; see the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nat, spv = _blobs(native), _blobs(spirv)
    if pad_to == 0:  # padded ones are benchmark-sized; the Windows lane does not run those
        key = _digest("elf", nat, spv, tgtimg, section_names)
        data = _recorded(key, lambda: _build_elf(path, nat, spv, tgtimg, 0, section_names).read_bytes())
        if REPLAY:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return path
    return _build_elf(path, nat, spv, tgtimg, pad_to, section_names)


def _build_elf(path: Path, nat: list[bytes], spv: list[bytes], tgtimg: bool, pad_to: int,
               section_names: tuple[str, str] | None) -> Path:
    work = Path(tempfile.mkdtemp(dir=_workdir()))
    gen_name, spv_name = section_names or (NATIVE_SECTION, SPIRV_SECTION)
    lines: list[str] = []
    labels: list[str] = []
    for section, blobs in ((gen_name, nat), (spv_name, spv)):
        if not blobs:
            continue
        lines.append(f'    .section {section},"a",@progbits')
        for blob in blobs:
            label = f".Limg{len(labels)}"
            blob_path = work / f"img{len(labels)}.bin"
            blob_path.write_bytes(blob)
            lines += ["    .balign 16", f"{label}:", f'    .incbin "{blob_path}"', f"{label}_end:"]
            labels.append(label)
    if tgtimg and labels:
        lines += ['    .section .tgtimg,"aw",@progbits', "    .balign 8"]
        lines += [f"    .quad {label}, {label}_end - {label}" for label in labels]
    lines += ["    .text", "    .globl fixture_entry", "    .type fixture_entry,@function", "fixture_entry:",
              "    xorl %eax, %eax", "    ret", '    .section .note.GNU-stack,"",@progbits', ""]
    asm = work / "images.s"
    asm.write_text("\n".join(lines))
    tmp = path.with_name(path.name + ".tmp")
    subprocess.run(["gcc", "-shared", "-nostdlib", "-o", str(tmp), str(asm)], check=True, capture_output=True)
    if pad_to:
        _pad_elf(tmp, pad_to, work)
    os.replace(tmp, path)
    return path


def _pad_elf(lib: Path, size: int, work: Path) -> None:
    """Grow LIB to about SIZE bytes with a zero section, keeping it a valid ELF (objcopy)."""
    missing = size - lib.stat().st_size
    if missing <= 0:
        return
    pad = work / "pad.bin"
    with open(pad, "wb") as f:
        f.truncate(missing)  # sparse: no disk blocks for the zeros
    out = lib.with_name(lib.name + ".pad")
    subprocess.run(["objcopy", "--add-section", f".ipex_aot_pad={pad}", "--set-section-flags",
                    ".ipex_aot_pad=readonly,data", str(lib), str(out)], check=True, capture_output=True)
    os.replace(out, lib)
    pad.unlink()


# --- PE/COFF --------------------------------------------------------------------------------

_FILE_ALIGN = 0x200
_SECT_ALIGN = 0x1000
IMAGE_BASE = 0x180000000


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def build_pe_library(path: str | os.PathLike[str], native: Images, spirv: Images = None, *, names: str = "long",
                     tgtimg: bool = True) -> Path:
    """A PE32+ DLL holding the images; see the module docstring."""
    if names not in ("long", "short", "none"):
        raise ValueError(f"names={names!r}")
    path = Path(path)
    nat, spv = _blobs(native), _blobs(spirv)
    # (name, data, characteristics, [(offset in section, size)])
    sections: list[tuple[str, bytearray, int, list[tuple[int, int]]]] = []
    text = bytearray(b"\x31\xc0\xc3")  # xor eax,eax; ret
    sections.append((".text", text, 0x60000020, []))
    r_only = 0x40000040  # initialized data, readable
    groups = [(NATIVE_SECTION, nat), (SPIRV_SECTION, spv)]
    if names == "none":
        merged = [b for _, blobs in groups for b in blobs]
        groups = [(".rdata", merged)] if merged else []
    for name, blobs in groups:
        if not blobs:
            continue
        data = bytearray()
        placed = []
        for blob in blobs:
            data += b"\0" * (_align(len(data), 16) - len(data))
            placed.append((len(data), len(blob)))
            data += blob
        sections.append((name, data, r_only, placed))
    if tgtimg:
        sections.append((".tgtimg", bytearray(), r_only, []))

    n = len(sections)
    headers_size = _align(0x80 + 4 + 20 + 240 + 40 * n, _FILE_ALIGN)
    rvas, raws = [], []
    rva, raw = _SECT_ALIGN, headers_size
    table_entries = sum(len(p) for _, _, _, p in sections)
    for name, data, _, _ in sections:
        if name == ".tgtimg":
            data += b"\0" * (16 * table_entries)
        rvas.append(rva)
        raws.append(raw)
        rva += _align(max(len(data), 1), _SECT_ALIGN)
        raw += _align(len(data), _FILE_ALIGN)
    if tgtimg:
        table = sections[-1][1]
        i = 0
        for (_, _, _, placed), base in zip(sections, rvas, strict=True):
            for off, size in placed:
                struct.pack_into("<QQ", table, 16 * i, IMAGE_BASE + base + off, size)
                i += 1

    strtab = bytearray(4)
    name_fields = []
    for name, _, _, _ in sections:
        encoded = name.encode()
        if len(encoded) <= 8:
            name_fields.append(encoded.ljust(8, b"\0"))
        elif names == "short":
            name_fields.append(encoded[:8])
        else:
            name_fields.append(f"/{len(strtab)}".encode().ljust(8, b"\0"))
            strtab += encoded + b"\0"
    struct.pack_into("<I", strtab, 0, len(strtab))
    symtab_ptr = raw if len(strtab) > 4 else 0

    out = bytearray(headers_size)
    out[0:2] = b"MZ"
    struct.pack_into("<I", out, 0x3C, 0x80)
    out[0x80:0x84] = b"PE\0\0"
    # COFF header: AMD64, n sections, no symbols but a string table (as MinGW ld leaves it), DLL.
    struct.pack_into("<HHIIIHH", out, 0x84, 0x8664, n, 0, symtab_ptr, 0, 240, 0x2022)
    opt = 0x98
    size_of_image = rva
    struct.pack_into("<HBBIIIII", out, opt, 0x20B, 14, 0, _align(len(text), _FILE_ALIGN),
                     sum(_align(len(d), _FILE_ALIGN) for _, d, _, _ in sections[1:]), 0, 0, _SECT_ALIGN)
    struct.pack_into("<QII", out, opt + 24, IMAGE_BASE, _SECT_ALIGN, _FILE_ALIGN)
    struct.pack_into("<HHHHHHIII", out, opt + 40, 6, 0, 0, 0, 6, 0, 0, size_of_image, headers_size)
    struct.pack_into("<HH", out, opt + 68, 3, 0x160)  # console subsystem, DLL characteristics
    struct.pack_into("<QQQQII", out, opt + 72, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    sec_table = opt + 240
    for i, ((_, data, flags, _), field, r, fr) in enumerate(zip(sections, name_fields, rvas, raws, strict=True)):
        struct.pack_into("<8sIIIIIIHHI", out, sec_table + 40 * i, field, len(data), r,
                         _align(len(data), _FILE_ALIGN), fr if data else 0, 0, 0, 0, 0, flags)
    for (_, data, _, _), fr in zip(sections, raws, strict=True):
        if data:
            out += b"\0" * (fr - len(out))
            out += data + b"\0" * (_align(len(data), _FILE_ALIGN) - len(data))
    if symtab_ptr:
        out += b"\0" * (symtab_ptr - len(out)) + strtab
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(out)
    os.replace(tmp, path)
    return path


# --- shared by the build, recipe, matrix, release, variants and workflow tests ----------------

REPO = Path(__file__).resolve().parents[1]
#: The canary generations the build tests build: a gen12lp, an Xe-HPG and an Xe-HPC one.
GENERATIONS = ["12.0.0", "12.55.8", "12.60.7"]
#: PCI IDs whose sweep covers the test generations (Tiger Lake, DG1, Arc A-series, Max 1550):
#: a real sweep of these takes seconds, the full 0x0000-0xFFFF one a minute.
TEST_PCI_IDS = [0x9A49, 0x9A40, 0x4905, *range(0x56A0, 0x56A8), 0x0BD5, 0x0BDA]


def write_recipe(folder: Path, generations: list[str], *, devices: dict | None = None, name: str = "canary",
                 artifact: str = "ipex_aot_canary/lib/libcanary-gpu.so") -> Path:
    """The shipped canary recipe, restricted to ``generations``, with the canary's source copied beside it.

    A recipe's source.path may not leave its repository (the folder holding recipes/), so the
    canary's few files are copied into FOLDER's parent instead of pointing back at this checkout.
    """
    text = (REPO / "recipes" / "canary.yaml").read_text()
    targets = f"targets:\n  generations: {json.dumps(generations)}\n"
    if devices:
        targets += f"  devices: {json.dumps(devices)}\n"
    text, n = re.subn(r"(?ms)^targets:\n.*?(?=^\S)", targets, text)
    assert n == 1
    shutil.copytree(REPO / "canary", folder.parent / "canary", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("build", "__pycache__", "*.egg-info"))
    text = text.replace("linux-x86_64: ipex_aot_canary/lib/libcanary-gpu.so", f"linux-x86_64: {artifact}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def cli_env(dist: Path, cache: Path) -> dict[str, str]:
    return dict(os.environ, IPEX_AOT_DIST=str(dist), IPEX_AOT_CACHE=str(cache), PIP_DISABLE_PIP_VERSION_CHECK="1")


# --- shared by the install, trust and archive tests -------------------------------------------

#: Where the fixture archives' manifest says the library goes inside the package.
INSTALL_PATH = "ipex_aot_fixture/lib/libgpu.so"


def make_archive(path: Path, libs: dict[str, Path], *, pci_ids: dict | None = None, hashes: dict | None = None,
                 extra: dict[str, bytes] | None = None) -> Path:
    import py7zr

    from ipex_aot.fsutil import sha256_file

    manifest = {"schema": 1, "recipe": "fixture", "release": "0.1.0", "artifact_install_path": INSTALL_PATH,
                "folders": {}}
    with py7zr.SevenZipFile(path, "w") as z:
        for gen, lib in libs.items():
            manifest["folders"][gen] = {"generation": gen, "file": f"{gen}/libgpu.so",
                                        "sha256": (hashes or {}).get(gen, sha256_file(lib)),
                                        "size": lib.stat().st_size, "pci_ids": (pci_ids or {}).get(gen, [])}
            z.write(lib, f"{gen}/libgpu.so")
        for name, data in (extra or {}).items():
            z.writestr(data, name)
        z.writestr(json.dumps(manifest).encode(), "manifest.json")
    return path


def site(tmp_path: Path, content: bytes = b"the JIT-only library\n") -> tuple[Path, Path]:
    root = tmp_path / "site-packages"
    lib = root / INSTALL_PATH
    lib.parent.mkdir(parents=True)
    lib.write_bytes(content)
    return root, lib


# --- what the local ocloc itself says, for expected values that do not come from our device database ----

@functools.cache
def ocloc_device_names() -> tuple[str, ...]:
    """The device names `ocloc compile --help` lists (products, then families and releases)."""
    out = subprocess.run(["ocloc", "compile", "--help"], capture_output=True, text=True).stdout
    listed = re.search(r"<device_type> can be: ([^\n]*)", out)
    assert listed, out[:500]
    return tuple(n.strip() for n in listed.group(1).split(",") if re.fullmatch(r"[a-z][a-z0-9_-]*", n.strip()))


@functools.cache
def ocloc_ids_raw(name: str) -> tuple[str, ...]:
    """`ocloc ids NAME` as ocloc prints it: the generations, or () for a name it does not know."""
    out = subprocess.run(["ocloc", "ids", name], capture_output=True, text=True).stdout
    return tuple(re.findall(r"^(\d+\.\d+\.\d+)\s*$", out, re.M))


def ocloc_names_by_generation() -> dict[str, list[str]]:
    """Generation -> the listed names for which `ocloc ids NAME` prints exactly that one generation."""
    out: dict[str, list[str]] = {}
    for name in ocloc_device_names():
        got = ocloc_ids_raw(name)
        if len(got) == 1:
            out.setdefault(got[0], []).append(name)
    return out


def ocloc_known_generations() -> set[str]:
    """Every generation some listed name stands for in `ocloc ids`: what this ocloc can build."""
    return {g for name in ocloc_device_names() for g in ocloc_ids_raw(name)}
