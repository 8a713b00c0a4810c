"""Benchmark the packer's core on any machine: parallel LZMA2 pieces + the 7z writer vs 7zz, stdlib only.

bench_pack.py runs the whole `pack` (hashing, scan-free, read-back with
py7zr) on the shared 2-core machine; this one needs nothing but Python 3.10+,
liblzma.so.5 and a 7zz binary, so it also runs on a quiet machine where the
scaling with workers can be seen without other people's load. It times, on
the same inputs: ``7zz a -t7z -m0=lzma2 -mx9 -md=1536m -mmt=1``; our stream
(CRC pass, cost estimate, ``--pieces`` pieces on 1, 2, 4 workers, 7z
container); ``7zz t`` of ours; and ``7zz x`` of the last folder from each.

    python3 benchmarks/bench_pack_stream.py --corpus CORPUS_DIR --limit 20 --window 2
    python3 benchmarks/bench_pack_stream.py --inputs a/lib.so b/lib.so c/lib.so
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_pack import make_slices  # noqa: E402

from ipex_aot import lzma2, sevenz  # noqa: E402


def timed(cmd: list[str], **kw) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return round(time.monotonic() - start, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", nargs="*", type=Path, help="libraries, one per folder, in order")
    ap.add_argument("--corpus", type=Path, help="make_corpus.py output; sliced with --limit")
    ap.add_argument("--limit", type=int, default=20, help="MB per library taken from --corpus")
    ap.add_argument("--window", type=int, default=2, help="MB per slice window")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--pieces", type=int, default=4)
    ap.add_argument("--sevenzip", default=shutil.which("7zz") or "7zz")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        if args.corpus:
            gens = sorted((p.name for p in args.corpus.iterdir() if p.is_dir() and p.name[0].isdigit()),
                          key=lambda g: tuple(int(x) for x in g.split(".")))
            libs = [next(p for p in sorted((args.corpus / g).iterdir()) if p.is_file()) for g in gens]
        else:
            libs = list(args.inputs)
            gens = [f"{i}.0.0" for i in range(len(libs))]
        paths = []
        for gen in gens:
            (work / gen).mkdir()
            paths.append(work / gen / "lib.so")
        if args.corpus:
            import bench_pack

            bench_pack.WINDOW = args.window << 20
            make_slices(libs, paths, args.limit << 20)
        else:
            for lib, dst in zip(libs, paths, strict=True):
                shutil.copy(lib, dst)
        out: dict = {"cpus": os.cpu_count(), "load_before": os.getloadavg(),
                     "input_bytes": sum(p.stat().st_size for p in paths)}
        ref = work / "ref.7z"
        out["7zz_wall_s"] = timed([args.sevenzip, "a", "-t7z", "-m0=lzma2", "-mx9", "-md=1536m", "-mmt=1", "-bd",
                                   str(ref), *gens], cwd=work)
        out["7zz_size"] = ref.stat().st_size
        biggest = max(p.stat().st_size for p in paths)
        dict_size = lzma2.dict_size_from_property(lzma2.dict_size_property(biggest * 17 // 16 + (1 << 20)))
        out["dict_size"] = dict_size
        ours = work / "ours.7z"
        for workers in [int(w) for w in args.workers.split(",")]:
            start = time.monotonic()
            crcs = []
            for p in paths:
                crc = 0
                with open(p, "rb") as f:
                    while chunk := f.read(8 << 20):
                        crc = zlib.crc32(chunk, crc)
                crcs.append(crc)
            costs = lzma2.estimate_costs(paths)
            stream = work / "s.lzma2"
            r = lzma2.encode_parallel(lzma2.Source(paths), lzma2.Lzma2Options(dict_size=dict_size, mf="hc4"), stream,
                                      workers=workers, pieces=args.pieces, costs=costs)
            big = sevenz.Folder(r.packed_size, lzma2.dict_size_property(dict_size),
                                [sevenz.Entry(f"{g}/lib.so", size=p.stat().st_size, crc32=c)
                                 for g, p, c in zip(gens, paths, crcs, strict=True)])
            with open(ours, "wb") as f, open(stream, "rb") as s:
                sevenz.write_archive(f, [s], [big], gens, 946684800)
            out[f"ours_{workers}_wall_s"] = round(time.monotonic() - start, 2)
            out[f"ours_{workers}_size"] = ours.stat().st_size
            out[f"ours_{workers}_piece_s"] = [round(x, 1) for x in r.seconds]
            out[f"time_ratio_{workers}"] = round(out[f"ours_{workers}_wall_s"] / out["7zz_wall_s"], 3)
            out[f"size_ratio_{workers}"] = round(out[f"ours_{workers}_size"] / out["7zz_size"], 4)
        subprocess.run([args.sevenzip, "t", str(ours)], check=True, stdout=subprocess.DEVNULL)
        for name, archive in (("7zz", ref), ("ours", ours)):
            x = work / f"x-{name}"
            out[f"extract_last_{name}_s"] = timed([args.sevenzip, "x", "-y", f"-o{x}", str(archive), f"{gens[-1]}/*"])
            if (x / gens[-1] / "lib.so").read_bytes() != paths[-1].read_bytes():
                sys.exit(f"{name}: extracted folder differs from its input")
        out["load_after"] = os.getloadavg()
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
