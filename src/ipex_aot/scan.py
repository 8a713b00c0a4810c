"""What a library holds: the SYCL device images embedded in a PE DLL or an ELF shared object.

DPC++ puts native (AOT) images in ``__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen``,
SPIR-V (JIT) images in ``__CLANG_OFFLOAD_BUNDLE__sycl-spir64`` and, on ELF, a
``.tgtimg`` table of (u64 address, u64 size) pairs, one per image. The scan
finds the images through, in this order: the ``.tgtimg`` table, the bundle
sections (full names, names from the COFF string table, or names cut to 8
bytes by link.exe), and, when nothing is named, a byte-pattern search of the
whole file for ``!<arch>`` fat binaries, zebin ELF headers and SPIR-V magic.

Inside an image:

* an ocloc fat binary (GNU ``ar``): entries ``64.<generation>`` are native
  images for that generation, ``generic_ir`` is SPIR-V, ``pad_N`` is padding;
* a zebin (ELF, ``e_machine`` 205): the ``.note.intelgt.compat`` note gives
  the product config (IP version bits: architecture 10, release 8,
  reserved 8, revision 6, as in compute-runtime's ``HardwareIpVersion``)
  when the compiler writes it (newer ocloc). Older ocloc (22.43 here) writes
  only the product family and the hardware revision; those are matched
  against the signatures of binaries the local ocloc makes for every
  generation it knows (cached per ocloc version). That is the test the driver
  itself applies when it loads a binary, so a match means "runs natively".
  Several generations can share one signature (DG2 revision 0 is 12.55.0,
  12.56.0 and 12.57.0); the image then counts for each of them;
* a legacy patch-token binary (``CTNI`` header, raw or inside ocloc's
  OpenCL ELF container): the header has only the GFX core family and the
  stepping; matched the same way against patch-token signatures, which are
  coarser (one core family spans many products) and reported as such;
* SPIR-V (magic ``0x07230203``).

The file is memory-mapped and only headers are read, so a 2.3 GB library
takes well under a second. Every offset is bounds-checked and every loop
capped: a truncated or malformed file gives a one-line :class:`ScanError`.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
import json
import mmap
import os
import re
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipex_aot import archive as archive_mod
from ipex_aot import elf, log
from ipex_aot.build import read_build_record
from ipex_aot.errors import IpexAotError, RecipeError, ScanError, ToolchainError, UsageError
from ipex_aot.fsutil import read_json, sha256_file, write_json
from ipex_aot.generation import generation_order, is_generation
from ipex_aot.intelgt import EM_INTELGT, compat_note
from ipex_aot.ocloc import find_ocloc
from ipex_aot.platforms import host_platform
from ipex_aot.recipe import PLATFORMS, Recipe, load_recipe, recipe_name
from ipex_aot.settings import Settings
from ipex_aot.sevenz import SIGNATURE as SEVENZ_MAGIC
from ipex_aot.signing import add_trust_arguments, check_trust, resolve_trust
from ipex_aot.untrusted import not_a_regular_file, printable

NATIVE_SECTION = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen"
SPIRV_SECTION = "__CLANG_OFFLOAD_BUNDLE__sycl-spir64"
BUNDLE_PREFIX = "__CLANG_"  # what link.exe leaves of both names
TGTIMG = ".tgtimg"
AR_MAGIC = b"!<arch>\n"
ELF_MAGIC = elf.MAGIC
SPIRV_MAGIC = b"\x03\x02\x23\x07"
CTNI_MAGIC = b"CTNI"
#: DPC++ 2025+ compresses device images (``--offload-compress``) as zstd frames; the .tgtimg
#: size of such an entry is the uncompressed size (checked on oneMKL 2026.2's libraries).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Largest image a zstd frame may expand to: a cap against decompression bombs.
MAX_UNCOMPRESSED = 1 << 31
#: ocloc's OpenCL ELF container (ET_OPENCL_SOURCE .. ET_OPENCL_DEBUG), which wraps patch tokens.
ET_OPENCL = range(0xFF01, 0xFF06)
OPENCL_DEVICE_BINARY = "Intel(R) OpenCL Device Binary"
#: Caps that turn a malformed file into an error instead of a hang.
MAX_IMAGES = 1 << 20
MAX_AR_MEMBERS = 1 << 16
SIGNATURES_SCHEMA = 1
_GEN_ENTRY_RE = re.compile(r"^(?:32|64)\.(\d+\.\d+\.\d+)$")


# --- results -------------------------------------------------------------------------------

@dataclass
class Image:
    """One device binary found in the file."""

    kind: str  # "native" | "spirv"
    format: str  # "zebin" | "patchtokens" | "spirv" | "unknown"
    offset: int
    size: int
    generation: str | None = None  # exact, when the entry name or the product-config note says it
    candidates: tuple[str, ...] = ()  # generations whose signature matches (runs natively on each)
    how: str = ""
    #: (file offset, bytes) of the zstd frame the image is stored in; OFFSET is then the frame's
    #: offset and SIZE the image's own (uncompressed) size.
    zstd_frame: tuple[int, int] | None = None

    @property
    def generations(self) -> tuple[str, ...]:
        return (self.generation,) if self.generation else self.candidates

    def to_json(self) -> dict:
        out = {"kind": self.kind, "format": self.format, "offset": self.offset, "size": self.size,
               "generation": self.generation, "candidates": list(self.candidates), "how": self.how}
        if self.zstd_frame:
            out["zstd_frame"] = {"offset": self.zstd_frame[0], "size": self.zstd_frame[1]}
        return out


@dataclass
class ScanResult:
    """What a library holds, in the words a user asks in: which GPUs run it natively, and can others JIT it."""

    path: str
    format: str  # "elf" | "pe" | "ar" | "zebin" | "spirv" | "patchtokens"
    #: Generations with a native (AOT) image: these GPUs run the library without compiling anything.
    native: list[str]
    #: True when any SPIR-V is present (a JIT image or a fat binary's generic_ir): other GPUs can
    #: still run the library after the driver compiles it on first use.
    jit: bool
    images: int  # top-level embedded images (.tgtimg entries, or blobs found in sections / by pattern)
    bytes_per_generation: dict[str, int]
    native_images: int = 0  # per-generation native binaries (fat-binary entries counted one by one)
    spirv_images: int = 0  # SPIR-V modules: JIT images and generic_ir entries
    found_by: str = ""  # "tgtimg" | "sections" | "byte-pattern" | "file"
    sections: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # native images whose generation is unknown
    details: list[Image] = field(default_factory=list)
    #: A fat binary carries a generic_ir entry (ocloc kept the SPIR-V beside its native images).
    generic_ir: bool = False
    compressed_images: int = 0  # top-level images stored as zstd frames
    #: Things a reader of the file should know that are not errors (an image that runs past its section).
    notes: list[str] = field(default_factory=list)

    @property
    def generations(self) -> list[str]:
        """Same as :attr:`native` (the name the callers used before the report said it plainly)."""
        return self.native

    @property
    def device_code(self) -> bool:
        return bool(self.images or self.native_images or self.spirv_images)

    @property
    def summary(self) -> str:
        """The answer first: which GPUs run it natively, and what the others do."""
        if not self.device_code:
            return "no SYCL device code"
        parts = []
        if self.native:
            parts.append(f"AOT for {', '.join(self.native)}")
        elif self.native_images:
            parts.append(f"{self.native_images} native image(s) for generations not identified here")
        if self.jit and (self.native or self.native_images):
            parts.append("SPIR-V present, so other GPUs fall back to JIT")
        elif self.jit:
            parts.append("JIT only: SPIR-V and no native image, so every GPU compiles it on first use")
        else:
            parts.append("no SPIR-V, so other GPUs cannot run it")
        return "; ".join(parts)

    def to_json(self, details: bool = False) -> dict:
        out = {"path": self.path, "summary": self.summary, "device_code": self.device_code,
               "native": self.native, "jit": self.jit, "format": self.format, "images": self.images,
               "bytes_per_generation": self.bytes_per_generation, "native_images": self.native_images,
               "spirv_images": self.spirv_images, "compressed_images": self.compressed_images,
               "found_by": self.found_by, "sections": self.sections, "unresolved": self.unresolved}
        if details:
            out["fat_binary_generic_ir"] = self.generic_ir
            out["notes"] = self.notes
            out["details"] = [i.to_json() for i in self.details]
        return out


# --- signatures: what the local ocloc writes for each generation ------------------------------

@dataclass
class Signatures:
    """(product family, revision) -> generations for zebins; (core, stepping) for patch tokens."""

    ocloc_version: str
    zebin: dict[tuple[int, int], list[str]]
    patchtokens: dict[tuple[int, int], list[str]]

    def to_json(self) -> dict:
        return {"schema": SIGNATURES_SCHEMA, "ocloc": self.ocloc_version,
                "zebin": [[f, r, g] for (f, r), g in sorted(self.zebin.items())],
                "patchtokens": [[c, s, g] for (c, s), g in sorted(self.patchtokens.items())]}

    @classmethod
    def from_json(cls, d: dict) -> Signatures:
        if d.get("schema") != SIGNATURES_SCHEMA:
            raise ValueError("schema")
        return cls(str(d["ocloc"]), {(int(f), int(r)): list(g) for f, r, g in d["zebin"]},
                   {(int(c), int(s)): list(g) for c, s, g in d["patchtokens"]})


_SIGNATURE_KERNEL = "kernel void k(global int *a) { a[get_global_id(0)] = 1; }\n"


def build_signatures(settings: Settings) -> Signatures:
    """Compile one kernel for every generation the local ocloc knows (two calls: zebin and patch tokens)."""

    ocloc = find_ocloc(settings)
    gens: set[str] = set()
    for name in ocloc.acronyms():
        gens.update(ocloc.ids(name))
    if not gens:
        raise ToolchainError(f"{ocloc.path} lists no generations (`ocloc ids`); cannot map device binaries")
    devices = ",".join(sorted(gens, key=generation_order))
    tables: dict[str, dict[tuple[int, int], list[str]]] = {"zebin": {}, "patchtokens": {}}
    with tempfile.TemporaryDirectory(prefix="ipex-aot-signatures-") as tmp:
        work = Path(tmp)
        (work / "k.cl").write_text(_SIGNATURE_KERNEL, encoding="utf-8")
        # The OpenCL C front end once; from SPIR-V each device costs a third as much.
        _ocloc_checked(ocloc, ["compile", "-file", "k.cl", "-device", min(gens, key=generation_order), "-spv_only", "-q",
                               "-output", "k", "-output_no_suffix"], work, work / "k.spv")

        def one(fmt: str) -> bytes:
            out = work / fmt
            _ocloc_checked(ocloc, ["compile", "-file", "k.spv", "-spirv_input", "-device", devices, "--format", fmt,
                                   "-exclude_ir", "-q", "-output", fmt, "-output_no_suffix"], work, out)
            return out.read_bytes()

        with ThreadPoolExecutor(max_workers=2) as pool:
            outputs = dict(zip(tables, pool.map(one, tables), strict=True))
        for fmt, data in outputs.items():
            view = memoryview(data)
            for name, off, size in _ar_members(view, 0, len(data), f"ocloc {fmt} output"):
                m = _GEN_ENTRY_RE.match(name)
                if not m:
                    continue
                sig = _signature(view[off:off + size])
                if sig and sig[0] == fmt:
                    tables[fmt].setdefault(sig[1], []).append(m.group(1))
    return Signatures(ocloc.version, tables["zebin"], tables["patchtokens"])


def _ocloc_checked(ocloc: Any, args: list[str], cwd: Path, out: Path) -> None:
    proc = ocloc.run(args, cwd=cwd, timeout=600)
    if proc.returncode != 0 or not out.is_file():
        raise ToolchainError(f"ocloc could not compile the signature kernel ({' '.join(args[:6])} …): "
                             f"{(proc.stdout + proc.stderr).strip()[-300:]}")


def load_signatures(settings: Settings) -> Signatures:
    """:func:`build_signatures`, cached in ``settings.cache_dir`` per ocloc version."""

    ocloc = find_ocloc(settings)
    cache = settings.cache_dir / "scan" / f"signatures-{re.sub(r'[^0-9A-Za-z_.-]', '_', ocloc.version)}.json"
    try:
        return Signatures.from_json(read_json(cache))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    sigs = build_signatures(settings)
    write_json(cache, sigs.to_json())
    return sigs


# --- low-level readers ---------------------------------------------------------------------

_name = elf.safe_name


@dataclass
class FileSection:
    """A section of an ELF or PE file, as the scanner and the packer (:mod:`ipex_aot.literals`) see it."""

    name: str
    addr: int  # virtual address (ELF sh_addr; PE image base + RVA)
    offset: int  # file offset, -1 when the section has no file data
    size: int  # bytes of file data
    rva: int = -1
    #: False for code, symbol, string and relocation tables: no linker puts device images there.
    searchable: bool = True


def _elf_sections(b: elf.Reader) -> list[FileSection]:
    return [FileSection(x.name, x.addr, x.offset, x.size, -1,
                     # SHF_EXECINSTR; SYMTAB STRTAB RELA HASH DYNAMIC REL DYNSYM and the GNU/OS-specific tables.
                     not (x.flags & 0x4) and x.type not in (2, 3, 4, 5, 6, 9, 11) and x.type < 0x60000000)
            for x in elf.sections(b)]


def _zstd_frame(v: memoryview, off: int, end: int) -> tuple[int, int | None] | None:
    """(compressed length, declared content size or None) of the zstd frame at OFF; None if not one.

    Only the frame and block headers are read (RFC 8878 sections 3.1.1.1-3.1.1.2), so the
    frame's extent is known without decompressing it.
    """
    if off + 6 > end or bytes(v[off:off + 4]) != ZSTD_MAGIC:
        return None
    fhd = v[off + 4]
    if fhd & 0x08:  # reserved bit
        return None
    single = (fhd >> 5) & 1
    fcs_len = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    pos = off + 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    content: int | None = None
    if fcs_len:
        if pos + fcs_len > end:
            return None
        content = int.from_bytes(bytes(v[pos:pos + fcs_len]), "little") + (256 if fcs_len == 2 else 0)
    pos += fcs_len
    for _ in range(MAX_IMAGES):
        if pos + 3 > end:
            return None
        h = int.from_bytes(bytes(v[pos:pos + 3]), "little")
        btype, bsize = (h >> 1) & 3, h >> 3
        if btype == 3:
            return None
        pos += 3 + (1 if btype == 1 else bsize)
        if pos > end:
            return None
        if h & 1:
            pos += 4 if fhd & 0x04 else 0  # content checksum
            return (pos - off, content) if pos <= end else None
    return None


def _zstd_size(dctx: Any, packed: memoryview) -> int:
    """Uncompressed size of a frame that does not declare it, counted in chunks (never held whole)."""
    total = 0
    with dctx.stream_reader(packed) as reader:
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if total > MAX_UNCOMPRESSED:
                raise ScanError(f"a zstd frame expands past {MAX_UNCOMPRESSED} bytes")
    return total


def pe_sections(b: elf.Reader) -> list[FileSection]:
    """The section table of the PE file in B (an MZ header first); code sections are not ``searchable``."""
    lfanew, = b.unpack("<I", 0x3C, "DOS header")
    sig = bytes(b.v[lfanew:lfanew + 4]) if lfanew + 4 <= b.n else b""
    if sig != b"PE\0\0":
        raise ScanError(f"{b.path}: an MZ file without a PE header at {lfanew:#x}; not a Windows DLL")
    _machine, nsec, _ts, symptr, nsyms, optsize, _ch = b.unpack("<HHIIIHH", lfanew + 4, "COFF header")
    opt = lfanew + 24
    magic, = b.unpack("<H", opt, "optional header")
    if magic == 0x20B:
        image_base, = b.unpack("<Q", opt + 24, "optional header")
    elif magic == 0x10B:
        image_base, = b.unpack("<I", opt + 28, "optional header")
    else:
        image_base = 0
    table = opt + optsize
    b.need(table, 40 * nsec, "PE section table")
    strtab = symptr + 18 * nsyms if symptr else -1
    out = []
    for i in range(nsec):
        raw_name, vsize, va, rawsize, rawptr = struct.unpack_from("<8sIIII", b.v, table + 40 * i)
        characteristics, = struct.unpack_from("<I", b.v, table + 40 * i + 36)
        searchable = not characteristics & 0x20000020  # IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE
        name = _name(raw_name.rstrip(b"\0"))
        if name.startswith("/") and name[1:].isdigit() and strtab >= 0:
            name = b.cstr(strtab + int(name[1:]), 1024, "COFF string table")
        size = min(vsize, rawsize) if vsize else rawsize
        if rawptr and size:
            b.need(rawptr, size, f"section {name}")
            out.append(FileSection(name, image_base + va, rawptr, size, va, searchable))
        else:
            out.append(FileSection(name, image_base + va, -1, 0, va))
    return out


def _ar_members(v: memoryview, start: int, end: int, path: str, *,
                strict: bool = True) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of each member of the GNU/BSD ar archive at v[start:end].

    Not STRICT: the archive's length is unknown (images packed back to back
    in a section), so the first thing that is not a member header ends it.
    """
    pos = start + 8
    longnames = b""
    for _ in range(MAX_AR_MEMBERS):
        if pos + 60 > end:
            if strict and pos < end and any(bytes(v[pos:end])):
                raise ScanError(f"{path}: truncated fat binary: member header at offset {pos:#x} is cut off")
            return
        head = bytes(v[pos:pos + 60])
        if head[58:60] != b"`\n":
            if not any(head) or not strict:  # zero padding after the last member, or the next image
                return
            raise ScanError(f"{path}: malformed fat binary: bad member header at offset {pos:#x}")
        raw = _name(head[:16]).rstrip()
        try:
            size = int(head[48:58].decode("ascii").strip() or "0")
        except ValueError:
            raise ScanError(f"{path}: malformed fat binary: bad member size at offset {pos:#x}") from None
        data = pos + 60
        if size < 0 or data + size > end:
            raise ScanError(f"{path}: truncated fat binary: member {raw!r} at offset {pos:#x} needs {size} bytes, "
                            f"{max(0, end - data)} left")
        if raw.startswith("#1/") and raw[3:].isdigit():  # BSD: name stored before the data
            n = int(raw[3:])
            if n > size:
                raise ScanError(f"{path}: malformed fat binary: member name longer than the member at {pos:#x}")
            name = _name(bytes(v[data:data + n]).rstrip(b"\0"))
            data, size = data + n, size - n
        elif raw == "//":
            longnames = bytes(v[data:data + size])
            name = ""
        elif raw in ("/", "/SYM64/"):
            name = ""
        elif raw.startswith("/") and raw[1:].isdigit():
            idx = int(raw[1:])
            if idx >= len(longnames):
                raise ScanError(f"{path}: malformed fat binary: long name /{idx} outside the name table")
            stop = longnames.find(b"/\n", idx)
            name = _name(longnames[idx:stop if stop >= 0 else None])
        else:
            name = raw[:-1] if raw.endswith("/") else raw
        if name:
            yield name, data, size
        pos = data + size + ((data + size) & 1)
    raise ScanError(f"{path}: malformed fat binary: more than {MAX_AR_MEMBERS} members")


