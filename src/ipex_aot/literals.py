"""How LZMA codes the literals of each section of the libraries: its lc, lp, pb, or not at all.

LZMA codes each literal and each match flag in a context of the previous
byte's top ``lc`` bits and the position modulo ``2**lp`` and ``2**pb``. One
setting (3, 0, 2, liblzma's) does not fit everything in a library:
relocation and symbol tables are records aligned to 8 bytes, and code may be
denser with the position in a 16-byte line as its context. LZMA2 may change
the setting at any chunk (a chunk that resets the state and carries new
properties, the dictionary untouched), so the parallel engine flushes the
chunk where such a section starts and carries on with its own setting
(``lzma_filters_update``); 7-Zip, py7zr and liblzma decode such a stream like
any other.

Which setting fits depends on the compiler, so it is found by trial: every
candidate of the section's kind packs the same sample of it (:data:`SAMPLES`
stretches of 1 MiB, spread over the section) and the smallest wins if it
beats the default by :data:`MIN_GAIN`. Measured (2026-12-04, preset 9, hc4):
the realistic corpus's x86 ``.text`` (icpx) took (0, 4, 4), 1.4% smaller over
the whole 356 MB section in ``bt4``; its ``.rela.dyn`` (0, 3, 3), 12.8% smaller;
its ``.symtab`` (0, 3, 3); its ``.dynsym`` kept the default. numpy's x86 code
(gcc) is 1.9% *larger* at (0, 4, 4): there (3, 0, 0) wins by 0.3% on the
sample, under :data:`MIN_GAIN`, so it keeps the default; so does MSVC's x64
code (CPython's python311.dll: (0, 4, 4) 0.8% larger). The trial of one
section takes about 4 s of one core; the later libraries' sections that
sample the same bytes reuse it.

A section LZMA hardly packs (hash tables, compressed blobs) is nearly all
literals, the slowest thing to decode, for little saved; the first time such a
section occurs it is stored as it is (:func:`stored_stretches`, LZMA2's
uncompressed chunks), its later copies are matches.

Only the libraries' bytes decide, so archives stay reproducible. Files that
are neither ELF64 LE nor PE, or whose headers are damaged, keep the default.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import lzma
import mmap
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from ipex_aot import elf, scan
from ipex_aot.errors import ScanError

Props = tuple[int, int, int]

#: liblzma's own (lc, lp, pb): everything else keeps it.
DEFAULT: Props = (3, 0, 2)
#: the candidates per kind of section, the default first (it wins ties).
CANDIDATES: dict[str, tuple[Props, ...]] = {
    "code": (DEFAULT, (3, 0, 0), (0, 4, 4), (1, 3, 4)),
    "table": (DEFAULT, (0, 3, 3), (1, 3, 3), (3, 0, 3)),
}
#: sections smaller than this keep the setting around them: a change costs a chunk flush.
MIN_REGION = 1 << 20
#: a candidate must pack the sample this much smaller than the default.
MIN_GAIN = 0.005
#: the trial's sample: this many stretches of SAMPLE_SIZE, evenly spread (the whole section when shorter).
SAMPLES = 4
SAMPLE_SIZE = 1 << 20
#: A section that LZMA hardly packs decodes slowly for what it saves: every byte is a literal, eight
#: binary decisions (the realistic corpus's 1.9 MB ``.gnu.hash`` packs to 0.864 of its size and takes
#: liblzma 0.080 s to decode, 41 ns a byte, where a copy takes a fraction of a millisecond). Sections
#: that pack to at least this share of their size are stored as they are (:func:`stored_stretches`) ...
STORE_RATIO = 0.8
#: ... when at least this long (the chunk after a stored stretch starts the LZMA state afresh) ...
MIN_STORED = 256 << 10
#: ... and at least this share of their bytes is first-seen (:meth:`ipex_aot.lzma2.CostMap.first_seen`).
STORE_FIRST_SEEN = 0.9

_SHF_EXECINSTR = 0x4


class Change(NamedTuple):
    """From stream offset ``at`` on, code literals with ``props`` (lc, lp, pb)."""

    at: int
    props: Props


class Region(NamedTuple):
    """A stretch of one file whose setting is found by trial: its file offsets and its kind."""

    start: int
    end: int
    kind: str  # a key of CANDIDATES, or "stored" for a section that may be stored (stored_stretches)


def _kind_elf(section: elf.Section) -> str | None:
    if section.flags & _SHF_EXECINSTR:
        return "code"
    if section.type in (elf.SHT_RELA, elf.SHT_REL, elf.SHT_SYMTAB, elf.SHT_DYNSYM):
        return "table"
    return None


def _spans(path: str | os.PathLike[str]) -> list[tuple[int, int, str | None]]:
    """(file start, end, kind) of every section with file data, in file order; kind None: neither code nor table.

    A file that is neither ELF64 LE nor PE, or whose headers are damaged, has none.
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 64:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            try:
                reader = elf.Reader(view, os.fspath(path))
                if elf.is_elf64le(view):
                    spans = [(s.offset, s.offset + s.size, _kind_elf(s)) for s in elf.sections(reader) if s.size]
                elif bytes(view[:2]) == b"MZ":
                    spans = [(s.offset, s.offset + s.size, None if s.searchable else "code")
                             for s in scan.pe_sections(reader) if s.size]
                else:
                    spans = []
            except ScanError:
                return []
            finally:
                view.release()
    return sorted(spans)


