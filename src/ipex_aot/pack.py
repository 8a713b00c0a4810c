"""Pack every built generation of a recipe into one deterministic, verified .7z.

``ipex-aot pack RECIPE`` reads ``dist/<recipe>/<generation>/build.json`` and
writes ``dist/<recipe>/<archive>``, named by the recipe's ``release.archive``
(``{release}-AOT.7z`` by default) for the builds' platform: one folder per generation code
holding that generation's library under its install name, plus
``manifest.json`` and ``SUPPORT.md`` at the root (copies of both are written
next to the archive).

The folders differ only in their device images, so all libraries go into ONE
solid LZMA2 stream whose dictionary spans a whole library; neighbours are
ordered by generation so that related device images sit next to each other.
The default engine encodes consecutive pieces of that stream on every core
(:mod:`ipex_aot.lzma2`) and lays out the container itself
(:mod:`ipex_aot.sevenz`); ``--engine 7zz`` hands the work to 7-Zip and
``--engine python`` (earlier ``py7zr``) encodes the same stream on one core with
Python's own lzma module, the path that works wherever Python does.

The manifest and support table sit in a small folder of their own at the
front of the archive, so readers get them without decoding gigabytes.

Every archive is written to a temporary file, read back with py7zr (each
CRC, and each library's sha256 against the manifest), and only then renamed
over the old one: a failure at any point leaves the previous archive intact.

With a signing key (``--sign-key FILE``, ``IPEX_AOT_SIGN_KEY`` or
``IPEX_AOT_SIGN_KEY_FILE``) the archive gets ``<archive>.minisig`` beside it
(:mod:`ipex_aot.signing`, minisign's format) and SUPPORT.md prints the public
key; without one, a signature left from an earlier pack is removed, since it
no longer matches.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ipex_aot import children, literals, log, lzma2, platforms, scan, sevenz
from ipex_aot.archive import find_7zip
from ipex_aot.build import read_build_record, record_error
from ipex_aot.conformance.report import manifest_entries, read_reports
from ipex_aot.devices import load_database
from ipex_aot.errors import ArchiveError, BuildError, ConformanceError, RecipeError, ToolchainError, UsageError
from ipex_aot.fsutil import write_json, write_text
from ipex_aot.generation import generation_order, is_generation
from ipex_aot.recipe import DEFAULT_ARCHIVE, find_recipe, load_recipe, plan_targets, recipe_name
from ipex_aot.settings import Settings
from ipex_aot.signing import SIG_SUFFIX, SecretKey, load_secret_key, sign_file, verify_howto, write_signature
from ipex_aot.untrusted import loads_json, tool_message

ENGINES = ("parallel", "7zz", "python")
#: The fixed time of every entry when no build.json says when it finished.
EPOCH_FALLBACK = 946684800  # 2000-01-01T00:00:00Z
#: Default memory budget for the encoders; workers are dropped until it fits.
DEFAULT_MEMORY = 11 << 30
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Folder:
    """One generation's folder: where its library is and what it must contain."""

    generation: str
    library: Path
    name: str  # install file name, the entry is "<generation>/<name>"
    record: Mapping[str, Any]
    size: int = 0
    sha256: str = ""
    crc32: int = 0

    @property
    def entry(self) -> str:
        return f"{self.generation}/{self.name}"


@dataclass
class PackResult:
    archive: Path
    manifest: dict
    size: int
    unpacked: int
    seconds: float
    engine: str
    workers: int
    pieces: list[tuple[int, int]] = field(default_factory=list)
    #: the parallel engine's per-piece figures (lzma2.PieceStats as dicts)
    piece_stats: list[dict] = field(default_factory=list)
    #: ``<archive>.minisig`` when a signing key was given.
    signature: Path | None = None

    def to_json(self) -> dict:
        return {
            "archive": str(self.archive),
            "signature": str(self.signature) if self.signature else None,
            "size": self.size,
            "unpacked": self.unpacked,
            "seconds": round(self.seconds, 2),
            "engine": self.engine,
            "workers": self.workers,
            "generations": list(self.manifest["folders"]),
        }