def _signature(v: memoryview) -> tuple[str, tuple[int, int]] | None:
    """("zebin", (product family, revision)) or ("patchtokens", (core, stepping)) of one native binary."""
    info = _native_info(v)
    if info is None:
        return None
    fmt, _size, _ip, sig = info
    return (fmt, sig) if sig else None


def _native_info(v: memoryview) -> tuple[str, int, str | None, tuple[int, int] | None] | None:
    """(format, size, exact IP version or None, signature) of the native binary at the start of V."""
    head = bytes(v[:4])
    if head == CTNI_MAGIC:
        if len(v) < 28:
            return None
        _m, _ver, core, _ptr, _nk, stepping, _pl = struct.unpack_from("<7I", v, 0)
        return "patchtokens", len(v), None, (core, stepping)
    if head != ELF_MAGIC or len(v) < 64:
        return None
    e_type, e_machine = struct.unpack_from("<HH", v, 16)
    found = elf.device_sections(v)
    if found is None:
        return None
    size, secs = found
    if e_machine == EM_INTELGT:
        note = compat_note(v, secs)
        family, revision, ip = note.family, note.stepping, note.ip
        sig = (family, revision) if family is not None and revision is not None else None
        return "zebin", size, ip, sig
    if e_type in ET_OPENCL:
        for name, _t, _f, _a, off, sz in secs:
            if name == OPENCL_DEVICE_BINARY and sz >= 28 and bytes(v[off:off + 4]) == CTNI_MAGIC:
                _m, _ver, core, _ptr, _nk, stepping, _pl = struct.unpack_from("<7I", v, off)
                return "patchtokens", size, None, (core, stepping)
        return "patchtokens", size, None, None
    return None