def file_regions(path: str | os.PathLike[str]) -> list[Region]:
    """The file's stretches of code and of tables, at least :data:`MIN_REGION` long, in order.

    Neighbouring sections of one kind form one stretch (the alignment padding
    between them goes with it). A file that is neither ELF64 LE nor PE, or
    whose headers are damaged, has none.
    """
    merged: list[list] = []
    for start, end, kind in _spans(path):
        if merged and kind is not None and merged[-1][2] == kind:
            merged[-1][1] = max(merged[-1][1], end)
            continue
        if merged and start < merged[-1][1]:  # overlaps the stretch before: that one ends here
            merged[-1][1] = start
        merged.append([start, end, kind])
    return [Region(a, b, k) for a, b, k in merged if k is not None and b - a >= MIN_REGION]


def sample(path: str | os.PathLike[str], region: Region, base: int = 0) -> bytes:
    """What the trial packs of ``region``: SAMPLES stretches of SAMPLE_SIZE spread over it, or all of it.

    The file starts at stream offset ``base``. Each stretch starts where the
    stream offset is a multiple of 16, as lp and pb count positions from there
    (a sample at another alignment ranks the settings differently).
    """
    size = region.end - region.start
    lead = (base + region.start) % 16
    with open(path, "rb") as f:
        if size <= SAMPLES * SAMPLE_SIZE:
            f.seek(region.start + (16 - lead) % 16)
            return f.read(size - (16 - lead) % 16)
        parts = []
        for i in range(SAMPLES):
            at = region.start + (size - SAMPLE_SIZE) * (2 * i + 1) // (2 * SAMPLES)
            f.seek(at - (base + at) % 16)
            parts.append(f.read(SAMPLE_SIZE))
        return b"".join(parts)


def choose(sample: bytes, kind: str) -> Props:
    """The candidate of ``kind`` that packs ``sample`` smallest, if it beats the default by MIN_GAIN."""
    sizes = []
    for lc, lp, pb in CANDIDATES[kind]:
        f = {"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": max(1 << 20, len(sample)), "mf": lzma.MF_HC4,
             "lc": lc, "lp": lp, "pb": pb}
        sizes.append(len(lzma.compress(sample, format=lzma.FORMAT_RAW, filters=[f])))
    best = min(range(len(sizes)), key=lambda i: (sizes[i], i))
    return CANDIDATES[kind][best] if sizes[best] < sizes[0] * (1 - MIN_GAIN) else DEFAULT


_T = TypeVar("_T")


