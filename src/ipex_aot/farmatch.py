"""How far back a stream's repeated stretches reach: the probe that tells a small window from a large one.

An encoder with a small window (bt4 in 128 MiB, say) is as good as one with
the whole 1.5 GiB window only where the bytes it encodes are new, or repeat
something near. The 4 KiB-block test of the cost map cannot tell: symbol
tables repeat names from the dynamic string table 1.2 GB back at no common
alignment, and a later generation's device images are new blocks whose
instructions match the previous library's a library back. This probe sees
both. Anchors are chosen by content (a position whose 4 bytes hash to one
value in 1024, so a copy of a stretch anywhere has the same anchors at the
same places inside it); each anchor's 32 bytes are digested, and an anchor's
distance is how far back the nearest earlier anchor with the same digest is.

One far repeat has no 32 equal bytes: an ELF library's ``.symtab`` repeats
the 24-byte record of every exported symbol of its ``.dynsym`` (type, section,
value and size) with only the 4-byte name offset changed, a library's length
back. The probe reads the section table and marks such a ``.symtab`` far
(:func:`symbol_tables`). On the realistic corpus (2026-12-04, primed as a piece): the
first library's 24 MiB ``.symtab`` packed to 4.99 MB with bt4 in 128 MiB and
to 4.52 MB with hc4 in the whole window; 7-Zip's bt4 took 222 K matches over
256 MiB back in it, the 32-byte anchors none.
The result depends only on the bytes: the archive stays reproducible.
"""

from __future__ import annotations

import concurrent.futures
import mmap
import os
from collections.abc import Sequence

import numpy as np

from ipex_aot import elf
from ipex_aot.errors import ScanError

#: An anchor is a position whose 4 bytes, times Knuth's multiplier, have these top 10 bits. Not 0: runs
#: of zero bytes (padding) would make every position an anchor.
_ANCHOR_SHIFT = np.uint32(22)
_ANCHOR_VALUE = 0x155
_GOLDEN = np.uint32(0x9E3779B1)
#: Bytes an anchor's digest covers: long enough that an equal digest means a match an encoder would take.
SPAN = 32
#: multipliers of the first three of a span's four 8-byte words (the fourth is taken as it is)
_MIX = tuple(np.uint64(m) for m in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9))
_CHUNK = 32 << 20
#: stream offsets are kept multiples of this (lzma2.ALIGN: pieces are cut there)
_ALIGN = 16


class MatchDistances:
    """Per anchor of a stream: its offset, and how far back the nearest earlier copy of its 32 bytes is."""

    def __init__(self, positions: np.ndarray, distances: np.ndarray,
                 tables: Sequence[tuple[int, int, int]] = ()) -> None:
        self.positions = positions  # ascending stream offsets
        self.distances = distances  # -1: no earlier copy
        #: (start, end, distance) of each symbol table that repeats one ``distance`` back (:func:`symbol_tables`)
        self.tables = tuple(tables)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MatchDistances) and np.array_equal(self.positions, other.positions)
                and np.array_equal(self.distances, other.distances) and self.tables == other.tables)

    def far(self, start: int, end: int, window: int) -> float:
        """The share of ``[start, end)`` whose copies lie more than ``window`` back.

        That is the share of its anchors whose nearest earlier copy is that far, or
        the share of its bytes in symbol tables that repeat that far back, whichever is larger.
        """
        tables = sum(max(0, min(end, b) - max(start, a)) for a, b, d in self.tables if d > window)
        share = tables / (end - start) if end > start else 0.0
        lo, hi = np.searchsorted(self.positions, [start, end])
        if hi <= lo:
            return share
        return max(share, float(np.count_nonzero(self.distances[lo:hi] > window)) / int(hi - lo))


def _anchors(data: bytes, base: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchors that start in ``data[:count]`` (``data`` runs on SPAN - 1 bytes where the file does)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(buf) < SPAN:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    # the 4 bytes at every offset, little-endian, read through an unaligned view
    words = np.ndarray((len(buf) - 3,), dtype="<u4", buffer=data, strides=(1,))
    hits = np.flatnonzero((words * _GOLDEN) >> _ANCHOR_SHIFT == _ANCHOR_VALUE)
    hits = hits[(hits < count) & (hits + SPAN <= len(buf))]
    spans = buf[hits[:, None] + np.arange(SPAN)].view("<u8")
    digest = spans[:, 0] * _MIX[0] ^ spans[:, 1] * _MIX[1] ^ spans[:, 2] * _MIX[2] ^ spans[:, 3]
    return hits.astype(np.int64) + base, digest


def _read(path: str | os.PathLike[str], offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(_CHUNK + SPAN - 1)


def symbol_tables(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[int, int, int]]:
    """``(start, end, distance)`` in the stream of ``paths`` of each ELF ``.symtab`` beside a ``.dynsym``.

    ``distance`` is how far before the ``.symtab`` its file's ``.dynsym``
    starts; offsets are kept multiples of 16 (start down, end up). Files
    that are not ELF64 LE, or whose section table is damaged, have none.
    """
    found, base = [], 0
    for path in paths:
        size = os.path.getsize(path)
        if size >= 64:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                view = memoryview(m)
                try:
                    secs = elf.sections(elf.Reader(view, os.fspath(path))) if elf.is_elf64le(view) else []
                except ScanError:
                    secs = []
                finally:
                    view.release()
            dynsym = [s for s in secs if s.type == elf.SHT_DYNSYM and s.size]
            for s in secs:
                if s.type == elf.SHT_SYMTAB and s.size and dynsym and dynsym[0].offset < s.offset:
                    start = (base + s.offset) // _ALIGN * _ALIGN
                    end = min(base + size, -(-(base + s.offset + s.size) // _ALIGN) * _ALIGN)
                    found.append((start, end, s.offset - dynsym[0].offset))
        base += size
    return found


def match_distances(paths: Sequence[str | os.PathLike[str]], jobs: int = 1) -> MatchDistances:
    """The anchors of the stream ``paths`` make, one after the other (about one per KiB), and their distances.

    An anchor's 32 bytes lie in one file (the few in a file's last 31 bytes
    are left out). Chunks are read and digested on ``jobs`` threads (numpy
    releases the GIL). The files' symbol tables come with them (:func:`symbol_tables`).
    """
    tasks, base = [], 0
    for path in paths:
        size = os.path.getsize(path)
        tasks += [(path, off, base + off, min(_CHUNK, size - off)) for off in range(0, size, _CHUNK)]
        base += size

    def run(task: tuple[str | os.PathLike[str], int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        path, off, at, count = task
        return _anchors(_read(path, off), at, count)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        found = list(pool.map(run, tasks))
    positions = np.concatenate([p for p, _ in found]) if found else np.empty(0, np.int64)
    digests = np.concatenate([d for _, d in found]) if found else np.empty(0, np.uint64)
    order = np.lexsort((positions, digests))  # by digest, then offset: copies follow their nearest earlier one
    by_digest, at = digests[order], positions[order]
    distances = np.full(len(at), -1, np.int64)
    same = np.flatnonzero(by_digest[1:] == by_digest[:-1]) + 1
    distances[same] = at[same] - at[same - 1]
    result = np.empty_like(distances)
    result[order] = distances
    return MatchDistances(positions, result, symbol_tables(paths))
