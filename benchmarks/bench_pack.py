"""Benchmark: the parallel packer against 7-Zip on realistic per-generation libraries.

Inputs come from ``make_corpus.py OUT_DIR`` (kept outside this repository; three ~1.5 GB
variants of one AOT SYCL library that share host code and SPIR-V and differ in
their device images). ``--limit MB`` packs a slice of each library instead of
the whole: ``MB`` bytes taken as evenly spread 8 MiB windows, the first half
anchored at the file start and the second half at the file end, so the shared
host code, the per-generation device images and the shared tail keep their
proportions and line up across folders as in the full files.

In one run it measures, on the same inputs:
  * reference: ``7zz a -t7z -m0=lzma2 -mx9 -md=1536m -mmt=1``
  * ``ipex-aot pack`` (parallel engine) with 1 and with 2 workers
  * extracting the last folder with ``7zz x`` from each archive
and prints archive size, wall time and peak memory (RSS of the whole process
tree, sampled from /proc every 0.1 s) as ratios, with the load average seen
before and after (the machine is shared).

    .venv/bin/python benchmarks/bench_pack.py --corpus CORPUS_DIR --limit 256
    IPEX_AOT_BENCH_CORPUS=CORPUS_DIR .venv/bin/python benchmarks/bench_pack.py --limit 256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WINDOW = 8 << 20
REPO = Path(__file__).resolve().parent.parent


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="utf-8") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(cmd: list[str], *, env: dict | None = None, cwd: str | None = None) -> dict:
    """Run ``cmd``: wall seconds, CPU seconds (all its threads) and peak RSS of its process tree."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        log = err.read()
        if proc.returncode != 0:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log[-2000:]}")
    result = {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
              "peak_rss_gb": round(peak[0] / 1e9, 2)}
    steps = [line for line in log.splitlines() if line.startswith(("<== ", "pieces:", "parallel LZMA2"))]
    if steps:
        result["log"] = steps
    return result


