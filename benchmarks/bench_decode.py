"""Benchmark: how fast 7zz decodes a later library's stretch packed by hc4 (pack's) and by bt4 (7-Zip's).

The full-size pack benchmark (bench_pack.py) finds 7zz extracting the last folder of
our archive a few percent slower than from 7-Zip's own, and the first folder no slower.
This one isolates where that comes from. It takes the same stretch of the first two
libraries of ``make_corpus.py``'s corpus (by default MiB 830-1030: the native device
images, which the second library has mostly for the first time, with many short repeats
of the first library's), packs the first library's stretch and then the second's,
primed with the first (as pack's later pieces are), once with the settings pack gives
such pieces (hc4, nice_len 128, depth 80) and once with 7-Zip ``-mx9``'s (bt4, nice_len
64), each in a 512 MiB window that holds both stretches. For the second stretch it
prints the packed size, the encoding seconds and the seconds 7zz takes to decode it
(``7zz x -so`` of both files minus of the first alone, fastest of five), and each
encoder's memory at the 1.5 GiB window that reaches a whole library back.

    .venv/bin/python benchmarks/bench_decode.py --corpus CORPUS_DIR [--from 830 --to 1030] [--hc4 273,80 ...]

``--hc4 NICE_LEN,DEPTH`` adds hc4 at other settings (does a deeper search decode faster?).
It takes about 4 minutes on 2 cores, and 2-4 more per ``--hc4``. A stretch is a slice: its distances are shorter than
the real ones (about 1.5 GB), so its figures explain the full-size run and do not replace it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_pack import corpus_libraries  # noqa: E402  (this script's folder is first on sys.path)

from ipex_aot import lzma2, sevenz  # noqa: E402
from ipex_aot.pack import PackOptions  # noqa: E402

WINDOW = 512 << 20
ROUNDS = 5
#: 7-Zip -mx9's LZMA settings (fb 64, bt4; its depth is liblzma's default for bt4 and nice_len 64: 48)
SEVENZIP_MX9 = {"mf": "bt4", "nice_len": 64}


def seven_zip_seconds(sevenzz: str, archive: Path, name: str) -> float:
    """The fastest of ROUNDS runs of ``7zz x -so ARCHIVE NAME`` (decoding, written to nowhere)."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        subprocess.run([sevenzz, "x", "-so", str(archive), name], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def encode(source: lzma2.Source, start: int, end: int, options: lzma2.Lzma2Options, path: Path) -> dict:
    """One piece of the stream into ``path``, primed with what comes before it: packed bytes and seconds."""
    began = time.monotonic()
    with open(path, "wb") as f:
        packed = lzma2.encode_piece(source, start, end, options, f.write, last=end == source.size)
    return {"packed": packed, "seconds": time.monotonic() - began}


def run(name: str, options: lzma2.Lzma2Options, files: list[Path], work: Path, sevenzz: str) -> dict:
    source = lzma2.Source(files)
    cut = files[0].stat().st_size  # a whole number of MiB: the second piece starts at the second file
    parts = [work / f"{name}.0", work / f"{name}.1"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # liblzma releases the GIL
        done = list(pool.map(lambda i: encode(source, (0, cut)[i], (cut, source.size)[i], options, parts[i]), (0, 1)))
    archive = work / f"{name}.7z"
    entries = [sevenz.Entry(p.name, size=p.stat().st_size, crc32=zlib.crc32(p.read_bytes())) for p in files]
    folder = sevenz.Folder(sum(d["packed"] for d in done), lzma2.dict_size_property(options.dict_size), entries)
    with open(parts[0], "ab") as stream:  # the second piece goes after the first: one LZMA2 stream
        stream.write(parts[1].read_bytes())
    with open(archive, "wb") as out, open(parts[0], "rb") as stream:
        sevenz.write_archive(out, [stream], [folder], [], 0)
    for part in parts:
        part.unlink()
    first = seven_zip_seconds(sevenzz, archive, files[0].name)
    both = seven_zip_seconds(sevenzz, archive, files[1].name)  # 7zz decodes the first file on its way
    full = dataclasses.replace(options, dict_size=lzma2.DICT_MAX)
    return {"packed": done[1]["packed"], "encode_s": round(done[1]["seconds"], 1), "decode_s": round(both - first, 3),
            "memory_at_1536MiB_gb": round(full.memusage() / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="make_corpus.py's output folder")
    ap.add_argument("--from", dest="start", type=int, default=830, help="MiB of each library (default 830)")
    ap.add_argument("--to", dest="end", type=int, default=1030, help="MiB (default 1030)")
    ap.add_argument("--hc4", action="append", default=[], metavar="NICE_LEN,DEPTH",
                    help="also pack the stretch with hc4 at these settings (repeatable), e.g. 273,80 or 128,160")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not 0 <= args.start < args.end or (args.end - args.start) << 20 > WINDOW // 2:
        ap.error(f"--from/--to must give a stretch of at most {WINDOW >> 21} MiB")
    sevenzz = shutil.which("7zz") or shutil.which("7z")
    if sevenzz is None:
        sys.exit("7zz not found: install Debian's 7zip (setup.sh does)")
    libraries = list(corpus_libraries(args.corpus).items())[:2]
    if len(libraries) < 2:
        sys.exit(f"{args.corpus}: needs two generation folders (make_corpus.py makes three)")
    gens = [g for g, _ in libraries]
    work = Path(tempfile.mkdtemp(prefix="bench-decode-", dir="/var/tmp"))
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "stretch_mib": [args.start, args.end],
                     "generations": gens, "load_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        files = []
        for i, (g, lib) in enumerate(libraries):
            with open(lib, "rb") as f:
                f.seek(args.start << 20)
                data = f.read((args.end - args.start) << 20)
            if len(data) != (args.end - args.start) << 20:
                sys.exit(f"{g}: the library is shorter than MiB {args.end}")
            path = work / f"lib{i}.bin"
            path.write_bytes(data)
            files.append(path)
        variants = {"hc4_pack": PackOptions().main_options(WINDOW),
                    "bt4_7zip_mx9": lzma2.Lzma2Options(dict_size=WINDOW, **SEVENZIP_MX9)}
        for spec in args.hc4:
            nice, depth = (int(x) for x in spec.split(","))
            variants[f"hc4_nice{nice}_depth{depth}"] = lzma2.Lzma2Options(dict_size=WINDOW, mf="hc4", nice_len=nice,
                                                                           depth=depth)
        for name, options in variants.items():
            results[name] = run(name, options, files, work, sevenzz)
            print(f"{name}: {results[name]}", flush=True)
        b = results["bt4_7zip_mx9"]
        results["vs_bt4"] = {name: {k: round(results[name][k] / b[k], 3) for k in ("packed", "encode_s", "decode_s")}
                             for name in variants if name != "bt4_7zip_mx9"}
        results["load_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
