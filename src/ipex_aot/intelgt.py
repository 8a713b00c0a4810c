"""Facts of Intel's zebin device-binary format shared by the device sweep and the scanner.

A zebin is an ELF file with ``e_machine`` 205 (EM_INTELGT); its
``.note.intelgt.compat`` section holds notes of owner ``IntelGT`` (see
compute-runtime's ``zebin_elf.h``): the product family, GFX core, target
metadata (minimum hardware revision in bits 8-12) and, from newer ocloc on,
the product config whose bits give the IP version.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ipex_aot import elf
from ipex_aot.generation import Generation

EM_INTELGT = 205
COMPAT_SECTION = ".note.intelgt.compat"
NOTE_OWNER = "IntelGT"
NT_PRODUCT_FAMILY, NT_GFX_CORE, NT_TARGET_METADATA, NT_PRODUCT_CONFIG = 1, 2, 3, 6


@dataclass(frozen=True)
class CompatNote:
    family: int | None = None
    core: int | None = None
    stepping: int | None = None  # minHwRevisionId
    ip: str | None = None  # only where ocloc wrote a product config


def read_compat_notes(notes: Iterable[tuple[str, int, bytes]]) -> CompatNote:
    """Fold the ``(owner, type, desc)`` notes of a compat section into one record."""
    family = core = stepping = None
    ip = None
    for owner, ntype, desc in notes:
        if owner != NOTE_OWNER or len(desc) < 4:
            continue
        (value,) = struct.unpack_from("<I", desc)
        if ntype == NT_PRODUCT_FAMILY:
            family = value
        elif ntype == NT_GFX_CORE:
            core = value
        elif ntype == NT_TARGET_METADATA:
            stepping = (value >> 8) & 0x1F
        elif ntype == NT_PRODUCT_CONFIG and value:
            ip = str(Generation.from_ip_version(value))
    return CompatNote(family, core, stepping, ip)


def compat_note(v: memoryview, sections: Iterable[elf.Section]) -> CompatNote:
    """The compat notes of the zebin in V whose sections are SECTIONS (an empty record where it has none)."""
    note = CompatNote()
    for sec in sections:
        if sec.name == COMPAT_SECTION:
            note = read_compat_notes(elf.notes(v, sec.offset, sec.size))
    return note
