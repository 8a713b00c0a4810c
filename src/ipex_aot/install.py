"""For the people who run the apps: detect the GPU, install its folder of a release, roll back.

* ``detect`` (module :mod:`ipex_aot.gpus`) asks the GPU drivers for the exact
  IP version, then the device database for the PCI device and revision IDs.
* ``install`` finds the IPEX install (the package's import spec, without
  importing it, or ``--ipex-dir``), picks the generation (given, detected,
  or the one archive folder whose PCI IDs hold the GPU), checks every archive
  entry name before anything else (no absolute paths, no ``..``, no links),
  extracts only that folder's library into a temporary file beside the
  installed one, checks its size and sha256 against ``manifest.json`` and its
  device images with the scanner, keeps the old library as
  ``<lib>.ipex-aot-backup`` with a record ``<lib>.ipex-aot.json``, and swaps
  the new one in with one ``os.replace``. Any failure before that rename
  leaves the installed library as it was.
* ``install --rollback`` puts the backup back (one ``os.replace`` again).

Before any entry of the archive is read, its own bytes are checked against
what the user pinned (:func:`ipex_aot.signing.check_archive`): the
publisher's public key (``--trust-key``, ``IPEX_AOT_TRUST_KEY``, or the
``ipex-aot-trust.pub`` an app ships beside its ``intel_extension_for_pytorch``
folder) and ``--sha256``. An archive given by URL is downloaded first
(:mod:`ipex_aot.download`) and checked before it is renamed into place.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ipex_aot import log, platforms
from ipex_aot.archive import (
    MANIFEST,
    ArchiveInfo,
    extract_member,
    open_archive,
    read_manifest,
)
from ipex_aot.devices import load_database
from ipex_aot.download import MAX_DOWNLOAD, fetch_archive, is_url
from ipex_aot.errors import ArchiveError, InstallError, ScanError, UsageError
from ipex_aot.fsutil import read_json, sha256_file, write_json
from ipex_aot.generation import generation_order, is_generation
from ipex_aot.gpus import (  # noqa: F401 - detection lived here; importers of these names keep working
    INTEL_VENDOR,
    POWERSHELL_QUERY,
    Gpu,
    detect,
    gpus_from_powershell,
    gpus_from_sysfs,
    identify,
    list_gpus,
    parse_powershell,
)
from ipex_aot.pack import parse_size
from ipex_aot.scan import scan_file
from ipex_aot.settings import Settings
from ipex_aot.signing import Trust, add_trust_arguments, check_trust, resolve_trust

BACKUP_SUFFIX = ".ipex-aot-backup"
RECORD_SUFFIX = ".ipex-aot.json"
LOCK_SUFFIX = ".lock"
#: Work folders of install beside the library (swept by the next install there).
WORK_PREFIX = ".ipex-aot-"
RECORD_SCHEMA = 1


# --- install -------------------------------------------------------------------------------

def find_library(install_path: str, ipex_dir: Path | None) -> Path:
    """Where the installed library is: under IPEX_DIR, or beside the package's import spec."""
    parts = PurePosixPath(install_path).parts
    package = parts[0]
    if ipex_dir is not None:
        ipex_dir = Path(ipex_dir)
        if not ipex_dir.is_dir():
            raise InstallError(f"--ipex-dir {ipex_dir} is not a folder")
        # Accept site-packages (or an app folder holding the package) and the package folder itself.
        candidates = [ipex_dir.joinpath(*parts), ipex_dir.joinpath(*parts[1:])]
        where = f"under {ipex_dir}"
    else:
        try:
            spec = importlib.util.find_spec(package)  # a top-level spec: found, not imported
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise InstallError(f"{package} is not installed in this Python ({sys.executable}); "
                               "give its folder with --ipex-dir")
        pkg = Path(list(spec.submodule_search_locations)[0])
        candidates = [pkg.joinpath(*parts[1:])]
        where = f"in {pkg}"
    for lib in candidates:
        if lib.is_file():
            return lib
    raise InstallError(f"no {'/'.join(parts[1:])} {where}; is {package} installed there?")