def parse_size(text: str) -> int:
    """``1536m``, ``1.5g``, ``64MiB``, ``4096`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"size {text!r} is not understood; write e.g. 1536m or 1.5g")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


# --------------------------------------------------------------------------- inputs


def load_folders(dist: Path, name: str, generations: Sequence[str] | None = None) -> list[Folder]:
    """Every generation folder of a recipe with a build.json (or only ``generations``), checked and ordered.

    Order: numeric by generation code, which keeps a family's steppings
    (12.55.0 … 12.55.8) next to each other, so each library follows the one
    it shares the most with.
    """
    root = dist / name
    records = sorted(root.glob("*/build.json")) if root.is_dir() else []
    if not records:
        raise BuildError(f"{root}: no built generation (no */build.json); run `ipex-aot build {name}` first")
    folders = []
    for path in records:
        generation = path.parent.name
        if not is_generation(generation):
            continue  # logs/, wheels/, conformance/ and the like
        if generations is not None and generation not in generations:
            continue  # a stale folder of a generation that is no longer a target
        record = read_build_record(path)
        lib_name = record["artifact"]["name"]
        library = path.parent / lib_name
        folders.append(Folder(generation, library, lib_name, record))
    if not folders:
        raise BuildError(f"{root}: no generation folder with a build.json; run `ipex-aot build {name}` first")
    missing = sorted(set(generations or ()) - {f.generation for f in folders}, key=generation_order)
    if missing:
        raise BuildError(f"{root}: no finished build of {', '.join(missing)}; run `ipex-aot build {name}` first")
    unfinished = sorted(p.name for p in root.iterdir()
                        if p.is_dir() and is_generation(p.name) and not (p / "build.json").exists())
    if unfinished:
        log.warn(f"{root}: {', '.join(unfinished)} have no build.json (unfinished builds); they are not packed")
    releases = {f.record["release"] for f in folders}
    if len(releases) > 1:
        raise BuildError(f"{root}: folders come from different releases {sorted(releases)}; rebuild or remove the stale ones")
    folders.sort(key=lambda f: generation_order(f.generation))
    return folders


def _hash_one(folder: Folder) -> Folder:
    sha, crc, size = hashlib.sha256(), 0, 0
    with open(folder.library, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    digest = sha.hexdigest()
    recorded = folder.record["artifact"].get("sha256")
    if recorded and recorded != digest:
        raise record_error(folder.library.parent / "build.json",
                    f"{folder.name} changed since it was built (sha256 {digest[:12]}…, recorded {str(recorded)[:12]}…)")
    return Folder(folder.generation, folder.library, folder.name, folder.record, size, digest, crc)


def hash_folders(folders: Sequence[Folder], jobs: int) -> list[Folder]:
    """sha256, CRC32 and size of every library, one read each (hashlib and zlib release the GIL)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(jobs, len(folders)))) as pool:
        return list(pool.map(_hash_one, folders))


def check_generations(folders: Sequence[Folder], settings: Settings) -> None:
    """Refuse a folder whose library does not natively hold its own generation."""

    for folder in folders:
        scan.require_generation(folder.library, folder.generation, settings=settings)


# --------------------------------------------------------------------------- manifest


def fixed_mtime(folders: Sequence[Folder]) -> int:
    """The time stamped on every entry: the newest build's finish time, so it follows the inputs."""
    best = None
    for folder in folders:
        text = folder.record.get("finished")
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=timezone.utc)
                value = int(stamp.timestamp())
                best = value if best is None else max(best, value)
    return best if best is not None and best > EPOCH_FALLBACK else EPOCH_FALLBACK


def build_manifest(name: str, folders: Sequence[Folder], database: Any | None,
                   conformance: Sequence[Mapping[str, Any]] = ()) -> dict:
    first = folders[0].record
    entries = {}
    for folder in folders:
        rows = database.rows_for(folder.generation) if database is not None else []
        source = folder.record.get("source") or {}
        entries[folder.generation] = {
            "generation": folder.generation,
            "file": folder.entry,
            "sha256": folder.sha256,
            "size": folder.size,
            "pci_ids": sorted({p for row in rows for p in row.pci_ids}),
            "codenames": sorted({c for row in rows for c in row.codenames}),
            "build": {
                "devlist": folder.record.get("devlist"),
                "source_commit": source.get("commit") if isinstance(source, dict) else None,
                "finished": folder.record.get("finished"),
            },
        }
    raw_toolchain = first.get("toolchain")
    toolchain = raw_toolchain if isinstance(raw_toolchain, dict) else {}
    return {
        "schema": 1,
        "recipe": name,
        "release": first["release"],
        "platform": first.get("platform"),
        "artifact_install_path": (first.get("artifact") or {}).get("install_path"),
        "ocloc": {"version": toolchain.get("ocloc")},
        "folders": entries,
        "conformance": [dict(c) for c in conformance],
    }


def support_markdown(manifest: Mapping[str, Any], database: Any | None, *, signed_by: Any | None = None,
                     archive_name: str = "ARCHIVE.7z") -> str:
    """The support table; with SIGNED_BY (a signing.PublicKey) also the key and how to check the archive by hand."""
    generations = list(manifest["folders"])
    head = (
        f"# Supported devices: {manifest['release']}\n\n"
        "Extract only the folder named by your GPU's generation code and copy its library over\n"
        f"`{manifest.get('artifact_install_path') or 'the installed GPU library'}` "
        "(or run `ipex-aot install ARCHIVE.7z`).\n\n"
    )
    if signed_by is not None:
        # Inside the archive this proves nothing by itself; it tells a user which key to pin for the next one.
        head += "## Verify a download\n\n" + verify_howto(signed_by, archive_name) + "\n## Devices\n\n"
    if database is not None:
        return head + database.to_markdown(generations).rstrip("\n") + "\n"
    rows = "".join(f"| `{g}` | `{manifest['folders'][g]['file']}` |\n" for g in generations)
    return head + "| Generation Code | File |\n| --- | --- |\n" + rows


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- engines


