"""benchmarks/bench_symbols.py and its decoder: the counts are only worth something if the decoder is exact."""

from __future__ import annotations

import csv
import io
import json
import lzma
import random
import shutil
import subprocess
import sys
from pathlib import Path

import py7zr

from ipex_aot import lzma2
from ipex_aot.literals import Change

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "benchmarks" / "lzma2_symbols.c"


def _data(size: int = 3 << 20) -> bytes:
    """Text-like records with repeats near and far, and some noise: every kind of LZMA symbol."""
    rng = random.Random(29)
    words = [rng.randbytes(rng.randrange(3, 12)) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(20)) + rng.randbytes(rng.randrange(0, 40))
        if rng.random() < 0.05 and len(out) > 100_000:
            at = rng.randrange(0, len(out) - 70_000)
            out += out[at : at + rng.randrange(300, 70_000)]
    return bytes(out[:size])


def _decode(tool: Path, stream: Path, offset: int, tmp_path: Path) -> tuple[list[dict], bytes]:
    out = tmp_path / "decoded"
    proc = subprocess.run([str(tool), str(stream), str(offset), "1", str(out)], capture_output=True, text=True,
                          check=True)
    return [{k: int(v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(proc.stdout))], out.read_bytes()


def test_the_decoder_gives_liblzmas_bytes_and_counts_every_byte_once(tmp_path):
    """A parallel stream (pieces primed, state resets, lc/lp/pb changed mid-stream) and 7-Zip's archive."""
    tool = tmp_path / "lzma2_symbols"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(tool), str(SOURCE)], check=True)
    data = _data()
    (tmp_path / "a").write_bytes(data)
    source = lzma2.Source([tmp_path / "a"])
    stream = tmp_path / "s.lzma2"
    changes = [Change(1 << 20, (0, 4, 4)), Change((2 << 20) + 16 * 999, (3, 0, 2))]
    lzma2.encode_parallel(source, lzma2.Lzma2Options(dict_size=4 << 20, preset=6), stream, workers=2, pieces=3,
                          changes=changes)
    rows, got = _decode(tool, stream, 0, tmp_path)
    assert got == data == lzma.decompress(stream.read_bytes(), lzma.FORMAT_RAW,
                                          filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 4 << 20}])
    total = {k: sum(r[k] for r in rows) for k in rows[0]}
    singles = total["literals"] + total["match_literals"] + total["short_reps"]
    assert singles + total["match_bytes"] + total["rep_bytes"] == len(data)
    assert min(total[k] for k in ("literals", "match_literals", "matches", "rep0", "rep1", "short_reps")) > 0
    assert total["far_matches"] > 0  # repeats over 1 MiB back
    assert total["packed_bytes"] == stream.stat().st_size  # every byte read, chunk headers and end marker too

    sevenzz = shutil.which("7zz")
    assert sevenzz, "the lane needs 7zz (Debian 7zip)"
    subprocess.run([sevenzz, "a", "-t7z", "-m0=lzma2", "-mx5", "-mf=off", str(tmp_path / "r.7z"), "a"],
                   cwd=tmp_path, check=True, capture_output=True)
    rows, got = _decode(tool, tmp_path / "r.7z", 32, tmp_path)
    assert got == data

    (tmp_path / "bad").write_bytes((tmp_path / "r.7z").read_bytes()[:2000])
    proc = subprocess.run([str(tool), str(tmp_path / "bad"), "32"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "truncated" in proc.stderr


def test_the_benchmark_compares_two_archives_region_by_region(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "lib.so").write_bytes(_data(2 << 20))
    sevenzz = shutil.which("7zz")
    assert sevenzz, "the lane needs 7zz (Debian 7zip)"
    subprocess.run([sevenzz, "a", "-t7z", "-m0=lzma2", "-mx5", "-mf=off", str(tmp_path / "r.7z"), "g"],
                   cwd=tmp_path, check=True, capture_output=True)
    with py7zr.SevenZipFile(tmp_path / "o.7z", "w", filters=[{"id": lzma.FILTER_LZMA2, "preset": 1}]) as z:
        z.writeall(tmp_path / "g", "g")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_symbols.py"), str(tmp_path / "r.7z"),
                           str(tmp_path / "o.7z"), "--region", "head:0-1", "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["regions"]) == {"g/lib.so", "head", "whole folder"}
    ref, other = report["regions"]["whole folder"]
    assert ref["packed_mb"] < other["packed_mb"]  # preset 1 against -mx5
    assert 0 < report["regions"]["head"][0]["symbols_m"] < ref["symbols_m"]
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_symbols.py"), str(tmp_path / "r.7z"),
                          "--region", "oops"], capture_output=True, text=True)
    assert bad.returncode != 0 and "NAME:FROM-TO" in bad.stderr