def choose_generation(info: ArchiveInfo, generation: str | None, gpus: Sequence[Gpu], db_note: str | None) -> str:
    folders = info.manifest["folders"]
    available = ", ".join(sorted(folders, key=generation_order))
    if generation:
        if generation not in folders:
            raise InstallError(f"{info.path} has no folder {generation}; it has {available}")
        return generation
    if not gpus:
        raise InstallError(f"no Intel GPU found on this machine; give one of {available} with --generation")
    picks: set[str] = set()
    for gpu in gpus:
        if gpu.generation:
            picks.add(gpu.generation)
            continue
        # Without a database answer, the archive's own PCI ID lists may still name one folder; when the
        # database listed several candidates (stepping unknown), a folder that happens to be alone is a guess.
        holding = [f for f, e in folders.items() if gpu.pci_id in {str(p).upper() for p in e.get("pci_ids", [])}]
        if len(holding) == 1 and not gpu.candidates:
            picks.add(holding[0])
        else:
            cands = gpu.candidates or tuple(holding)
            why = gpu.rule or db_note or "the device database is not available"
            raise InstallError(f"GPU {gpu.pci_id} rev {gpu.revision}: cannot tell its generation "
                               f"({', '.join(cands) or 'no candidate in this archive'}; {why}); "
                               f"give it with --generation (this archive has {available})")
    if len(picks) > 1:
        raise InstallError(f"this machine has GPUs of several generations ({', '.join(sorted(picks))}); "
                           "give one with --generation")
    (gen,) = picks
    if gen not in folders:
        raise InstallError(f"this GPU needs generation {gen}, which {info.path} does not have ({available})")
    return gen


def _record_path(lib: Path) -> Path:
    return lib.with_name(lib.name + RECORD_SUFFIX)


def _backup_path(lib: Path) -> Path:
    return lib.with_name(lib.name + BACKUP_SUFFIX)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_images(path: Path, generation: str, settings: Settings) -> None:
    """Refuse a library that provably lacks its generation; warn when it cannot be proven here."""
    try:
        result = scan_file(path, settings=settings)
    except ScanError as e:
        raise ArchiveError(f"the library for {generation} in the archive is unreadable: {e.message}") from None
    if generation in result.native:
        return
    if result.unresolved and not result.native:
        log.warn(f"{len(result.unresolved)} device image(s) cannot be mapped to a generation without ocloc; "
                 "installing on the manifest's word")
        return
    raise ArchiveError(f"the library in folder {generation} holds {', '.join(result.native) or 'no native image'}, "
                       f"not {generation}; the archive is wrong, nothing was changed")


def _close_hint(app: Path | None) -> str:
    return f"close {app.name}" if app is not None else "close the apps that use it"


def _refuse_in_use(lib: Path, app: Path | None) -> None:
    """Stop before anything is changed when the library cannot be replaced now (Windows: a running app loaded it)."""
    reason = platforms.host().in_use(lib)
    if reason:
        raise InstallError(f"{lib} is in use ({reason}); {_close_hint(app)} and run again (nothing was changed)")


def find_app_package(app: Path, install_path: str) -> Path:
    """The folder under an app that holds INSTALL_PATH's package (Demucs-GUI: an embedded Python's
    ``Lib\\site-packages``, a frozen app's ``_internal``, or the app folder itself); returns its parent."""
    app = Path(app)
    if not app.is_dir():
        raise InstallError(f"--app {app} is not a folder; give the app's install folder")
    parts = PurePosixPath(install_path).parts
    found: list[Path] = []
    # Breadth-first and shallow: an app folder holds thousands of files, the package sits a few levels down.
    level = [app]
    for _depth in range(5):
        nxt: list[Path] = []
        for folder in level:
            if folder.joinpath(*parts).is_file():
                found.append(folder)
                continue
            with contextlib.suppress(OSError):
                nxt += sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        if found:
            break
        level = nxt
    if not found:
        raise InstallError(f"no {'/'.join(parts)} under {app} (looked 5 folders deep); is this the app's folder?")
    if len(found) > 1:
        raise InstallError(f"{app} holds {parts[0]} in {found[0]} and {found[1]}; give one with --ipex-dir")
    return found[0]


