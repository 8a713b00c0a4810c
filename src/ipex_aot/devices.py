"""The Intel GPU device database: which PCI device ID needs which AOT generation.

Everything here is asked of the tools, nothing is typed in:

* ``ocloc ids NAME`` for every name ocloc accepts gives the generations
  (IP versions ``major.minor.revision``) and, by set inclusion, which names are
  products and which are families/releases (``gen12lp``, ``xe-hpg`` …).
* ``ocloc compile -device 0xIIII`` on an empty source stops right after ocloc
  has matched the ID to a target ("Auto-detected target based on …"): the
  sweep over 0x0000–0xFFFF costs one such call per ID.
* For the IDs that hit, a one-line kernel is compiled per ID and per stepping
  (``-revision_id``). The generation of a binary is read from its zebin
  product-config note when ocloc writes one; otherwise the binary is matched
  byte for byte against the binaries ocloc makes for each known generation
  (``-device 12.55.8``), which is what ties ``0x56A0`` rev 8 to ``12.55.8``.
* Display names come from the system's ``pci.ids``.

The result is cached in ``Settings.cache_dir`` under a key made of the ocloc
version and the identity of its files, so a second call reads one JSON file.
"""

from __future__ import annotations

import collections
import faulthandler
import functools
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ipex_aot import elf, log
from ipex_aot.errors import DeviceError, IpexAotError, ToolchainError
from ipex_aot.fsutil import read_json, write_json, write_text
from ipex_aot.generation import Generation, generation_order, is_generation
from ipex_aot.intelgt import EM_INTELGT, compat_note
from ipex_aot.ocloc import InvokeResult, Libocloc, Ocloc, find_ocloc, quiet_stdout
from ipex_aot.settings import Settings
from ipex_aot.untrusted import printable

#: 2: rows list every stepping ocloc knows for the product, with how they are told apart.
SCHEMA = 2
ALL_IDS = range(0x10000)
#: The kernel every probe compiles: one line, so the compiler's time is start-up only.
KERNEL = b"kernel void k(global int *a) { a[0] = 1; }\n"
#: Where Debian/Ubuntu (pci.ids, hwdata) and other systems keep the PCI ID list.
PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids",
                 "/usr/local/share/pci.ids")
INTEL_VENDOR = "8086"
MARKDOWN_HEADER = ("| PCI ID (Only the device part) | Codename | Architecture | Generation Code | Display Name |\n"
                   "| --- | --- | --- | --- | --- |\n")
#: Per-call limit: a compile of the one-line kernel takes well under a second.
CALL_TIMEOUT = 60.0

_PCI_RE = re.compile(r"^(?:0[xX])?([0-9A-Fa-f]{1,4})$")
_DETECT_RE = re.compile(r"based on (0x[0-9A-Fa-f]+) device id:\s*(\S+)")
_EMPTY_NAME = "empty.cl"


def normalize_pci_id(text: str) -> str:
    """``56a0`` / ``0x56A0`` → ``56A0``; DeviceError if it is not a 16-bit hex number."""
    m = _PCI_RE.match(str(text).strip())
    if not m:
        raise DeviceError(f"{text!r} is not a PCI device ID; give the device part in hex, e.g. 56A0")
    return f"{int(m.group(1), 16):04X}"


@dataclass(frozen=True)
class PciQuery:
    """What a person typed to name a GPU: the device ID, and the revision and vendor when given."""

    pci_id: str  # device part, 4 upper-case hex digits
    revision: int | None = None
    vendor: str | None = None  # 4 upper-case hex digits, when the text named one

    @property
    def text(self) -> str:
        return self.pci_id + (f" rev {self.revision:02X}" if self.revision is not None else "")


_LSPCI_NN_RE = re.compile(r"\[([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})\]")
_LSPCI_N_RE = re.compile(r"(?<![0-9A-Fa-f:])([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})(?![0-9A-Fa-f:.])")
_LSPCI_REV_RE = re.compile(r"\(rev ([0-9A-Fa-f]{1,2})\)")
_HEX_RE = re.compile(r"^(?:0[xX])?([0-9A-Fa-f]+)$")


def parse_pci_query(text: str) -> PciQuery:
    """The forms a person types: ``56A0``, ``0x56a0``, ``8086:56a0``, ``56A0:08`` (revision, hex as lspci
    prints it), ``8086:56a0:08``, or a whole ``lspci -nn`` / ``lspci -n`` line; DeviceError otherwise."""
    raw = str(text).strip()
    if not raw:
        raise DeviceError("empty PCI ID; give the device part in hex, e.g. 56A0")
    if any(c.isspace() for c in raw) or "[" in raw:
        # An lspci line: `lspci -nn` ends the name with [vendor:device]; the class [0300] has no colon.
        hits = _LSPCI_NN_RE.findall(raw) or _LSPCI_N_RE.findall(raw)
        if not hits:
            raise DeviceError(f"no [vendor:device] in {printable(raw[:80])!r}; run `lspci -nn` (it prints e.g. "
                              "[8086:56a0] (rev 08)) and give that line or just 56A0:08")
        vendor, device = hits[-1]
        rev = _LSPCI_REV_RE.search(raw)
        return PciQuery(f"{int(device, 16):04X}", int(rev.group(1), 16) if rev else None, vendor.upper())
    parts = raw.split(":")
    nums = [_HEX_RE.match(p) for p in parts]
    if len(parts) > 3 or not all(nums):
        raise DeviceError(f"{printable(raw[:80])!r} is not a PCI ID; give the device part in hex (56A0), "
                          "with the vendor (8086:56a0) or the revision (56A0:08)")
    digits = [m.group(1) for m in nums if m]
    if any(len(d) > 4 for d in digits):
        raise DeviceError(f"{printable(raw)!r} is not a PCI ID: each part is at most 4 hex digits (e.g. 8086:56a0)")
    vendor = revision = None
    if len(digits) == 3:
        vendor, device, rev_text = digits
        revision = int(rev_text, 16)
    elif len(digits) == 2 and len(digits[1]) > 2:
        vendor, device = digits  # 8086:56a0: a revision is one byte, never 3-4 digits
    elif len(digits) == 2:
        device, rev_text = digits
        revision = int(rev_text, 16)
    else:
        (device,) = digits
    if revision is not None and revision > 0xFF:
        raise DeviceError(f"revision {revision:X} in {printable(raw)!r} is more than one byte")
    return PciQuery(f"{int(device, 16):04X}", revision, f"{int(vendor, 16):04X}" if vendor else None)


def architecture_name(family: str) -> str:
    """ocloc's family/release name in the words users know: ``xe-hpg`` → ``Xe-HPG``.

    A formatting rule, not a table: ``genN`` → ``GenN`` except Gen12 LP, which
    Intel sells as Xe (ocloc calls it both ``gen12lp`` and ``xe-lp``);
    ``xeN-abc`` → ``XeN-ABC`` (``xe3p`` → ``Xe3P``); a ``plus`` suffix becomes ``+``.
    """
    name = family.strip().lower().replace("_", "-")
    m = re.fullmatch(r"gen(\d+)(.*)", name)
    if m:
        return "Xe" if int(m.group(1)) >= 12 else f"Gen{m.group(1)}{m.group(2).upper()}"
    m = re.fullmatch(r"xe(\d*p?)(?:-(.+))?", name)
    if m:
        base = f"Xe{m.group(1).upper()}"
        suffix = m.group(2) or ""
        if not suffix or (suffix == "lp" and not m.group(1)):
            return base
        suffix = re.sub(r"plus$", "+", suffix).upper()
        return f"{base}-{suffix}"
    return family


# --- binaries ------------------------------------------------------------------------------



@dataclass(frozen=True)
class BinaryInfo:
    format: str  # "zebin" | "patchtokens" | "unknown"
    sha256: str
    product_family: int | None = None
    core: int | None = None
    stepping: int | None = None
    ip_version: str | None = None  # from the zebin product-config note, where ocloc writes one

    @property
    def hardware(self) -> tuple[str, int | None, int | None]:
        """What the binary says about the hardware, without the stepping."""
        return self.format, self.product_family, self.core


