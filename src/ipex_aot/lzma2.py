"""Parallel LZMA2: consecutive pieces of ONE raw LZMA2 stream, encoded at once.

Python's ``lzma`` module cannot prime an encoder with a preset dictionary, so
this module drives the system liblzma through ctypes. Piece ``k`` of the
stream is encoded by its own encoder whose ``preset_dict`` is the ``dict_size``
bytes that precede the piece. liblzma then starts the piece with a chunk that
resets the state and properties but *not* the dictionary (``0xC0``, see
``lzma2_encoder_init``: ``need_dictionary_reset`` is false with a preset
dictionary), so a decoder that has just produced those preceding bytes keeps
them as its window and every long-distance match of the piece stays valid.
Each piece ends with liblzma's ``0x00`` end marker; dropping it from all but
the last piece and concatenating the pieces gives one ordinary LZMA2 stream
that 7-Zip, py7zr and ``lzma`` decode like any other.

Two details keep the pieces exact:

* the literal and match coders use the position modulo ``2**pb`` (and
  ``2**lp``); the decoder counts from the last dictionary reset, the primed
  encoder from the start of its preset dictionary. Piece offsets are kept
  multiples of 16 and the preset is ``min(offset, dict_size)`` bytes with a
  16-aligned ``dict_size``, so both counts agree modulo 16.
* ctypes releases the GIL during ``lzma_code``, so plain threads run the
  encoders on every core while Python only moves buffers.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import lzma
import mmap
import os
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ipex_aot import platforms
from ipex_aot.errors import ArchiveError, ToolchainError

if TYPE_CHECKING:
    from ipex_aot.farmatch import MatchDistances
    from ipex_aot.literals import Change

#: liblzma refuses larger dictionaries (lz_encoder_prepare).
DICT_MAX = (1 << 30) + (1 << 29)
#: Piece boundaries are multiples of this, so positions agree modulo 2**pb.
ALIGN = 16
FILTER_LZMA2 = 0x21
_RUN, _SYNC_FLUSH, _FINISH = 0, 1, 3
_OK, _STREAM_END = 0, 1
_RET_NAMES = {5: "out of memory", 6: "memory limit", 8: "bad options", 9: "corrupt data", 11: "internal error"}
MATCH_FINDERS = {"hc3": 0x03, "hc4": 0x04, "bt2": 0x12, "bt3": 0x13, "bt4": 0x14}
MODES = {"fast": 1, "normal": 2}
_IO_CHUNK = 8 << 20


class _Stream(ctypes.Structure):
    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_size_t),
        ("total_in", ctypes.c_uint64),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_size_t),
        ("total_out", ctypes.c_uint64),
        ("allocator", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
        ("reserved_ptr1", ctypes.c_void_p),
        ("reserved_ptr2", ctypes.c_void_p),
        ("reserved_ptr3", ctypes.c_void_p),
        ("reserved_ptr4", ctypes.c_void_p),
        ("seek_pos", ctypes.c_uint64),
        ("reserved_int2", ctypes.c_uint64),
        ("reserved_int3", ctypes.c_size_t),
        ("reserved_int4", ctypes.c_size_t),
        ("reserved_enum1", ctypes.c_int),
        ("reserved_enum2", ctypes.c_int),
    ]


class _OptionsLzma(ctypes.Structure):
    _fields_ = [
        ("dict_size", ctypes.c_uint32),
        ("preset_dict", ctypes.c_void_p),
        ("preset_dict_size", ctypes.c_uint32),
        ("lc", ctypes.c_uint32),
        ("lp", ctypes.c_uint32),
        ("pb", ctypes.c_uint32),
        ("mode", ctypes.c_int),
        ("nice_len", ctypes.c_uint32),
        ("mf", ctypes.c_int),
        ("depth", ctypes.c_uint32),
        ("ext_flags", ctypes.c_uint32),
        ("ext_size_low", ctypes.c_uint32),
        ("ext_size_high", ctypes.c_uint32),
        ("reserved_int4", ctypes.c_uint32),
        ("reserved_int5", ctypes.c_uint32),
        ("reserved_int6", ctypes.c_uint32),
        ("reserved_int7", ctypes.c_uint32),
        ("reserved_int8", ctypes.c_uint32),
        ("reserved_enum1", ctypes.c_int),
        ("reserved_enum2", ctypes.c_int),
        ("reserved_enum3", ctypes.c_int),
        ("reserved_enum4", ctypes.c_int),
        ("reserved_ptr1", ctypes.c_void_p),
        ("reserved_ptr2", ctypes.c_void_p),
    ]


class _Filter(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("options", ctypes.c_void_p)]


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def liblzma() -> ctypes.CDLL:
    """The system liblzma (5.x), loaded once; ToolchainError when there is none."""
    global _lib
    with _lib_lock:
        if _lib is None:
            names = platforms.host().liblzma_names()
            errors = []
            for name in names:
                try:
                    lib = ctypes.CDLL(name)
                    break
                except OSError as e:
                    errors.append(str(e))
            else:
                raise ToolchainError(
                    f"liblzma ({', '.join(names) or 'liblzma.so.5'}) not found for the parallel packer; install "
                    "xz-utils/liblzma5 or use --engine 7zz or py7zr (on Windows: --engine auto picks one)"
                )
            lib.lzma_raw_encoder.argtypes = [ctypes.POINTER(_Stream), ctypes.POINTER(_Filter)]
            lib.lzma_raw_encoder.restype = ctypes.c_int
            lib.lzma_code.argtypes = [ctypes.POINTER(_Stream), ctypes.c_int]
            lib.lzma_code.restype = ctypes.c_int
            lib.lzma_end.argtypes = [ctypes.POINTER(_Stream)]
            lib.lzma_end.restype = None
            lib.lzma_lzma_preset.argtypes = [ctypes.POINTER(_OptionsLzma), ctypes.c_uint32]
            lib.lzma_lzma_preset.restype = ctypes.c_ubyte
            lib.lzma_filters_update.argtypes = [ctypes.POINTER(_Stream), ctypes.POINTER(_Filter)]
            lib.lzma_filters_update.restype = ctypes.c_int
            lib.lzma_raw_encoder_memusage.argtypes = [ctypes.POINTER(_Filter)]
            lib.lzma_raw_encoder_memusage.restype = ctypes.c_uint64
            lib.lzma_version_string.restype = ctypes.c_char_p
            _lib = lib
        return _lib


@dataclass(frozen=True)
class Lzma2Options:
    """Encoder settings; ``None`` fields take liblzma's value for ``preset``."""

    dict_size: int = 64 << 20
    preset: int = 9
    extreme: bool = False
    mf: str | None = None
    nice_len: int | None = None
    depth: int | None = None
    mode: str | None = None
    lc: int | None = None
    lp: int | None = None
    pb: int | None = None

    def _struct(self) -> _OptionsLzma:
        if not 4096 <= self.dict_size <= DICT_MAX:
            raise ArchiveError(f"LZMA2 dictionary size {self.dict_size} is outside 4 KiB..1.5 GiB")
        opts = _OptionsLzma()
        if liblzma().lzma_lzma_preset(ctypes.byref(opts), self.preset | (0x80000000 if self.extreme else 0)):
            raise ArchiveError(f"LZMA preset {self.preset} is not supported by this liblzma")
        opts.dict_size = self.dict_size
        if self.mf is not None:
            opts.mf = MATCH_FINDERS[self.mf]
        if self.mode is not None:
            opts.mode = MODES[self.mode]
        for name in ("nice_len", "depth", "lc", "lp", "pb"):
            value = getattr(self, name)
            if value is not None:
                setattr(opts, name, value)
        return opts

    def memusage(self) -> int:
        """liblzma's own estimate of one encoder's memory, in bytes."""
        opts = self._struct()
        filters = (_Filter * 2)(_Filter(FILTER_LZMA2, ctypes.addressof(opts)), _Filter(2**64 - 1, None))
        return int(liblzma().lzma_raw_encoder_memusage(filters))


