"""The canary's GPU library build: compile once, then per device list only ocloc + link.

Mirrors what an IPEX 2.1 build does with DPC++, at toy scale:

1. ``kernels/*.cl`` -> SPIR-V with ``ocloc -spv_only`` and ``csrc/*.c`` -> host
   objects with the C compiler. Neither depends on the device list, so they
   are kept in the persistent build tree and reused by every later generation
   (a stamp file beside each output records what it was made from).
2. per device list: SPIR-V -> native images with ``ocloc -spirv_input -device
   LIST``: an ``ar`` fat binary with ``64.<generation>`` and ``generic_ir``
   entries (ocloc's own for several devices; for one device ocloc writes a
   bare zebin, wrapped here in the same layout so every image names its
   generation), the "device link" of DPC++.
3. link: a generated assembly file puts the native images in
   ``__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen``, the SPIR-V in
   ``__CLANG_OFFLOAD_BUNDLE__sycl-spir64`` and a ``.tgtimg`` table of
   (u64 address, u64 size) pairs into the library, as the DPC++ offload
   wrapper does, so the addresses are the linker's real ones.

Every step prints ``canary: <step> <file>: compiled|reused`` so the build
log shows what a reused build tree saved.

This file is part of the build under test, so unlike ipex_aot it reads the
environment: ``OCLOC`` (else ``ocloc`` on PATH), ``CC`` (else gcc / cl) and
``CANARY_TARGET``: ``windows-x86_64`` on Linux cross-compiles the Windows DLL
with MinGW-w64 (``x86_64-w64-mingw32-gcc``, Debian's gcc-mingw-w64-x86-64),
the images in the same bundle sections (MinGW's ld keeps their long names in
the COFF string table, as lld-link does) and the same ``.tgtimg`` table.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELS = sorted((HERE / "kernels").glob("*.cl"))
HOST_SOURCES = sorted((HERE / "csrc").glob("*.c"))
#: The platform the library is for: the host's, or CANARY_TARGET=windows-x86_64 for the MinGW cross build.
IS_WINDOWS = sys.platform == "win32" or os.environ.get("CANARY_TARGET") == "windows-x86_64"
#: GNU tools build the Windows DLL (MinGW-w64, cross or native) instead of MSVC's cl/link.
MINGW = IS_WINDOWS and (sys.platform != "win32" or "gcc" in os.path.basename(os.environ.get("CC", "")))
NATIVE_SECTION = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen"
SPIRV_SECTION = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64"
#: Bumped when the build steps change in a way stamps cannot see.
STEPS_VERSION = "2"


class CanaryBuildError(SystemExit):
    """A failed step; setuptools prints it and pip reports the build failed."""

    def __init__(self, message: str) -> None:
        super().__init__(f"canary: error: {message}")


def library_name() -> str:
    return "canary-gpu.dll" if IS_WINDOWS else "libcanary-gpu.so"


def log(message: str) -> None:
    print(f"canary: {message}", flush=True)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _stamp(output: Path) -> Path:
    return output.with_name(output.name + ".stamp")


def _up_to_date(output: Path, key: str) -> bool:
    stamp = _stamp(output)
    return output.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == key


def _write_stamp(output: Path, key: str) -> None:
    tmp = _stamp(output).with_suffix(".tmp")
    tmp.write_text(key, encoding="utf-8")
    os.replace(tmp, _stamp(output))


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace")
    except OSError as e:
        raise CanaryBuildError(f"{what}: cannot run {cmd[0]}: {e}") from None
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise CanaryBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{out}")


def find_ocloc() -> str:
    ocloc = os.environ.get("OCLOC") or shutil.which("ocloc")
    if not ocloc:
        raise CanaryBuildError("ocloc not found; set OCLOC or put ocloc on PATH")
    return ocloc


def _tool_identity(path: str) -> str:
    """Path, size and mtime of a tool: a changed tool invalidates what it made."""
    resolved = shutil.which(path) or path
    try:
        st = os.stat(resolved)
    except OSError:
        return resolved
    return f"{resolved}:{st.st_size}:{st.st_mtime_ns}"


def compile_spirv(ocloc: str, kernel: Path, out_dir: Path, probe_device: str | None, counts: dict[str, int]) -> Path:
    """OpenCL C -> SPIR-V. Older ocloc wants a -device even for -spv_only (the
    JIT-only build passes none); the front end's output does not depend on
    it, so it is not part of the key."""
    out = out_dir / f"{kernel.stem}.spv"
    key = _digest(STEPS_VERSION, kernel.read_bytes(), _tool_identity(ocloc))
    if _up_to_date(out, key):
        counts["reused"] += 1
        log(f"spirv {kernel.name}: reused")
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    _run(
        [ocloc, "compile", "-file", str(kernel), *(["-device", probe_device] if probe_device else []), "-spv_only",
         "-q", "-out_dir", str(out_dir), "-output", kernel.stem, "-output_no_suffix"],
        f"SPIR-V compile of {kernel.name}",
    )
    if not out.is_file():
        raise CanaryBuildError(f"ocloc reported success but wrote no {out}")
    _write_stamp(out, key)
    counts["compiled"] += 1
    log(f"spirv {kernel.name}: compiled ({time.monotonic() - start:.2f} s)")
    return out


def _compiler() -> str:
    if os.environ.get("CC"):
        return os.environ["CC"]
    if MINGW:
        return "x86_64-w64-mingw32-gcc"
    return "cl" if IS_WINDOWS else "gcc"


def compile_host(source: Path, out_dir: Path, counts: dict[str, int]) -> Path:
    cc = _compiler()
    msvc = IS_WINDOWS and not MINGW
    out = out_dir / (source.stem + (".obj" if msvc else ".o"))
    flags = ["/nologo", "/O2", "/c"] if msvc else (["-O2", "-c"] if MINGW else ["-O2", "-fPIC", "-fvisibility=hidden", "-c"])
    key = _digest(STEPS_VERSION, source.read_bytes(), _tool_identity(cc), " ".join(flags))
    if _up_to_date(out, key):
        counts["reused"] += 1
        log(f"host {source.name}: reused")
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    out_flag = [f"/Fo{out}"] if msvc else ["-o", str(out)]
    _run([cc, *flags, str(source), *out_flag], f"host compile of {source.name}")
    _write_stamp(out, key)
    counts["compiled"] += 1
    log(f"host {source.name}: compiled ({time.monotonic() - start:.2f} s)")
    return out


def _slug(devlist: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", devlist)[:60] + "-" + _digest(devlist)[:8]


def _ocloc_ids(ocloc: str, device: str) -> list[str]:
    """``ocloc ids NAME``: the IP versions (generation codes) a device name stands for."""
    proc = subprocess.run([ocloc, "ids", device], capture_output=True, text=True, errors="replace")
    return re.findall(r"^\s*(\d+\.\d+\.\d+)\s*$", proc.stdout, re.MULTILINE) if proc.returncode == 0 else []


def _ar_header(name: str, size: int) -> bytes:
    return f"{name + '/':<16}{'0':<12}{'0':<6}{'0':<6}{'644':<8}{size:<10}`\n".encode()


def write_fat_binary(path: Path, entries: list[tuple[str, bytes]]) -> None:
    """An ``ar`` archive laid out like ocloc's multi-device output: GNU names,
    each member's data 8-byte aligned by ``pad_N`` members."""
    out = bytearray(b"!<arch>\n")
    pads = 0
    for name, data in entries:
        if (len(out) + 60) % 8:
            fill = (-(len(out) + 120)) % 8 or 8
            out += _ar_header(f"pad_{pads}", fill) + b" " * fill
            pads += 1
        out += _ar_header(name, len(data)) + data
        if len(data) % 2:
            out += b"\n"
    path.write_bytes(bytes(out))


