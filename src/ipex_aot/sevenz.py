"""A small 7z container writer for streams that are already compressed.

The packer compresses the payload itself (see :mod:`ipex_aot.lzma2`), so all
this module does is lay out a 7z file around finished LZMA2 streams: the
32-byte signature header, the packed streams, and a plain (uncompressed)
header that describes one folder per stream, each with a single LZMA2 coder,
its files as substreams with sizes and CRC32s, directories as empty streams,
UTF-16LE names, fixed attributes and fixed times. Only what 7-Zip 9.20+,
py7zr and libarchive read is written: no BCJ2, no encoded header, no
encryption. Layout follows 7-Zip's ``7zFormat.txt``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

SIGNATURE = b"7z\xbc\xaf\x27\x1c"
VERSION = b"\x00\x04"
LZMA2_ID = b"\x21"

K_END, K_HEADER, K_MAIN_STREAMS_INFO, K_FILES_INFO = 0x00, 0x01, 0x04, 0x05
K_PACK_INFO, K_UNPACK_INFO, K_SUBSTREAMS_INFO = 0x06, 0x07, 0x08
K_SIZE, K_CRC, K_FOLDER, K_CODERS_UNPACK_SIZE, K_NUM_UNPACK_STREAM = 0x09, 0x0A, 0x0B, 0x0C, 0x0D
K_EMPTY_STREAM, K_NAME, K_MTIME, K_ATTRIBUTES = 0x0E, 0x11, 0x14, 0x15

# Windows attributes plus the Unix mode in the high 16 bits (7-Zip's
# FILE_ATTRIBUTE_UNIX_EXTENSION), so extraction on Linux gives sane modes.
_UNIX_EXT = 0x8000
ATTR_FILE = 0x20 | _UNIX_EXT | (0o100644 << 16)
ATTR_DIR = 0x10 | _UNIX_EXT | (0o040755 << 16)
_FILETIME_EPOCH = 11644473600  # seconds from 1601-01-01 to 1970-01-01


def number(value: int) -> bytes:
    """7z variable-length NUMBER: leading 1 bits of the first byte count the extra bytes."""
    if value < 0:
        raise ValueError("7z numbers are unsigned")
    for extra in range(8):
        if value < 1 << (7 * (extra + 1)):
            first = ((0xFF00 >> extra) & 0xFF) | (value >> (8 * extra))
            return bytes([first]) + (value & ((1 << (8 * extra)) - 1)).to_bytes(extra, "little")
    return b"\xff" + value.to_bytes(8, "little")


def filetime(unix_seconds: int) -> int:
    return (unix_seconds + _FILETIME_EPOCH) * 10_000_000


@dataclass(frozen=True)
class Entry:
    """One archive entry. Files carry their stream's size and CRC32; directories carry neither."""

    name: str  # forward slashes; written with 7z's native separator rules (any '/' is fine for readers)
    is_dir: bool = False
    size: int = 0
    crc32: int = 0


@dataclass(frozen=True)
class Folder:
    """One packed LZMA2 stream holding the given files (substreams) back to back."""

    packed_size: int
    dict_size_prop: int
    files: Sequence[Entry]

    @property
    def unpacked_size(self) -> int:
        return sum(f.size for f in self.files)


def _bits(flags: Sequence[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def _property(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + number(len(payload)) + payload


def build_header(folders: Sequence[Folder], dirs: Sequence[str], mtime: int) -> bytes:
    """The plain 7z header for ``folders`` (in stream order) plus directory entries.

    Directories come first in the file list, then every folder's files in
    the order of their substreams, which is what 7z requires.
    """
    h = bytearray([K_HEADER, K_MAIN_STREAMS_INFO])
    h += bytes([K_PACK_INFO]) + number(0) + number(len(folders))
    h += bytes([K_SIZE]) + b"".join(number(f.packed_size) for f in folders) + bytes([K_END])
    h += bytes([K_UNPACK_INFO, K_FOLDER]) + number(len(folders)) + b"\x00"
    for f in folders:
        # one coder: simple (1 in, 1 out), 1-byte id, has properties
        h += number(1) + bytes([0x20 | len(LZMA2_ID)]) + LZMA2_ID + number(1) + bytes([f.dict_size_prop])
    h += bytes([K_CODERS_UNPACK_SIZE]) + b"".join(number(f.unpacked_size) for f in folders) + bytes([K_END])
    h += bytes([K_SUBSTREAMS_INFO, K_NUM_UNPACK_STREAM]) + b"".join(number(len(f.files)) for f in folders)
    sizes = b"".join(number(e.size) for f in folders for e in list(f.files)[:-1])
    if sizes:
        h += bytes([K_SIZE]) + sizes
    h += bytes([K_CRC, 1]) + b"".join(struct.pack("<I", e.crc32) for f in folders for e in f.files)
    h += bytes([K_END, K_END])

    entries = [Entry(d, is_dir=True) for d in dirs] + [e for f in folders for e in f.files]
    for e in entries:
        if e.size == 0 and not e.is_dir:
            raise ValueError(f"empty file {e.name!r}: the packer does not store empty files")
    h += bytes([K_FILES_INFO]) + number(len(entries))
    if dirs:
        h += _property(K_EMPTY_STREAM, _bits([e.is_dir for e in entries]))
    names = b"".join(e.name.encode("utf-16-le") + b"\x00\x00" for e in entries)
    h += _property(K_NAME, b"\x00" + names)
    ft = struct.pack("<Q", filetime(mtime))
    h += _property(K_MTIME, b"\x01\x00" + ft * len(entries))
    attrs = b"".join(struct.pack("<I", ATTR_DIR if e.is_dir else ATTR_FILE) for e in entries)
    h += _property(K_ATTRIBUTES, b"\x01\x00" + attrs)
    h += bytes([K_END, K_END])
    return bytes(h)


def start_header(next_offset: int, header: bytes) -> bytes:
    """The 32-byte signature header that points at ``header`` ``next_offset`` bytes after it."""
    tail = struct.pack("<QQI", next_offset, len(header), zlib.crc32(header))
    return SIGNATURE + VERSION + struct.pack("<I", zlib.crc32(tail)) + tail


def write_archive(out: BinaryIO, streams: Sequence[BinaryIO], folders: Sequence[Folder], dirs: Sequence[str],
                  mtime: int) -> int:
    """Write a whole archive: signature header, each packed stream in order, then the header.

    ``streams[i]`` is read to its end and must hold ``folders[i].packed_size`` bytes.
    Returns the archive size.
    """
    out.write(b"\x00" * 32)  # placeholder, rewritten once the header is known
    packed = 0
    for stream, folder in zip(streams, folders, strict=True):
        n = 0
        while chunk := stream.read(8 << 20):
            out.write(chunk)
            n += len(chunk)
        if n != folder.packed_size:
            raise ValueError(f"packed stream is {n} bytes, expected {folder.packed_size}")
        packed += n
    header = build_header(folders, dirs, mtime)
    out.write(header)
    out.seek(0)
    out.write(start_header(packed, header))
    out.seek(0, 2)
    return 32 + packed + len(header)
