"""Reading release archives: every entry checked, the manifest read and checked, one member extracted.

Below both the steps that read archives (``scan``'s ``verify ARCHIVE`` and
``install``), so neither imports the other. Nothing here trusts the archive:
names are checked before anything is written (no absolute paths, no ``..``,
no links, no name twice, nothing the manifest does not list), sizes are
compared with the manifest before extraction, and every engine error becomes
one ArchiveError line.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ipex_aot import children
from ipex_aot.errors import ArchiveError, UsageError
from ipex_aot.fsutil import read_json
from ipex_aot.generation import is_generation
from ipex_aot.settings import Settings
from ipex_aot.untrusted import not_a_regular_file, printable, tool_message

MANIFEST = "manifest.json"
_FILE_ATTRIBUTE_REPARSE_POINT = 0x400
_FILE_ATTRIBUTE_UNIX_EXTENSION = 0x8000


def _unsafe_name(name: str) -> str | None:
    if not name:
        return "an empty name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]+", name):
        return "a '..' component"
    return None


def _is_link(f: Any) -> bool:
    """Symlinks, hard links and junctions as 7-Zip and py7zr store them (attribute bits)."""
    if f.is_symlink or f.is_junction or f.is_socket:
        return True
    try:
        attrs = int((f.file_properties() or {}).get("attributes") or 0)
    except (TypeError, ValueError):
        return False
    if attrs & _FILE_ATTRIBUTE_REPARSE_POINT:
        return True
    if attrs & _FILE_ATTRIBUTE_UNIX_EXTENSION:
        mode = attrs >> 16
        return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or mode == 0)
    return False


#: What py7zr and the codecs under it raise on damaged input: its own errors, lzma/zlib/bz2 errors, struct
#: and index errors from truncated headers, even MemoryError for absurd sizes. All mean "damaged archive".
ENGINE_ERRORS: tuple[type[BaseException], ...] = (Exception,)


def _why(e: BaseException) -> str:
    text = " ".join(printable(str(e)).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


#: Files a release archive holds beside its generation folders (pack writes them at the root).
ROOT_FILES = (MANIFEST, "SUPPORT.md")


@dataclass
class ArchiveInfo:
    path: Path
    names: set[str]
    manifest: dict
    #: file entry name -> its size as the 7z header declares it (what any extractor will write)
    sizes: dict[str, int] = field(default_factory=dict)


def check_entries(archive: Path) -> set[str]:
    """Every entry name of ARCHIVE; ArchiveError on absolute paths, '..', links or a name given twice."""
    return set(_entries(archive))


def _entries(archive: Path) -> dict[str, int | None]:
    """entry name -> declared size (None for folders), every name checked for safety and uniqueness."""
    import py7zr

    try:
        with py7zr.SevenZipFile(archive, "r") as z:
            files = [(str(f.filename), f.is_directory, f.uncompressed, _is_link(f)) for f in z.files]
    except ENGINE_ERRORS as e:
        raise ArchiveError(f"{archive}: not a readable 7z archive ({_why(e)})") from None
    entries: dict[str, int | None] = {}
    for name, is_dir, size, link in files:
        why = "a link or special file" if link else _unsafe_name(name)
        if why:
            raise ArchiveError(f"{archive}: entry {printable(name)!r} is {why}; refusing the whole archive "
                               "(nothing was changed)")
        if name in entries and not is_dir:
            # Two copies of one name: 7-Zip and py7zr would pick different ones.
            raise ArchiveError(f"{archive}: entry {printable(name)!r} is stored more than once; refusing the whole "
                               "archive (nothing was changed)")
        entries[name] = None if is_dir else int(size or 0)
    return entries


def _check_listed(archive: Path, entries: Mapping[str, int | None], folders: Mapping[str, Any]) -> None:
    """Every entry is a file the manifest lists, a root file pack writes, or a folder holding one of them."""
    listed = {entry["file"] for entry in folders.values()} | set(ROOT_FILES)
    parents = {str(PurePosixPath(name).parent) for name in listed} - {"."}
    for name, size in entries.items():
        ok = name in listed if size is not None else name in parents
        if not ok:
            raise ArchiveError(f"{archive}: entry {printable(name)!r} is not listed in {MANIFEST}; a release archive "
                               "holds only its generation folders, refusing it (nothing was changed)")


def _check_size(archive: Path, folder: str, entry: Mapping[str, Any], declared: int | None) -> None:
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ArchiveError(f"{archive}: {MANIFEST}: folders.{printable(folder)}.size is {printable(repr(size))}, not a "
                           "positive whole number of bytes")
    if declared != size:
        raise ArchiveError(f"{archive}: {printable(entry['file'])} is {declared} bytes in the archive, {MANIFEST} "
                           f"says size {size}; refusing it before anything is written (nothing was changed)")


def read_manifest(archive: Path) -> dict:
    return open_archive(archive).manifest


def require_archive_file(archive: Path) -> Path:
    """ARCHIVE as a Path, if it is a regular file; ArchiveError for a FIFO, a device, a folder or nothing."""
    archive = Path(archive)
    kind = not_a_regular_file(archive)
    if kind:
        raise ArchiveError(f"{archive}: is {kind}, not an archive file; give the path of the release .7z")
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")
    return archive


def open_archive(archive: Path) -> ArchiveInfo:
    """Check every entry, then read and check manifest.json."""
    archive = require_archive_file(archive)
    entries = _entries(archive)
    names = set(entries)
    if MANIFEST not in names:
        raise ArchiveError(f"{archive}: no {MANIFEST} at the root; not an ipex-aot release archive")
    with tempfile.TemporaryDirectory(prefix="ipex-aot-manifest-") as tmp:
        path = _extract_py7zr(archive, MANIFEST, Path(tmp))
        try:
            manifest = read_json(path)
        except (OSError, ValueError) as e:
            raise ArchiveError(f"{archive}: {MANIFEST} is not valid JSON ({e})") from None
    folders = manifest.get("folders") if isinstance(manifest, dict) else None
    install_path = manifest.get("artifact_install_path") if isinstance(manifest, dict) else None
    if not isinstance(folders, dict) or not folders or not isinstance(install_path, str):
        raise ArchiveError(f"{archive}: {MANIFEST} lacks 'folders' or 'artifact_install_path'")
    if _unsafe_name(install_path):
        raise ArchiveError(f"{archive}: {MANIFEST}: artifact_install_path {install_path!r} is {_unsafe_name(install_path)}")
    for folder, entry in folders.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(entry.get("sha256"), str):
            raise ArchiveError(f"{archive}: {MANIFEST}: folders.{folder} lacks 'file' or 'sha256'")
        if not is_generation(str(folder)) or entry["file"].split("/")[0] != folder:
            raise ArchiveError(f"{archive}: {MANIFEST}: folders.{printable(str(folder))}.file "
                               f"{printable(entry['file'])!r} is not a file in folder {printable(str(folder))}/")
        if entry["file"] not in names:
            raise ArchiveError(f"{archive}: {MANIFEST}: folders.{folder}.file {entry['file']!r} is not in the archive")
        _check_size(archive, folder, entry, entries[entry["file"]])
    _check_listed(archive, entries, folders)
    return ArchiveInfo(archive, names, manifest, {n: s for n, s in entries.items() if s is not None})


def _extract_py7zr(archive: Path, member: str, dest: Path) -> Path:
    import py7zr

    try:
        with py7zr.SevenZipFile(archive, "r") as z:
            z.extract(path=dest, targets=[member])
    except ENGINE_ERRORS as e:
        raise ArchiveError(f"{archive}: extracting {member} failed ({_why(e)}); the archive is damaged, "
                           "download it again") from None
    out = dest / PurePosixPath(member)
    if not out.is_file() or out.is_symlink():
        raise ArchiveError(f"{archive}: {member} did not extract to a regular file")
    return out


def find_7zip(choice: str | None) -> str | None:
    """7-Zip's command line: the one chosen (``IPEX_AOT_7Z``), else 7zz, 7z or 7za on PATH; None if none is."""
    for candidate in ([choice] if choice else []) + ["7zz", "7z", "7za"]:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def sevenzip_command(settings: Settings) -> str | None:
    """7-Zip's command line (faster than py7zr on big libraries), when installed."""
    return find_7zip(settings.sevenzip)