def compile_native(ocloc: str, spv: Path, devlist: str, out_dir: Path, counts: dict[str, int]) -> Path:
    """SPIR-V -> native image(s) for the device list: the per-generation step.

    Several devices: ocloc's own fat binary (``64.<generation>`` entries and
    ``generic_ir``). One device: ocloc writes a bare zebin, which is wrapped
    in the same layout (``64.<generation>`` from ``ocloc ids``, plus the
    SPIR-V as ``generic_ir``), so every image states its generation.
    """
    out = out_dir / f"{spv.stem}.gen"
    key = _digest(STEPS_VERSION, spv.read_bytes(), devlist, _tool_identity(ocloc))
    if _up_to_date(out, key):
        counts["device_reused"] += 1
        log(f"device {spv.stem} [{devlist}]: reused")
        return out
    # ocloc names its output after the device (and drops -out_dir for fat
    # binaries), so run it in an empty folder and take what appears there.
    work = out_dir / f"{spv.stem}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.monotonic()
    _run(
        [ocloc, "compile", "-file", str(spv.resolve()), "-spirv_input", "-device", devlist,
         "-output", spv.stem, "-output_no_suffix", "--format", "zebin", "-q"],
        f"device compile of {spv.name} for {devlist}",
        cwd=work,
    )
    produced = [p for p in work.iterdir() if p.is_file()]
    if len(produced) != 1:
        names = ", ".join(sorted(p.name for p in produced)) or "nothing"
        raise CanaryBuildError(f"ocloc -device {devlist} for {spv.name} produced {names}, expected one binary")
    image = produced[0].read_bytes()
    if not image.startswith(b"!<arch>\n"):
        # A generation code names itself; `ocloc ids` answers only for acronyms.
        ids = [devlist] if re.fullmatch(r"\d+\.\d+\.\d+", devlist) else _ocloc_ids(ocloc, devlist)
        if len(ids) != 1:
            raise CanaryBuildError(f"`ocloc ids {devlist}` gives {ids or 'nothing'}; name a device of exactly one generation")
        write_fat_binary(produced[0], [(f"64.{ids[0]}", image), ("generic_ir", spv.read_bytes())])
    os.replace(produced[0], out)
    shutil.rmtree(work, ignore_errors=True)
    _write_stamp(out, key)
    counts["device_compiled"] += 1
    log(f"device {spv.stem} [{devlist}]: compiled ({time.monotonic() - start:.2f} s)")
    return out