def binary_info(data: bytes) -> BinaryInfo:
    """What a device binary says about its target (zebin notes or the legacy program header)."""
    sha = hashlib.sha256(data).hexdigest()
    if len(data) >= 20 and data[:4] == elf.MAGIC and struct.unpack_from("<H", data, 18)[0] == EM_INTELGT:
        view = memoryview(data)
        found = elf.device_sections(view)
        note = compat_note(view, found[1] if found else ())
        return BinaryInfo("zebin", sha, note.family, note.core, note.stepping, note.ip)
    idx = data.find(b"CTNI")
    if idx >= 0 and len(data) >= idx + 24:
        _magic, _version, device, _ptr, _kernels, stepping = struct.unpack_from("<IIIIII", data, idx)
        return BinaryInfo("patchtokens", sha, None, device, stepping, None)
    return BinaryInfo("unknown", sha)


# --- running ocloc many times --------------------------------------------------------------

Call = tuple[tuple[str, ...], tuple[tuple[str, bytes], ...]]  # ocloc arguments, in-memory sources
_T = TypeVar("_T")
_R = TypeVar("_R")


def _halving(batches: Iterable[list[_T]], run: Callable[[list[list[_T]]], Iterable[tuple[int, _R | None]]],
             done: Callable[[list[_T], _R], None], alone: Callable[[_T], None]) -> None:
    """Run BATCHES of work that one bad item can make ocloc crash or hang on, a round at a time.

    RUN runs a round's batches (in parallel, as the runner can) and yields (batch index, result)
    as each ends, None where ocloc crashed or hung. Such a batch is halved and its halves run in
    the next round, until the item that does it is alone: ALONE gets it (to skip it, or to try it
    the slow way). DONE gets every batch that worked, with its result.
    """
    pending = [b for b in batches if b]
    while pending:
        again: list[list[_T]] = []
        for n, result in run(pending):
            batch = pending[n]
            if result is not None:
                done(batch, result)
            elif len(batch) > 1:
                again += [batch[:len(batch) // 2], batch[len(batch) // 2:]]
            else:
                alone(batch[0])
        pending = again


def _worker_main(conn: multiprocessing.connection.Connection, library: str) -> None:
    # A crash here is expected and handled by the parent (the call is skipped): no traceback dump.
    faulthandler.disable()
    lib = Libocloc(library)
    with quiet_stdout():
        while True:
            try:
                chunk = conn.recv()
            except EOFError:
                return
            if chunk is None:
                return
            results = []
            for args, sources in chunk:
                r = lib.invoke(list(args), dict(sources))
                # Keep only what the sweep reads: the log and the binaries.
                results.append((r.rc, {k: v for k, v in r.outputs.items() if k.endswith((".bin", ".spv", ".log"))}))
            conn.send(results)


class _Worker:
    def __init__(self, ctx: Any, library: str) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, library), daemon=True)
        self.proc.start()
        child.close()
        self.job: int | None = None  # the index of the chunk it runs
        self.deadline = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                self.proc.kill()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class Runner:
    """Runs many ocloc calls; None for a call that crashed or hung ocloc (recorded, skipped)."""

    in_process = False
    #: Seconds one call may take before it counts as hung.
    timeout: float = CALL_TIMEOUT

    def map(self, calls: Sequence[Call], *, what: str = "ocloc", cheap: bool = False) -> list[InvokeResult | None]:
        """Run CALLS; CHEAP ones (ID matches, name checks) are sent in big chunks."""
        raise NotImplementedError

    def detect(self, ids: Sequence[int], source: tuple[str, bytes] = (_EMPTY_NAME, b""),
               extra: tuple[str, ...] = ()) -> dict[int, str | None]:
        """PCI ID → the target ocloc matched it to, or None; IDs that crash ocloc are left out.

        The empty SOURCE makes ocloc stop right after matching the ID (no compile).
        """
        calls = [(("compile", "-file", source[0], "-device", f"0x{i:04x}", *extra), (source,)) for i in ids]
        found: dict[int, str | None] = {}
        for i, r in zip(ids, self.map(calls, what="matching PCI IDs", cheap=not source[1]), strict=True):
            if r is not None:
                found[i] = _detected_name(r.log, i)
        return found

    def close(self) -> None:
        pass


def _detected_names(text: str, ids: Iterable[int]) -> dict[int, str | None]:
    """PCI ID → the target an `ocloc multi` log says it matched, or None, for each of IDS."""
    named = {int(m.group(1), 16): m.group(2).rstrip(".") for m in _DETECT_RE.finditer(text)}
    return {i: named.get(i) for i in ids}


def _detected_name(text: str, pci: int) -> str | None:
    for m in _DETECT_RE.finditer(text):
        if int(m.group(1), 16) == pci:
            return m.group(2).rstrip(".")
    return None