def extract_member(archive: Path, member: str, dest: Path, settings: Settings, *, engine: str | None = None) -> Path:
    """Extract only MEMBER of ARCHIVE into the folder DEST; returns the file's path.

    ``engine``: ``"7z"`` (7zz/7z ``e``), ``"py7zr"``, or None for 7-Zip when installed.
    """
    seven = sevenzip_command(settings) if engine in (None, "7z") else None
    if engine == "7z" and not seven:
        raise UsageError("no 7-Zip command line (7zz/7z) found; set IPEX_AOT_7Z or use the py7zr engine")
    if not seven:
        return _extract_py7zr(archive, member, dest)
    dest.mkdir(parents=True, exist_ok=True)
    # e: no folders; -spd: the name is literal, not a wildcard; -aoa: the temp folder is ours.
    proc = children.run([seven, "e", "-y", "-spd", "-aoa", "-bso0", "-bsp0", f"-o{dest}", "--", str(archive), member],
                          capture_output=True, text=True, errors="replace", check=False)
    out = dest / PurePosixPath(member).name
    if proc.returncode != 0 or not out.is_file() or out.is_symlink():
        raise ArchiveError(f"{archive}: {Path(seven).name} could not extract {printable(member)} (exit "
                           f"{proc.returncode}: {tool_message(proc.stderr + proc.stdout)}); the archive is damaged, "
                           "download it again")
    return out