def _trials(paths: Sequence[str | os.PathLike[str]], regions: Callable[[str | os.PathLike[str]], list[Region]],
            judge: Callable[[bytes, str], _T], jobs: int) -> tuple[list[tuple[int, int, str, bytes]],
                                                               dict[tuple[str, bytes], _T]]:
    """Each of ``regions`` of ``paths`` (the files end to end) as (stream start, end, kind, sample digest), in
    stream order, and ``judge``'s verdict on each distinct (kind, sample) (:func:`sample`).

    Trials run on ``jobs`` threads (lzma releases the GIL); a sample seen before reuses its verdict.
    """
    found: list[tuple[int, int, str, bytes]] = []
    samples: dict[tuple[str, bytes], bytes] = {}
    base = 0
    for path in paths:
        for region in regions(path):
            data = sample(path, region, base)
            digest = hashlib.sha256(data).digest()
            samples.setdefault((region.kind, digest), data)
            found.append((base + region.start, base + region.end, region.kind, digest))
        base += os.path.getsize(path)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        keys = list(samples)
        verdicts = dict(zip(keys, pool.map(lambda k: judge(samples[k], k[0]), keys), strict=True))
    return found, verdicts


def stream_changes(paths: Sequence[str | os.PathLike[str]], jobs: int = 1) -> list[Change]:
    """Where the setting changes in the stream of ``paths`` (the files end to end); it starts at DEFAULT.

    Trials run on ``jobs`` threads; a sample seen before reuses its result (:func:`_trials`).
    """
    found, chosen = _trials(paths, file_regions, choose, jobs)
    total = sum(os.path.getsize(path) for path in paths)
    changes: list[Change] = []
    for start, end, kind, digest in found:
        props = chosen[(kind, digest)]
        if props == DEFAULT:
            continue
        while changes and changes[-1].at >= start:  # the stretch before ended where this one starts
            changes.pop()
        if props != (changes[-1].props if changes else DEFAULT):
            changes.append(Change(start, props))
        if end < total:
            changes.append(Change(end, DEFAULT))
    return changes


class Stored(NamedTuple):
    """A stretch of the stream kept as it is: LZMA2's uncompressed chunks, from stream offset ``start`` to ``end``."""

    start: int
    end: int


def _ratio(data: bytes, preset: int) -> float:
    f = {"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": max(1 << 20, len(data))}
    return len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=[f])) / max(1, len(data))


def _hardly_packs(data: bytes) -> bool:
    # preset 0 first: it takes milliseconds and in practice packs no better than preset 9, so most sections
    # stop there
    return _ratio(data, 0) >= STORE_RATIO and _ratio(data, 9) >= STORE_RATIO


def stored_stretches(paths: Sequence[str | os.PathLike[str]], first_seen: Callable[[int, int], int] | None = None,
                     jobs: int = 1) -> list[Stored]:
    """The sections of ``paths`` (the files end to end) that the stream stores as they are.

    A section qualifies when it is neither code nor a table, at least
    :data:`MIN_STORED` long, LZMA packs its sample (:func:`sample`) to at
    least :data:`STORE_RATIO` of its size, and its bytes are new: no section
    earlier in the stream had the same sample, and ``first_seen``
    (:meth:`ipex_aot.lzma2.CostMap.first_seen`), when given, counts at least
    :data:`STORE_FIRST_SEEN` of it as first-seen. A later library's copy of
    such a section is a long match, nearly free to store and to decode. Sections
    that overlap one before them (damaged or crafted headers) are left out, so
    the stretches are in order and apart.
    """
    def candidates(path: str | os.PathLike[str]) -> list[Region]:
        return [Region(a, b, "stored") for a, b, kind in _spans(path) if kind is None and b - a >= MIN_STORED]

    found, verdicts = _trials(paths, candidates, lambda data, _kind: _hardly_packs(data), jobs)
    seen: set[bytes] = set()
    stored: list[Stored] = []
    for a, b, kind, digest in found:
        if digest in seen:  # a repeat of an earlier section
            continue
        seen.add(digest)
        if verdicts[(kind, digest)] and (first_seen is None or first_seen(a, b) >= STORE_FIRST_SEEN * (b - a)) and (
                not stored or stored[-1].end <= a):
            stored.append(Stored(a, b))
    return stored


def props_at(changes: Sequence[Change], pos: int) -> Props:
    """The setting in force at stream offset ``pos``."""
    props = DEFAULT
    for change in changes:
        if change.at > pos:
            break
        props = change.props
    return props