def app_key_dirs(ipex_dir: Path | None, app: Path | None = None,
                 package: str = "intel_extension_for_pytorch") -> list[Path]:
    """Where an app's pinned key (signing.TRUST_KEY_FILE) may sit: the folder holding the IPEX package folder.

    With --ipex-dir that folder is IPEX_DIR itself, or its parent when IPEX_DIR
    is the package folder (it has an ``__init__.py``); with --app, the folder
    under APP holding the package, then APP itself; otherwise the parent of
    the installed package, found by its import spec without importing it. The
    archive is not read for this: its manifest is not trusted yet.
    """
    if ipex_dir is not None:
        ipex_dir = Path(ipex_dir)
        return [ipex_dir.parent if (ipex_dir / "__init__.py").is_file() else ipex_dir]
    if app is not None:
        dirs = []
        with contextlib.suppress(InstallError):
            dirs.append(find_app_package(app, f"{package}/__init__.py"))
        return dirs + [Path(app)]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(list(spec.submodule_search_locations)[0]).parent]


def install(archive: Path | str, settings: Settings, *, ipex_dir: Path | None = None, generation: str | None = None,
            sysfs_root: Path | None = None, db: Any = None, engine: str | None = None, app: Path | None = None,
            trust: Trust | None = None, download_dir: Path | None = None, max_download: int = MAX_DOWNLOAD) -> dict:
    """Install one generation's library from ARCHIVE (a file or an http(s) URL); returns the record written beside it.

    APP (an application's folder, e.g. ``C:\\Program Files\\Demucs-GUI``) is searched for the package
    when IPEX_DIR is not given, and names the app in the "close it" message. TRUST defaults to the key
    from IPEX_AOT_TRUST_KEY or the app's key file, no sha256.
    """
    if trust is None:
        trust = resolve_trust(settings, key_dirs=app_key_dirs(ipex_dir, app))
    if is_url(archive):
        folder = download_dir or settings.cache_dir / "downloads"
        with log.step(f"download {archive}"):
            archive, checked = fetch_archive(str(archive), folder, trust, max_size=max_download)
            (log.info if trust.pinned else log.warn)(checked)
    else:
        archive = Path(archive)
        check_trust(archive, trust)
    with log.step(f"install from {archive.name}"):
        info = open_archive(archive)
        if ipex_dir is None and app is not None:
            ipex_dir = find_app_package(app, info.manifest["artifact_install_path"])
        lib = find_library(info.manifest["artifact_install_path"], ipex_dir)
        gpus: list[Gpu] = []
        db_note = None
        if not generation:
            gpus, db_note = detect(settings, sysfs_root=sysfs_root, db=db)
        elif not is_generation(generation) and generation not in info.manifest["folders"]:
            generation = _generation_of_name(generation, settings, db)
        gen = choose_generation(info, generation, gpus, db_note)
        entry = info.manifest["folders"][gen]
        log.info(f"generation {gen}: {entry['file']} -> {lib}")
        lock = _install_lock(lib)
        _sweep_stale(lib)
        work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=lib.parent))
        try:
            start = time.monotonic()
            size = int(entry["size"])
            slow = "; a solid archive is read from its start, so this can take minutes" if size > 100e6 else ""
            log.info(f"extracting {entry['file']} ({_human_size(size)}{slow})")
            new = extract_member(archive, entry["file"], work, settings, engine=engine)
            log.info(f"extracted in {time.monotonic() - start:.1f} s")
            size = new.stat().st_size
            if "size" in entry and size != entry["size"]:
                raise ArchiveError(f"{archive}: {entry['file']} is {size} bytes, {MANIFEST} says {entry['size']}; "
                                   "nothing was changed")
            digest = sha256_file(new)
            if digest != entry["sha256"]:
                raise ArchiveError(f"{archive}: {entry['file']} has sha256 {digest}, {MANIFEST} says {entry['sha256']}; "
                                   "the archive is damaged or was changed, nothing was changed")
            _check_images(new, gen, settings)
            _refuse_in_use(lib, app)
            try:
                record = _swap_in(lib, new, {"archive": str(archive.resolve()), "generation": gen, "sha256": digest,
                                             "release": info.manifest.get("release"),
                                             "recipe": info.manifest.get("recipe")})
            except OSError as e:
                raise InstallError(f"could not replace {lib}: {e.strerror or e}; {_close_hint(app)} and "
                                   "run install again (the old library is still in place)") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
            lock.release()
        log.info(f"installed {gen} into {lib} (backup {record['backup']})")
        return record


