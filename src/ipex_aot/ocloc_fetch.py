"""``ipex-aot ocloc fetch``: a modern ocloc from a newer Debian suite, without touching the system.

Debian bookworm ships ocloc 22.43, which knows nothing newer than Alchemist and
Ponte Vecchio. Debian sid's ``intel-ocloc`` knows Meteor Lake, Arrow Lake,
Lunar Lake, Battlemage, Panther Lake and later, but it needs sid's C library.
This module gets it the way apt would, privately:

* a private apt configuration under the destination folder: its own
  ``sources.list`` (one ``deb [signed-by=KEYRING] MIRROR SUITE main`` line),
  empty ``sources.list.d``/``preferences.d``, its own ``Dir::State::Lists``,
  ``Dir::Cache`` and an empty dpkg status: the system's apt sources, lists and
  package database are never read or written, and nothing is installed into /;
* ``apt-get update`` checks the suite's ``InRelease`` signature against the
  keyring (Debian's ``debian-archive-keyring.gpg`` verifies sid's Release: it
  holds the archive's automatic signing keys), and ``apt-get download`` checks
  each package's sha256 against that signed index;
* ``intel-ocloc``, ``libigc2``, ``libigdfcl2`` and their dependency closure
  (sid's ``libc6``, ``libstdc++6`` …, from ``apt-cache depends --recurse``) are
  unpacked with ``dpkg-deb -x`` into ``DEST/intel-ocloc-VERSION/root``;
* ``DEST/intel-ocloc-VERSION/ocloc`` is a wrapper script that runs the
  executable through that root's own ``ld-linux-x86-64.so.2 --library-path``,
  so sid's libraries are used for ocloc and for what it loads (libigc), while
  the rest of the system keeps its own.

The result is cached per package version: a second fetch of the same version
only refreshes the index. The command prints ``OCLOC=…`` to use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ipex_aot import log
from ipex_aot.errors import ToolchainError
from ipex_aot.fsutil import read_json, sha256_file, write_json, write_text
from ipex_aot.ocloc import find_ocloc, probe
from ipex_aot.settings import Settings

DEFAULT_SUITE = "sid"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Debian's archive keyring (package debian-archive-keyring); it verifies sid's InRelease.
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: The compiler front end and the two libraries ocloc loads at run time (dlopen, so not in its Depends).
PACKAGES = ("intel-ocloc", "libigc2", "libigdfcl2")
RECORD = "fetch.json"
LOADER = "ld-linux-x86-64.so.2"
_LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib64", "lib64")


@dataclass(frozen=True)
class FetchedOcloc:
    wrapper: Path  # give this as OCLOC
    package_version: str  # Debian version of intel-ocloc, e.g. 26.27.39122.14-1
    folder: Path

    @property
    def ocloc_line(self) -> str:
        return f"OCLOC={self.wrapper}"


def default_dest(settings: Settings) -> Path:
    return settings.cache_dir / "ocloc"


class _Apt:
    """apt-get / apt-cache with a configuration that only ever reads and writes under STATE."""

    def __init__(self, state: Path, suite: str, mirror: str, keyring: Path, arch: str) -> None:
        self.state = state
        etc = state / "etc"
        for d in (etc / "sources.list.d", etc / "preferences.d", state / "lists" / "partial",
                  state / "cache" / "archives" / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        write_text(etc / "sources.list", f"deb [arch={arch} signed-by={keyring}] {mirror} {suite} main\n")
        status = state / "status"
        if not status.exists():
            write_text(status, "")
        self.options = [
            "-o", f"Dir::Etc::SourceList={etc / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={etc / 'sources.list.d'}",
            "-o", f"Dir::Etc::Preferences={etc / 'preferences'}",
            "-o", f"Dir::Etc::PreferencesParts={etc / 'preferences.d'}",
            "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::State::status={status}",
            "-o", f"Dir::State::extended_states={state / 'extended_states'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            "-o", f"APT::Architecture={arch}",
            "-o", f"APT::Architectures={arch}",
            "-o", "Acquire::Languages=none",
        ]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run([tool, *self.options, *args], cwd=cwd, capture_output=True, text=True,
                              errors="replace", check=False)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise ToolchainError(f"{tool} {' '.join(args)} failed (exit {proc.returncode}): {tail}")
        return proc.stdout + ("\n" + proc.stderr if tool == "apt-get" else "")


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise ToolchainError(f"{tool} not found; `ocloc fetch` needs Debian's apt and dpkg (Debian/Ubuntu only)")
    return found


def _closure(apt: _Apt) -> list[str]:
    """PACKAGES and everything they depend on (Depends/Pre-Depends), as apt resolves it."""
    out = apt.run("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                  "--no-breaks", "--no-replaces", "--no-enhances", *PACKAGES)
    names = []
    for line in out.splitlines():
        # Top-level lines are package names; "<name>" marks a virtual package (provided by a real one listed too).
        if line and not line[0].isspace() and not line.startswith("<") and line not in names:
            names.append(line.strip())
    missing = [p for p in PACKAGES if p not in names]
    if missing:
        raise ToolchainError(f"the suite's index has no {', '.join(missing)}; is the suite right?")
    return names


def _version(apt: _Apt, package: str) -> str:
    out = apt.run("apt-cache", "show", "--no-all-versions", package)
    m = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
    if not m:
        raise ToolchainError(f"apt-cache show {package} gave no Version")
    return m.group(1)


def _write_wrapper(path: Path, loader: Path, lib_dirs: list[Path], exe: Path) -> None:
    def q(p: Path) -> str:
        return "'" + str(p).replace("'", "'\\''") + "'"

    # --library-path covers what ocloc dlopens (libigc.so.2, libigdfcl.so.2) too; the system's
    # LD_LIBRARY_PATH is ignored by this loader invocation, so host libraries never mix in.
    text = ("#!/bin/sh\n"
            "# Written by `ipex-aot ocloc fetch`: Debian's intel-ocloc run with its own C library.\n"
            f"exec {q(loader)} --library-path {q(Path(':'.join(map(str, lib_dirs))))} {q(exe)} \"$@\"\n")
    write_text(path, text)
    path.chmod(0o755)


def _find_ocloc_exe(root: Path) -> Path:
    # Debian installs ocloc-MAJOR.MINOR.N and registers `ocloc` as an alternative (not in the .deb).
    exes = sorted((p for p in (root / "usr" / "bin").glob("ocloc*") if p.is_file() and not p.is_symlink()),
                  key=lambda p: [int(x) if x.isdigit() else 0 for x in re.split(r"[.-]", p.name)])
    if not exes:
        raise ToolchainError(f"intel-ocloc unpacked no usr/bin/ocloc* under {root}")
    return exes[-1]


def installed(dest: Path) -> FetchedOcloc | None:
    """The most recently fetched ocloc under DEST, without any network access; None if there is none."""
    best: tuple[float, FetchedOcloc] | None = None
    for record in dest.glob(f"intel-ocloc-*/{RECORD}"):
        try:
            data = read_json(record)
        except (OSError, ValueError):
            continue
        wrapper = record.parent / "ocloc"
        if not wrapper.is_file() or not isinstance(data, dict):
            continue
        fetched = FetchedOcloc(wrapper, str(data.get("package_version", "")), record.parent)
        key = float(data.get("time_epoch", 0))
        if best is None or key > best[0]:
            best = (key, fetched)
    return best[1] if best else None


def fetch(settings: Settings, *, dest: Path | None = None, suite: str = DEFAULT_SUITE, mirror: str = DEFAULT_MIRROR,
          keyring: Path = Path(DEFAULT_KEYRING), refresh: bool = False) -> FetchedOcloc:
    """Download, verify and unpack SUITE's intel-ocloc into DEST (default: the cache); see the module docstring."""

    dest = Path(dest or default_dest(settings)).absolute()
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "dpkg"):
        _need(tool)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=False).stdout.strip()
    if arch != "amd64":
        raise ToolchainError(f"ocloc fetch supports amd64 only (Intel ships ocloc for x86-64); this is {arch or '?'}")
    keyring = Path(keyring)
    if not keyring.is_file():
        raise ToolchainError(f"keyring {keyring} not found; apt install debian-archive-keyring or give --keyring")
    apt = _Apt(dest / f"apt-{re.sub(r'[^A-Za-z0-9.-]+', '_', suite)}", suite, mirror, keyring.absolute(), arch)
    with log.step(f"ocloc fetch from Debian {suite} ({mirror})"):
        log.info("apt-get update (private lists; the InRelease signature is checked against "
                 f"{keyring})")
        apt.run("apt-get", "update", "-q")
        version = _version(apt, "intel-ocloc")
        folder = dest / f"intel-ocloc-{version}"
        wrapper = folder / "ocloc"
        if not refresh and (folder / RECORD).is_file() and wrapper.is_file():
            log.info(f"intel-ocloc {version} is already in {folder}")
            return FetchedOcloc(wrapper, version, folder)
        names = _closure(apt)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
        try:
            debs_dir = tmp / "debs"
            debs_dir.mkdir()
            log.info(f"apt-get download {' '.join(names)}")
            apt.run("apt-get", "download", "-q", *names, cwd=debs_dir)
            root = tmp / "root"
            packages = {}
            for deb in sorted(debs_dir.glob("*.deb")):
                packages[deb.name] = sha256_file(deb)
                proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True,
                                      check=False)
                if proc.returncode != 0:
                    raise ToolchainError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()[-200:]}")
            shutil.rmtree(debs_dir)
            exe = _find_ocloc_exe(root)
            lib_dirs = [d for d in _LIB_DIRS if (root / d).is_dir()]
            loader = next((d for d in lib_dirs if (root / d / LOADER).is_file()), None)
            if loader is None:
                raise ToolchainError(f"no {LOADER} among the unpacked packages; is libc6 in the closure?")
            # The wrapper names the final folder: it is written before the rename that publishes it.
            final = [folder / "root" / d for d in lib_dirs]
            _write_wrapper(tmp / "ocloc", folder / "root" / loader / LOADER, final,
                           folder / "root" / exe.relative_to(root))
            write_json(tmp / RECORD, {"package_version": version, "suite": suite, "mirror": mirror,
                                      "keyring": str(keyring), "packages": packages,
                                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                      "time_epoch": time.time()})
            old = None
            if folder.exists():
                old = dest / f".old-{folder.name}-{os.getpid()}"
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        oc = probe(str(wrapper), "ocloc fetch")
        log.info(f"ocloc {oc.version} (Debian {suite} intel-ocloc {version}) in {folder}")
        return FetchedOcloc(wrapper, version, folder)


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """The ``ocloc`` command (where ocloc was found, its version) and ``ocloc fetch``.

    Registered here, above :mod:`ipex_aot.ocloc`, so that ocloc.py needs nothing of this module.
    """
    p = sub.add_parser("ocloc", help="where ocloc was found and its version; `ocloc fetch` gets a modern one")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_cmd_ocloc)
    _register_fetch(p.add_subparsers(dest="ocloc_command", metavar="SUBCOMMAND"))


