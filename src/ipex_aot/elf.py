"""The one ELF reader: the section table, PT_LOAD segments and notes of ELF64 little-endian files.

Two kinds of ELF pass through it. Libraries that ``scan`` opens (up to several GB, over an
mmap: only the headers and the names are touched), read strictly: a header or a table that
points outside the file is a :class:`ScanError` naming the file and the offset. Device
binaries (zebins) that the device sweep gets from ocloc and that the scanner finds inside
libraries, read through :func:`device_sections`, which says None instead, because a blob
found by byte pattern may be anything.

pyelftools 0.33 was measured against this reader on the test corpus' 2.3 GB
``libitex_gpu_internal.so`` (open, then list its 44 sections and 2 PT_LOAD segments; mean of
20 runs, 2026-12-03, a loaded 2-core machine): this reader 0.66 ms, pyelftools 192 ms. It
would also add a dependency whose errors need mapping to ours, so the reader stays the project's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ipex_aot.errors import ScanError
from ipex_aot.untrusted import printable

MAGIC = b"\x7fELF"
#: Caps that turn a malformed file into an error instead of a hang.
MAX_SECTIONS = 1 << 16
MAX_NOTES = 1024
SHT_NULL, SHT_NOBITS = 0, 8
#: section types the packer reads (literals.py, farmatch.py)
SHT_SYMTAB, SHT_RELA, SHT_REL, SHT_DYNSYM = 2, 4, 9, 11


def safe_name(raw: bytes) -> str:
    """A name read from a file (section, ar member, note owner), escaped so that printing it is safe."""
    return printable(raw.decode("utf-8", "replace"))


class Reader:
    """Bounds-checked little-endian reads over a memoryview, errors naming the file (PE readers use it too)."""

    def __init__(self, view: memoryview, path: str) -> None:
        self.v = view
        self.n = len(view)
        self.path = path

    def need(self, off: int, size: int, what: str) -> None:
        if off < 0 or size < 0 or off + size > self.n:
            raise ScanError(f"{self.path}: truncated or malformed: {what} at offset {off:#x} (+{size}) "
                            f"is past the end of the file ({self.n} bytes)")

    def unpack(self, fmt: str, off: int, what: str) -> tuple[Any, ...]:
        self.need(off, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.v, off)

    def cstr(self, off: int, limit: int, what: str) -> str:
        self.need(off, 0, what)
        end = min(self.n, off + limit)
        raw = bytes(self.v[off:end])
        nul = raw.find(b"\0")
        return safe_name(raw if nul < 0 else raw[:nul])


class Section(NamedTuple):
    name: str
    type: int  # sh_type
    flags: int  # sh_flags
    addr: int  # sh_addr
    offset: int  # file offset, -1 when the section has no file data (SHT_NULL, SHT_NOBITS)
    size: int  # bytes of file data (0 without file data)


def is_elf64le(v: memoryview | bytes) -> bool:
    return len(v) >= 64 and bytes(v[:4]) == MAGIC and v[4] == 2 and v[5] == 1


def sections(b: Reader) -> list[Section]:
    """The section table of the ELF64 LE file in B, every section with file data checked to lie in the file."""
    ident = bytes(b.v[:6]) if b.n >= 6 else b""
    if ident[4:5] != b"\x02" or ident[5:6] != b"\x01":
        raise ScanError(f"{b.path}: an ELF file but not 64-bit little-endian; only ELF64 LE libraries are supported")
    shoff, = b.unpack("<Q", 0x28, "ELF header")
    shentsize, shnum, shstrndx = b.unpack("<HHH", 0x3A, "ELF header")
    if shoff == 0:
        return []
    if shentsize != 64:
        raise ScanError(f"{b.path}: malformed ELF: section header size {shentsize}, expected 64")
    if shnum == 0 or shstrndx == 0xFFFF:  # extended numbering lives in section 0
        _n, _t, _f, _a, _o, size0, link0 = b.unpack("<IIQQQQI", shoff, "ELF section 0")
        shnum = shnum or size0
        shstrndx = link0 if shstrndx == 0xFFFF else shstrndx
    if shnum > MAX_SECTIONS:
        raise ScanError(f"{b.path}: malformed ELF: {shnum} sections")
    b.need(shoff, shnum * 64, "ELF section headers")
    heads = [struct.unpack_from("<IIQQQQ", b.v, shoff + 64 * i) for i in range(shnum)]
    if shstrndx >= shnum:
        raise ScanError(f"{b.path}: malformed ELF: section-name table index {shstrndx} of {shnum}")
    str_off, str_size = heads[shstrndx][4], heads[shstrndx][5]
    b.need(str_off, str_size, "ELF section-name table")
    out = []
    for name_off, sh_type, flags, addr, off, size in heads:
        name = b.cstr(str_off + name_off, max(0, str_size - name_off), "section name") if name_off < str_size else ""
        has_data = sh_type not in (SHT_NULL, SHT_NOBITS)
        if has_data:
            b.need(off, size, f"section {name}")
        out.append(Section(name, sh_type, flags, addr, off if has_data else -1, size if has_data else 0))
    return out


def device_sections(v: memoryview) -> tuple[int, list[Section]] | None:
    """(file size the headers imply, the sections with file data) of a device binary; None if it is not an
    ELF64 LE file whose section table lies inside V."""
    if not is_elf64le(v):
        return None
    try:
        secs = [s for s in sections(Reader(v, "device binary")) if s.offset >= 0]
    except ScanError:
        return None
    shoff, = struct.unpack_from("<Q", v, 0x28)
    shnum, = struct.unpack_from("<H", v, 0x3C)
    return max([64, shoff + 64 * shnum] + [s.offset + s.size for s in secs]), secs


@dataclass
class Segment:
    """An ELF PT_LOAD program header: what the loader maps, whatever the section table says."""

    index: int
    addr: int
    offset: int
    size: int  # p_filesz: bytes backed by the file
    executable: bool = False  # PF_X: code, where no linker puts device images


def segments(b: Reader) -> list[Segment]:
    """The PT_LOAD segments with file data of the ELF64 LE file in B."""
    phoff, = b.unpack("<Q", 0x20, "ELF header")
    phentsize, phnum = b.unpack("<HH", 0x36, "ELF header")
    if phoff == 0 or phnum == 0:
        return []
    if phentsize != 56:
        raise ScanError(f"{b.path}: malformed ELF: program header size {phentsize}, expected 56")
    if phnum == 0xFFFF:
        raise ScanError(f"{b.path}: ELF with extended program-header numbering is not supported")
    b.need(phoff, phnum * 56, "ELF program headers")
    out = []
    for i in range(phnum):
        p_type, flags, off, vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", b.v, phoff + 56 * i)
        if p_type == 1 and filesz:  # PT_LOAD
            b.need(off, filesz, f"PT_LOAD segment {i}")
            out.append(Segment(i, vaddr, off, filesz, bool(flags & 1)))
    return out


def notes(v: memoryview, start: int, size: int) -> Iterator[tuple[str, int, bytes]]:
    """(owner, type, desc) of each note in v[start:start+size]; a note that runs past the end ends the list."""
    pos, end = start, start + size
    for _ in range(MAX_NOTES):
        if pos + 12 > end:
            return
        namesz, descsz, ntype = struct.unpack_from("<III", v, pos)
        pos += 12
        if namesz > end - pos:
            return
        name = safe_name(bytes(v[pos:pos + namesz]).rstrip(b"\0"))
        pos += (namesz + 3) & ~3
        if descsz > end - pos:
            return
        yield name, ntype, bytes(v[pos:pos + descsz])
        pos += (descsz + 3) & ~3