def default_dict_size(folders: Sequence[Folder]) -> int:
    """A window that spans the largest library (so each library can match the previous one), at most 1.5 GiB.

    The encoders use exactly this (a multiple of 16); the archive's header declares the next size LZMA2 can
    name, which decoders allocate. Every byte of window costs about 7 bytes of encoder memory, so the margin
    over the largest library is 1/32 (device images of two generations differ that little in size), not a
    rounding up to the next 2**n or 3*2**(n-1).
    """

    want = max(f.size for f in folders) * 33 // 32 + (1 << 20)
    if len(folders) == 1:
        want = folders[0].size + (1 << 16)
    return min(-(-max(want, 1 << 16) // 16) * 16, lzma2.DICT_MAX)


def choose_engine(sevenzip: str | None = None) -> tuple[str, str]:
    """The engine this platform can run, fastest first, and why: (engine, reason).

    parallel needs a liblzma it can load with ctypes: every Linux has liblzma.so.5; Windows has
    none (CPython for Windows links liblzma into _lzma.pyd and exports nothing), so there 7-Zip's
    command line packs when it is installed, and py7zr, which always works, otherwise.
    """

    try:
        lib = lzma2.liblzma()
        return "parallel", f"liblzma {getattr(lib, '_name', '')} loads".replace("  ", " ")
    except ToolchainError:
        pass
    seven = find_7zip(sevenzip)
    if seven:
        return "7zz", f"no liblzma to load on this platform; 7-Zip is {seven}"
    return "python", "no liblzma to load and no 7-Zip command line on this platform: Python's lzma module, one core"


@dataclass(frozen=True)
class PackOptions:
    #: "auto": :func:`choose_engine`.
    engine: str = "auto"
    jobs: int = 1
    dict_size: int | None = None
    preset: int = 9
    mf: str = "hc4"
    #: LZMA's nice_len (7-Zip's fb): a match this long ends the search. 128 (liblzma's preset 9 has 64, so
    #: hc4 searches 36 candidates instead of 20) finds the far repeats of symbol names and of device code
    #: that a window spanning a library holds: on the realistic corpus, 32 MB of .strtab primed with the
    #: 1.4 GB before it packed 16.6% smaller at 1.7x the encoding time, x86 code 0.9% smaller at 1.7x.
    nice_len: int = 128
    #: LZMA's depth (7-Zip's mc): candidates ``mf`` tries at each position; 0 takes liblzma's (for hc4,
    #: 4 + nice_len / 4: 36). 80 reaches more of the far repeats hc4's chains stop short of, in the pieces
    #: that keep the whole window: on the realistic corpus (one core, 2026-12-03) the first library's
    #: symbol tables packed 2.3% smaller at 1.37x the time (depth 150: 3.6% at 2.4x), the third library
    #: 2.3% at 1.30x, and the second library's piece 8.7% at 2.2x with depth 150.
    depth: int = 80
    #: parallel engine: the match finder of pieces that are mostly first-seen data and whose repeats lie
    #: within ``first_seen_window`` (:meth:`lzma2.CostMap.takes_first_seen`; "none": ``mf`` everywhere),
    #: and their largest window. bt4's trees find the longest match where hc4's chains give up, and in
    #: 128 MiB bt4 is faster than hc4 with a 1.5 GiB window (MB 384-726 of the realistic corpus: 29.60 MB
    #: in 274 s against 30.15 MB in 301 s). A piece whose repeats are far (symbol names 1.2 GB back, a
    #: later library's device images, SPIR-V whose copies lie a GB back) keeps ``mf`` and the whole window:
    #: bt4 in a small window made such pieces 2-11x larger. Pieces are cut where near and far data meet
    #: (:meth:`lzma2.CostMap.switch_points`); a ``.symtab`` that repeats its ``.dynsym`` a library back counts
    #: as far (:mod:`ipex_aot.farmatch`). With ``literals``, the corpus packs to 123.0 MB (7-Zip's best:
    #: 123.6 MB) in 488 s with 2 workers (docs/benchmarks.md, 2026-12-04).
    first_seen_mf: str = "bt4"
    first_seen_window: int = 128 << 20
    #: parallel engine: "sections" codes code, relocation and symbol tables with the lc/lp/pb a trial picks
    #: (:mod:`ipex_aot.literals`; the corpus's first 447 MiB 1.5% smaller) and stores the first-seen sections
    #: LZMA hardly packs as they are (:func:`ipex_aot.literals.stored_stretches`); "fixed": liblzma's 3/0/2
    #: throughout and nothing stored, the python engine's bytes with one piece.
    literals: str = "sections"
    memory: int = DEFAULT_MEMORY
    sevenzip: str | None = None
    #: Pieces of the parallel stream. Fixed, not tied to the worker count, so the archive's bytes
    #: are the same on a 2-core laptop and a 64-core runner.
    pieces: int = 6

    def main_options(self, window: int) -> lzma2.Lzma2Options:
        """The LZMA2 settings of every piece that does not take :meth:`first_seen_options`, in a ``window``."""
        return lzma2.Lzma2Options(dict_size=window, preset=self.preset, mf=self.mf, nice_len=self.nice_len,
                                  depth=self.depth or None)

    def first_seen_options(self, window: int) -> lzma2.Lzma2Options | None:
        """The parallel engine's settings for mostly first-seen pieces, in a stream of ``window``; None when off."""
        if self.first_seen_mf == "none":
            return None
        return lzma2.Lzma2Options(dict_size=min(window, self.first_seen_window), preset=self.preset,
                                  mf=self.first_seen_mf, nice_len=self.nice_len)


def _small_folder(small: Sequence[tuple[str, bytes]]) -> tuple[bytes, int, list]:
    data = b"".join(d for _, d in small)
    dict_size = lzma2.dict_size_from_property(lzma2.dict_size_property(max(len(data), 1 << 16)))
    packed = lzma.compress(data, format=lzma.FORMAT_RAW,
                           filters=[{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": dict_size}])
    entries = [sevenz.Entry(n, size=len(d), crc32=zlib.crc32(d)) for n, d in small]
    return packed, lzma2.dict_size_property(dict_size), entries


def plan_workers(total: int, dict_size: int, opts: PackOptions) -> tuple[int, int]:
    """(workers, bytes per encoder): as many as ``jobs`` allows while the encoders fit ``memory``."""

    window = min(dict_size, max(total, 1 << 16) // 16 * 16 + 16)
    try:
        per = opts.main_options(window).memusage()
        first = opts.first_seen_options(window) if opts.engine == "parallel" else None
        if first is not None:
            per = max(per, first.memusage())
    except ToolchainError:
        if opts.engine == "parallel":
            raise
        # No liblzma to ask (Windows); 7-Zip and py7zr still pack. xz(1)'s preset table gives the
        # encoder's memory as about 10.5x the dictionary (-9: 674 MiB for 64 MiB), so plan with 11x.
        per = 11 * window
    workers = max(1, min(opts.jobs, opts.memory // max(per, 1)))
    if opts.engine == "parallel":
        workers = min(workers, opts.pieces)
    if per > opts.memory:
        log.warn(f"one LZMA2 encoder needs about {per / 2**30:.1f} GiB, more than the {opts.memory / 2**30:.1f} GiB "
                 "budget (--memory); running one anyway")
    return workers, per


def _write_parallel(tmp: Path, folders: Sequence[Folder], small: Sequence[tuple[str, bytes]], dict_size: int,
                    mtime: int, opts: PackOptions, progress: Callable[[int], None]) -> tuple[int, list[tuple[int, int]], list[dict]]:

    source = lzma2.Source([f.library for f in folders])
    _, per = plan_workers(source.size, dict_size, opts)  # warns when one encoder is over --memory
    first_seen = opts.first_seen_options(dict_size)
    costs = (lzma2.estimate_costs(source.paths, jobs=opts.jobs, probe=first_seen is not None)
             if opts.pieces > 1 else None)
    if costs is not None:
        log.info(f"plan: {costs.new_bytes / 1e6:.0f} MB first-seen, {(source.size - costs.new_bytes) / 1e6:.0f} MB "
                 f"repeated; about {costs.at(source.size):.0f} s of encoding on one core")
    finders = f"{opts.mf} (depth {opts.depth or 'liblzma'})" + ("" if first_seen is None else (
        f", {opts.first_seen_mf} for first-seen pieces with near repeats (window at most "
        f"{first_seen.dict_size >> 20} MiB)"))
    log.info(f"parallel LZMA2: up to {opts.jobs} worker(s) within {opts.memory / 2**30:.1f} GiB, dictionary "
             f"{dict_size >> 20} MiB, match finder {finders}, at most {per / 2**30:.1f} GiB per encoder")
    changes: list[literals.Change] = []
    stored: list[literals.Stored] = []
    if opts.literals == "sections":
        with log.step("choose lc/lp/pb for the code and table sections by trial"):
            changes = literals.stream_changes(source.paths, opts.jobs)
        log.info(f"literal settings: {len(changes)} change(s) at section bounds"
                 + "".join(f"; from {c.at / 1e6:.0f} MB lc{c.props[0]} lp{c.props[1]} pb{c.props[2]}"
                           for c in changes[:6]) + ("; ..." if len(changes) > 6 else ""))
        with log.step("find the sections LZMA hardly packs"):
            stored = literals.stored_stretches(source.paths, costs.first_seen if costs else None, opts.jobs)
        if stored:
            log.info(f"stored as they are: {sum(b - a for a, b in stored) / 1e6:.1f} MB in {len(stored)} section(s)"
                     + "".join(f"; {a / 1e6:.1f}-{b / 1e6:.1f} MB" for a, b in stored[:4])
                     + ("; ..." if len(stored) > 4 else ""))
    stream = tmp.with_name(tmp.name + ".lzma2")
    try:
        result = lzma2.encode_parallel(
            source, opts.main_options(dict_size), stream,
            workers=opts.jobs, pieces=opts.pieces, costs=costs, progress=progress, memory=opts.memory,
            first_seen=first_seen, changes=changes, stored=stored,
        )
        if len(result.pieces) > 1:
            log.info("pieces: " + "; ".join(s.describe() for s in result.stats)
                     + f"; at most {result.concurrent} at once")
        _write_container(tmp, folders, small, dict_size, mtime, stream, result.packed_size)
        return result.concurrent, result.pieces, [dataclasses.asdict(st) for st in result.stats]
    finally:
        stream.unlink(missing_ok=True)


def _write_container(tmp: Path, folders: Sequence[Folder], small: Sequence[tuple[str, bytes]], dict_size: int,
                     mtime: int, stream: Path, packed_size: int) -> None:
    """The 7z archive around one packed LZMA2 stream of the libraries: the small folder first, then it."""

    small_packed, small_prop, small_entries = _small_folder(small)
    big = sevenz.Folder(packed_size, lzma2.dict_size_property(dict_size),
                        [sevenz.Entry(f.entry, size=f.size, crc32=f.crc32) for f in folders])
    head = sevenz.Folder(len(small_packed), small_prop, small_entries)
    with open(tmp, "wb") as out, open(stream, "rb") as s:
        sevenz.write_archive(out, [io.BytesIO(small_packed), s], [head, big], [f.generation for f in folders], mtime)


def _write_python(tmp: Path, folders: Sequence[Folder], small: Sequence[tuple[str, bytes]], dict_size: int,
                  mtime: int, opts: PackOptions, progress: Callable[[int], None]) -> tuple[int, list, list]:
    """One core, Python's own lzma module (its liblzma, also on Windows): the parallel engine's bytes with one
    piece and ``literals="fixed"``."""
    plan_workers(sum(f.size for f in folders), dict_size, replace(opts, jobs=1))  # warns when over --memory
    filters = [{"id": lzma.FILTER_LZMA2, "preset": opts.preset, "dict_size": dict_size,
                "mf": getattr(lzma, f"MF_{opts.mf.upper()}"), "nice_len": opts.nice_len, "depth": opts.depth}]
    encoder = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=filters)
    stream = tmp.with_name(tmp.name + ".lzma2")
    try:
        with open(stream, "wb") as out:
            for folder in folders:
                with open(folder.library, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(encoder.compress(chunk))
                        progress(len(chunk))
            out.write(encoder.flush())
        _write_container(tmp, folders, small, dict_size, mtime, stream, stream.stat().st_size)
    finally:
        stream.unlink(missing_ok=True)
    return 1, [], []


def _write_7zz(tmp: Path, folders: Sequence[Folder], small: Sequence[tuple[str, bytes]], dict_size: int,
               mtime: int, opts: PackOptions, progress: Callable[[int], None]) -> tuple[int, list, list]:
    exe = find_7zip(opts.sevenzip)
    if exe is None:
        raise ToolchainError("7zz/7z not found on PATH (or IPEX_AOT_7Z); install 7zip or use --engine parallel")
    workers, _ = plan_workers(sum(f.size for f in folders), dict_size, opts)
    with tempfile.TemporaryDirectory(prefix=".pack-", dir=tmp.parent) as stage_dir:
        stage = Path(stage_dir)
        names = []
        for name, data in small:
            (stage / name).write_bytes(data)
            names.append(name)
        for folder in folders:
            (stage / folder.generation).mkdir()
            # Staged without copying gigabytes: a symlink on Linux, a hard link on Windows.
            platforms.host().stage_file(folder.library, stage / folder.entry)
            names.append(folder.generation)
        for path in stage.rglob("*"):
            platforms.host().set_mtime(path, mtime)
        # -mf=off: 7-Zip would otherwise put BCJ2 in front of executables, which py7zr cannot read.
        depth = f":mc={opts.depth}" if opts.depth else ""
        cmd = [exe, "a", "-t7z", f"-m0=lzma2:mf={opts.mf}:fb={opts.nice_len}{depth}", "-mf=off", f"-mx{opts.preset}", f"-md={dict_size}b", f"-mmt={workers}", "-ms=on",
               "-mtm=off", "-mtc=off", "-mta=off", "-bd", "-bb0", "-y", str(tmp.resolve()), *names]
        run = children.run(cmd, cwd=stage, capture_output=True, text=True, errors="replace")
        if run.returncode != 0:
            raise ArchiveError(f"{Path(exe).name} failed (exit {run.returncode}: {tool_message(run.stderr + run.stdout)})")
    progress(sum(f.size for f in folders))
    return workers, [], []


def _archive_lock(archive: Path) -> Any:
    """An OS lock on ``.<archive>.lock``: one pack of an archive at a time, so the sweep below is safe."""
    import filelock

    lock = filelock.FileLock(archive.parent / f".{archive.name}.lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UsageError(f"another pack of {archive} is running; wait for it to finish") from None
    return lock


def sweep_stale(archive: Path) -> list[Path]:
    """Remove what a killed pack of ARCHIVE left: ``.ARCHIVE.*.part``, its ``.pieceN`` files, ``.pack-*`` staging."""
    gone = []
    for path in [*archive.parent.glob(f".{archive.name}.*.part*"), *archive.parent.glob(".pack-*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        gone.append(path)
    if gone:
        log.info(f"removed {len(gone)} file(s) a killed pack left beside {archive.name}")
    return gone


_WRITERS = {"parallel": _write_parallel, "python": _write_python, "7zz": _write_7zz}
#: Earlier name of the python engine (it wrote through py7zr), still accepted.
ENGINE_ALIASES = {"py7zr": "python"}


# --------------------------------------------------------------------------- check


def verify_archive(path: Path, manifest: Mapping[str, Any], small: Mapping[str, bytes]) -> None:
    """Read the archive back with py7zr: every CRC, each library's sha256 and size, nothing extra."""
    import py7zr
    from py7zr.io import HashIO, HashIOFactory

    expected = {f["file"]: (f["sha256"], f["size"]) for f in manifest["folders"].values()}
    for name, data in small.items():
        expected[name] = (hashlib.sha256(data).hexdigest(), len(data))
    try:
        with py7zr.SevenZipFile(path, "r") as archive:
            names = {i.filename: i for i in archive.list()}
            files = {n for n, i in names.items() if not i.is_directory}
            if files != set(expected):
                raise ArchiveError(f"{path}: entries {sorted(files ^ set(expected))} differ from the manifest")
            factory = HashIOFactory()
            archive.extractall(factory=factory)
    except ArchiveError:
        raise
    except Exception as e:  # py7zr raises many kinds on a bad archive; all mean "do not publish it"
        raise ArchiveError(f"{path}: reading the new archive back failed: {type(e).__name__}: {e}") from None
    for name, (sha, size) in expected.items():
        try:
            product = factory.get(name)
        except KeyError:
            raise ArchiveError(f"{path}: {name} was not extracted when reading back") from None
        if not isinstance(product, HashIO) or product.size() != size or product.hash.hexdigest() != sha:
            raise ArchiveError(f"{path}: {name} reads back with a different size or sha256 than the manifest")


# --------------------------------------------------------------------------- pack


def default_archive_name(release: str, platform: str) -> str:
    """The archive's name when no recipe file is at hand (a bare dist folder): recipe.py's default template."""

    return DEFAULT_ARCHIVE.format(release=release, platform=platform)


def pack(recipe: str, settings: Settings, *, options: PackOptions | None = None, database: Any | None = None,
         check_generation: bool = True, conformance: Sequence[Mapping[str, Any]] = (),
         generations: Sequence[str] | None = None, sign_key: SecretKey | None = None,
         archive_name: Callable[[str], str] | None = None, release: str | None = None) -> PackResult:
    """Pack the recipe's built generations; returns what was written.

    ``database`` (a :class:`ipex_aot.devices.DeviceDatabase`, or a callable
    that loads one) fills the PCI IDs, codenames and support table; without
    it they are left empty, which tests use to stay independent of the
    device sweep. ``conformance`` (entries as in docs/architecture.md, e.g.
    ``{"generation", "device", "verdict", "report"}``) goes into the manifest
    as given, so a release can carry its conformance results in the archive.
    ``generations`` packs only those folders (a release passes its targets,
    so a stale folder of an earlier target list is left out). ``sign_key``
    signs the archive (``<archive>.minisig``).
    ``archive_name`` maps the builds' platform to the archive's file name (a
    recipe's ``Recipe.archive_for``); ``release``, the recipe's release, which
    the folders must have been built for (a stale build would otherwise be
    published under the new name).
    """
    opts = options or PackOptions(jobs=settings.jobs)
    opts = replace(opts, engine=ENGINE_ALIASES.get(opts.engine, opts.engine))
    if opts.engine == "auto":
        engine, why = choose_engine(opts.sevenzip)
        log.info(f"engine {engine}: {why}")
        opts = replace(opts, engine=engine)
    if opts.engine not in ENGINES:
        raise UsageError(f"--engine {opts.engine!r}: choose one of {', '.join(ENGINES)}")
    name = recipe_name(recipe)
    dist = Path(settings.dist_dir)
    start = time.monotonic()
    with log.step(f"pack {name}: read build records"):
        folders = load_folders(dist, name, generations)
        folders = hash_folders(folders, settings.jobs)
        if check_generation:
            check_generations(folders, settings)
    if callable(database):  # loaded only once the inputs are known to be sound
        database = database()
    built_release = folders[0].record["release"]
    if release is not None and built_release != release:
        raise BuildError(f"{dist / name}: the folders were built for release {built_release}, the recipe now says "
                         f"{release}; rebuild them (`ipex-aot build {name}`)")
    platforms = sorted({str(f.record.get("platform")) for f in folders})
    if len(platforms) > 1:
        raise BuildError(f"{dist / name}: folders of several platforms ({', '.join(platforms)}); one archive holds "
                         "one platform: pack each platform's folders in a dist of its own")
    manifest = build_manifest(name, folders, database, conformance)
    file_name = (archive_name or (lambda plat: default_archive_name(built_release, plat)))(platforms[0])
    if not re.fullmatch(r"[A-Za-z0-9._+-]+\.7z", file_name):
        raise BuildError(f"{dist / name}: archive name {file_name!r} is not usable as a file name")
    archive = dist / name / file_name
    public = sign_key.public_key() if sign_key is not None else None
    small = {"manifest.json": _json_bytes(manifest),
             "SUPPORT.md": support_markdown(manifest, database, signed_by=public, archive_name=archive.name).encode()}
    dict_size = opts.dict_size or default_dict_size(folders)
    mtime = fixed_mtime(folders)
    total = sum(f.size for f in folders)
    progress = log.Progress(f"pack {archive.name}", total)
    began = time.monotonic()

    def advance(n: int) -> None:
        rate = progress.done / max(time.monotonic() - began, 1e-6) / 1e6
        progress.advance(n, note=f"{rate:.1f} MB/s")

    lock = _archive_lock(archive)
    sweep_stale(archive)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".part", dir=archive.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with log.step(f"pack {len(folders)} folder(s), {total / 1e6:.0f} MB, engine {opts.engine}"):
            tmp.unlink()  # 7-Zip refuses to add to an empty non-archive file
            workers, pieces, piece_stats = _WRITERS[opts.engine](tmp, folders, list(small.items()), dict_size, mtime,
                                                                 opts, advance)
        with log.step(f"check {archive.name} by reading it back"):
            verify_archive(tmp, manifest, small)
        signature_path = archive.with_name(archive.name + SIG_SUFFIX)
        signature = sign_file(tmp, sign_key, trusted_comment=_trusted_comment(archive.name, manifest)) if sign_key else None
        # The old signature goes first: an archive must never sit beside a signature of other bytes.
        signature_path.unlink(missing_ok=True)
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
        lock.release()
    if signature is not None and public is not None:
        write_signature(signature_path, signature)
        log.info(f"{signature_path.name}: signed by key {public.id}; check it with "
                 f"minisign -Vm {archive.name} -P {public.to_base64()}")
    else:
        log.info(f"{archive.name}: not signed by pack (no --sign-key, IPEX_AOT_SIGN_KEY or IPEX_AOT_SIGN_KEY_FILE); "
                 "`ipex-aot sign` can sign it later")
    write_json(archive.parent / "manifest.json", manifest)
    write_text(archive.parent / "SUPPORT.md", small["SUPPORT.md"].decode())
    size = archive.stat().st_size
    log.info(f"{archive}: {size / 1e6:.1f} MB from {total / 1e6:.1f} MB ({len(folders)} folders)")
    return PackResult(archive, manifest, size, total, time.monotonic() - start, opts.engine, workers, pieces, piece_stats,
                      signature_path if signature is not None else None)


def _trusted_comment(name: str, manifest: Mapping[str, Any]) -> str:
    """minisign's default trusted comment plus the release and recipe, all covered by the signature."""
    return (f"timestamp:{int(time.time())}\tfile:{name}\thashed\trelease:{manifest.get('release')}"
            f"\trecipe:{manifest.get('recipe')}")


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pack", help="pack a recipe's built generations into one .7z with manifest.json and SUPPORT.md",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="recipes/NAME.yaml or NAME")
    p.add_argument("--engine", choices=("auto", *ENGINES, *ENGINE_ALIASES), default="auto",
                   help="parallel: liblzma on every core; 7zz: 7-Zip; python (or py7zr, its earlier name): "
                   "Python's lzma module, one core; auto (default): parallel where liblzma loads (Linux), "
                   "else 7zz when installed, else python")
    p.add_argument("--jobs", type=int, help="encoder threads (default MAX_JOBS or every core)")
    p.add_argument("--dict-size", help="LZMA2 dictionary, e.g. 1536m (default: spans the largest library, at most 1.5 GiB)")
    p.add_argument("--memory", default="11g", help="memory budget for the encoders (default 11g): a piece starts when its encoder fits beside the running ones")
    p.add_argument("--preset", type=int, default=9, choices=range(10), metavar="0-9", help="LZMA preset (default 9)")
    p.add_argument("--match-finder", choices=("hc4", "bt4"), default="hc4",
                   help="parallel engine: hc4 (default, about 2x faster, 10 GiB at a 1.5 GiB dictionary) "
                        "or bt4 (about 2%% smaller, 16 GiB)")
    p.add_argument("--first-seen-match-finder", choices=("bt4", "hc4", "none"), default="bt4",
                   help="parallel engine: match finder of the pieces that are mostly first-seen data and whose "
                        "repeats lie within --first-seen-window (default bt4; none: --match-finder everywhere)")
    p.add_argument("--first-seen-window", default="128m",
                   help="parallel engine: their largest window (default 128m: a bt4 encoder of about 1.4 GiB)")
    p.add_argument("--literals", choices=("sections", "fixed"), default="sections",
                   help="parallel engine: sections (default) gives code, relocation and symbol tables the LZMA "
                        "lc/lp/pb a trial on a sample of each picks, and stores first-seen sections LZMA hardly "
                        "packs as they are (faster to extract); fixed: 3/0/2 throughout, nothing stored, the "
                        "python engine's bytes with --pieces 1")
    p.add_argument("--nice-len", type=int, default=128, metavar="8-273",
                   help="LZMA nice_len (7-Zip's fb): longer searches, smaller archive, slower (default 128)")
    p.add_argument("--depth", type=int, default=80, metavar="0-1000",
                   help="LZMA depth (7-Zip's mc) of --match-finder: match candidates per position (default 80; "
                        "0: liblzma's, 36 for hc4 at --nice-len 128)")
    p.add_argument("--pieces", type=int, default=6,
                   help="parallel engine: pieces of the stream (default 6); the archive's bytes depend on it, "
                        "not on --jobs")
    p.add_argument("--generation", action="append", metavar="CODE",
                   help="pack only this generation's folder (repeatable; default: every built folder)")
    p.add_argument("--sign-key", type=Path, metavar="FILE",
                   help="sign the archive with this minisign secret key (default: IPEX_AOT_SIGN_KEY, then "
                        "IPEX_AOT_SIGN_KEY_FILE; none: unsigned)")
    p.add_argument("--conformance", action="store_true",
                   help="put the conformance reports of dist/<recipe>/conformance/ into the manifest (each packed "
                        "generation needs one; a CI job made them from the generation folders)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_cmd_pack)


def _load_recipe_or_none(text: str) -> Any:
    """The recipe named TEXT, or None for a bare dist name (no recipe file)."""

    try:
        path = find_recipe(text)
    except RecipeError:
        log.warn(f"{text}: no recipe file; the archive gets the default name ({{release}}-AOT.7z)")
        return None
    return load_recipe(path)  # a broken recipe is an error, not a reason to guess a name


def _recipe_naming(text: str) -> tuple[Callable[[str], str] | None, str | None]:
    """(archive name per platform, release) from the recipe file; (None, None) for a bare dist name."""
    recipe = _load_recipe_or_none(text)
    return (recipe.archive_for, recipe.release) if recipe is not None else (None, None)


def _built(dist: Path, name: str) -> list[str]:
    root = dist / name
    return sorted((p.parent.name for p in root.glob("*/build.json") if is_generation(p.parent.name)),
                  key=generation_order)


def _targets_only(recipe: Any, dist: Path, database: Callable[[], Any]) -> list[str] | None:
    """The built generations that are among RECIPE's targets; strays are named in a warning, not packed."""

    plan = plan_targets(recipe, database())
    targets = {t.generation for t in plan.targets} | {g for g, _ in plan.unknown}
    built = _built(dist, recipe.name)
    strays = [g for g in built if g not in targets]
    if strays:
        root = dist / recipe.name
        log.warn(f"{', '.join(strays)} in {root} {'is' if len(strays) == 1 else 'are'} not among the recipe's targets; "
                 f"not packed. Pack {'it' if len(strays) == 1 else 'them'} by naming every generation with "
                 f"--generation, or discard {'it' if len(strays) == 1 else 'them'}: "
                 + " ".join(f"rm -r {root / g}" for g in strays))
    kept = [g for g in built if g in targets]
    return kept or None


def _kept_conformance(dist: Path, name: str, generations: Sequence[str] | None, archive_dir: Path) -> list[dict]:
    """Without --conformance: the reports of dist/<recipe>/conformance when every packed generation has one,
    so that a repack keeps what the release measured; a warning when results the last archive had are lost."""

    gens = list(generations) if generations is not None else _built(dist, name)
    folder = dist / name / "conformance"
    missing = [g for g in gens if not any(folder.glob(f"{g}-*.json"))]
    if folder.is_dir() and gens and not missing:
        reports = read_reports(folder, gens)
        if any(r["verdict"] == "fail" for r in reports):
            failed = sorted(f"{r['generation']}/{r['device']}" for r in reports if r["verdict"] == "fail")
            raise ConformanceError(f"{folder}: conformance failed for {', '.join(failed)}; an archive that fails its "
                                   "conformance is not packed (rerun conformance, or remove those reports)")
        log.info(f"kept the conformance results of {folder} ({len(reports)} report(s)) in the manifest")
        return manifest_entries(reports)
    previous: Any = None
    with contextlib.suppress(OSError, ValueError):
        previous = loads_json((archive_dir / "manifest.json").read_text(encoding="utf-8"))
    had = previous.get("conformance") if isinstance(previous, dict) else None
    if isinstance(had, list) and had:
        log.warn(f"the last archive's manifest had {len(had)} conformance result(s); this one has none because "
                 f"{', '.join(missing) or 'every generation'} has no report in {folder}: run `ipex-aot conformance "
                 f"{name}` and pack again to keep them")
    return []


def _cmd_pack(args: argparse.Namespace, settings: Settings) -> int:
    jobs = args.jobs if args.jobs else settings.jobs
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    options = PackOptions(
        engine=args.engine, jobs=jobs, preset=args.preset, memory=parse_size(args.memory), mf=args.match_finder,
        dict_size=parse_size(args.dict_size) if args.dict_size else None, sevenzip=settings.sevenzip,
        pieces=args.pieces, nice_len=args.nice_len, depth=args.depth, first_seen_mf=args.first_seen_match_finder,
        first_seen_window=parse_size(args.first_seen_window), literals=args.literals,
    )
    if not 8 <= options.nice_len <= 273:
        raise UsageError("--nice-len must be between 8 and 273")
    if not 0 <= options.depth <= 1000:
        raise UsageError("--depth must be between 0 (liblzma's) and 1000")
    if options.pieces < 1:
        raise UsageError("--pieces must be at least 1")
    if not 1 << 20 <= options.first_seen_window <= lzma2.DICT_MAX:
        raise UsageError("--first-seen-window must be between 1m and 1536m")
    recipe = _load_recipe_or_none(args.recipe)
    archive_name, release = (recipe.archive_for, recipe.release) if recipe is not None else (None, None)
    dist = Path(settings.dist_dir)
    generations = args.generation
    if generations is None and recipe is not None:
        generations = _targets_only(recipe, dist, lambda: load_database(settings))
    conformance: list[dict] = []
    if not args.conformance:
        conformance = _kept_conformance(dist, recipe_name(args.recipe), generations, dist / recipe_name(args.recipe))
    if args.conformance:
        name = recipe_name(args.recipe)
        folders = load_folders(Path(settings.dist_dir), name, generations)
        reports = read_reports(Path(settings.dist_dir) / name / "conformance", [f.generation for f in folders])
        failed = sorted(f"{r['generation']}/{r['device']}" for r in reports if r["verdict"] == "fail")
        if failed:
            raise ConformanceError(f"conformance failed for {', '.join(failed)}; an archive that fails its "
                                   "conformance is not packed")
        conformance = manifest_entries(reports)
    result = pack(args.recipe, settings, options=options, database=lambda: load_database(settings),
                  generations=generations, sign_key=load_secret_key(settings, args.sign_key),
                  archive_name=archive_name, release=release, conformance=conformance)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    return 0