# --- the scanner ---------------------------------------------------------------------------

class _Scanner:
    def __init__(self, path: str, view: memoryview, signatures: Callable[[], Signatures | None]) -> None:
        self.path = path
        self.b = elf.Reader(view, path)
        self.v = view
        self.images: list[Image] = []
        self.top = 0
        self.generic_ir = False
        self.compressed = 0
        self.notes: list[str] = []
        self._signatures = signatures
        self._sigs: Signatures | None = None
        self._sigs_tried = False
        self._dctx: Any = None
        self._frame: tuple[int, tuple[int, int | None]] | None = None  # (offset, frame) _locate just parsed

    def sigs(self) -> Signatures | None:
        if not self._sigs_tried:
            self._sigs_tried = True
            self._sigs = self._signatures()
        return self._sigs

    # one top-level blob
    def blob(self, off: int, size: int, hint: str, strict: bool = True, *, expect: int | None = None) -> int:
        """Record the images of the blob at OFF (at most SIZE bytes); returns the bytes it used.

        Not STRICT: SIZE is only a limit (the region's end), as for a fat binary
        found in a section without a table, which ends where its members end.
        EXPECT: the uncompressed size a table gives for the image, checked when it is a zstd frame.
        """
        self.top += 1
        if self.top > MAX_IMAGES:
            raise ScanError(f"{self.path}: more than {MAX_IMAGES} embedded images; not a library this tool understands")
        v = self.v[off:off + size]
        head = bytes(v[:8])
        if head[:4] == ZSTD_MAGIC:
            return self.zstd(off, size, hint, expect)
        if head == AR_MAGIC:
            return self.fat(off, len(v), strict=strict)
        if head[:4] == SPIRV_MAGIC:
            self.images.append(Image("spirv", "spirv", off, len(v), how=hint))
            return len(v)
        return self.native(off, v, hint, None)

    def zstd(self, off: int, limit: int, hint: str, expect: int | None) -> int:
        """An image stored as a zstd frame: its extent from the block headers, its kind from its own header.

        SPIR-V is recognised from the first bytes; a native image (zebin, fat binary) is
        decompressed whole, one at a time, because its target is in notes near its end.
        """
        frame = self._frame[1] if self._frame and self._frame[0] == off else _zstd_frame(self.v, off, off + limit)
        if frame is None:
            raise ScanError(f"{self.path}: {hint}: the zstd frame at {off:#x} is truncated or malformed "
                            f"(its blocks do not end within {limit} bytes)")
        flen, content = frame
        if expect is not None and content is not None and content != expect:
            raise ScanError(f"{self.path}: {hint}: the table gives {expect} bytes but the zstd frame at {off:#x} "
                            f"declares {content} uncompressed bytes; the library is malformed")
        if content is not None and content > MAX_UNCOMPRESSED:
            raise ScanError(f"{self.path}: {hint}: the zstd frame at {off:#x} declares {content} bytes; "
                            f"more than {MAX_UNCOMPRESSED} is not an image this tool reads")
        try:
            import zstandard
        except ImportError:
            raise ScanError(f"{self.path}: {hint}: the image at {off:#x} is zstd-compressed and the zstandard "
                            "package is missing; install ipex-aot with its dependencies (pip install zstandard)") from None

        packed = self.v[off:off + flen]
        where = f"zstd frame at {off:#x} ({flen} bytes)"
        self.compressed += 1
        if self._dctx is None:
            self._dctx = zstandard.ZstdDecompressor()
        dctx = self._dctx
        try:
            if content is not None and content <= 1 << 20:
                raw = dctx.decompress(packed, max_output_size=content)  # small: one call beats a stream
                head = raw[:8]
            else:
                raw = None
                with dctx.stream_reader(packed) as reader:
                    head = reader.read(8)
            if head[:4] == SPIRV_MAGIC:
                size = content if content is not None else _zstd_size(dctx, packed)
                self.images.append(Image("spirv", "spirv", off, size, how=f"{hint}: {where}", zstd_frame=(off, flen)))
                return flen
            if raw is None:
                raw = dctx.decompress(packed, max_output_size=MAX_UNCOMPRESSED)
        except zstandard.ZstdError as e:
            raise ScanError(f"{self.path}: {hint}: the {where} does not decompress: {e}") from None
        inner = _Scanner(f"{self.path}: {where}", memoryview(raw), self.sigs)
        inner.blob(0, len(raw), hint)
        for img in inner.images:
            img.how = f"{img.how} ({where}, at +{img.offset:#x} uncompressed)"
            img.offset, img.zstd_frame = off, (off, flen)
            self.images.append(img)
        self.generic_ir |= inner.generic_ir
        return flen

    def fat(self, off: int, size: int, strict: bool = True) -> int:
        end = off + size
        last = off + 8
        for name, data, msize in _ar_members(self.v, off, end, self.path, strict=strict):
            last = data + msize
            if name.startswith("pad_"):
                continue
            if name == "generic_ir":
                self.generic_ir = True
                self.images.append(Image("spirv", "spirv", data, msize, how="fat-binary entry generic_ir"))
                continue
            m = _GEN_ENTRY_RE.match(name)
            self.native(data, self.v[data:data + msize], f"fat-binary entry {name}", m.group(1) if m else None)
        return size if strict else last - off

    def native(self, off: int, v: memoryview, hint: str, named: str | None) -> int:
        if named:
            # The entry name is ocloc's own statement of the target; only peek at the format.
            head = bytes(v[:4])
            fmt = "zebin" if head == ELF_MAGIC and len(v) >= 20 and v[18] == EM_INTELGT and v[19] == 0 else (
                "patchtokens" if head in (ELF_MAGIC, CTNI_MAGIC) else "unknown")
            self.images.append(Image("native", fmt, off, len(v), generation=named, how=hint))
            return len(v)
        info = _native_info(v)
        if info is None:
            self.images.append(Image("native", "unknown", off, len(v), how=f"{hint}: not a device binary ocloc writes"))
            return len(v)
        fmt, size, ip, sig = info
        if ip:
            self.images.append(Image("native", fmt, off, size, generation=ip, how=f"{hint}: product-config note"))
            return size
        cands: tuple[str, ...] = ()
        what = (f"product family {sig[0]}, revision {sig[1]}" if fmt == "zebin" else
                f"GFX core {sig[0]:#x}, stepping {sig[1]}") if sig else "no target information"
        how = f"{hint}: {what}"
        if sig:
            sigs = self.sigs()
            if sigs is None:
                how += " (no ocloc here to map it to a generation)"
            else:
                table = sigs.zebin if fmt == "zebin" else sigs.patchtokens
                cands = tuple(table.get(sig, ()))
                how += f" = ocloc {sigs.ocloc_version} signature of {', '.join(cands) or 'no generation'}"
        gen = cands[0] if len(cands) == 1 else None
        self.images.append(Image("native", fmt, off, size, generation=gen, candidates=() if gen else cands, how=how))
        return size

    # ways to find blobs
    def from_table(self, table: FileSection, sections: list[FileSection], segments: list[elf.Segment]) -> bool:
        if table.offset < 0 or table.size < 16:
            return False
        if table.size // 16 > MAX_IMAGES:
            raise ScanError(f"{self.path}: .tgtimg lists {table.size // 16} images; more than {MAX_IMAGES} "
                            "is not a library this tool understands")
        entries = [struct.unpack_from("<QQ", self.v, table.offset + i) for i in range(0, table.size - 15, 16)]
        if not entries or all(a == 0 for a, _ in entries):
            return False  # relocations not applied in the file: fall back to the sections
        spans = sorted(((x.addr, x) for x in sections if x.offset >= 0 and x.size), key=lambda t: t[0])
        spans_rva = sorted(((x.rva, x) for x in sections if x.offset >= 0 and x.size and x.rva >= 0),
                           key=lambda t: t[0])
        for i, (addr, size) in enumerate(entries):
            off, end = self._locate(i, addr, size, spans, spans_rva, segments)
            if bytes(self.v[off:off + 4]) == ZSTD_MAGIC:
                self.blob(off, end - off, f".tgtimg entry {i}", expect=size)
            else:
                self.blob(off, size, f".tgtimg entry {i}")
        return True

    def _locate(self, i: int, addr: int, size: int, spans: list[tuple[int, FileSection]],
                spans_rva: list[tuple[int, FileSection]], segments: list[elf.Segment]) -> tuple[int, int]:
        """(file offset, end of the region it may use) of .tgtimg entry I.

        The section that holds the entry's start says where it is; a compressed image's
        extent is its zstd frame's (the table gives the uncompressed size). An image that
        runs past its section but stays inside a PT_LOAD segment's file data is read from
        the segment (the loader maps it so) with a note; anything else is named precisely.
        """
        sec = _containing(spans, addr, 1) or _containing(spans_rva, addr, 1)
        seg = next((g for g in segments if g.addr <= addr < g.addr + g.size), None)
        if sec is not None:
            base = sec.addr if sec.addr <= addr < sec.addr + sec.size else sec.rva
            off = sec.offset + (addr - base)
        elif seg is not None:
            off = seg.offset + (addr - seg.addr)
        else:
            raise ScanError(f"{self.path}: .tgtimg entry {i} points to {addr:#x}+{size}, which is in no section and "
                            "no PT_LOAD segment of the file; the library is truncated or malformed")
        frame = _zstd_frame(self.v, off, len(self.v))
        self._frame = (off, frame) if frame else None
        extent = frame[0] if frame else size
        what = f"{'zstd frame' if frame else 'image'} at {addr:#x} (+{extent} bytes, ends {addr + extent:#x})"
        if sec is not None and off + extent <= sec.offset + sec.size:
            return off, sec.offset + sec.size
        sec_text = (f"runs {addr + extent - (base + sec.size)} bytes past the end of section {sec.name} "
                    f"({base + sec.size:#x})" if sec is not None else "lies in no section")
        if seg is not None and addr + extent <= seg.addr + seg.size:
            self.notes.append(f".tgtimg entry {i}: the {what} {sec_text}; read from PT_LOAD segment {seg.index} "
                              f"({seg.addr:#x}-{seg.addr + seg.size:#x}), which maps it")
            return off, seg.offset + seg.size
        seg_text = (f" and {addr + extent - (seg.addr + seg.size)} bytes past the file data of PT_LOAD segment "
                    f"{seg.index} ({seg.addr + seg.size:#x})" if seg is not None else "")
        raise ScanError(f"{self.path}: .tgtimg entry {i}: the {what} {sec_text}{seg_text}; "
                        "the library is truncated or malformed")

    def walk(self, start: int, end: int, hint: str, require: bool, zstd: bool = False) -> None:
        """Images laid out one after another in [start, end): parse, skip, find the next magic.

        Images usually follow each other after a little zero padding, so the
        next one is first looked for right there; only when that fails is the
        region searched, which keeps a 1.5 GB section to one pass. ZSTD: also
        take zstd frames, which only a bundle section is known to hold (four
        magic bytes and a few block headers are too easily met in other data).
        """
        patterns = _PATTERNS + ((ZSTD_MAGIC,) if zstd else ())
        finder = _MagicFinder(self.v, start, end, patterns)
        pos = start
        found = 0
        while pos < end:
            nxt = self._chained(pos, end, patterns) if found else None
            if nxt is None:
                nxt = finder.next(pos)
            if nxt is None:
                break
            pos = nxt
            head = bytes(self.v[pos:pos + 8])
            if head[:4] in (SPIRV_MAGIC, CTNI_MAGIC):
                # Neither SPIR-V nor a raw patch-token program has a length field:
                # it runs to the next image or the end of the region.
                stop = finder.next(pos + 1)
                used = self.blob(pos, (stop if stop is not None else end) - pos, hint)
            elif head == AR_MAGIC:
                used = self.blob(pos, end - pos, hint, strict=False)
            else:
                used = self.blob(pos, end - pos, hint)
            found += 1
            pos += max(used, 1)
        if require and not found:
            raise ScanError(f"{self.path}: {hint} holds no device image ocloc writes")

    def _chained(self, pos: int, end: int, patterns: tuple[bytes, ...]) -> int | None:
        """The image that starts right after POS, past up to 4 KiB of zero padding."""
        chunk = bytes(self.v[pos:min(end, pos + 4096)])
        at = pos + len(chunk) - len(chunk.lstrip(b"\0"))
        if at >= pos + len(chunk):
            return None
        head = bytes(self.v[at:at + 8])
        for pat in patterns:
            if head.startswith(pat) and _plausible(self.v, pat, at, end):
                return at
        return None


