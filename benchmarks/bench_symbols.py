"""Benchmark: where an archive's decoding time goes, region by region, against another archive of the same files.

bench_pack.py times 7zz extracting a folder from our archive and from 7-Zip's; this one says
where a difference comes from. For each archive it takes the 7z folder that holds the libraries
(the largest LZMA2 folder) and

1. decodes it with ``lzma2_symbols.c`` (beside this script, compiled here with the system C
   compiler): per 16 MiB of output, the symbols LZMA coded (literals, literals right after a
   match, matches with a new distance, matches at a repeated distance, 1-byte short repeats),
   the matches from more than ``--far`` MiB back, and the packed bytes;
2. decodes it ``--rounds`` times with liblzma (Python's ``lzma``, raw LZMA2), the archives
   taking turns, timing each 16 MiB of output; per stretch the fastest round counts, which
   takes most of the machine's noise out of a region's figure.

It prints, per region (each file of the folder, by name, and each ``--region``), each archive's
figures and their ratio to the first archive's, the reference:

    .venv/bin/python benchmarks/bench_symbols.py REFERENCE.7z OURS.7z [--region NAME:FROM-TO ...] [--json OUT]

``FROM-TO`` are MiB of the folder's stream. 7zz decodes with 7-Zip's own decoder, not
liblzma's; the two spend their time on the same work (one range-coded bit after another), but
their seconds differ, so the seconds here explain 7zz's and do not replace them. About 20 s
of one core per archive and round for the 4.5 GB corpus, and 5 GB of memory per archive.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import lzma
import mmap
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import py7zr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ipex_aot import lzma2  # noqa: E402

BIN = 16 << 20
SOURCE = Path(__file__).with_name("lzma2_symbols.c")
SYMBOLS = ("literals", "match_literals", "matches", "rep0", "rep1", "rep2", "rep3", "short_reps")
LZMA2_METHOD = b"\x21"


@dataclass
class Folder:
    """The LZMA2 folder of an archive: where its packed stream is and which files it holds, in order."""

    archive: Path
    offset: int  # of the packed stream in the archive file
    packed: int
    dict_size: int
    files: list[tuple[str, int]]  # (name, size) in stream order
    bins: list[dict[str, float]] = field(default_factory=list)  # lzma2_symbols' rows
    seconds: list[float] = field(default_factory=list)  # per bin, fastest round


def lzma2_folder(archive: Path) -> Folder:
    """The archive's largest LZMA2 folder; exits with a message when there is none."""
    with py7zr.SevenZipFile(archive) as a:
        streams = a.header.main_streams
        folders = streams.unpackinfo.folders
        counts = streams.substreamsinfo.num_unpackstreams_folders
        files = [(f.filename, f.uncompressed) for f in a.list() if not f.is_directory and f.uncompressed]
    best, held, start = None, [], 0  # best: index of the largest folder packed with LZMA2 alone
    for i, folder in enumerate(folders):
        held.append(files[start : start + counts[i]])
        start += counts[i]
        coders = folder.coders
        if len(coders) == 1 and coders[0]["method"] == LZMA2_METHOD and (
                best is None or sum(s for _, s in held[i]) > sum(s for _, s in held[best])):
            best = i
    if best is None:
        sys.exit(f"{archive}: no folder packed with LZMA2 alone")
    pack = streams.packinfo
    return Folder(archive, 32 + pack.packpos + sum(pack.packsizes[:best]), pack.packsizes[best],
                  lzma2.dict_size_from_property(folders[best].coders[0]["properties"][0]), held[best])


def compile_tool(into: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("bench_symbols needs a C compiler (cc or gcc) for lzma2_symbols.c: apt-get install gcc")
    exe = into / "lzma2_symbols"
    subprocess.run([compiler, "-O2", "-o", str(exe), str(SOURCE)], check=True)
    return exe


def count_symbols(exe: Path, folder: Folder, far_mib: int) -> None:
    out = subprocess.run([str(exe), str(folder.archive), str(folder.offset), str(far_mib)],
                         check=True, capture_output=True, text=True).stdout
    folder.bins = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(out))]


def time_bins(folder: Folder) -> list[float]:
    """Seconds liblzma takes for each 16 MiB of the folder's output, in one pass."""
    with open(folder.archive, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        data = memoryview(m)[folder.offset : folder.offset + folder.packed]
        try:
            decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[
                {"id": lzma.FILTER_LZMA2, "dict_size": folder.dict_size}])
            times, begun = [], time.perf_counter()
            got = decoder.decompress(data, max_length=BIN)
            while got:
                now = time.perf_counter()
                times.append(now - begun)
                begun = now
                if decoder.eof:
                    break
                got = decoder.decompress(b"", max_length=BIN)
        finally:
            data.release()
    return times