def _asm_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_elf_images(path: Path, natives: list[Path], spirvs: list[Path], devlist: str) -> None:
    """Assembly that embeds the images like the DPC++ offload wrapper (ELF)."""
    lines = [f"/* generated by canary_build.py for device list {devlist} */"]
    entries: list[tuple[str, int]] = []
    for section, images, kind in ((NATIVE_SECTION, natives, 0), (SPIRV_SECTION, spirvs, 1)):
        lines.append(f'    .section {section},"a",@progbits')
        for image in images:
            label = f".Limg{len(entries)}"
            lines += ["    .balign 64", f"{label}:", f"    .incbin {_asm_string(str(image.resolve()))}", f"{label}_end:"]
            entries.append((label, kind))
    lines += ['    .section .tgtimg,"aw",@progbits', "    .balign 8", "    .globl canary_tgtimg", "canary_tgtimg:"]
    lines += [f"    .quad {label}, {label}_end - {label}" for label, _ in entries]
    lines += [
        "    .section .rodata",
        "    .balign 8",
        "    .globl canary_tgtimg_count",
        "canary_tgtimg_count:",
        f"    .quad {len(entries)}",
        "    .globl canary_image_kinds",
        "canary_image_kinds:",
        "    .byte " + ", ".join(str(kind) for _, kind in entries),
        "    .globl canary_devlist_text",
        "canary_devlist_text:",
        f"    .asciz {_asm_string(devlist)}",
        '    .section .note.GNU-stack,"",@progbits',
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_mingw_images(path: Path, natives: list[Path], spirvs: list[Path], devlist: str) -> None:
    """The same embedding for a MinGW-w64 DLL (GNU as, PE/COFF): "dr" is read-only data.

    ld writes each absolute ``.quad`` of the table with a base relocation, so the
    file holds virtual addresses at the preferred image base, as link.exe's do.
    """
    lines = [f"/* generated by canary_build.py for device list {devlist} */"]
    entries: list[tuple[str, int]] = []
    for section, images, kind in ((NATIVE_SECTION, natives, 0), (SPIRV_SECTION, spirvs, 1)):
        lines.append(f'    .section "{section}","dr"')
        for image in images:
            label = f".Limg{len(entries)}"
            lines += ["    .balign 64", f"{label}:", f"    .incbin {_asm_string(str(image.resolve()))}", f"{label}_end:"]
            entries.append((label, kind))
    lines += ['    .section .tgtimg,"dr"', "    .balign 8", "    .globl canary_tgtimg", "canary_tgtimg:"]
    lines += [f"    .quad {label}, {label}_end - {label}" for label, _ in entries]
    lines += [
        '    .section .rdata,"dr"',
        "    .balign 8",
        "    .globl canary_tgtimg_count",
        "canary_tgtimg_count:",
        f"    .quad {len(entries)}",
        "    .globl canary_image_kinds",
        "canary_image_kinds:",
        "    .byte " + ", ".join(str(kind) for _, kind in entries),
        "    .globl canary_devlist_text",
        "canary_devlist_text:",
        f"    .asciz {_asm_string(devlist)}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_pe_images(path: Path, natives: list[Path], spirvs: list[Path], devlist: str) -> None:
    """The PE equivalent for MSVC / clang-cl. Untested: no Windows toolchain here.

    link.exe keeps 8 characters of a section name in an image, so the long
    bundle names survive only in the object file; the .tgtimg table is what
    an extractor follows in the DLL.
    """
    out = [f"/* generated by canary_build.py for device list {devlist} */", "#include <stdint.h>"]
    entries: list[tuple[str, int, int]] = []
    for section, images, kind in ((NATIVE_SECTION, natives, 0), (SPIRV_SECTION, spirvs, 1)):
        out.append(f'#pragma section("{section}", read)')
        for image in images:
            data = image.read_bytes()
            name = f"canary_img{len(entries)}"
            body = ",".join(str(b) for b in data)
            out.append(f'__declspec(allocate("{section}")) __declspec(align(64)) const uint8_t {name}[{len(data)}] = {{{body}}};')
            entries.append((name, len(data), kind))
    out.append('#pragma section(".tgtimg", read)')
    out.append("struct canary_image { const uint8_t *start; uint64_t size; };")
    table = ", ".join(f"{{{name}, {size}}}" for name, size, _ in entries)
    out.append(f'__declspec(allocate(".tgtimg")) const struct canary_image canary_tgtimg[] = {{{table}}};')
    out.append(f"const uint64_t canary_tgtimg_count = {len(entries)};")
    out.append("const uint8_t canary_image_kinds[] = {" + ", ".join(str(k) for _, _, k in entries) + "};")
    out.append(f"const char canary_devlist_text[] = {_asm_string(devlist)};")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def link_library(objects: list[Path], natives: list[Path], spirvs: list[Path], devlist: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / library_name()
    cc = _compiler()
    start = time.monotonic()
    if MINGW:
        images = out_dir / "images_pe.S"
        write_mingw_images(images, natives, spirvs, devlist)
        _run([cc, "-shared", "-o", str(lib), *map(str, objects), str(images)], "link")
    elif IS_WINDOWS:
        images = out_dir / "images_pe.c"
        write_pe_images(images, natives, spirvs, devlist)
        _run([cc, "/nologo", "/LD", str(images), *map(str, objects), f"/Fe{lib}", f"/Fo{out_dir}\\"], "link", cwd=out_dir)
    else:
        images = out_dir / "images.S"
        write_elf_images(images, natives, spirvs, devlist)
        _run([cc, "-shared", "-fPIC", "-o", str(lib), *map(str, objects), str(images)], "link")
    log(f"link {lib.name} [{devlist}]: linked ({time.monotonic() - start:.2f} s)")
    return lib


def build_library(build_dir: Path, devlist: str, destination: Path) -> None:
    """Build the GPU library for ``devlist`` in ``build_dir``; copy it to ``destination``."""
    devices = [d.strip() for d in devlist.split(",") if d.strip()]
    devlist = ",".join(devices)
    tree = build_dir / "canary"
    ocloc = find_ocloc()
    # An empty list builds what IPEX builds without USE_AOT_DEVLIST: SPIR-V
    # only, compiled by the driver at first use (the JIT-only fallback wheel).
    log(f"build tree {tree}, device list {devlist or '(empty: JIT-only, SPIR-V images alone)'}, ocloc {ocloc}")
    counts = {"compiled": 0, "reused": 0, "device_compiled": 0, "device_reused": 0}
    spirvs = [compile_spirv(ocloc, k, tree / "spirv", devices[0] if devices else None, counts) for k in KERNELS]
    objects = [compile_host(s, tree / "host", counts) for s in HOST_SOURCES]
    dev_dir = tree / "device" / _slug(devlist)
    natives = [compile_native(ocloc, spv, devlist, dev_dir, counts) for spv in spirvs] if devices else []
    lib = link_library(objects, natives, spirvs, devlist, tree / "link" / (_slug(devlist) if devices else "jit"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lib, destination)
    log(
        f"summary: recompiled {counts['compiled']}, reused {counts['reused']} "
        f"(SPIR-V + host objects); device images compiled {counts['device_compiled']}, "
        f"reused {counts['device_reused']}; relinked 1"
    )