def make_slices(libs: list[Path], dsts: list[Path], limit: int) -> None:
    """Write ``limit`` bytes of each library: windows at the same offsets from the start (first half) or end."""
    sizes = [p.stat().st_size for p in libs]
    smin = min(sizes)
    window = min(WINDOW, limit)
    k = max(2, limit // window)
    for lib, size, dst in zip(libs, sizes, dsts, strict=True):
        with open(lib, "rb") as f, open(dst, "wb") as w:
            for i in range(k):
                off = i * (smin - window) // (k - 1)
                if i >= k / 2:
                    off = size - (smin - off)
                f.seek(off)
                w.write(f.read(window))


def stage(corpus: Path, work: Path, limit: int) -> list[str]:
    """dist/bench/<generation>/<library> + build.json for every corpus generation."""
    gens = sorted((p.name for p in corpus.iterdir() if p.is_dir() and p.name[0].isdigit()),
                  key=lambda g: tuple(int(x) for x in g.split(".")))
    libs = [next(p for p in sorted((corpus / g).iterdir()) if p.is_file()) for g in gens]
    dsts = []
    for gen, lib in zip(gens, libs, strict=True):
        folder = work / "dist" / "bench" / gen
        folder.mkdir(parents=True)
        dsts.append(folder / lib.name)
    if limit:
        make_slices(libs, dsts, limit)
    else:
        for lib, dst in zip(libs, dsts, strict=True):
            os.link(lib, dst)
    for gen, lib in zip(gens, dsts, strict=True):
        sha = hashlib.sha256()
        with open(lib, "rb") as f:
            while chunk := f.read(1 << 24):
                sha.update(chunk)
        record = {"schema": 1, "recipe": "bench", "release": "bench", "generation": gen, "platform": "linux-x86_64",
                  "artifact": {"name": lib.name, "install_path": lib.name, "sha256": sha.hexdigest(),
                               "size": lib.stat().st_size},
                  "finished": "2026-01-01T00:00:00Z"}
        (lib.parent / "build.json").write_text(json.dumps(record))
    return gens


PACK = """
import sys
from ipex_aot import pack
from ipex_aot.settings import Settings
s = Settings.from_env({"IPEX_AOT_DIST": sys.argv[1], "MAX_JOBS": sys.argv[2]})
# No device database and no scan here: only packing is timed (scan has its own benchmark).
pack.pack("bench", s, options=pack.PackOptions(engine=sys.argv[3], jobs=int(sys.argv[2]), memory=int(sys.argv[4])),
          check_generation=False)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ["IPEX_AOT_BENCH_CORPUS"])
                    if os.environ.get("IPEX_AOT_BENCH_CORPUS") else None,
                    help="make_corpus.py output (default: $IPEX_AOT_BENCH_CORPUS)")
    ap.add_argument("--limit", type=int, default=256, help="MB per library (0 = whole libraries); default 256")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2")
    ap.add_argument("--memory", default=str(22 << 30), help="encoder memory budget in bytes passed to pack")
    ap.add_argument("--skip-7zz", action="store_true", help="do not run the 7zz reference (ratios are then absent)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.corpus is None:
        ap.error("give the corpus folder with --corpus DIR or IPEX_AOT_BENCH_CORPUS=DIR")
    sevenzz = shutil.which("7zz") or shutil.which("7z")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-pack-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"limit_mb_per_library": args.limit, "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    try:
        gens = stage(args.corpus, work, args.limit << 20)
        dist = work / "dist"
        total = sum(p.stat().st_size for g in gens for p in (dist / "bench" / g).iterdir() if p.name != "build.json")
        results["input_mb"] = round(total / 1e6, 1)
        results["generations"] = gens
        print(f"inputs: {len(gens)} libraries, {total / 1e6:.0f} MB ({args.limit or 'whole'} MB each)", flush=True)
        last = gens[-1]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        if not args.skip_7zz and sevenzz:
            ref = work / "ref.7z"
            r = measure([sevenzz, "a", "-t7z", "-m0=lzma2", "-mx9", "-md=1536m", "-mmt=1", "-bd", str(ref), *gens],
                        cwd=str(dist / "bench"))
            r["size"] = ref.stat().st_size
            results["7zz"] = r
            print(f"7zz -mx9 -md=1536m -mmt=1: {r}", flush=True)
            x = measure([sevenzz, "x", "-y", f"-o{work / 'x-ref'}", str(ref), f"{last}/*"])
            results["7zz_extract_one"] = x
        archive = dist / "bench" / "bench-AOT.7z"
        for n in [int(w) for w in args.workers.split(",")]:
            r = measure([sys.executable, "-c", PACK, str(dist), str(n), "parallel", str(args.memory)], env=env)
            r["size"] = archive.stat().st_size
            results[f"parallel_{n}"] = r
            print(f"ipex-aot pack, {n} worker(s): {r} load={os.getloadavg()}", flush=True)
        if sevenzz:
            x = measure([sevenzz, "x", "-y", f"-o{work / 'x-ours'}", str(archive), f"{last}/*"])
            results["ours_extract_one"] = x
            subprocess.run([sevenzz, "t", str(archive)], check=True, stdout=subprocess.DEVNULL)
        results["load_after"] = os.getloadavg()
        ref = results.get("7zz")
        if ref:
            for key in [k for k in results if k.startswith("parallel_")]:
                results[f"{key}_size_ratio"] = round(results[key]["size"] / ref["size"], 4)
                results[f"{key}_time_ratio"] = round(results[key]["wall_s"] / ref["wall_s"], 3)
            if "ours_extract_one" in results:
                results["extract_one_time_ratio"] = round(
                    results["ours_extract_one"]["wall_s"] / results["7zz_extract_one"]["wall_s"], 3)
        if "parallel_1" in results and "parallel_2" in results:
            results["speedup_2_vs_1"] = round(results["parallel_1"]["wall_s"] / results["parallel_2"]["wall_s"], 3)
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