def region_sum(values: list[float], start: int, end: int) -> float:
    """The sum over ``[start, end)`` bytes of per-bin ``values``, partial bins in proportion."""
    total = 0.0
    for i in range(start // BIN, min(len(values), -(-end // BIN))):
        lo, hi = max(start, i * BIN), min(end, (i + 1) * BIN)
        total += values[i] * (hi - lo) / BIN
    return total


def regions(folder: Folder, extra: list[tuple[str, int, int]]) -> dict[str, tuple[int, int]]:
    out, at = {}, 0
    for name, size in folder.files:
        out[name] = (at, at + size)
        at += size
    for name, a, b in extra:
        out[name] = (a, b)
    return out


def figures(folder: Folder, start: int, end: int) -> dict[str, float]:
    col = {k: [b[k] for b in folder.bins] for k in folder.bins[0]}
    symbols = sum(region_sum(col[k], start, end) for k in SYMBOLS)
    return {
        "symbols_m": symbols / 1e6,
        "literals_m": (region_sum(col["literals"], start, end) + region_sum(col["match_literals"], start, end)) / 1e6,
        "short_reps_m": region_sum(col["short_reps"], start, end) / 1e6,
        "far_matches_k": region_sum(col["far_matches"], start, end) / 1e3,
        "packed_mb": region_sum(col["packed_bytes"], start, end) / 1e6,
        "liblzma_s": region_sum(folder.seconds, start, end),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("archives", nargs="+", type=Path, help="the reference first, then the archives to compare")
    p.add_argument("--region", action="append", default=[], metavar="NAME:FROM-TO",
                   help="a region of the folder's stream, in MiB (repeatable)")
    p.add_argument("--far", type=int, default=256, metavar="MIB", help="a match from this far back counts as far")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    extra = []
    for spec in args.region:
        try:
            name, span = spec.rsplit(":", 1)
            a, b = (int(float(x) * (1 << 20)) for x in span.split("-"))
        except ValueError:
            sys.exit(f"--region {spec!r}: expected NAME:FROM-TO in MiB, e.g. devices:830-1030")
        extra.append((name, a, b))
    for a in args.archives:
        if not a.is_file():
            sys.exit(f"{a}: no such archive")
    folders = [lzma2_folder(a) for a in args.archives]
    names = [a.name for a in args.archives]
    labels = dict(zip(args.archives, names if len(set(names)) == len(names) else map(str, args.archives), strict=True))
    with tempfile.TemporaryDirectory(prefix="bench-symbols-") as tmp:
        exe = compile_tool(Path(tmp))
        for f in folders:
            count_symbols(exe, f, args.far)
            print(f"{labels[f.archive]}: {len(f.bins)} stretches of 16 MiB counted", flush=True)
    rounds: list[list[list[float]]] = [[] for _ in folders]
    for r in range(args.rounds):
        for i, f in enumerate(folders):  # the archives take turns, so a slow spell hits all of them
            rounds[i].append(time_bins(f))
        print(f"timing round {r + 1}/{args.rounds} done", flush=True)
    for f, runs in zip(folders, rounds, strict=True):
        f.seconds = [min(run[i] for run in runs) for i in range(min(len(run) for run in runs))]
    region_names = list(regions(folders[0], extra))
    report: dict = {"archives": [str(a) for a in args.archives], "rounds": args.rounds, "far_mib": args.far,
                    "regions": {}}
    for name in region_names + ["whole folder"]:
        rows: list[dict[str, float] | None] = []
        for f in folders:
            spans = regions(f, extra)
            if name == "whole folder":
                span = (0, sum(s for _, s in f.files))
            elif name in spans:
                span = spans[name]
            else:
                rows.append(None)
                continue
            rows.append(figures(f, *span))
        report["regions"][name] = rows
        print(f"\n{name}")
        ref = rows[0]
        for f, row in zip(folders, rows, strict=True):
            if row is None:
                print(f"  {labels[f.archive]}: not in this archive")
                continue
            line = "  ".join(f"{k} {v:.3f}" + (f" ({v / ref[k]:.3f}x)" if ref and ref[k] and row is not ref else "")
                             for k, v in row.items())
            print(f"  {labels[f.archive]}: {line}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