def _cmd_ocloc(args, settings: Settings) -> int:  # noqa: ANN001
    oc = find_ocloc(settings)
    if args.json:
        print(json.dumps(oc.to_json(), indent=2))
    else:
        print(f"ocloc: {oc.path} (found by {oc.found_by})")
        print(f"version: {oc.version}" + (f" (NEO revision {oc.neo_revision})" if oc.neo_revision else ""))
        print(f"in-process library: {oc.library or 'none (the executable is run for every call)'}")
    return 0


def _register_fetch(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("fetch", help="get a modern ocloc from a newer Debian suite (private apt, checked signatures)",
                       description="Download Debian's intel-ocloc with libigc2/libigdfcl2 and the C library they "
                                   "need into a private folder, run through its own loader; prints OCLOC=… to use.")
    p.add_argument("--suite", default=DEFAULT_SUITE, help=f"Debian suite (default {DEFAULT_SUITE})")
    p.add_argument("--mirror", default=DEFAULT_MIRROR, help=f"Debian mirror (default {DEFAULT_MIRROR})")
    p.add_argument("--keyring", type=Path, default=Path(DEFAULT_KEYRING),
                   help=f"keyring that verifies the suite's InRelease (default {DEFAULT_KEYRING})")
    p.add_argument("--dest", type=Path, default=None, help="where to keep it (default: IPEX_AOT_CACHE/ocloc)")
    p.add_argument("--refresh", action="store_true", help="download and unpack again even if this version is there")
    p.add_argument("--offline", action="store_true",
                   help="no network: print the most recently fetched ocloc under --dest (exit 4 if none)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args, settings: Settings) -> int:  # noqa: ANN001
    dest = args.dest or default_dest(settings)
    if args.offline:
        got = installed(Path(dest))
        if got is None:
            raise ToolchainError(f"no fetched ocloc under {dest}; run `ipex-aot ocloc fetch` with network access")
    else:
        got = fetch(settings, dest=dest, suite=args.suite, mirror=args.mirror, keyring=args.keyring,
                    refresh=args.refresh)
    if args.json:
        print(json.dumps({"ocloc": str(got.wrapper), "package_version": got.package_version,
                          "folder": str(got.folder)}, indent=2))
    else:
        print(got.ocloc_line)
    return 0