def dict_size_property(dict_size: int) -> int:
    """The one-byte LZMA2 property (7z coder property) for a dictionary size.

    Encodes the smallest 2**n or 3*2**(n-1) that is at least ``dict_size``;
    40 means 4 GiB - 1.
    """
    for prop in range(40):
        if (2 | (prop & 1)) << (prop // 2 + 11) >= dict_size:
            return prop
    return 40


def dict_size_from_property(prop: int) -> int:
    if prop > 40:
        raise ArchiveError(f"LZMA2 dictionary property {prop} is invalid")
    return 0xFFFFFFFF if prop == 40 else (2 | (prop & 1)) << (prop // 2 + 11)


class Source:
    """A sequence of files read as one contiguous byte stream (the solid block)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = [Path(p) for p in paths]
        self.sizes = [p.stat().st_size for p in self.paths]
        self.starts = []
        pos = 0
        for size in self.sizes:
            self.starts.append(pos)
            pos += size
        self.size = pos

    def read_into(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the stream's bytes from ``offset``."""
        done, want = 0, len(buf)
        for path, start, size in zip(self.paths, self.starts, self.sizes, strict=True):
            if done == want:
                break
            pos = offset + done
            if pos >= start + size or size == 0:
                continue
            with open(path, "rb") as f:
                f.seek(pos - start)
                n = min(want - done, start + size - pos)
                got = f.readinto(buf[done : done + n])
                if got != n:
                    raise ArchiveError(f"{path} changed size while packing; rerun pack")
                done += n
        if done != want:
            raise ArchiveError("input files changed size while packing; rerun pack")


#: Pieces are never cut smaller than this.
MIN_PIECE = 64 << 10
# The cost model, in seconds per MB of one core at preset 9, hc4, nice_len 128 and a 1.5 GiB window, fitted
# to the six pieces of the full-size benchmark (docs/benchmarks.md, 2026-12-03: within 23% of each piece's
# measured seconds; bench_pack.py prints both, so a drift shows):
#: new data: NEW_BASE + NEW_SLOPE * r, r = what LZMA preset 0 makes of a MiB of it (native GPU code r 0.09,
#: x86 code and relocations r 0.16) ...
NEW_BASE, NEW_SLOPE = 0.028, 2.6
#: ... times this in the first file: with nothing like it earlier in the window the encoder weighs every
#: short match; a later library's new device images mostly extend long matches into the previous one's.
FIRST_FILE = 2.0
#: data whose 4 KiB blocks occurred earlier in the window: long matches, the encoder mostly skips.
REPEAT_COST = 0.05
#: digesting one byte of a piece's preset dictionary (hc4 inserts it into its hash chains; measured
#: 0.036-0.042 s/MB for presets of 0.85-1.5 GB).
PRIME_COST = 0.038
#: ... and with bt4, which sorts every position into its binary trees: 100 s for the corpus's first 256 MiB.
PRIME_COST_BT4 = 0.37
#: ... and bt4 encodes first-seen data in a 128 MiB window in this share of the time the rates above give:
#: the corpus's first two pieces took 0.58x and 0.52x of it (docs/benchmarks.md, 2026-12-03).
BT4_WORK = 0.55
#: a piece whose anchors' nearest earlier copies lie beyond the first-seen window for more than this share
#: keeps the whole window (:meth:`CostMap.takes_first_seen`).
FAR_MAX = 0.1
#: the probe's grid for where the first-seen settings may take over: each stretch of this many bytes is
#: near or far as a whole (:meth:`CostMap.switch_points`) ...
RUN_GRID = 16 << 20
#: ... and a run of one kind shorter than this goes with the run before it.
MIN_RUN = 64 << 20
#: liblzma's hc4 depth at nice_len 128 (4 + nice_len / 4), which the rates above were measured with ...
HC4_DEPTH = 36
#: ... and the extra encoding time per extra candidate (pack's --depth): depth 80 took 1.45x and 1.36x on the
#: first library's symbol tables and on the third library, depth 150 2.7x and 2.5x (2026-12-03, one core).
DEPTH_COST = 0.009
#: the stretch of the stream one sample speaks for.
SAMPLE_EVERY = _IO_CHUNK
SAMPLE_SIZE = 1 << 20


@dataclass(frozen=True)
class CostMap:
    """Estimated encoding seconds of the stream, per block (see NEW_BASE and REPEAT_COST)."""

    block: int  # nominal block size (the split's step)
    #: cumulative[i] = cost of blocks [0, i). Per-block figures are typed arrays, 8 bytes a block: a Python
    #: list of floats or ints costs 32-36, about 1.2 GB for the three of them at a 45 GB release.
    cumulative: Sequence[float]
    new_bytes: int = 0  # bytes whose blocks did not occur earlier (first-seen data)
    #: stream offset where each block ends; empty for a uniform grid of ``block`` bytes. Blocks follow
    #: each file's own 4 KiB grid (a library's shared code sits at the same offsets as in the previous
    #: library, not at the same offsets of the stream), so a file's last block may be short.
    ends: Sequence[int] = field(default_factory=list)
    #: first-seen bytes of blocks [0, i), beside ``cumulative``; empty when every byte is first-seen
    new_cumulative: Sequence[int] = field(default_factory=list)
    #: how far back the stream's repeats reach (:mod:`ipex_aot.farmatch`); None when not probed
    distances: MatchDistances | None = None

    @classmethod
    def uniform(cls, total: int, block: int = 1 << 20) -> CostMap:
        n = -(-total // block)
        rate = (NEW_BASE + NEW_SLOPE * 0.15) / 1e6
        return cls(block, [min(i * block, total) * rate for i in range(n + 1)], total)

    def mostly_first_seen(self, start: int, end: int) -> bool:
        """Whether at least half of ``[start, end)`` is first-seen."""
        return 2 * self.first_seen(start, end) >= end - start

    def takes_first_seen(self, start: int, end: int, window: int) -> bool:
        """Whether ``[start, end)`` loses nothing in a ``window`` much smaller than the dictionary.

        It must be mostly first-seen, and at most :data:`FAR_MAX` of its
        anchors may have their nearest earlier copy beyond ``window`` (nor of
        its bytes lie in a symbol table that repeats from beyond it). Of
        the realistic corpus's six pieces, the first library's first two
        have 0.1% and 2.4% far anchors and its ``.strtab`` 2.6%; its
        SPIR-V-to-``.symtab`` piece 39% (and its ``.symtab``, 11% of its bytes,
        by the section table), the later libraries' 51% and 56%. Without a
        probe: never.
        """
        return (self.distances is not None and self.mostly_first_seen(start, end)
                and self.distances.far(start, end, window) <= FAR_MAX)

    def switch_points(self, total: int, window: int) -> list[int]:
        """Offsets where the stream turns from data that takes the first-seen settings to data that does not.

        Each :data:`RUN_GRID` stretch is judged by :meth:`takes_first_seen`
        (a far symbol table, :func:`ipex_aot.farmatch.symbol_tables`, is a
        stretch of its own), runs shorter than :data:`MIN_RUN` go with the run
        before (a symbol table's never goes with a near run), and pieces are
        then never cut across a switch, so one piece does not mix near and far
        data. On the realistic corpus: MiB 0-1072 near, 1072-1296 far (the
        first library's SPIR-V, its unwind tables, its ``.symtab`` and the start
        of its ``.strtab``), 1296-1456 near (the rest of its ``.strtab``), far
        from there on (the later libraries).
        """
        if self.distances is None:
            return []
        tables = [(a, b) for a, b, d in self.distances.tables if d > window]
        cuts = sorted(set(range(0, total, RUN_GRID)) | {x for t in tables for x in t if 0 < x < total})
        runs: list[list] = []  # [start, end, takes the first-seen settings, holds a far symbol table]
        for a, b in zip(cuts, [*cuts[1:], total], strict=True):
            kind = self.takes_first_seen(a, b, window)
            pinned = any(ta < b and a < tb for ta, tb in tables)
            if runs and runs[-1][2] == kind:
                runs[-1][1] = b
                runs[-1][3] |= pinned
            else:
                runs.append([a, b, kind, pinned])
        merged: list[list] = []
        for a, b, kind, pinned in runs:
            if merged and (merged[-1][2] == kind or (b - a < MIN_RUN and not pinned)):
                merged[-1][1] = b  # a short run goes with the one before
            elif len(merged) == 1 and merged[0][1] - merged[0][0] < MIN_RUN and not merged[0][3]:
                merged[0][1:] = [b, kind, pinned]  # a short first run goes with the next
            else:
                merged.append([a, b, kind, pinned])
        return [a for a, _, _, _ in merged[1:]]

    def first_seen(self, start: int, end: int) -> int:
        """First-seen bytes in ``[start, end)`` (whole blocks at the bounds count in proportion)."""
        if not self.new_cumulative:
            return end - start
        return round(self._interpolate(self.new_cumulative, end) - self._interpolate(self.new_cumulative, start))

    def _interpolate(self, cumulative: Sequence[float], pos: int) -> float:
        if self.ends:
            i = bisect.bisect_right(self.ends, pos)  # blocks wholly before pos
            if i >= len(self.ends):
                return cumulative[-1]
            start = self.ends[i - 1] if i else 0
            return cumulative[i] + (cumulative[i + 1] - cumulative[i]) * (pos - start) / (self.ends[i] - start)
        i, rest = divmod(pos, self.block)
        if i + 1 >= len(cumulative):
            return cumulative[-1]
        return cumulative[i] + (cumulative[i + 1] - cumulative[i]) * rest / self.block

    def at(self, pos: int) -> float:
        """Cost of the stream's first ``pos`` bytes (linear inside a block)."""
        return self._interpolate(self.cumulative, pos)

    def piece(self, start: int, end: int, dict_size: int, first_seen: Lzma2Options | None = None,
              depth: int | None = None) -> float:
        """Estimated seconds of the piece ``[start, end)``: its preset, then its bytes.

        With ``first_seen``, a piece that takes it is primed as :func:`piece_options`
        sets it up: its preset is at most that window, digested by that match finder.
        Other pieces search ``depth`` candidates (None: liblzma's).
        """
        prime = PRIME_COST * min(start, dict_size)
        work = self.at(end) - self.at(start)
        if first_seen is not None and self.takes_first_seen(start, end, first_seen.dict_size):
            bt = (first_seen.mf or "").startswith("bt")
            prime = (PRIME_COST_BT4 if bt else PRIME_COST) * min(start, dict_size, first_seen.dict_size)
            work *= BT4_WORK if bt else 1.0
        elif depth:
            work *= 1 + DEPTH_COST * max(0, depth - HC4_DEPTH)
        return prime / 1e6 + work


def split_pieces(total: int, pieces: int, dict_size: int, costs: CostMap | None = None,
                 first_seen: Lzma2Options | None = None, depth: int | None = None) -> list[tuple[int, int]]:
    """Offsets ``(start, end)`` of at most ``pieces`` consecutive, 16-aligned pieces.

    A piece costs its own bytes (as weighed by ``costs``) plus digesting its
    preset (:meth:`CostMap.piece`); the bounds are chosen so that the
    costliest piece, which sets the wall time, is as cheap as possible.
    The result depends only on the inputs, never on timing, so archives stay
    reproducible.
    """
    costs = costs or CostMap.uniform(total)
    pieces = max(1, min(pieces, total // MIN_PIECE or 1))
    if pieces == 1:
        return [(0, total)]
    step = ALIGN * max(1, costs.block // ALIGN // 64)
    switches = costs.switch_points(total, first_seen.dict_size) if first_seen is not None else []
    if len(switches) >= pieces:  # more runs than pieces: cut by cost alone
        switches = []

    def piece_end(start: int, target: float) -> int:
        cap = next((s for s in switches if s > start), total)  # never across a switch
        lo, hi = start + step, cap  # every piece takes at least one step
        if lo >= hi:
            return cap
        while hi - lo > step:
            mid = (lo + hi) // 2 // step * step
            if mid <= lo:
                break
            if costs.piece(start, mid, dict_size, first_seen, depth) <= target:
                lo = mid
            else:
                hi = mid
        return lo if costs.piece(start, hi, dict_size, first_seen, depth) > target else hi

    def plan(target: float) -> list[int]:
        bounds = [0]
        while bounds[-1] < total and len(bounds) <= pieces:
            bounds.append(min(piece_end(bounds[-1], target), total))
        return bounds

    lo, hi = 0.0, costs.piece(0, total, dict_size, depth=depth) + PRIME_COST_BT4 * dict_size / 1e6 + 1
    for _ in range(50):
        mid = (lo + hi) / 2
        if plan(mid)[-1] >= total and len(plan(mid)) - 1 <= pieces:
            hi = mid
        else:
            lo = mid
    bounds = plan(hi)
    bounds = sorted({min(b // ALIGN * ALIGN, total) for b in bounds[:-1]} | {total})
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _sample_rate(sample: bytes) -> float:
    """Seconds per MB of new data like ``sample``, from what the cheapest LZMA makes of it."""
    if not sample:
        return 0.0
    packed = lzma.compress(sample, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 0}])
    return NEW_BASE + NEW_SLOPE * len(packed) / len(sample)


def estimate_costs(paths: Sequence[str | os.PathLike[str]], block: int = 4096, jobs: int = 1,
                   probe: bool = False) -> CostMap:
    """Where the new data is, and how costly it is to encode: a deterministic model of the encoder's time.

    Per-generation builds share host code and SPIR-V byte for byte, so their
    blocks repeat blocks of the previous library and cost little; device
    images do not. Block digests of the two previous files are kept (a few
    MB per GB of input). New data costs what its kind costs: each 8 MiB
    stretch's new blocks are weighed by LZMA preset 0 on up to 1 MiB of them
    (about 1/8 of the new bytes, compressed on ``jobs`` threads). Only the
    input's bytes decide the result, never timing. With ``probe``, it also
    measures how far back repeats reach (:func:`ipex_aot.farmatch.match_distances`,
    about 12 s for the 4.5 GB corpus on one core), which :meth:`CostMap.takes_first_seen` needs.
    """
    sizes = array("q")  # per block: its bytes (``block``, or less at a file's end)
    new_flags = bytearray()  # per block: 1 if first seen
    samples: list[bytes] = []  # per stretch
    stretch_of = array("q")  # per block: index of its stretch
    seen: list[set[int]] = []
    first_file: list[bool] = []  # per stretch
    for index, path in enumerate(paths):
        mine: set[int] = set()
        with open(path, "rb") as f:
            while chunk := f.read(SAMPLE_EVERY):  # a multiple of block: the grid restarts at each file
                view = memoryview(chunk)
                fresh: list[memoryview] = []
                for off in range(0, len(chunk), block):
                    piece = view[off : off + block]
                    digest = zlib.crc32(piece) | zlib.adler32(piece) << 32 | len(piece) << 64
                    repeat = digest in mine or any(digest in s for s in seen)
                    mine.add(digest)
                    sizes.append(len(piece))
                    new_flags.append(not repeat)
                    stretch_of.append(len(samples))
                    if not repeat and len(fresh) * block < SAMPLE_SIZE:
                        fresh.append(piece)
                samples.append(b"".join(fresh))
                first_file.append(index == 0)
        seen = (seen + [mine])[-2:]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # lzma releases the GIL
        rates = list(pool.map(_sample_rate, samples))
    cumulative, ends, fresh_bytes = array("d", [0.0]), array("q"), array("q", [0])
    cost, pos, new_total = 0.0, 0, 0
    for size, is_new, stretch in zip(sizes, new_flags, stretch_of, strict=True):
        rate = rates[stretch] * (FIRST_FILE if first_file[stretch] else 1.0) if is_new else REPEAT_COST
        cost += size * rate / 1e6
        new_total += size if is_new else 0
        pos += size
        cumulative.append(cost)
        fresh_bytes.append(new_total)
        ends.append(pos)
    del sizes, new_flags, stretch_of
    distances = None
    if probe:
        # Imported here, not above: numpy's Windows wheel needs ucrtbase's crealf, which Wine 8 lacks, and
        # the Windows lane imports this module (pack); the probe runs only in the parallel engine.
        from ipex_aot.farmatch import match_distances

        distances = match_distances(paths, jobs)
    return CostMap(block, cumulative, fresh_bytes[-1], ends, fresh_bytes, distances)


class _Allocator(ctypes.Structure):
    _fields_ = [("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p), ("opaque", ctypes.c_void_p)]


_ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
#: Priming samples this many 4 KiB blocks of the window to check the preset is still there.
_PRIME_CHECKS = 64
#: Presets from this size on are read into the encoder's window; smaller ones are copied, which costs
#: little, and their windows are not much larger than liblzma's own coder structures.
IN_PLACE_MIN = 16 << 20


def _anonymous(size: int) -> mmap.mmap:
    """Zeroed memory the system hands out page by page as it is first touched."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, max(1, size), flags=mmap.MAP_PRIVATE)
    return mmap.mmap(-1, max(1, size))


class _WindowAllocator:
    """liblzma's allocator for one encoder, which primes it without a second copy of the preset.

    liblzma copies the preset dictionary into the window buffer it allocates
    while the encoder starts (``lz_encoder_init``: the buffer, of at least
    the dictionary size, is its first such allocation, before the hash
    tables). Here that allocation is the memory the preset was read into, so
    the copy is onto itself and the preset's 1.5 GB exist once, not twice:
    that copy set the packer's peak memory. Every other allocation is plain
    anonymous memory. :meth:`check_primed` then samples the window against
    the source, so a liblzma that allocated otherwise fails loudly instead of
    packing from a wrong dictionary.
    """

    def __init__(self, dict_size: int, preset_len: int) -> None:
        self.dict_size, self.preset_len = dict_size, preset_len
        # liblzma's window: the dictionary, half of it again as room to move (lz_encoder_prepare), and
        # a little; reserved, not touched, so the unused tail costs nothing.
        self.window = _anonymous(dict_size + dict_size // 2 + (8 << 20)) if preset_len else None
        #: the smallest allocation that can be the window: the dictionary and half of it again
        self.in_place = self.window is not None and preset_len >= IN_PLACE_MIN
        self.handed = False
        self.blocks: dict[int, tuple[mmap.mmap, ctypes.c_char]] = {}
        self._alloc, self._free = _ALLOC(self._on_alloc), _FREE(self._on_free)
        self.struct = _Allocator(ctypes.cast(self._alloc, ctypes.c_void_p), ctypes.cast(self._free, ctypes.c_void_p),
                                 None)
        self._window_char = ctypes.c_char.from_buffer(self.window) if self.window is not None else None
        self.address = ctypes.addressof(self._window_char) if self._window_char is not None else 0

    def preset(self) -> memoryview:
        """Where the preset is to be read."""
        assert self.window is not None
        return memoryview(self.window)[: self.preset_len]

    def _on_alloc(self, _opaque: int | None, count: int, size: int) -> int:
        total = count * size
        if (self.in_place and self.window is not None and not self.handed
                and self.dict_size + self.dict_size // 2 <= total <= len(self.window)):
            self.handed = True
            return self.address
        block = _anonymous(total)
        char = ctypes.c_char.from_buffer(block)
        address = ctypes.addressof(char)
        self.blocks[address] = (block, char)
        return address

    def _on_free(self, _opaque: int | None, address: int | None) -> None:
        if address:
            self.blocks.pop(address, None)

    def check_primed(self, source: Source, offset: int) -> None:
        """Fail when the window no longer holds the preset (a liblzma that allocates otherwise)."""
        if not self.preset_len:
            return
        assert self.window is not None
        if not self.handed:
            # liblzma copied the preset into a buffer of its own: correct, only not the memory saving.
            self.release_window()
            return
        step = max(4096, self.preset_len // _PRIME_CHECKS // 4096 * 4096)
        sample = bytearray(4096)
        for at in range(0, self.preset_len, step):
            n = min(4096, self.preset_len - at)
            source.read_into(offset + at, memoryview(sample)[:n])
            if self.window[at : at + n] != sample[:n]:
                raise ArchiveError(
                    f"liblzma {liblzma().lzma_version_string().decode()} did not keep the preset dictionary in "
                    "the window it allocated; pack with --engine 7zz or python"
                )

    def release_window(self) -> None:
        if self.window is not None:
            self._window_char = None
            self.window.close()
            self.window = None

    def release(self) -> None:
        """Drop every block (after lzma_end)."""
        self.blocks.clear()
        self.release_window()


def _check(ret: int, what: str) -> None:
    if ret not in (_OK, _STREAM_END):
        raise ArchiveError(f"liblzma {what} failed: {_RET_NAMES.get(ret, f'error {ret}')}")


def encode_piece(
    source: Source,
    start: int,
    end: int,
    options: Lzma2Options,
    out: Callable[[bytes], object],  # a file's write returns a count; it is not used
    progress: Callable[[int], None] | None = None,
    *,
    last: bool,
    cancel: threading.Event | None = None,
    on_primed: Callable[[], object] | None = None,
    priming: threading.Lock | None = None,
    changes: Sequence[Change] = (),
    stored: Sequence[tuple[int, int]] = (),
) -> int:
    """Encode ``source[start:end]`` as a piece of one LZMA2 stream; returns bytes written.

    The encoder is primed with the ``min(start, dict_size)`` bytes before
    ``start``; the end marker is kept only when ``last``. ``changes``
    (:func:`ipex_aot.literals.stream_changes`) set lc/lp/pb: the piece starts
    with the setting in force at ``start`` and switches at each later change
    (a flushed chunk, then ``lzma_filters_update``). ``stored`` stretches
    (:func:`ipex_aot.literals.stored_stretches`) go in as LZMA2's uncompressed
    chunks (:func:`_encode_primed`).
    """
    if start % ALIGN or options.dict_size % ALIGN:
        raise ValueError("piece start and dict_size must be multiples of 16")
    lib = liblzma()
    before = [c for c in changes if c.at <= start]
    if before:  # the setting in force where the piece starts
        lc, lp, pb = before[-1].props
        options = replace(options, lc=lc, lp=lp, pb=pb)
    opts = options._struct()
    preset_len = min(start, options.dict_size)
    filters = (_Filter * 2)(_Filter(FILTER_LZMA2, ctypes.addressof(opts)), _Filter(2**64 - 1, None))
    strm = _Stream()
    allocator = _WindowAllocator(options.dict_size, preset_len)
    strm.allocator = ctypes.addressof(allocator.struct)
    try:
        with priming or contextlib.nullcontext():  # presets are read one at a time
            if preset_len:
                source.read_into(start - preset_len, allocator.preset())
                opts.preset_dict = allocator.address
                opts.preset_dict_size = preset_len
            _check(lib.lzma_raw_encoder(ctypes.byref(strm), filters), "encoder setup")
            allocator.check_primed(source, start - preset_len)
        if on_primed is not None:
            on_primed()
        switches = [c for c in changes if start < c.at < end]
        return _encode_primed(lib, strm, source, start, end, out, progress, last=last, cancel=cancel,
                              switches=switches, opts=opts, filters=filters, stored=stored)
    finally:
        lib.lzma_end(ctypes.byref(strm))
        allocator.release()


#: LZMA2's largest uncompressed chunk.
STORED_CHUNK = 1 << 16


def _write_stored(source: Source, start: int, end: int, out: Callable[[bytes], object]) -> int:
    """Write ``source[start:end]`` as LZMA2 uncompressed chunks (control 1 resets the dictionary at offset 0,
    else 2), one chunk in memory at a time; returns the bytes written."""
    buf = bytearray(STORED_CHUNK)
    view = memoryview(buf)
    written = 0
    for at in range(start, end, STORED_CHUNK):
        n = min(STORED_CHUNK, end - at)
        source.read_into(at, view[:n])
        out(bytes((1 if at == 0 else 2,)) + (n - 1).to_bytes(2, "big") + bytes(view[:n]))
        written += 3 + n
    return written


def _encode_primed(lib: ctypes.CDLL, strm: _Stream, source: Source, start: int, end: int,
                   out: Callable[[bytes], object], progress: Callable[[int], None] | None, *, last: bool,
                   cancel: threading.Event | None, switches: Sequence[Change] = (),
                   opts: _OptionsLzma | None = None, filters: ctypes.Array | None = None,
                   stored: Sequence[tuple[int, int]] = ()) -> int:
    """Feed ``source[start:end]`` through the primed encoder ``strm``, writing the LZMA2 chunks to ``out``.

    At each of ``switches`` the chunk is flushed and lc/lp/pb change. Each
    ``stored`` stretch (clipped to the piece) is flushed up to, run through the
    encoder so its bytes are in the match finder's window, its chunks dropped
    and replaced by the bytes as uncompressed chunks; the encoder's next chunk
    then resets the LZMA state, which the decoder's state (untouched by the
    uncompressed chunks) needs. liblzma resets the state at a chunk only when
    lc/lp/pb change (``lzma2_encoder_options_update``), so pb is changed and
    changed back, which sets the reset and keeps the setting.
    """
    outbuf = ctypes.create_string_buffer(_IO_CHUNK)
    inbuf = bytearray(_IO_CHUNK)
    inview = memoryview(inbuf)
    in_addr = ctypes.addressof((ctypes.c_char * _IO_CHUNK).from_buffer(inbuf))
    written = 0
    pending = b""  # the last byte, held back until we know whether it is the end marker
    pos = start
    # (offset, change or None, end of the stored stretch or None); a change at or inside a stored stretch
    # waits for its end (and for the end of a stretch right after it)
    spans = [(max(a, start), min(b, end)) for a, b in stored if a < end and b > start]
    events: list[tuple[int, Change | None, int | None]] = [(a, None, b) for a, b in spans]
    for switch in switches:
        at = switch.at
        for a, b in spans:  # in order and apart
            if a <= at < b:
                at = b
        events.append((at, switch, None))
    events.sort(key=lambda e: (e[0], e[1] is not None))
    storing: tuple[int, int] | None = None  # the stored stretch going through the encoder now

    def set_props(props: tuple[int, int, int], reset: bool) -> None:
        assert opts is not None and filters is not None
        if reset:  # another pb first, so the update below differs from the encoder's and resets the state
            opts.pb ^= 1
            _check(lib.lzma_filters_update(ctypes.byref(strm), filters), "resetting the LZMA state")
        opts.lc, opts.lp, opts.pb = props
        _check(lib.lzma_filters_update(ctypes.byref(strm), filters), "changing lc/lp/pb")

    while True:
        if cancel is not None and cancel.is_set():
            raise ArchiveError("packing was cancelled")
        stop = storing[1] if storing else events[0][0] if events else end  # read no further before it
        if strm.avail_in == 0:
            n = min(_IO_CHUNK, max(0, stop - pos))
            if n:
                source.read_into(pos, inview[:n])
                pos += n
                strm.next_in, strm.avail_in = in_addr, n
                if progress:
                    progress(n)
        action = _RUN
        if pos >= stop:
            action = _SYNC_FLUSH if storing or events else _FINISH
        strm.next_out, strm.avail_out = ctypes.addressof(outbuf), _IO_CHUNK
        ret = lib.lzma_code(ctypes.byref(strm), action)
        _check(ret, "encoding")
        produced = _IO_CHUNK - strm.avail_out
        if produced and not storing:
            data = pending + outbuf.raw[:produced]
            out(data[:-1])
            written += len(data) - 1
            pending = data[-1:]
        if ret != _STREAM_END:
            continue
        if action == _FINISH:
            break
        if storing:  # the stretch is in the window and its chunks dropped: the bytes as they are
            written += _write_stored(source, *storing, out)
            storing = None
            assert opts is not None
            set_props((opts.lc, opts.lp, opts.pb), reset=True)
            continue
        _, change, stored_end = events.pop(0)
        if change is not None:  # the chunk is flushed: the next one starts with the state reset and the new properties
            set_props(change.props, reset=False)
        elif stored_end is not None:
            out(pending)  # a whole chunk, not the end marker: everything so far is final
            written += len(pending)
            pending = b""
            storing = (pos, stored_end)
    if pending != b"\x00":
        raise ArchiveError("liblzma ended an LZMA2 piece without its end marker; cannot join pieces")
    if last:
        out(pending)
        written += 1
    return written


@dataclass(frozen=True)
class PieceStats:
    """What one piece took: its bounds, its packed bytes, measured and modelled seconds."""

    start: int
    end: int
    packed: int
    seconds: float  # preset included
    prime_seconds: float  # digesting the preset alone
    model: float  # CostMap.piece's estimate
    memory: int  # liblzma's estimate of its encoder
    match_finder: str = ""
    window: int = 0

    def describe(self) -> str:
        return (f"{(self.end - self.start) / 1e6:.0f} MB -> {self.packed / 1e6:.2f} MB in {self.seconds:.1f} s "
                f"({self.match_finder}, window {self.window >> 20} MiB, preset {self.prime_seconds:.1f} s, "
                f"model {self.model:.0f} s)")


@dataclass(frozen=True)
class EncodeResult:
    packed_size: int
    unpacked_size: int
    pieces: list[tuple[int, int]]
    seconds: list[float] = field(default_factory=list)  # per piece, preset included
    stats: list[PieceStats] = field(default_factory=list)
    #: most encoders that ran at once
    concurrent: int = 1


@dataclass
class _Held:
    """Encoders running now (guarded by encode_parallel's lock): their memory, their count, the most at once."""

    memory: int = 0
    running: int = 0
    most: int = 0


def piece_window(options: Lzma2Options, start: int, end: int) -> int:
    """The window a piece's encoder needs: its preset plus itself, at most the dictionary.

    A piece cannot reach back past its preset, so a smaller window gives the
    same bytes with far less memory for the early pieces.
    """
    return min(options.dict_size, max(1 << 16, -(-(min(start, options.dict_size) + end - start) // ALIGN) * ALIGN))


def piece_options(options: Lzma2Options, start: int, end: int, costs: CostMap | None = None,
                  first_seen: Lzma2Options | None = None) -> Lzma2Options:
    """The encoder settings of the piece ``[start, end)``.

    A piece that loses nothing in a small window (:meth:`CostMap.takes_first_seen`)
    takes ``first_seen``'s settings (pack's ``--first-seen-match-finder``)
    with its window at most ``first_seen.dict_size``; other pieces, whose
    repeats only the whole window reaches, take ``options``. Only the inputs and the options decide, never the memory
    budget or the worker count.
    """
    window = piece_window(options, start, end)
    if first_seen is None or costs is None or not costs.takes_first_seen(start, end, first_seen.dict_size):
        return replace(options, dict_size=window)
    return replace(first_seen, dict_size=max(1 << 16, min(window, first_seen.dict_size) // ALIGN * ALIGN))


def encode_parallel(
    source: Source,
    options: Lzma2Options,
    out_path: Path,
    *,
    workers: int,
    pieces: int | None = None,
    costs: CostMap | None = None,
    progress: Callable[[int], None] | None = None,
    memory: int | None = None,
    first_seen: Lzma2Options | None = None,
    changes: Sequence[Change] = (),
    stored: Sequence[tuple[int, int]] = (),
) -> EncodeResult:
    """Encode the whole ``source`` as one LZMA2 stream into ``out_path`` on up to ``workers`` threads.

    Pieces start costliest first by ``costs`` (stream order without them):
    the longest-first rule for finishing jobs on few workers early. In stream
    order the later libraries' two long pieces started last and one worker
    idled while the other finished them (the corpus on 2 workers, simulated
    from the 1-worker pieces' seconds: the busier worker had 487 s of the 903 s
    in stream order, 463 s costliest first). Each starts as soon as a worker
    is free and its encoder fits in ``memory`` beside the running ones (one
    always runs), so a small budget runs them one by one and a large one side
    by side; the bytes never depend on either. Each piece goes to a temporary file beside
    ``out_path`` and the pieces are joined in order. Pieces that are mostly
    first-seen data are encoded with ``first_seen`` (see :func:`piece_options`).
    ``changes`` set lc/lp/pb per section and ``stored`` stretches are kept as
    they are (:func:`encode_piece`).
    """
    if any(not a < b for a, b in stored) or any(b > c for (_, b), (c, _) in zip(stored, stored[1:], strict=False)):
        raise ValueError("stored stretches must be non-empty, in order and apart")
    dict_size = min(options.dict_size, DICT_MAX) // ALIGN * ALIGN
    options = replace(options, dict_size=max(dict_size, 1 << 16))
    bounds = split_pieces(source.size, pieces or workers, options.dict_size, costs, first_seen, options.depth)
    settings = [piece_options(options, a, b, costs, first_seen) for a, b in bounds]
    needs = [o.memusage() for o in settings]
    # A piece's preset is read straight into its encoder's window (_WindowAllocator): no room beyond needs.
    lock = threading.Lock()
    room = threading.Condition(lock)
    priming = threading.Lock()
    held = _Held()
    budget = memory if memory is not None else sum(needs)
    estimates = [costs.piece(a, b, options.dict_size, first_seen, options.depth) if costs else 0.0 for a, b in bounds]

    def tick(n: int) -> None:
        if progress:
            with lock:
                progress(n)

    stats: list[PieceStats | None] = [None] * len(bounds)
    cancel = threading.Event()  # set on the first failure or Ctrl-C, so the other pieces stop within a chunk

    def run(i: int) -> Path:
        start, end = bounds[i]
        with room:  # wait until this encoder fits beside the running ones
            while held.running and held.memory + needs[i] > budget and not cancel.is_set():
                room.wait(0.5)
            held.memory += needs[i]
            held.running += 1
            held.most = max(held.most, held.running)
        part = out_path.with_name(f"{out_path.name}.piece{i}")
        began = time.monotonic()
        primed: list[float] = []
        try:
            if cancel.is_set():
                raise ArchiveError("packing was cancelled")
            with open(part, "wb") as f:
                packed = encode_piece(source, start, end, settings[i], f.write, tick,
                                      last=i == len(bounds) - 1, cancel=cancel, priming=priming,
                                      on_primed=lambda: primed.append(time.monotonic() - began),
                                      changes=changes, stored=stored)
        except BaseException:
            cancel.set()
            raise
        finally:
            with room:
                held.memory -= needs[i]
                held.running -= 1
                room.notify_all()
        stats[i] = PieceStats(start, end, packed, time.monotonic() - began, primed[0] if primed else 0.0,
                              estimates[i], needs[i], settings[i].mf or "preset", settings[i].dict_size)
        return part

    parts: list[Path] = []
    try:
        if source.size == 0:
            out_path.write_bytes(b"\x00")
            return EncodeResult(1, 0, [])
        # The start order matters: the pool hands pieces out in submission order, and run() waits for memory.
        order = sorted(range(len(bounds)), key=lambda i: (-estimates[i], i))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            submitted = {i: pool.submit(run, i) for i in order}
            futures = [submitted[i] for i in range(len(bounds))]
            try:
                concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C: stop the running pieces, drop the queued ones
                cancel.set()
                for f in futures:
                    f.cancel()
                raise
            if cancel.is_set():
                for f in futures:
                    f.cancel()
                concurrent.futures.wait(futures)
                errors = [e for e in (f.exception() for f in futures if not f.cancelled()) if e is not None]
                # report the piece that failed, not the ones it stopped
                first = [e for e in errors if "cancelled" not in str(e)] or errors
                raise first[0]
            parts = [f.result() for f in futures]
        with open(out_path, "wb") as out:
            for part in parts:
                with open(part, "rb") as piece:
                    while chunk := piece.read(_IO_CHUNK):
                        out.write(chunk)
        done = [s for s in stats if s is not None]
        return EncodeResult(out_path.stat().st_size, source.size, bounds, [s.seconds for s in done], done,
                            held.most)
    finally:
        for i in range(len(bounds)):
            out_path.with_name(f"{out_path.name}.piece{i}").unlink(missing_ok=True)