class InProcessRunner(Runner):
    """oclocInvoke in worker processes (one per job): a crash kills a worker, not the sweep."""

    in_process = True

    def __init__(self, library: str, jobs: int, timeout: float = CALL_TIMEOUT) -> None:
        self.library = library
        self.jobs = max(1, jobs)
        self.timeout = timeout
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._ctx = multiprocessing.get_context(method)
        self._workers: list[_Worker] = []

    def map(self, calls: Sequence[Call], *, what: str = "ocloc", cheap: bool = False) -> list[InvokeResult | None]:
        results: list[InvokeResult | None] = [None] * len(calls)
        # A cheap call answers in microseconds: waiting the compile limit for it would only slow the halving.
        timeout = min(self.timeout, 10.0) if cheap else self.timeout
        # Small chunks for slow calls (compiles), big ones for the microsecond ID matches.
        size = max(1, min(512, len(calls) // (self.jobs * 8) or 1)) if cheap else 1
        progress = log.Progress(what, len(calls))

        def done(idx: list[int], got: list[InvokeResult]) -> None:
            for i, r in zip(idx, got, strict=True):
                results[i] = r

        def alone(i: int) -> None:
            log.warn(f"ocloc {' '.join(calls[i][0])} crashed or hung; skipped")
            progress.advance(1)

        # A chunk that kills its worker or hangs is halved until the one call that does it is found.
        _halving((list(range(start, min(start + size, len(calls)))) for start in range(0, len(calls), size)),
                 lambda chunks: self._run_chunks([[calls[i] for i in idx] for idx in chunks], timeout, progress),
                 done, alone)
        return results

    def _run_chunks(self, chunks: list[list[Call]], timeout: float,
                    progress: log.Progress) -> Iterator[tuple[int, list[InvokeResult] | None]]:
        """(chunk index, its results) as the workers end them; None for a chunk that killed its worker or hung."""
        queue = collections.deque(range(len(chunks)))
        while len(self._workers) < self.jobs:
            self._workers.append(_Worker(self._ctx, self.library))
        while queue or any(w.job is not None for w in self._workers):
            for w in self._workers:
                if w.job is None and queue:
                    w.job = queue.popleft()
                    w.deadline = time.monotonic() + timeout + 0.05 * len(chunks[w.job])
                    w.conn.send(chunks[w.job])
            busy = [w for w in self._workers if w.job is not None]
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=0.5)
            for w in busy:
                n = w.job
                assert n is not None
                got: list[InvokeResult] | None = None
                if w.conn in ready:
                    try:
                        got = [InvokeResult(rc, outputs) for rc, outputs in w.conn.recv()]
                        progress.advance(len(chunks[n]))
                    except (EOFError, OSError):
                        pass
                elif time.monotonic() <= w.deadline:
                    continue
                w.job = None
                if got is None:
                    self._replace(w)
                yield n, got

    def detect(self, ids: Sequence[int], source: tuple[str, bytes] = (_EMPTY_NAME, b""),
               extra: tuple[str, ...] = ()) -> dict[int, str | None]:
        """``ocloc multi`` through oclocInvoke: one call matches 4096 IDs (ocloc's set-up is paid once).

        A batch that kills its worker or hangs is halved until the one bad ID is found.
        """
        if source[1] or extra:
            return super().detect(ids, source, extra)
        found: dict[int, str | None] = {}
        singles: list[int] = []

        def run(batches: list[list[int]]) -> Iterator[tuple[int, str | None]]:
            calls = [(("multi", "ids.txt"), (("ids.txt", "".join(f"-file {_EMPTY_NAME} -device 0x{i:04x}\n"
                                                                  for i in b).encode()), (_EMPTY_NAME, b"")))
                     for b in batches]
            for n, r in enumerate(self.map(calls, what="matching PCI IDs (ocloc multi)", cheap=True)):
                ok = r is not None and ("Command number" in r.log or "based on" in r.log)
                yield n, r.log if ok and r is not None else None

        _halving((list(ids[i:i + 4096]) for i in range(0, len(ids), 4096)), run,
                 lambda batch, text: found.update(_detected_names(text, batch)), singles.append)
        if singles:  # one call each: a crash or hang now skips just that ID
            found.update(super().detect(singles))
        return found

    def _replace(self, worker: _Worker) -> None:
        worker.stop(kill=True)
        self._workers[self._workers.index(worker)] = _Worker(self._ctx, self.library)

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []


class SubprocessRunner(Runner):
    """Starts the ocloc executable for each call (any OCLOC works, wrapper scripts included)."""

    def __init__(self, ocloc: Ocloc, jobs: int, timeout: float = CALL_TIMEOUT) -> None:
        self.ocloc = ocloc
        self.jobs = max(1, jobs)
        self.timeout = timeout

    def _one(self, call: Call, timeout: float) -> InvokeResult | None:
        args, sources = call
        with tempfile.TemporaryDirectory(prefix="ipex-aot-sweep-") as tmp:
            for name, data in sources:
                Path(tmp, name).write_bytes(data)
            try:
                proc = subprocess.run([self.ocloc.path, *args], cwd=tmp, capture_output=True, timeout=timeout,
                                      check=False)
            except subprocess.TimeoutExpired:
                log.warn(f"ocloc {' '.join(args)} hung for {timeout:.0f} s; skipped")
                return None
            if proc.returncode < 0:
                log.warn(f"ocloc {' '.join(args)} crashed (signal {-proc.returncode}); skipped")
                return None
            given = {name for name, _ in sources}
            outputs = {p.name: p.read_bytes() for p in Path(tmp).rglob("*")
                       if p.is_file() and p.name not in given}
            outputs["stdout.log"] = proc.stdout + proc.stderr
            return InvokeResult(proc.returncode, outputs)

    def map(self, calls: Sequence[Call], *, what: str = "ocloc", cheap: bool = False) -> list[InvokeResult | None]:
        progress = log.Progress(what, len(calls))
        timeout = self.timeout
        # Real compiles only: calls on an empty source are read for their messages, which
        # `ocloc multi` does not give per line.
        batchable = len(calls) > 1 and all(data for _, data in calls[0][1]) and all(
            c[0][:1] == ("compile",) and "-output" not in c[0] and c[1] == calls[0][1] for c in calls)
        results: list[InvokeResult | None] = [None] * len(calls)
        if batchable:
            # `ocloc multi` compiles many lines in one process: the compiler is loaded once per batch.
            size = max(1, min(64, len(calls) // (self.jobs * 4) or 1))
            batches = (list(range(i, min(i + size, len(calls)))) for i in range(0, len(calls), size))

            def run_batch(idx: list[int]) -> list[InvokeResult] | None:
                got = self._multi_compile([calls[i] for i in idx], timeout)
                if got is not None:
                    progress.advance(len(idx))
                return got

            def done(idx: list[int], got: list[InvokeResult]) -> None:
                for i, r in zip(idx, got, strict=True):
                    results[i] = r

            def alone(i: int) -> None:  # one call, not through `ocloc multi`: its crash or hang is its own
                results[i] = self._one(calls[i], timeout)
                progress.advance()

            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                _halving(batches, lambda b: enumerate(pool.map(run_batch, b)), done, alone)
            return results
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for n, r in enumerate(pool.map(lambda c: self._one(c, timeout), calls)):
                results[n] = r
                progress.advance()
        return results

    def _multi_compile(self, calls: Sequence[Call], timeout: float) -> list[InvokeResult] | None:
        """Compile calls as one ``ocloc multi`` run; None when that run crashed or hung (caller halves it)."""
        with tempfile.TemporaryDirectory(prefix="ipex-aot-multi-") as tmp:
            for name, data in calls[0][1]:
                Path(tmp, name).write_bytes(data)
            lines = "".join(" ".join([*args[1:], "-output", f"c{n}"]) + "\n" for n, (args, _) in enumerate(calls))
            Path(tmp, "jobs.txt").write_text(lines, encoding="utf-8")
            try:
                proc = subprocess.run([self.ocloc.path, "multi", "jobs.txt"], cwd=tmp, capture_output=True,
                                      timeout=timeout * len(calls), check=False)
            except subprocess.TimeoutExpired:
                return None
            if proc.returncode < 0:
                return None
            outputs: dict[int, dict[str, bytes]] = collections.defaultdict(dict)
            out_dir = Path(tmp, "jobs")
            for p in out_dir.iterdir() if out_dir.is_dir() else []:
                m = re.match(r"c(\d+)[_.]", p.name)
                if m and p.is_file():
                    outputs[int(m.group(1))][p.name] = p.read_bytes()
            return [InvokeResult(0 if any(k.endswith(".bin") for k in outputs.get(n, {})) else 1,
                                 outputs.get(n, {})) for n in range(len(calls))]

    def detect(self, ids: Sequence[int], source: tuple[str, bytes] = (_EMPTY_NAME, b""),
               extra: tuple[str, ...] = ()) -> dict[int, str | None]:
        """``ocloc multi`` matches thousands of IDs in one process; a batch that fails is halved."""
        found: dict[int, str | None] = {}
        progress = log.Progress("matching PCI IDs (ocloc multi)", len(ids))

        def run_batch(batch: list[int]) -> str | None:
            text = self._multi(batch, source, extra)
            if text is not None:
                progress.advance(len(batch))
            return text

        def alone(i: int) -> None:
            single = self._one((("compile", "-file", source[0], "-device", f"0x{i:04x}", *extra), (source,)),
                               self.timeout)
            if single is not None:
                found[i] = _detected_name(single.log, i)
            progress.advance()

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            _halving((list(ids[i:i + 4096]) for i in range(0, len(ids), 4096)),
                     lambda b: enumerate(pool.map(run_batch, b)),
                     lambda batch, text: found.update(_detected_names(text, batch)), alone)
        return found

    def _multi(self, batch: list[int], source: tuple[str, bytes], extra: tuple[str, ...]) -> str | None:
        with tempfile.TemporaryDirectory(prefix="ipex-aot-multi-") as tmp:
            Path(tmp, source[0]).write_bytes(source[1])
            tail = "".join(f" {a}" for a in extra)
            lines = "".join(f"-file {source[0]} -device 0x{i:04x}{tail}\n" for i in batch)
            Path(tmp, "ids.txt").write_text(lines, encoding="utf-8")
            try:
                proc = subprocess.run([self.ocloc.path, "multi", "ids.txt"], cwd=tmp, capture_output=True,
                                      text=True, errors="replace", timeout=self.timeout + len(batch) * 0.01, check=False)
            except subprocess.TimeoutExpired:
                return None
            text = proc.stdout + proc.stderr
            # A crash, or an ocloc without `multi`, answers no command: try smaller batches / single calls.
            if proc.returncode < 0 or "Command number" not in text and "based on" not in text:
                return None
            return text


def make_runner(ocloc: Ocloc, jobs: int, *, in_process: bool | None = None, timeout: float = CALL_TIMEOUT) -> Runner:
    """The in-process runner when ocloc's own libocloc is usable, else the subprocess runner."""
    use_lib = bool(ocloc.library) if in_process is None else in_process
    if use_lib and not ocloc.library:
        raise ToolchainError(f"{ocloc.path} has no compatible libocloc beside it; the in-process path is not available")
    if use_lib and ocloc.library:
        return InProcessRunner(ocloc.library, jobs, timeout)
    return SubprocessRunner(ocloc, jobs, timeout)


# --- the sweep -----------------------------------------------------------------------------

@dataclass
class SweepResult:
    """Raw facts from ocloc; :func:`build_rows` turns them into the table."""

    names: dict[str, list[str]]  # accepted name -> generations (`ocloc ids`)
    groups: list[str]  # names that stand for several products (families, releases)
    targets: dict[str, str]  # PCI ID -> target ocloc matched
    revisions: dict[str, dict[int, str]]  # PCI ID -> revision -> generation
    default: dict[str, str]  # PCI ID -> generation without -revision_id
    skipped: list[str] = field(default_factory=list)  # IDs that crashed/hung ocloc or gave no generation
    in_process: bool = False
    seconds: float = 0.0


def _compile_call(device: str, revision: int | None, source: tuple[str, bytes], spirv: bool) -> Call:
    args = ["compile", "-file", source[0], "-device", device, "-q", "--format", "zebin", "-exclude_ir"]
    if spirv:
        args.append("-spirv_input")
    if revision is not None:
        args += ["-revision_id", str(revision)]
    return tuple(args), (source,)


def _binary(result: InvokeResult | None) -> BinaryInfo | None:
    if result is None or result.rc != 0:
        return None
    bins = [v for k, v in sorted(result.outputs.items()) if k.endswith(".bin")]
    return binary_info(bins[0]) if bins else None


def _compile_all(runner: Runner, devices: Sequence[tuple[str, int | None]], source: tuple[str, bytes], spirv: bool,
                 what: str) -> list[BinaryInfo | None]:
    return [_binary(r) for r in runner.map([_compile_call(d, rev, source, spirv) for d, rev in devices], what=what)]


def _group_names(names: Mapping[str, list[str]], runner: Runner, products_hint: Iterable[str] = ()) -> list[str]:
    """Names that stand for a family or release rather than one product.

    A name whose generations strictly contain another name's is a group. A
    name with no such subset (``xe-hp`` with its one generation) is judged by
    how ocloc treats it: a group sends ``compile`` down its multi-target path,
    which answers an empty source differently from a product.
    """
    sets = {n: frozenset(v) for n, v in names.items() if v}
    groups = {n for n, s in sets.items() if any(o < s for o in sets.values())}
    undecided = [n for n in sets if n not in groups]
    calls = [(("compile", "-file", _EMPTY_NAME, "-device", n), ((_EMPTY_NAME, b""),)) for n in undecided]
    texts = {}
    for n, r in zip(undecided, runner.map(calls, what="classifying names", cheap=True), strict=True):
        if r is not None:
            texts[n] = (r.rc, re.sub(re.escape(n), "NAME", r.log).strip())
    # The products' answer is the common one: undecided names are nearly all products.
    known = [texts[n] for n in products_hint if n in texts] or list(texts.values())
    if known:
        product_answer = collections.Counter(known).most_common(1)[0][0]
        groups |= {n for n, t in texts.items() if t != product_answer}
    return sorted(groups)


@dataclass
class _Known:
    """The binary ocloc compiles for each generation it lists: what other binaries are compared with."""

    info: dict[str, BinaryInfo]  # generation -> its binary
    by_sha: dict[str, list[str]]  # binary sha256 -> generations that compile to it

    def candidates(self, info: BinaryInfo | None) -> list[str]:
        """Generations a binary may be for: its note, else every generation with identical bytes."""
        if info is None:
            return []
        return [info.ip_version] if info.ip_version else list(self.by_sha.get(info.sha256, []))

    def pick(self, cands: list[str], product: tuple[int, int] | None, step: int | None) -> str | None:
        if product is not None:
            cands = [v for v in cands if Generation.parse(v).product == product]
        if len(cands) > 1:
            cands = [v for v in cands if v not in self.info or self.info[v].stepping == step] or cands
        return cands[0] if len(cands) == 1 else None


def _probe_source(runner: Runner) -> tuple[tuple[str, bytes], bool]:
    """The kernel as SPIR-V, once: every later compile skips the OpenCL C front end (OpenCL C where that fails)."""
    spv_res = runner.map([(("compile", "-file", "k.cl", "-spv_only", "-output", "k"), (("k.cl", KERNEL),))],
                         what="SPIR-V of the probe kernel")[0]
    spv = [v for k, v in (spv_res.outputs.items() if spv_res and spv_res.rc == 0 else []) if k.endswith(".spv")]
    return (("k.spv", spv[0]), True) if spv else (("k.cl", KERNEL), False)


def _known_generations(runner: Runner, names: Mapping[str, list[str]], source: tuple[str, bytes],
                       spirv: bool) -> _Known:
    versions = sorted({v for vs in names.values() for v in vs}, key=generation_order)
    known = _Known({}, collections.defaultdict(list))
    for v, info in zip(versions, _compile_all(runner, [(v, None) for v in versions], source, spirv,
                                              "compiling each generation"), strict=True):
        if info:
            known.info[v] = info
            known.by_sha[info.sha256].append(v)
    return known


def _default_binaries(runner: Runner, hits: Mapping[int, str], known: _Known, source: tuple[str, bytes],
                      spirv: bool) -> tuple[dict[int, BinaryInfo], dict[tuple[str, str], list[int]], list[str]]:
    """(ID -> its binary without -revision_id, (target, sha256) -> IDs, IDs that did not compile).

    One ID per target first. When the hardware its binary names (product family, core)
    belongs to a single known generation, every ID of that target is that generation and
    need not be compiled; the others (DG2, PVC …) are compiled ID by ID.
    """
    by_target: dict[str, list[int]] = collections.defaultdict(list)
    for i in sorted(hits):
        by_target[hits[i]].append(i)
    firsts = [members[0] for members in by_target.values()]
    first_info = dict(zip(firsts, _compile_all(runner, [(f"0x{i:04x}", None) for i in firsts], source,
                                               spirv, "compiling one ID per target"), strict=True))
    settled: set[int] = set()
    for members in by_target.values():
        info = first_info[members[0]]
        if info is not None and not info.ip_version and \
                sum(vi.hardware == info.hardware for vi in known.info.values()) == 1:
            settled.update(members)
    order = [i for i in sorted(hits) if i not in settled and i not in first_info]
    rest = dict(zip(order, _compile_all(runner, [(f"0x{i:04x}", None) for i in order], source, spirv,
                                        "compiling each ID of the other targets"), strict=True))
    # IDs that compile to the same bytes for the same target are the same hardware to ocloc:
    # the steppings are probed once per such class.
    classes: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    default_info: dict[int, BinaryInfo] = {}
    failed: list[str] = []
    for i in sorted(hits):
        info = first_info.get(i) or rest.get(i) or (first_info[by_target[hits[i]][0]] if i in settled else None)
        if info is None:
            failed.append(f"{i:04X}")
            continue
        default_info[i] = info
        classes[(hits[i], info.sha256)].append(i)
    return default_info, classes, failed


def _steppings(runner: Runner, classes: Mapping[tuple[str, str], list[int]], default_info: Mapping[int, BinaryInfo],
               known: _Known, source: tuple[str, bytes],
               spirv: bool) -> tuple[dict[int, dict[int, str]], dict[int, str | None]]:
    """(class representative -> revision -> generation, representative -> generation without -revision_id)."""
    probes: list[tuple[int, int]] = []
    for members in classes.values():
        info = default_info[members[0]]
        siblings = [vi for vi in known.info.values() if vi.hardware == info.hardware]
        if len(siblings) == 1 and not info.ip_version:
            continue  # one generation for this hardware: no stepping can pick another
        steppings = [vi.stepping for vi in siblings if vi.stepping is not None]
        top = max(steppings + [info.stepping or 0])
        probes += [(members[0], rev) for rev in range(min(top, 62) + 2)]
    probed = _compile_all(runner, [(f"0x{i:04x}", rev) for i, rev in probes], source, spirv,
                          "compiling each stepping")
    # Two products can compile to identical bytes at one stepping (ocloc 22.43 builds the
    # same binary for DG2-G10 and -G12 at rev 0). The product (major.minor) that the
    # default binary allows and that the most steppings name alone is the ID's product.
    per_rep: dict[int, list[tuple[int, list[str]]]] = collections.defaultdict(list)
    for (i, rev), binary in zip(probes, probed, strict=True):
        per_rep[i].append((rev, known.candidates(binary)))
    rev_maps: dict[int, dict[int, str]] = {}
    default_gen: dict[int, str | None] = {}
    for i, probes_of in per_rep.items():
        dinfo = default_info[i]
        dcands = known.candidates(dinfo)
        allowed = {Generation.parse(v).product for v in dcands} or {
            Generation.parse(v).product for _, cs in probes_of for v in cs}
        alone: collections.Counter[tuple[int, int]] = collections.Counter()
        votes: collections.Counter[tuple[int, int]] = collections.Counter()
        for _, cs in probes_of:
            products = {Generation.parse(v).product for v in cs}
            votes.update(products)
            if len(products) == 1:
                alone.update(products)
        product = max(sorted(allowed), key=lambda p: (alone[p], votes[p])) if allowed else None
        rev_maps[i] = {rev: g for rev, cs in probes_of if (g := known.pick(cs, product, rev))}
        default_gen[i] = known.pick(dcands, product, dinfo.stepping)
    return rev_maps, default_gen


def sweep(ocloc: Ocloc, ids: Iterable[int] = ALL_IDS, *, jobs: int = 1, in_process: bool | None = None,
          timeout: float = CALL_TIMEOUT) -> SweepResult:
    """Ask ocloc about every PCI ID in IDS; see the module docstring for how."""
    start = time.monotonic()
    ids = sorted(set(ids))
    runner = make_runner(ocloc, jobs, in_process=in_process, timeout=timeout)
    try:
        with log.step(f"device sweep with ocloc {ocloc.version} ({'in-process libocloc' if runner.in_process else 'subprocess'}, {jobs} jobs)"):
            names = {n: ocloc.ids(n) for n in ocloc.acronyms()}
            if not names:
                raise ToolchainError(f"{ocloc.path} lists no device names in `ocloc ids --help`; is it a working ocloc?")
            source, spirv = _probe_source(runner)
            detected = runner.detect(ids)
            if not any(detected.values()):
                # An ocloc that reads the source before matching the device says nothing about an
                # empty file: ask again with the real kernel (misses still fail before compiling).
                detected = runner.detect(ids, source, ("-spirv_input",) if spirv else ())
            skipped = [f"{i:04X}" for i in ids if i not in detected]
            hits = {i: t for i, t in detected.items() if t}
            known = _known_generations(runner, names, source, spirv)
            default_info, classes, failed = _default_binaries(runner, hits, known, source, spirv)
            skipped += failed
            rev_maps, default_gen = _steppings(runner, classes, default_info, known, source, spirv)

            targets: dict[str, str] = {}
            revisions: dict[str, dict[int, str]] = {}
            default: dict[str, str] = {}
            for (target, _sha), members in classes.items():
                rmap = rev_maps.get(members[0], {})
                dgen = default_gen[members[0]] if members[0] in default_gen else known.pick(
                    known.candidates(default_info[members[0]]), None, default_info[members[0]].stepping)
                if not dgen and target in names and len(names[target]) == 1:
                    dgen = names[target][0]  # ocloc named an accepted product: take its generation
                if not rmap and not dgen:
                    skipped += [f"{i:04X}" for i in members]
                    continue
                for i in members:
                    pid = f"{i:04X}"
                    targets[pid] = target
                    revisions[pid] = dict(rmap)
                    if dgen:
                        default[pid] = dgen
            groups = _group_names(names, runner, ())
    finally:
        runner.close()
    return SweepResult(names=names, groups=groups, targets=targets, revisions=revisions, default=default,
                       skipped=sorted(set(skipped)), in_process=runner.in_process,
                       seconds=round(time.monotonic() - start, 2))


# --- pci.ids -------------------------------------------------------------------------------

def pci_ids_file() -> Path | None:
    """The newest pci.ids on this system (by its ``Version:`` line)."""
    best: tuple[str, Path] | None = None
    for p in PCI_IDS_PATHS:
        path = Path(p)
        if not path.is_file():
            continue
        version = ""
        with open(path, encoding="utf-8", errors="replace") as f:
            for _ in range(40):
                line = f.readline()
                m = re.search(r"Version:\s*(\S+)", line)
                if m:
                    version = m.group(1)
                    break
        if best is None or version > best[0]:
            best = (version, path)
    return best[1] if best else None


def read_pci_names(path: Path | None, vendor: str = INTEL_VENDOR) -> dict[str, str]:
    """Device ID (4 upper-case hex) → name, for one vendor of a pci.ids file."""
    names: dict[str, str] = {}
    if path is None:
        return names
    inside = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            if not line.startswith("\t"):
                inside = line[:4].lower() == vendor
                continue
            if inside and not line.startswith("\t\t"):
                m = re.match(r"\t([0-9a-fA-F]{4})\s+(.+)$", line.rstrip("\n"))
                if m:
                    names[m.group(1).upper()] = m.group(2).strip()
    return names


def read_pci_vendor_name(path: Path | None, vendor: str) -> str:
    """The vendor's name in a pci.ids file ("" when it is not listed)."""
    if path is None:
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line[:4].lower() == vendor.lower() and line[4:5].isspace():
                return line[4:].strip()
    return ""


def looks_like_gpu(pci_name: str, rows: Iterable[DeviceRow]) -> bool:
    """Whether a pci.ids name reads like the GPUs in the table: its marketing name (the bracket) shares a
    word with the marketing names of at least two rows ("Arc", "Graphics", "Iris" …), learnt from the table."""
    m = re.search(r"\[([^\]]+)\]\s*$", pci_name)
    if not m:
        return False
    counts: collections.Counter[str] = collections.Counter()
    for row in rows:
        counts.update({w.lower() for n in row.names for w in re.findall(r"[A-Za-z]{3,}", n.replace("Intel®", ""))})
    vocabulary = {w for w, n in counts.items() if n >= 2}
    return any(w.lower() in vocabulary for w in re.findall(r"[A-Za-z]{3,}", m.group(1)))


def display_name(pci_name: str) -> str:
    """``Alder Lake-N [UHD Graphics]`` → ``Intel® UHD Graphics`` (the bracket is the marketing name)."""
    m = re.search(r"\[([^\]]+)\]\s*$", pci_name)
    return f"Intel® {m.group(1).strip()}" if m else pci_name


def product_name(pci_names: Iterable[str], limit: int = 3) -> str:
    """Codenames in front of the brackets, GT tiers dropped: ``Alder Lake-S / Raptor Lake-S``.

    Only names of the ``Codename [Marketing name]`` form count: a bare name
    says nothing about which part is which.
    """
    seen: list[str] = []
    for n in pci_names:
        if not re.search(r"\[[^\]]+\]\s*$", n):
            continue
        base = re.sub(r"\s*\[.*$", "", n)
        base = re.sub(r"\s+GT\d\w*$", "", base).strip()
        if base and base not in seen:
            seen.append(base)
    return " / ".join(seen[:limit]) + (" / …" if len(seen) > limit else "")


# --- the database --------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceRow:
    pci_ids: tuple[str, ...]
    codenames: tuple[str, ...]
    architecture: str
    generations: tuple[str, ...]
    names: tuple[str, ...]
    revisions: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # pci_id -> revision -> generation
    product: str = ""  # codename from pci.ids, e.g. "Alder Lake-N"
    target: str = ""  # what ocloc matched the IDs to
    default: Mapping[str, str] = field(default_factory=dict)  # pci_id -> generation without a revision
    #: How the generations are told apart: "none" (one generation), "revision" (ocloc maps PCI
    #: revisions to different ones: Alchemist, Ponte Vecchio) or "ip_version" (every revision compiles
    #: to one of them: the GPU reports its IP version and the driver uses it, Meteor Lake and later).
    told_apart_by: str = "none"

    @property
    def rule(self) -> str:
        """How a user tells this row's generations apart, in one sentence."""
        if self.told_apart_by == "ip_version":
            return (f"the PCI ID and revision cannot tell {', '.join(self.generations)} apart: this GPU reports its "
                    "IP version (GMD ID) and the driver builds for it (compute-runtime getProductConfigFromHwInfo); "
                    "run `ipex-aot detect` on the machine, which asks the driver (OpenCL "
                    "CL_DEVICE_IP_VERSION_INTEL, Level Zero)")
        if self.told_apart_by == "revision":
            maps = {tuple(sorted(m.items())) for m in self.revisions.values() if m}
            steps = _revision_steps(dict(next(iter(maps)))) if len(maps) == 1 else "per PCI ID, see --json"
            reached = {g for m in self.revisions.values() for g in m.values()} | set(self.default.values())
            unreached = [g for g in self.generations if g not in reached]
            tail = f"; ocloc maps no revision to {', '.join(unreached)}" if unreached else ""
            return (f"the PCI revision (stepping) picks the generation: {steps}{tail}; read it with "
                    "`lspci -nn -s <slot>` (rev xx) or /sys/bus/pci/devices/*/revision")
        return "one generation for every revision"

    def to_json(self) -> dict:
        return {"pci_ids": list(self.pci_ids), "codenames": list(self.codenames),
                "architecture": self.architecture, "generations": list(self.generations),
                "names": list(self.names), "product": self.product, "target": self.target,
                "revisions": {p: {str(r): g for r, g in sorted(m.items())} for p, m in sorted(self.revisions.items())},
                "default": dict(sorted(self.default.items())), "told_apart_by": self.told_apart_by,
                "rule": self.rule}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeviceRow:
        return cls(pci_ids=tuple(d["pci_ids"]), codenames=tuple(d["codenames"]), architecture=str(d["architecture"]),
                   generations=tuple(d["generations"]), names=tuple(d["names"]),
                   revisions={p: {int(r): str(g) for r, g in m.items()} for p, m in d.get("revisions", {}).items()},
                   product=str(d.get("product", "")), target=str(d.get("target", "")),
                   default=dict(d.get("default", {})), told_apart_by=str(d.get("told_apart_by", "none")))


def _revision_steps(rmap: Mapping[int, str]) -> str:
    """``rev 0, 2, 3, 5-7, 9 → 12.55.0; rev 1 → 12.55.1; …`` (revisions ocloc was asked about)."""
    by_gen: dict[str, list[int]] = collections.defaultdict(list)
    for r, g in sorted(rmap.items()):
        by_gen[g].append(r)
    parts = []
    for g in sorted(by_gen, key=generation_order):
        runs: list[list[int]] = []
        for r in by_gen[g]:
            if runs and r == runs[-1][-1] + 1:
                runs[-1].append(r)
            else:
                runs.append([r])
        spans = [f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs]
        parts.append(f"rev {', '.join(spans)} → {g}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Lookup:
    pci_id: str
    revision: int | None
    generation: str | None  # exact answer, when the revision (or the row) decides it
    candidates: tuple[str, ...]
    rule: str
    row: DeviceRow

    @property
    def query_text(self) -> str:
        return self.pci_id + (f" rev {self.revision:02X}" if self.revision is not None else "")

    def to_json(self) -> dict:
        return {"pci_id": self.pci_id, "revision": self.revision, "generation": self.generation,
                "candidates": list(self.candidates), "rule": self.rule,
                        "told_apart_by": self.row.told_apart_by,
                "codenames": list(self.row.codenames), "architecture": self.row.architecture,
                "names": list(self.row.names), "product": self.row.product}


def _architecture(gens: Iterable[str], names: Mapping[str, list[str]], groups: Iterable[str]) -> str:
    want = set(gens)
    fits = [(len(names[g]), g) for g in groups if g in names and want <= set(names[g])]
    if not fits:
        return ""
    smallest = min(n for n, _ in fits)
    # Equal sets under two names (gen12lp / xe-lp): the Xe-style name reads better.
    best = sorted((not g.startswith("xe"), g) for n, g in fits if n == smallest)[0][1]
    return architecture_name(best)


def build_rows(result: SweepResult, pci_names: Mapping[str, str]) -> list[DeviceRow]:
    """One row per product: PCI IDs with the same set of generations (and target) share a row.

    A row lists every generation ocloc knows for its product (the ``major.minor``
    of what its PCI IDs compile to), from every name ``ocloc ids`` answers for:
    ``mtl-h-b0`` = 12.71.4 belongs to the 7D55 row although ``-device 0x7d55``
    compiles 12.71.0 for every revision. Generations that some PCI revision
    reaches are told apart by the revision; the others only by the IP version
    the GPU reports (:attr:`DeviceRow.rule`).
    """
    group_set = set(result.groups)
    known = {g for vs in result.names.values() for g in vs}
    by_key: dict[tuple[str, tuple[str, ...]], list[str]] = collections.defaultdict(list)
    for pid, target in result.targets.items():
        held = set(result.revisions.get(pid, {}).values())
        if pid in result.default:
            held.add(result.default[pid])
        by_key[(target, tuple(sorted(held, key=generation_order)))].append(pid)
    rows = []
    for (target, reached), pids in by_key.items():
        products = {Generation.parse(g).product for g in reached}
        gens = tuple(sorted(set(reached) | {g for g in known if Generation.parse(g).product in products},
                            key=generation_order))
        # ocloc telling revisions apart is what marks a revision-decided product (Alchemist, Ponte
        # Vecchio). Where every revision compiles to one generation but ocloc names more steppings
        # (Meteor Lake and later), the GPU's reported IP version is what decides.
        told = "none" if len(gens) == 1 else ("revision" if len(reached) > 1 else "ip_version")
        gen_set = set(gens)
        codenames = [n for n, vs in result.names.items() if vs and n not in group_set and set(vs) <= gen_set]
        if target in result.names and target not in codenames and target not in group_set:
            codenames.insert(0, target)
        if not codenames:
            codenames = [target]  # only a deprecated name (xe_hp_sdv) stands for it: ocloc printed it
        pids = sorted(pids)
        raw = [pci_names[p] for p in pids if p in pci_names]
        shown = list(dict.fromkeys(display_name(n) for n in raw))
        rows.append(DeviceRow(pci_ids=tuple(pids), codenames=tuple(codenames),
                              architecture=_architecture(gens, result.names, result.groups),
                              generations=gens, names=tuple(shown),
                              revisions={p: result.revisions.get(p, {}) for p in pids},
                              product=product_name(raw), target=target,
                              default={p: result.default[p] for p in pids if p in result.default},
                              told_apart_by=told))
    rows.sort(key=lambda r: (generation_order(r.generations[0]) if r.generations else (-1, ''), r.pci_ids))
    return rows


class DeviceDatabase:
    """The support table plus what ocloc said about its names."""

    def __init__(self, ocloc: dict, rows: list[DeviceRow], names: Mapping[str, list[str]] | None = None,
                 groups: Iterable[str] = (), skipped: Iterable[str] = (), meta: Mapping[str, Any] | None = None) -> None:
        self.ocloc = ocloc
        self.rows = rows
        self.names = dict(names or {})
        self.groups = list(groups)
        self.skipped = list(skipped)
        self.meta = dict(meta or {})
        self._by_pci = {p: r for r in rows for p in r.pci_ids}

    # -- queries --
    def generations(self) -> list[str]:
        """Every generation in the table, sorted numerically."""
        return sorted({g for r in self.rows for g in r.generations}, key=generation_order)

    def known_generations(self) -> list[str]:
        """Every generation ocloc can build for, also those no PCI ID maps to (e.g. 12.57.0 in 22.43)."""
        return sorted(set(self.generations()) | {g for gens in self.names.values() for g in gens}, key=generation_order)

    def rows_for(self, generation: str) -> list[DeviceRow]:
        Generation.parse(generation)
        return [r for r in self.rows if generation in r.generations]

    def family_generations(self, family: str) -> list[str]:
        """The generations ocloc lists for a family, release or product name (``ocloc ids``)."""
        if family not in self.names:
            raise DeviceError(f"{family!r} is not a name ocloc {self.ocloc.get('version', '')} accepts; "
                              f"known: {', '.join(self.names)}")
        return sorted(self.names[family], key=generation_order)

    def device_name(self, generation: str) -> str:
        """The ocloc name that stands for exactly this generation (a product acronym when there is one)."""
        Generation.parse(generation)
        exact = [n for n, vs in self.names.items() if vs == [generation]]
        products = [n for n in exact if n not in self.groups]
        if products or exact:
            return (products or exact)[0]
        if generation not in self.known_generations():
            raise DeviceError(f"generation {generation} is unknown to ocloc {self.ocloc.get('version', '')}")
        return generation  # ocloc accepts the version itself as -device

    def resolve(self, name: str) -> str:
        """generation code | acronym | PCI ID → one generation; DeviceError if unknown or ambiguous."""
        text = str(name).strip()
        if is_generation(text):
            if text not in self.known_generations():
                raise DeviceError(f"generation {text} is unknown to ocloc {self.ocloc.get('version', '')}")
            return text
        if text.lower() in self.names:
            gens = self.names[text.lower()]
            if len(gens) != 1:
                raise DeviceError(f"{text} stands for {len(gens)} generations ({', '.join(gens)}); name one of them")
            return gens[0]
        try:
            query = parse_pci_query(text)
        except DeviceError:
            query = None
        if query is not None:
            hit = self.lookup(text)
            if hit.generation:
                return hit.generation
            if hit.row.told_apart_by == "revision" and query.revision is None:
                rmap = hit.row.revisions.get(hit.pci_id, {})
                newest = max(rmap.items(), key=lambda rg: (generation_order(rg[1]), -rg[0]), default=None)
                example = f" (e.g. {hit.pci_id}:{newest[0]:02X} for {newest[1]})" if newest else ""
                how = (f"give the PCI revision as {hit.pci_id}:REV{example}, as `lspci -nn` prints it (rev xx), "
                       f"or the generation itself, e.g. --generation {hit.candidates[-1]}")
            else:
                how = (f"give the generation itself, e.g. --generation {hit.candidates[-1]} (`ipex-aot detect` on "
                       "the machine with the GPU tells which)")
            raise DeviceError(f"PCI ID {hit.query_text} stands for {', '.join(hit.candidates)}: {hit.rule}; {how}")
        raise DeviceError(f"{text!r} is neither a generation code, an ocloc device name nor a PCI ID")

    def lookup(self, pci_id: str, revision: int | None = None) -> Lookup:
        """PCI_ID in any form :func:`parse_pci_query` reads; REVISION as well (they must agree)."""
        query = parse_pci_query(pci_id)
        if query.revision is not None and revision is not None and query.revision != revision:
            raise DeviceError(f"{pci_id} names revision {query.revision:02X} but --revision is {revision}; give one")
        revision = query.revision if revision is None else revision
        pid = query.pci_id
        if query.vendor and query.vendor != INTEL_VENDOR:
            name = read_pci_vendor_name(pci_ids_file(), query.vendor)
            raise DeviceError(f"{query.vendor.lower()}:{pid.lower()} is not an Intel device (vendor "
                              f"{query.vendor}{f', {name}' if name else ''}); ipex-aot builds for Intel GPUs "
                              f"(vendor {INTEL_VENDOR})")
        row = self._by_pci.get(pid)
        if row is None:
            raise DeviceError(self.unknown_id_message(pid))
        rmap = dict(row.revisions.get(pid, {}))
        cands = tuple(row.generations)
        if len(cands) == 1:
            return Lookup(pid, revision, cands[0], cands, row.rule, row)
        rule = row.rule
        if row.told_apart_by == "revision" and rmap and {tuple(sorted(m.items())) for m in row.revisions.values()} \
                != {tuple(sorted(rmap.items()))}:
            rule = rule.replace("per PCI ID, see --json", _revision_steps(rmap))
        if revision is None or row.told_apart_by != "revision":
            return Lookup(pid, revision, None, cands, rule, row)
        if revision < 0:
            raise DeviceError(f"revision {revision} is negative; give the PCI revision as printed by lspci")
        if revision in rmap:
            return Lookup(pid, revision, rmap[revision], cands, f"ocloc maps {pid} rev {revision} to {rmap[revision]}", row)
        if rmap and revision > max(rmap):
            gen = rmap[max(rmap)]
            return Lookup(pid, revision, gen, cands,
                          f"rev {revision} is past the newest stepping ocloc was asked about (rev {max(rmap)}); "
                          f"newer steppings run its code {gen}", row)
        return Lookup(pid, revision, None, cands, f"ocloc builds none of them for rev {revision}; {rule}", row)

    def unknown_id_message(self, pid: str) -> str:
        """Why PID has no row: a GPU this ocloc is too old for, an Intel device that is not a GPU, or unknown."""
        version = self.ocloc.get("version", "")
        path = pci_ids_file()
        name = read_pci_names(path).get(pid)
        newer = "a newer ocloc may know it (`ipex-aot ocloc fetch` prints the OCLOC= to use)"
        if name is None:
            listed = f"pci.ids ({path})" if path else "pci.ids (not installed)"
            return (f"PCI ID {pid} is not known to ocloc {version} and not listed as an Intel device in {listed}; "
                    f"if it is a new Intel GPU, {newer}")
        if looks_like_gpu(name, self.rows):
            return f"PCI ID {pid} ({name}) is an Intel GPU not known to ocloc {version}; {newer}"
        return (f"PCI ID {pid} is an Intel device ({name}) but not a GPU that ocloc {version} compiles for; "
                "check the ID (lspci -nn shows [8086:xxxx] on the VGA/Display line)")

    # -- output --
    def to_json(self) -> dict:
        return {"schema": SCHEMA, "ocloc": self.ocloc, "rows": [r.to_json() for r in self.rows],
                "names": self.names, "groups": self.groups, "skipped": self.skipped, "meta": self.meta}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeviceDatabase:
        if d.get("schema") != SCHEMA or not isinstance(d.get("rows"), list) or not isinstance(d.get("ocloc"), dict):
            raise ValueError("not a device database of this schema")
        for r in d["rows"]:
            for g in r["generations"]:
                Generation.parse(g)
        return cls(ocloc=dict(d["ocloc"]), rows=[DeviceRow.from_json(r) for r in d["rows"]],
                   names={k: list(v) for k, v in d.get("names", {}).items()}, groups=d.get("groups", []),
                   skipped=d.get("skipped", []), meta=d.get("meta", {}))

    def to_markdown(self, generations: Iterable[str] | None = None) -> str:
        """The support table; restricted to GENERATIONS (rows keep only those) when given."""
        wanted = None if generations is None else set(generations)
        lines = [MARKDOWN_HEADER]
        for r in self.rows:
            gens = [g for g in r.generations if wanted is None or g in wanted]
            if not gens:
                continue
            code = ", ".join(f"`{c}`" for c in r.codenames)
            codename = f"{r.product} ({code})" if r.product and code else (r.product or code)
            # How the codes are told apart, without backticks (readers take the codes from the backticks).
            how = {"revision": " (by PCI revision: `ipex-aot devices lookup ID --revision REV`)",
                   "ip_version": " (the GPU reports which: `ipex-aot detect`)"}.get(r.told_apart_by, "")
            how = how.replace("`", "") if len(gens) > 1 else ""
            lines.append("| {} | {} | {} | {}{} | {} |\n".format(
                " ".join(f"`{p}`" for p in r.pci_ids), _md(codename), _md(r.architecture),
                " ".join(f"`{g}`" for g in gens), how, " ".join(f"`{_md(n)}`" for n in r.names)))
        return "".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def parse_markdown(text: str) -> list[dict[str, list[str] | str]]:
    """Rows of :meth:`DeviceDatabase.to_markdown` back as dicts (tests and readers of SUPPORT.md)."""
    rows = []
    for line in text.splitlines()[2:]:
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 5:
            continue
        m = re.match(r"^(.*?)\s*\((.*)\)$", cells[1])
        product, codes = (m.group(1), m.group(2)) if m else ("", cells[1])
        rows.append({"pci_ids": re.findall(r"`([^`]+)`", cells[0]), "product": product,
                     "codenames": re.findall(r"`([^`]+)`", codes), "architecture": cells[2],
                     "generations": re.findall(r"`([^`]+)`", cells[3]),
                     "names": [n.replace("\\|", "|") for n in re.findall(r"`([^`]+)`", cells[4])]})
    return rows


# --- cache ---------------------------------------------------------------------------------

def _identity(path: str | None) -> list:
    if not path:
        return [None]
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


def cache_path(settings: Settings, ocloc: Ocloc, pci_path: Path | None, ids: range = ALL_IDS) -> Path:
    """The cache file for this ocloc (version + the files it is made of), this pci.ids and ID range."""
    key = json.dumps([SCHEMA, ocloc.version, ocloc.neo_revision, _identity(ocloc.path), _identity(ocloc.library),
                      _identity(str(pci_path) if pci_path else None), [ids.start, ids.stop, ids.step]])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe_version = re.sub(r"[^0-9A-Za-z.]+", "_", ocloc.version)
    return settings.cache_dir / "devices" / f"devices-{safe_version}-{digest}.json"


def build_database(ocloc: Ocloc, *, ids: Iterable[int] = ALL_IDS, jobs: int = 1, in_process: bool | None = None,
                   pci_path: Path | None = None, timeout: float = CALL_TIMEOUT) -> DeviceDatabase:
    """Sweep and assemble (no cache)."""
    result = sweep(ocloc, ids, jobs=jobs, in_process=in_process, timeout=timeout)
    pci_path = pci_path if pci_path is not None else pci_ids_file()
    pci_names = read_pci_names(pci_path)
    if not pci_names:
        log.warn("no pci.ids found (Debian/Ubuntu: apt install pci.ids); display names are left empty")
    rows = build_rows(result, pci_names)
    meta = {"sweep_seconds": result.seconds, "in_process": result.in_process, "pci_ids_file": str(pci_path or ""),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return DeviceDatabase(ocloc=ocloc.to_json(), rows=rows, names=result.names, groups=result.groups,
                          skipped=result.skipped, meta=meta)


def load_database(settings: Settings, *, refresh: bool = False, ocloc: Ocloc | None = None,
                  ids: range = ALL_IDS) -> DeviceDatabase:
    """The database for the ocloc in SETTINGS, from the cache when it is there and sound.

    A cache that does not parse or does not match the schema is swept again and
    replaced; the file is always written whole (temp file + rename).
    """
    ocloc = ocloc or find_ocloc(settings)
    pci_path = pci_ids_file()
    path = cache_path(settings, ocloc, pci_path, ids)
    if path.is_file() and not refresh:
        try:
            return DeviceDatabase.from_json(validate_cache(read_json(path)))
        except (ValueError, KeyError, TypeError, IpexAotError, OSError) as e:
            log.warn(f"device cache {path} is unreadable ({printable(str(e))[:160]}); rebuilding it")
    elif os.path.lexists(path) and not path.is_file():
        # A folder, link or device where the cache file belongs: ours to replace, nothing else reads it.
        log.warn(f"device cache {path} is not a file; replacing it")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    db = build_database(ocloc, ids=ids, jobs=settings.jobs, pci_path=pci_path)
    write_json(path, db.to_json())
    return db


@functools.cache
def _cache_validator() -> Any:
    from jsonschema import Draft202012Validator

    text = resources.files("ipex_aot").joinpath("resources/devices.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    # The version is SCHEMA's, so that the file and the code cannot drift apart (a mismatch rebuilt every time).
    schema["properties"]["schema"] = {"const": SCHEMA}
    return Draft202012Validator(schema)


def validate_cache(data: Any) -> Mapping[str, Any]:
    """DATA when it matches ``resources/devices.schema.json``; ValueError naming the first mismatch otherwise."""
    error = next(iter(_cache_validator().iter_errors(data)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ValueError(f"{where}: {error.message[:120]}")
    return data


# --- command line --------------------------------------------------------------------------

def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("devices", help="the Intel GPU device database (ocloc sweep over every PCI ID)",
                       description="Print the support table: which PCI device ID needs which generation.")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the database as JSON")
    out.add_argument("--markdown", action="store_true", help="print the support table as Markdown (the default)")
    p.add_argument("--refresh", action="store_true", help="sweep again even if a cached database exists")
    p.add_argument("--write", action="store_true", help="write devices.json and devices.md into DIST/devices/")
    p.add_argument("--ocloc-info", action="store_true", help="print where ocloc was found and its version")
    p.set_defaults(func=_cmd_devices)
    dsub = p.add_subparsers(dest="devices_command", metavar="SUBCOMMAND")
    lk = dsub.add_parser("lookup", help="the generation for one PCI device ID (and revision)")
    lk.add_argument("pci_id", nargs="+", metavar="PCI_ID",
                    help="56A0, 0x56a0, 8086:56a0, 56A0:08 (with the revision, hex as lspci prints it) "
                         "or a whole `lspci -nn` line (quoted)")
    lk.add_argument("--revision", default=None, help="PCI revision (stepping), decimal or 0x hex")
    lk.add_argument("--json", action="store_true", help="print the answer as JSON")
    lk.set_defaults(func=_cmd_lookup)


def _revision(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 0)
    except ValueError:
        raise DeviceError(f"--revision {text!r} is not a number; give the PCI revision, e.g. 8 or 0x08") from None
    if not 0 <= value <= 0xFF:
        raise DeviceError(f"--revision {value} is outside 0..255 (a PCI revision is one byte)")
    return value


def _cmd_devices(args, settings: Settings) -> int:  # noqa: ANN001
    if args.ocloc_info:
        oc = find_ocloc(settings)
        print(json.dumps(oc.to_json(), indent=2))
        return 0
    db = load_database(settings, refresh=args.refresh)
    if args.write:
        out = settings.dist_dir / "devices"
        write_json(out / "devices.json", db.to_json())
        write_text(out / "devices.md", db.to_markdown())
        log.info(f"wrote {out / 'devices.json'} and {out / 'devices.md'} ({len(db.rows)} rows)")
        if not (args.json or args.markdown):
            return 0
    if args.json:
        sys.stdout.write(json.dumps(db.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(db.to_markdown())
    return 0


def _cmd_lookup(args, settings: Settings) -> int:  # noqa: ANN001
    text = " ".join(args.pci_id)
    parse_pci_query(text)  # malformed input fails before any sweep
    revision = _revision(args.revision)
    db = load_database(settings)
    hit = db.lookup(text, revision)
    if args.json:
        print(json.dumps(hit.to_json(), indent=2))
    elif hit.generation:
        print(hit.generation)
        log.info(f"{hit.pci_id}: {hit.row.product or hit.row.target} ({', '.join(hit.row.codenames)}); {hit.rule}")
    else:
        print(" ".join(hit.candidates))
        log.info(f"{hit.pci_id}: {len(hit.candidates)} candidates; {hit.rule}")
    return 0

