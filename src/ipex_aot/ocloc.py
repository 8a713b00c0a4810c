"""Finding ocloc, asking it its version, and running it.

ocloc is Intel's offline compiler for its GPUs (from ``intel-opencl-icd`` /
``intel-ocloc`` on Linux, the oneAPI Base Toolkit on Windows). Everything this
project knows about devices comes from it, so it is found in one place:
``OCLOC`` (any executable, a wrapper script included), then ``PATH``, then
oneAPI's standard folders.

Two ways to run it:

* :meth:`Ocloc.run` starts the executable: always correct, whatever ``OCLOC``
  points at.
* :class:`Libocloc` calls ``oclocInvoke`` of the ``libocloc`` that the
  executable itself loads (``ocloc_api.h``), in this process. It returns the
  outputs in memory and answers an unknown device ID in microseconds instead
  of a process start; it is used only when that library reports the same
  version as the executable.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ipex_aot.errors import ToolchainError
from ipex_aot.settings import Settings, child_env

#: What to tell a user who has no ocloc.
INSTALL_HINT = (
    "install it (Debian: apt install intel-opencl-icd; Ubuntu 24.04+: apt install intel-ocloc; "
    "Windows: the Intel oneAPI Base Toolkit) or set OCLOC=/path/to/ocloc"
)

_VERSION_RE = re.compile(r"\b\d+\.\d+\.\d+\b")
_ACRONYMS_RE = re.compile(r"All supported acronyms:\s*(.+?)\.?\s*$", re.MULTILINE)
_DEVICE_TYPES_RE = re.compile(r"<device_type> can be:\s*(.+?)(?:\bversion\b|\bor hexadecimal\b|$)", re.DOTALL)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*$")
_BINARY_INPUTS = (".spv", ".bc", ".bin", ".ar")


def _oneapi_dirs(settings: Settings) -> list[Path]:
    """oneAPI's standard places for ocloc, the user's ONEAPI_ROOT first."""
    roots: list[Path] = []
    if settings.oneapi_root:
        roots.append(settings.oneapi_root)
    roots += [Path("/opt/intel/oneapi"), Path.home() / "intel" / "oneapi"]
    for env_dir in (r"C:\Program Files (x86)\Intel\oneAPI", r"C:\Program Files\Intel\oneAPI"):
        roots.append(Path(env_dir))
    dirs: list[Path] = []
    for root in roots:
        dirs += [root / "compiler" / "latest" / "bin", root / "ocloc" / "latest" / "bin",
                 root / "compiler" / "latest" / "windows" / "lib" / "ocloc"]
    return dirs


def _candidates(settings: Settings) -> Iterator[tuple[str, str]]:
    """(path, where-from) in search order."""
    for name in ("ocloc", "ocloc.exe"):
        found = shutil.which(name)
        if found:
            yield found, "PATH"
    for d in _oneapi_dirs(settings):
        for name in ("ocloc", "ocloc.exe"):
            p = d / name
            if p.is_file() and os.access(p, os.X_OK):
                yield str(p), "oneAPI"


def _read_query(path: str, what: str, timeout: float) -> str | None:
    """``ocloc query WHAT`` writes a file named WHAT into the cwd: run it in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="ipex-aot-ocloc-") as tmp:
        try:
            proc = subprocess.run([path, "query", what], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        out = Path(tmp) / what
        text = out.read_text(errors="replace") if out.is_file() else ""
        if proc.returncode != 0 and not text:
            return None
        text = (text or proc.stdout).replace("\x00", "").strip()
        return text.splitlines()[0].strip() if text else None


def _elf_needed(path: str) -> list[str]:
    """DT_NEEDED names of an ELF executable; [] for scripts and non-ELF files."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return []
    except OSError:
        return []
    tool = shutil.which("readelf")
    if not tool:
        return []
    proc = subprocess.run([tool, "-d", path], capture_output=True, text=True, check=False)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", proc.stdout)


def _resolve_library(path: str) -> str | None:
    """The libocloc this executable loads, if any (only then is the in-process path the same tool)."""
    exe = Path(path)
    if sys.platform == "win32":
        for name in ("ocloc64.dll", "ocloc32.dll"):
            if (exe.parent / name).is_file():
                return str(exe.parent / name)
        return None
    needed = [n for n in _elf_needed(path) if n.startswith("libocloc")]
    if not needed:
        return None
    ldd = shutil.which("ldd")
    if ldd:
        proc = subprocess.run([ldd, path], capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line)
            if m and m.group(1) in needed and os.path.isfile(m.group(2)):
                return os.path.realpath(m.group(2))
    for d in (exe.parent, exe.parent.parent / "lib", exe.parent.parent / "lib64"):
        if (d / needed[0]).is_file():
            return str((d / needed[0]).resolve())
    return None


@dataclass(frozen=True)
class Ocloc:
    path: str  # executable (may be a wrapper script)
    version: str  # e.g. "22.43.24595" (from `ocloc query OCL_DRIVER_VERSION`)
    neo_revision: str | None
    library: str | None  # libocloc.so / ocloc64.dll usable in-process, if compatible
    found_by: str = "OCLOC"
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def run(self, args: Sequence[str], *, cwd: Path | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run the executable; stdout and stderr are captured as text."""
        try:
            return subprocess.run([self.path, *args], cwd=cwd, capture_output=True, text=True,
                                  errors="replace", timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise ToolchainError(f"{self.path} {' '.join(args)} did not finish within {timeout} s") from e
        except OSError as e:
            raise ToolchainError(f"cannot run {self.path}: {e.strerror}; {INSTALL_HINT}") from e

    def _run_in_temp(self, args: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # Several ocloc commands drop files into the cwd; never let them land in the user's tree.
        with tempfile.TemporaryDirectory(prefix="ipex-aot-ocloc-") as tmp:
            return self.run(args, cwd=Path(tmp), timeout=timeout)

    def ids(self, name: str) -> list[str]:
        """``ocloc ids NAME``: the generations NAME stands for, [] when ocloc does not know it."""
        key = ("ids", name)
        if key not in self._cache:
            proc = self._run_in_temp(["ids", name])
            text = proc.stdout + proc.stderr
            found: list[str] = []
            if proc.returncode == 0 and "Matched ids" in text:
                found = _VERSION_RE.findall(text.split("Matched ids", 1)[1])
            self._cache[key] = found
        return list(self._cache[key])

    def acronyms(self) -> list[str]:
        """Every device name ocloc lists as accepted, in ocloc's order."""
        if "acronyms" not in self._cache:
            names = parse_acronyms(self._run_in_temp(["ids", "--help"]).stdout)
            if not names:  # older or newer help texts: the compile help lists them too
                proc = self._run_in_temp(["compile", "--help"])
                names = parse_acronyms(proc.stdout + proc.stderr)
            self._cache["acronyms"] = names
        return list(self._cache["acronyms"])

    def compile(self, source: Path, device: str, out_dir: Path, *, options: str = "",
                extra: Sequence[str] = ()) -> Path:
        """Compile SOURCE for DEVICE into OUT_DIR; the produced .bin (one device) or fat .ar (several)."""
        source = Path(source).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        # A private folder, so that what ocloc wrote is told apart from what was there.
        with tempfile.TemporaryDirectory(prefix=".ocloc-", dir=out_dir) as tmp:
            args = ["compile", "-file", str(source), "-device", device, "-out_dir", tmp, "-output", source.stem]
            if options:
                args += ["-options", options]
            args += list(extra)
            proc = self.run(args, cwd=Path(tmp), timeout=None)
            binaries = sorted(p for p in Path(tmp).iterdir() if p.suffix == ".bin")
            fat = Path(tmp) / source.stem  # ocloc names a fat binary exactly as -output, no suffix
            if proc.returncode != 0 or not (binaries or fat.is_file()):
                tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
                raise ToolchainError(f"ocloc could not compile {source} for {device} (exit {proc.returncode}): {tail}")
            produced, name = (fat, source.stem + ".ar") if fat.is_file() else (binaries[0], binaries[0].name)
            target = out_dir / name
            os.replace(produced, target)
            return target

    def to_json(self) -> dict:
        return {"path": self.path, "version": self.version, "neo_revision": self.neo_revision,
                "library": self.library, "found_by": self.found_by}


def parse_acronyms(text: str) -> list[str]:
    """The device names out of ``ocloc ids --help`` or ``ocloc compile --help``."""
    m = _ACRONYMS_RE.search(text)
    if not m:
        m = _DEVICE_TYPES_RE.search(text)
    if not m:
        return []
    names: list[str] = []
    for part in re.split(r"[,\s]+", m.group(1)):
        part = part.strip().rstrip(".")
        if part and _NAME_RE.match(part) and part not in ("version", "or") and part not in names:
            names.append(part)
    return names


def probe(path: str, found_by: str, *, timeout: float = 60) -> Ocloc:
    """Build an :class:`Ocloc` for the executable at PATH (ToolchainError if it does not answer)."""
    version = _read_query(path, "OCL_DRIVER_VERSION", timeout)
    if not version:
        raise ToolchainError(f"{path} ({found_by}) does not answer `ocloc query OCL_DRIVER_VERSION`; "
                             f"is it ocloc? {INSTALL_HINT}")
    neo = _read_query(path, "NEO_REVISION", timeout)
    library = _resolve_library(path)
    if library and Libocloc.query_version(library) != version:
        library = None  # a different build than the executable: only the executable is trusted
    return Ocloc(path=path, version=version, neo_revision=neo, library=library, found_by=found_by)


def find_ocloc(settings: Settings) -> Ocloc:
    """OCLOC env → PATH → oneAPI folders; ToolchainError saying how to get ocloc if none."""
    if settings.ocloc:
        p = Path(settings.ocloc)
        resolved = shutil.which(settings.ocloc) if not p.is_file() else str(p)
        if not resolved or not os.access(resolved, os.X_OK):
            raise ToolchainError(f"OCLOC={settings.ocloc} is not an executable file; fix OCLOC or unset it")
        return probe(str(Path(resolved).absolute()), "OCLOC")
    for path, where in _candidates(settings):
        return probe(path, where)
    raise ToolchainError(f"ocloc not found (OCLOC unset, not on PATH, not in oneAPI folders); {INSTALL_HINT}")


# --- in-process libocloc -------------------------------------------------------------------

_P = ctypes.POINTER
_u8pp = _P(_P(ctypes.c_uint8))


@dataclass(frozen=True)
class InvokeResult:
    rc: int
    outputs: Mapping[str, bytes]  # output file name -> bytes; "stdout.log" holds ocloc's messages

    @property
    def log(self) -> str:
        return self.outputs.get("stdout.log", b"").decode(errors="replace")


class Libocloc:
    """``oclocInvoke`` / ``oclocFreeOutput`` of one libocloc, through ctypes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lib = ctypes.CDLL(path)
        inv = self._lib.oclocInvoke
        inv.restype = ctypes.c_int
        inv.argtypes = [ctypes.c_uint, _P(ctypes.c_char_p),
                        ctypes.c_uint32, _u8pp, _P(ctypes.c_uint64), _P(ctypes.c_char_p),
                        ctypes.c_uint32, _u8pp, _P(ctypes.c_uint64), _P(ctypes.c_char_p),
                        _P(ctypes.c_uint32), _P(_u8pp), _P(_P(ctypes.c_uint64)), _P(_P(ctypes.c_char_p))]
        free = self._lib.oclocFreeOutput
        free.restype = ctypes.c_int
        free.argtypes = [_P(ctypes.c_uint32), _P(_u8pp), _P(_P(ctypes.c_uint64)), _P(_P(ctypes.c_char_p))]

    def invoke(self, args: Sequence[str], sources: Mapping[str, bytes] | None = None) -> InvokeResult:
        """Run ``ocloc ARGS`` in this process; SOURCES are in-memory files named as in ARGS."""
        sources = sources or {}
        argv = (ctypes.c_char_p * (len(args) + 1))(b"ocloc", *[a.encode() for a in args])
        keep = [ctypes.create_string_buffer(data, len(data) + 1) for data in sources.values()]
        n_src = len(sources)
        data = (_P(ctypes.c_uint8) * max(n_src, 1))(*[ctypes.cast(b, _P(ctypes.c_uint8)) for b in keep])
        # ocloc reads OpenCL C sources as C strings: their length must count the final NUL, or it
        # reads past the buffer. Binary inputs (SPIR-V, LLVM bitcode) and empty files keep their size.
        lens = (ctypes.c_uint64 * max(n_src, 1))(*[len(v) + (1 if v and not k.endswith(_BINARY_INPUTS) else 0)
                                                    for k, v in sources.items()])
        names = (ctypes.c_char_p * max(n_src, 1))(*[k.encode() for k in sources])
        n_out = ctypes.c_uint32()
        out_data = _u8pp()
        out_len = _P(ctypes.c_uint64)()
        out_names = _P(ctypes.c_char_p)()
        rc = self._lib.oclocInvoke(len(args) + 1, argv, n_src, data, lens, names, 0, None, None, None,
                                   ctypes.byref(n_out), ctypes.byref(out_data), ctypes.byref(out_len),
                                   ctypes.byref(out_names))
        outputs: dict[str, bytes] = {}
        try:
            for i in range(n_out.value):
                outputs[out_names[i].decode(errors="replace")] = ctypes.string_at(out_data[i], out_len[i])
        finally:
            self._lib.oclocFreeOutput(ctypes.byref(n_out), ctypes.byref(out_data), ctypes.byref(out_len),
                                      ctypes.byref(out_names))
        return InvokeResult(rc=rc, outputs=outputs)

    @staticmethod
    def query_version(path: str) -> str | None:
        """The library's OCL_DRIVER_VERSION, asked in a child process so a bad library cannot kill us."""
        code = ("import sys; from ipex_aot.ocloc import Libocloc\n"
                "r = Libocloc(sys.argv[1]).invoke(['query', 'OCL_DRIVER_VERSION'])\n"
                "v = r.outputs.get('OCL_DRIVER_VERSION', b'').replace(b'\\0', b'').decode().strip()\n"
                "sys.stdout.write('VERSION=' + v + '\\n')\n")
        env = child_env()
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
        try:
            proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                                  timeout=60, check=False, env=env)
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(r"^VERSION=(.*)$", proc.stdout, re.MULTILINE)
        return m.group(1).strip() if m and m.group(1).strip() else None


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """libocloc prints some lines straight to fd 1 (e.g. ``Command was: …``): silence it in workers."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