_PATTERNS = (AR_MAGIC, ELF_MAGIC, SPIRV_MAGIC, CTNI_MAGIC)


def _merge(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(regions):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _containing(spans: list[tuple[int, FileSection]], addr: int, size: int) -> FileSection | None:
    i = bisect.bisect_right(spans, addr, key=lambda t: t[0]) - 1
    if i >= 0:
        base, sec = spans[i]
        if base <= addr and addr + size <= base + sec.size:
            return sec
    return None


class _MagicFinder:
    """Next offset of a plausible image header.

    The patterns are searched in growing windows, and each pattern remembers
    how far it has been searched and its next hit, so a pattern that never
    occurs does not cost a pass over the whole region per image, nor even
    once when another pattern is found near the start.
    """

    def __init__(self, v: memoryview, start: int, end: int, patterns: tuple[bytes, ...]) -> None:
        self.patterns = patterns
        # mmap.find / bytes.find search in C; offsets are those of V, which starts at the file's start.
        self.obj = v.obj if isinstance(v.obj, mmap.mmap | bytes) and len(v.obj) == len(v) else bytes(v)
        self.end = end
        self.v = v
        self.cache: dict[bytes, tuple[int, int, int]] = {}  # pattern -> (searched from, hit or -1, searched up to)

    def _find(self, pat: bytes, pos: int, hi: int) -> int:
        """First plausible hit of PAT in [pos, hi), or -1."""
        s0, hit, upto = self.cache.get(pat, (pos, -1, pos))
        if pos < s0 or 0 <= hit < pos:
            s0, hit, upto = pos, -1, pos
        if hit >= 0:
            return hit if hit < hi else -1
        start = max(pos, upto)
        while start < hi:
            h = self.obj.find(pat, start, min(self.end, hi + len(pat) - 1))
            if h < 0:
                upto = hi
                break
            if _plausible(self.v, pat, h, self.end):
                hit = upto = h
                break
            start = h + 1
        else:
            upto = max(upto, hi)
        self.cache[pat] = (s0, hit, upto)
        return hit if 0 <= hit < hi else -1

    def next(self, pos: int) -> int | None:
        window = 1 << 16
        lo = pos
        while lo < self.end:
            hi = min(self.end, lo + window)
            hits = [h for h in (self._find(p, pos, hi) for p in self.patterns) if h >= 0]
            if hits:
                return min(hits)
            lo, window = hi, min(window * 4, 1 << 28)
        return None


def _plausible(v: memoryview, pat: bytes, at: int, end: int) -> bool:
    """Whether the PAT hit at AT looks like the start of an image (not stray bytes)."""
    if pat == SPIRV_MAGIC:
        if at % 4 or at + 20 > end:
            return False
        version, _gen, bound, schema = struct.unpack_from("<IIII", v, at + 4)
        return 0x10000 <= version <= 0x10600 and not version & 0xFF0000FF and 0 < bound < (1 << 24) and schema == 0
    if pat == ELF_MAGIC:
        if at + 64 > end or v[at + 4] != 2 or v[at + 5] != 1:
            return False
        e_type, e_machine = struct.unpack_from("<HH", v, at + 16)
        return e_machine == EM_INTELGT or (e_type in ET_OPENCL and e_machine == 0)
    if pat == AR_MAGIC:
        return at + 68 <= end and bytes(v[at + 66:at + 68]) == b"`\n"
    if pat == ZSTD_MAGIC:
        return _zstd_frame(v, at, end) is not None
    if pat == CTNI_MAGIC:
        if at + 28 > end:
            return False
        _m, version, _core, ptr, _nk, stepping, _pl = struct.unpack_from("<7I", v, at)
        return ptr in (4, 8) and version < 10000 and stepping < 64
    return True


def _open(path: Path) -> tuple[Any, memoryview]:
    kind = not_a_regular_file(path)
    if kind:
        raise ScanError(f"{path}: is {kind}, not a library file; give the path of a .dll or .so")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below on every path, once mapped
    except OSError as e:
        raise ScanError(f"{path}: cannot open: {e.strerror or e}") from None
    try:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ScanError(f"{path}: empty file; not a library")
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        f.close()
        raise ScanError(f"{path}: cannot map: {e.strerror or e}") from None
    except BaseException:
        f.close()
        raise
    f.close()  # the mapping keeps its own reference
    return m, memoryview(m)


def scan_file(path: str | Path, *, settings: Settings | None = None,
              signatures: Signatures | None = None, method: str | None = None) -> ScanResult:
    """List the device images PATH embeds; ScanError on unreadable, truncated or malformed input.

    ``signatures`` (or, lazily, :func:`load_signatures` with ``settings``)
    map zebins without a product-config note and patch-token binaries to
    generations; without ocloc those images stay in ``unresolved``.
    ``method`` forces a way of finding images in a PE/ELF library
    (``"tgtimg"``, ``"sections"``, ``"byte-pattern"``), for tests and benchmarks.
    """
    if method not in (None, "tgtimg", "sections", "byte-pattern"):
        raise ValueError(f"method={method!r}")
    path = Path(path)

    def sigs() -> Signatures | None:
        if signatures is not None:
            return signatures
        try:
            return load_signatures(settings or Settings.from_env())
        except IpexAotError:
            return None

    mm, view = _open(path)
    try:
        return _scan(str(path), view, sigs, method)
    except (struct.error, IndexError, ValueError, OverflowError) as e:
        raise ScanError(f"{path}: malformed file: {e}") from None
    finally:
        # Slices still held by a propagating traceback keep the map alive; the GC closes it then.
        with contextlib.suppress(BufferError):
            view.release()
            mm.close()


def _scan(path: str, v: memoryview, sigs: Callable[[], Signatures | None], method: str | None = None) -> ScanResult:
    s = _Scanner(path, v, sigs)
    head = bytes(v[:8])
    names: list[str] = []
    found_by = "file"
    if head == AR_MAGIC:
        fmt = "ar"
        s.top = 1
        s.fat(0, len(v))
    elif head[:4] == SPIRV_MAGIC:
        fmt = "spirv"
        s.blob(0, len(v), "file")
    elif head[:4] == CTNI_MAGIC:
        fmt = "patchtokens"
        s.blob(0, len(v), "file")
    elif head[:4] == ELF_MAGIC and len(v) >= 20 and (v[18] == EM_INTELGT or
                                                     struct.unpack_from("<H", v, 16)[0] in ET_OPENCL):
        s.blob(0, len(v), "file")
        fmt = s.images[0].format if s.images else "zebin"
        if s.images and s.images[0].format == "unknown":
            raise ScanError(f"{path}: a device ELF whose headers are truncated or malformed")
    elif head[:4] == ELF_MAGIC or head[:2] == b"MZ":
        fmt = "elf" if head[:4] == ELF_MAGIC else "pe"
        sections = _elf_sections(s.b) if fmt == "elf" else pe_sections(s.b)
        segments = elf.segments(s.b) if fmt == "elf" else []
        names = [x.name for x in sections]
        bundles = [x for x in sections if x.name.startswith(BUNDLE_PREFIX) and x.offset >= 0]
        table = next((x for x in sections if x.name == TGTIMG), None)
        if method == "byte-pattern":
            bundles, table = [], None
        elif method == "sections":
            table = None
        if table is not None and s.from_table(table, sections, segments):
            found_by = "tgtimg"
        elif bundles:
            found_by = "sections"
            for sec in bundles:
                s.walk(sec.offset, sec.offset + sec.size, f"section {sec.name}", require=False, zstd=True)
        else:
            found_by = "byte-pattern"
            # Only data sections; without a section table (a stripped-down ELF) the data segments
            # the loader maps; a file with neither is searched whole.
            regions = [(x.offset, x.offset + x.size) for x in sections if x.searchable and x.offset >= 0 and x.size]
            if not sections:
                regions = [(g.offset, g.offset + g.size) for g in segments if not g.executable]
            for start, end in _merge(regions) or [(0, len(v))]:
                s.walk(start, end, "byte pattern", require=False)
    elif head[:6] == SEVENZ_MAGIC:
        raise ScanError(f"{path}: a 7z archive, not a library; check a release archive with "
                        f"`ipex-aot verify {path}`, or scan one library extracted from it")
    else:
        raise ScanError(f"{path}: not a PE DLL, an ELF library, an ocloc fat binary, a zebin or SPIR-V "
                        f"(starts with {head[:4].hex()})")
    return _result(path, fmt, s, found_by, names)


def _result(path: str, fmt: str, s: _Scanner, found_by: str, names: list[str]) -> ScanResult:
    per_gen: dict[str, int] = {}
    unresolved = []
    native = spirv = 0
    for img in s.images:
        if img.kind == "spirv":
            spirv += 1
            continue
        native += 1
        if not img.generations:
            unresolved.append(f"{img.format} image at offset {img.offset:#x} ({img.size} bytes): {img.how}")
        for g in img.generations:
            per_gen[g] = per_gen.get(g, 0) + img.size
    gens = sorted(per_gen, key=generation_order)
    bundle_names = [n for n in names if n.startswith(BUNDLE_PREFIX) or n == TGTIMG]
    return ScanResult(path=path, format=fmt, native=gens, jit=spirv > 0, images=s.top,
                      bytes_per_generation={g: per_gen[g] for g in gens}, native_images=native,
                      spirv_images=spirv, found_by=found_by, sections=bundle_names, unresolved=unresolved,
                      details=s.images, generic_ir=s.generic_ir, compressed_images=s.compressed, notes=s.notes)


def require_generation(path: str | Path, generation: str, *, settings: Settings | None = None,
                       signatures: Signatures | None = None) -> ScanResult:
    """ScanError unless PATH holds a native image that runs on GENERATION."""
    result = scan_file(path, settings=settings, signatures=signatures)
    if generation in result.native:
        return result
    held = ", ".join(result.native) or "no native image"
    extra = f"; {len(result.unresolved)} image(s) not mapped: {result.unresolved[0]}" if result.unresolved else ""
    raise ScanError(f"{path}: does not hold generation {generation} natively (holds {held}){extra}; "
                    "rebuild this generation")


# --- check-installed (cibuildwheel's test command) ------------------------------------------

def installed_artifact(recipe: Recipe, platform: str) -> Path:
    """Where the recipe's GPU library sits in the installed package (found without importing it)."""
    member = recipe.artifacts.get(platform)
    if not member:
        raise RecipeError(f"{recipe.where('build.artifact')}: no entry for {platform}")
    spec = importlib.util.find_spec(recipe.package)
    if spec is None or not spec.submodule_search_locations:
        raise ScanError(f"{recipe.package} is not installed in {sys.executable}; install the built wheel first")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    path = package_dir.parent / member
    if not path.is_file():
        raise ScanError(f"{path}: the installed {recipe.package} has no {member}")
    return path


def _cmd_check_installed(args, settings: Settings) -> int:  # noqa: ANN001
    path = installed_artifact(load_recipe(args.recipe), args.platform or host_platform())
    result = require_generation(path, args.generation)
    log.info(f"{path}: holds {args.generation} natively ({result.summary})")
    return 0


# --- verify --------------------------------------------------------------------------------

def verify_dist(recipe: str, settings: Settings) -> list[tuple[str, str, ScanResult]]:
    """Every built generation of RECIPE under the dist folder must hold its own generation."""
    stem = recipe_name(recipe)
    root = settings.dist_dir / stem
    records = sorted(p for p in root.glob("*/build.json") if is_generation(p.parent.name))
    if not records:
        raise ScanError(f"{root}: no built generation (no */build.json); run `ipex-aot build {stem}` first")
    checked = []
    for record_path in records:
        folder = record_path.parent
        record = read_build_record(record_path)
        generation = record["generation"]
        lib = folder / record["artifact"]["name"]
        checked.append((folder.name, str(lib), require_generation(lib, generation, settings=settings)))
    return checked


def verify_archive(archive: Path, settings: Settings) -> list[tuple[str, str, ScanResult]]:
    """Every folder of a packed archive: its file matches the manifest and holds its own generation."""

    manifest = archive_mod.read_manifest(archive)
    checked = []
    for folder, entry in sorted(manifest["folders"].items(), key=lambda kv: generation_order(kv[0])):
        with tempfile.TemporaryDirectory(prefix="ipex-aot-verify-") as tmp:
            lib = archive_mod.extract_member(archive, entry["file"], Path(tmp), settings)
            if lib.stat().st_size != entry["size"]:
                raise ScanError(f"{archive}: folder {folder}: {entry['file']} extracted to {lib.stat().st_size} bytes, "
                                f"manifest says {entry['size']}; the archive is corrupt or was changed")
            digest = sha256_file(lib)
            if digest != entry.get("sha256"):
                raise ScanError(f"{archive}: folder {folder}: {entry['file']} has sha256 {digest}, manifest says "
                                f"{entry.get('sha256')}; the archive is corrupt or was changed")
            try:
                result = require_generation(lib, entry.get("generation", folder), settings=settings)
            except ScanError as e:
                raise ScanError(f"{archive}: folder {folder}: {entry['file']}: "
                                f"{e.message.split(': ', 1)[-1]}") from None
            result.path = f"{archive}:{entry['file']}"
            checked.append((folder, result.path, result))
    return checked


# --- CLI -----------------------------------------------------------------------------------

def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("scan", help="list the SYCL device images a DLL / shared object holds")
    p.add_argument("file", help="a library (.dll/.so), an ocloc fat binary, a zebin or SPIR-V")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.add_argument("--details", action="store_true",
                   help="notes about the file's layout; with --json also one record per image")
    p.set_defaults(func=_cmd_scan)
    v = sub.add_parser("verify", help="check that every folder of a build or archive holds its own generation")
    v.add_argument("target", help="a recipe name or recipes/X.yaml (checks dist/<recipe>/*), or a .7z archive")
    v.add_argument("--json", action="store_true", help="print JSON on stdout")
    add_trust_arguments(v)
    v.set_defaults(func=_cmd_verify)
    c = sub.add_parser("check-installed", help="static conformance: the installed GPU library holds a generation",
                       description="Scan the recipe's GPU library inside the installed package (cibuildwheel's "
                                   "test command).")
    c.add_argument("recipe", help="recipe file or name")
    c.add_argument("--generation", required=True, help="e.g. 12.55.8")
    c.add_argument("--platform", choices=sorted(PLATFORMS), help="default: this host's")
    c.set_defaults(func=_cmd_check_installed)


def _cmd_scan(args, settings: Settings) -> int:  # noqa: ANN001
    result = scan_file(args.file, settings=settings)
    if args.json:
        print(json.dumps(result.to_json(details=args.details), indent=2))
        return 0
    print(printable(f"{result.path}: {result.summary}"))
    if not result.device_code:
        return 0
    packed = f", {result.compressed_images} zstd-compressed" if result.compressed_images else ""
    print(f"  {result.format}, {result.images} embedded image(s){packed}, found by {result.found_by}")
    for g in result.native:
        print(f"  {g:<10} {result.bytes_per_generation[g]:>14,} bytes native")
    print(f"  SPIR-V modules: {result.spirv_images}")
    for u in result.unresolved[:10]:
        print(f"  unresolved: {u}")
    if len(result.unresolved) > 10:
        print(f"  … {len(result.unresolved) - 10} more unresolved")
    if args.details:
        for note in result.notes:
            print(f"  note: {note}")
    elif result.notes:
        print(f"  {len(result.notes)} note(s) about the file's layout: see --details")
    return 0


def _cmd_verify(args, settings: Settings) -> int:  # noqa: ANN001
    target = str(args.target)
    if target.endswith(".7z"):
        # The archive's own bytes first (signature, pinned sha256), before any entry is read.
        check_trust(Path(target), resolve_trust(settings, trust_key=args.trust_key, sha256=args.sha256,
                                                signature=args.signature))
        checked = verify_archive(Path(target), settings)
    else:
        if args.trust_key or args.sha256 or args.signature:
            raise UsageError("--trust-key, --sha256 and --signature check a .7z archive, not a build folder")
        checked = verify_dist(target, settings)
    if args.json:
        print(json.dumps([{"folder": f, "file": p, "native": r.native, "jit": r.jit} for f, p, r in checked],
                         indent=2))
    else:
        for folder, lib, r in checked:
            print(printable(f"ok {folder}: {lib}: {r.summary}"))
    print(f"verified {len(checked)} folder(s)", file=sys.stderr)
    return 0
