"""Device sweep: a naive one-ocloc-process-per-ID loop against ipex-aot's sweep, in one run.

    .venv/bin/python benchmarks/bench_sweep.py [--sample 2048] [--jobs N]
    OCLOC=.venv/ocloc/intel-ocloc-*/ocloc .venv/bin/python benchmarks/bench_sweep.py   # the modern ocloc

The naive loop is what maintainers ran by hand: for every PCI ID 0x0000-0xFFFF,
start ``ocloc compile -file k.cl -device 0xIIII`` and keep the IDs that build.
It is timed on an evenly spaced sample of IDs plus every ID that hits (the
expensive ones), and extrapolated to the full range: misses cost the sample's
mean per miss, hits are timed in full. The ipex-aot sweep runs over the full
range, in-process (libocloc) and through the subprocess path (a wrapper script
as OCLOC), and a cached ``load_database`` call is timed last. An ocloc that is
itself a script (``ipex-aot ocloc fetch``'s, which runs Debian sid's ocloc
through its own loader) has no library this process can load: its sweep is
the subprocess one. The goal line says whether the sweep stayed under 60 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ipex_aot import devices  # noqa: E402
from ipex_aot.ocloc import find_ocloc  # noqa: E402
from ipex_aot.settings import Settings  # noqa: E402


def naive(ocloc_path: str, ids: list[int], workdir: Path) -> tuple[float, list[int]]:
    src = workdir / "k.cl"
    src.write_bytes(devices.KERNEL)
    hits = []
    start = time.perf_counter()
    for i in ids:
        proc = subprocess.run([ocloc_path, "compile", "-file", str(src), "-device", f"0x{i:04x}", "-q",
                               "-out_dir", str(workdir / "out")], capture_output=True, check=False)
        if proc.returncode == 0:
            hits.append(i)
    return time.perf_counter() - start, hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=2048, help="IDs of the naive loop's miss sample")
    ap.add_argument("--jobs", type=int, default=None, help="workers for ipex-aot (default: MAX_JOBS / all cores)")
    ap.add_argument("--skip-subprocess", action="store_true", help="time only the in-process sweep")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop (minutes on a loaded machine)")
    args = ap.parse_args()
    settings = Settings.from_env()
    jobs = args.jobs or settings.jobs
    oc = find_ocloc(settings)
    print(f"ocloc {oc.version} at {oc.path}; library {oc.library}; {os.cpu_count()} CPUs, jobs={jobs}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        in_process = bool(oc.library)
        how = "in-process" if in_process else "subprocess (OCLOC is a script)"
        t0 = time.perf_counter()
        db = devices.build_database(oc, jobs=jobs, in_process=in_process)
        ours = time.perf_counter() - t0
        hit_ids = sorted(int(p, 16) for r in db.rows for p in r.pci_ids)
        print(f"ipex-aot sweep, {how}, 65536 IDs: {ours:.1f} s ({len(db.rows)} rows, {len(hit_ids)} IDs)")
        print(f"GOAL sweep under 60 s with ocloc {oc.version}: {'yes' if ours < 60 else 'NO'} ({ours:.1f} s)")

        ours_sub = None
        if not args.skip_subprocess and in_process:
            script = work / "ocloc-wrapper"
            script.write_text(f'#!/bin/bash\nexec {oc.path} "$@"\n')
            script.chmod(0o755)
            wrapped = find_ocloc(Settings.from_env({**os.environ, "OCLOC": str(script)}))
            t0 = time.perf_counter()
            db_sub = devices.build_database(wrapped, jobs=jobs)
            ours_sub = time.perf_counter() - t0
            same = [r.to_json() for r in db_sub.rows] == [r.to_json() for r in db.rows]
            print(f"ipex-aot sweep, subprocess (wrapper script), 65536 IDs: {ours_sub:.1f} s; same table: {same}")

        if args.no_naive:
            if ours_sub:
                print(f"RATIO subprocess/in-process: {ours_sub / ours:.2f}x")
            return 0
        step = max(1, 0x10000 // args.sample)
        sample = [i for i in range(0, 0x10000, step) if i not in set(hit_ids)]
        t_miss, _ = naive(oc.path, sample, work)
        t_hit, naive_hits = naive(oc.path, hit_ids, work)
        per_miss = t_miss / len(sample)
        naive_total = per_miss * (0x10000 - len(hit_ids)) + t_hit
        print(f"naive loop: {per_miss * 1000:.2f} ms per miss ({len(sample)} sampled), {t_hit:.1f} s for "
              f"{len(hit_ids)} hits ({len(naive_hits)} built) -> {naive_total:.0f} s for 65536 IDs (extrapolated)")

        settings_c = Settings.from_env({**os.environ, "IPEX_AOT_CACHE": str(work / "cache")})
        devices.write_json(devices.cache_path(settings_c, oc, devices.pci_ids_file()), db.to_json())
        t0 = time.perf_counter()
        devices.load_database(settings_c)
        cached = time.perf_counter() - t0
        print(f"cached load_database (find ocloc + read cache): {cached * 1000:.0f} ms")

    print(f"RATIO naive/ours ({how}): {naive_total / ours:.1f}x")
    if ours_sub:
        print(f"RATIO naive/ours (subprocess): {naive_total / ours_sub:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
