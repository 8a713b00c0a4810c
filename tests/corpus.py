"""The real-library corpus: SYCL libraries from PyPI wheels, fetched and cached, never committed.

``tests/data/corpus/corpus.json`` pins each wheel by version and sha256 and names the
libraries taken from it, each with the answer ``tests/data/corpus/expected.sh`` (binutils,
dd, zstd; not the scanner) gave for it. :func:`fetch` downloads the wheels with pip
(``pip download --no-deps`` for CPython 3.11 on manylinux x86-64, whatever runs it), checks
each sha256, extracts only the listed libraries into the cache and drops the wheel.

    python tests/corpus.py          # fetch now (CI does it on first use); prints the cache folder
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "data" / "corpus" / "corpus.json"
EXPECTED_SH = MANIFEST.parent / "expected.sh"


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def cache_dir() -> Path:
    """``<ipex-aot cache>/corpus`` (``IPEX_AOT_CACHE``, else ``~/.cache/ipex-aot``): kept between runs."""
    from ipex_aot.settings import Settings

    return Settings.from_env().cache_dir / "corpus"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _cached(path: Path, sha256: str) -> bool:
    """True when PATH is there and was checked once; the stamp saves hashing 2.3 GB every session."""
    stamp = path.with_name(path.name + ".sha256")
    return path.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256


def _download(name: str, wheel: dict, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--platform", wheel["platform"], "--python-version", "3.11", "--implementation", "cp",
           "--abi", wheel["abi"], "-d", str(dest), "-q", f"{name}=={wheel['version']}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    path = dest / wheel["file"]
    if proc.returncode != 0 or not path.is_file():
        raise RuntimeError(f"pip download {name}=={wheel['version']} failed (the corpus needs PyPI): "
                           f"{(proc.stdout + proc.stderr).strip()[-500:]}")
    got = _sha256(path)
    if got != wheel["sha256"]:
        raise RuntimeError(f"{path.name}: sha256 {got}, corpus.json pins {wheel['sha256']}")
    return path


def fetch(root: Path | None = None) -> dict[str, Path]:
    """Library id -> path of the cached library, downloading what is missing."""
    root = root or cache_dir()
    data = manifest()
    out: dict[str, Path] = {}
    wanted: dict[str, list[str]] = {}
    for lib_id, lib in data["libraries"].items():
        path = root / lib_id / Path(lib["member"]).name
        out[lib_id] = path
        if not _cached(path, lib["sha256"]):
            wanted.setdefault(lib["wheel"], []).append(lib_id)
    for name, lib_ids in wanted.items():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="corpus-", dir=root) as tmp:
            wheel = _download(name, data["wheels"][name], Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                for lib_id in lib_ids:
                    lib = data["libraries"][lib_id]
                    path = out[lib_id]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    part = path.with_name(path.name + ".part")
                    with zf.open(lib["member"]) as src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    got = _sha256(part)
                    if got != lib["sha256"]:
                        raise RuntimeError(f"{lib['member']} in {wheel.name}: sha256 {got}, corpus.json pins "
                                           f"{lib['sha256']}")
                    part.replace(path)
                    path.with_name(path.name + ".sha256").write_text(got + "\n")
    return out


if __name__ == "__main__":
    for lib_id, path in fetch().items():
        print(f"{lib_id:<16} {path}")