def _human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _generation_of_name(name: str, settings: Settings, db: Any) -> str:
    """An ocloc device name (acm-g10) or PCI ID as --generation, resolved like build --device resolves it."""

    database = db if db is not None else load_database(settings)
    generation = database.resolve(name)
    log.info(f"--generation {name}: generation {generation}")
    return generation


def _install_lock(lib: Path) -> Any:
    """An OS lock per library: one install there at a time, so sweeping is safe.

    The lock file lives in the system's temp folder, named by the library's path, not beside the
    library: the app's folder gets nothing but the library, its backup and the record, and every
    process finds the same lock whatever its settings.
    """
    import hashlib

    import filelock

    key = hashlib.sha256(str(lib.resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "ipex-aot-locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder / f"install-{key}{LOCK_SUFFIX}", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise InstallError(f"another ipex-aot install into {lib.parent} is running; wait for it to finish") from None
    return lock


def _sweep_stale(lib: Path) -> None:
    """Remove what a killed install left beside LIB: ``.ipex-aot-*`` work folders and a half-made backup."""
    stale = [p for p in lib.parent.glob(f"{WORK_PREFIX}*") if p.is_dir() and not p.is_symlink()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    part = _backup_path(lib).with_name(_backup_path(lib).name + ".part")
    if part.is_file():
        part.unlink()
        stale.append(part)
    if stale:
        log.info(f"removed {len(stale)} leftover(s) of an interrupted install in {lib.parent}")


def _swap_in(lib: Path, new: Path, installed: dict) -> dict:
    record_path, backup = _record_path(lib), _backup_path(lib)
    current = sha256_file(lib)
    old: dict | None = None
    with contextlib.suppress(OSError, ValueError):
        old = read_json(record_path)
    keep_backup = bool(old and backup.is_file() and old.get("installed", {}).get("sha256") == current)
    if keep_backup and old is not None:
        # The current library is one we installed: the backup already holds what was there before us.
        backup_sha = old["backup_sha256"]
    else:
        tmp_backup = backup.with_name(backup.name + ".part")
        with contextlib.suppress(FileNotFoundError):
            tmp_backup.unlink()
        try:
            os.link(lib, tmp_backup)  # same bytes, no copy; the rename below gives lib a new inode
        except OSError:
            shutil.copy2(lib, tmp_backup)
        os.replace(tmp_backup, backup)
        backup_sha = current
    record = {"schema": RECORD_SCHEMA, "library": str(lib), "backup": str(backup), "backup_sha256": backup_sha,
              "installed": installed, "time": _now()}
    write_json(record_path, record)
    shutil.copymode(lib, new)
    os.replace(new, lib)
    return record


def rollback(ipex_dir: Path | None, install_path: str | None, settings: Settings, *, app: Path | None = None) -> Path:
    """Put back the library that was there before ``install``; returns its path."""
    if ipex_dir is None and app is not None:
        ipex_dir = find_app_package(app, install_path) if install_path else Path(app)
    lib = _find_installed(ipex_dir, install_path)
    record_path, backup = _record_path(lib), _backup_path(lib)
    try:
        record = read_json(record_path)
    except (OSError, ValueError):
        raise InstallError(f"no install record {record_path}; nothing to roll back") from None
    if not backup.is_file():
        if lib.is_file() and sha256_file(lib) == record.get("backup_sha256"):
            record_path.unlink()
            raise InstallError(f"{lib} is already the library from before the install; removed the stale record")
        raise InstallError(f"backup {backup} is missing; reinstall the original package to restore {lib.name}")
    digest = sha256_file(backup)
    if digest != record.get("backup_sha256"):
        raise InstallError(f"backup {backup} has sha256 {digest}, the record says {record.get('backup_sha256')}; "
                           "left everything as it is")
    _refuse_in_use(lib, app)
    try:
        os.replace(backup, lib)
    except OSError as e:
        raise InstallError(f"could not put {backup.name} back over {lib}: {e.strerror or e}; {_close_hint(app)} "
                           "and run --rollback again") from None
    record_path.unlink()
    return lib


def _find_installed(ipex_dir: Path | None, install_path: str | None) -> Path:
    """The library that has an install record: from INSTALL_PATH, or by searching IPEX_DIR for records."""
    if install_path:
        return find_library(install_path, ipex_dir)
    roots = [Path(ipex_dir)] if ipex_dir else []
    if not roots:
        for package in ("intel_extension_for_pytorch",):
            with contextlib.suppress(ImportError, ValueError):
                spec = importlib.util.find_spec(package)
                if spec and spec.submodule_search_locations:
                    roots.append(Path(list(spec.submodule_search_locations)[0]))
    if not roots:
        raise InstallError("intel_extension_for_pytorch is not installed in this Python; give its folder with --ipex-dir")
    records = [p for root in roots for p in root.rglob(f"*{RECORD_SUFFIX}")][:2]
    if not records:
        raise InstallError(f"no install record under {', '.join(map(str, roots))}; nothing to roll back")
    if len(records) > 1:
        raise InstallError(f"several install records under {roots[0]} ({records[0]}, {records[1]}); give --ipex-dir closer to one")
    return records[0].with_name(records[0].name[: -len(RECORD_SUFFIX)])


# --- CLI -----------------------------------------------------------------------------------

def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("install", help="install one generation's library from a release archive (or --rollback)")
    p.add_argument("archive", nargs="?", help="the release .7z, a file or an http(s) URL")
    p.add_argument("--app", type=Path, help="the app's folder (e.g. \"C:\\Program Files\\Demucs-GUI\"); "
                   "intel_extension_for_pytorch is looked for inside it")
    p.add_argument("--ipex-dir", type=Path, help="site-packages (or the package folder) holding the install")
    p.add_argument("--generation", help="generation to install: a code (12.55.8), an ocloc device name (acm-g10) "
                   "or a PCI ID, as build --device takes them (default: detected)")
    p.add_argument("--rollback", action="store_true", help="restore the library from before the last install")
    p.add_argument("--engine", choices=("7z", "py7zr"), help="extractor (default: 7zz/7z when installed)")
    add_trust_arguments(p)
    p.add_argument("--download-dir", type=Path, metavar="DIR",
                   help="where an archive given by URL is downloaded (default: the cache's downloads/)")
    p.add_argument("--max-download", default=None, metavar="SIZE",
                   help=f"refuse a download larger than this, e.g. 2g (default {MAX_DOWNLOAD >> 30}g)")
    p.set_defaults(func=_cmd_install)


def _cmd_install(args, settings: Settings) -> int:  # noqa: ANN001
    if args.rollback:
        if args.generation or args.trust_key or args.sha256 or args.signature:
            raise UsageError("--rollback takes no --generation, --trust-key, --sha256 or --signature")
        if args.archive and is_url(args.archive):
            raise UsageError("--rollback reads the install path from a local archive (or none); not from a URL")
        install_path = read_manifest(Path(args.archive))["artifact_install_path"] if args.archive else None
        lib = rollback(args.ipex_dir, install_path, settings, app=args.app)
        log.info(f"restored {lib}")
        return 0
    if not args.archive:
        raise UsageError("give the release archive: ipex-aot install ARCHIVE.7z (or --rollback)")

    trust = resolve_trust(settings, trust_key=args.trust_key, sha256=args.sha256, signature=args.signature,
                          key_dirs=app_key_dirs(args.ipex_dir, args.app))
    max_download = parse_size(args.max_download) if args.max_download else MAX_DOWNLOAD
    archive = args.archive if is_url(args.archive) else Path(args.archive)
    install(archive, settings, ipex_dir=args.ipex_dir, generation=args.generation, engine=args.engine, app=args.app,
            trust=trust, download_dir=args.download_dir, max_download=max_download)
    return 0
