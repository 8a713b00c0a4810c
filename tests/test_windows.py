"""The platform seam (src/ipex_aot/platforms/) on the platform the test runs on.

Every test here runs in both lanes; under the Windows lane (CPython for Windows
under Wine, ``nox -s tests-windows``) they exercise Windows' own rules: no
``os.fchmod``, the ANSI code page on redirected streams, a loaded DLL that
cannot be replaced.
"""

from __future__ import annotations

import locale
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipex_aot import install, platforms
from ipex_aot.errors import InstallError
from ipex_aot.fsutil import atomic_output, read_json, write_json, write_text

WINDOWS = sys.platform == "win32"
# A user folder with a space and letters outside ASCII (and outside cp1252: 日本).
USER_DIR = "Zoë 日本/My Apps"


def test_host_platform_is_one_definition():
    from ipex_aot import build, matrix, toolchain

    tag = platforms.host_platform()
    assert tag == ("windows-x86_64" if WINDOWS else "linux-x86_64")
    assert platforms.host().name == tag.split("-")[0]
    for module in (build, toolchain, matrix):
        assert not hasattr(module, "host_platform") or module.host_platform is platforms.host_platform


def test_atomic_write_replaces_without_fchmod(tmp_path):
    # CPython for Windows has no os.fchmod before 3.13; the write must not need it.
    assert hasattr(os, "fchmod") != WINDOWS
    target = tmp_path / USER_DIR / "build.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    with pytest.raises(RuntimeError), atomic_output(target, "w") as f:
        f.write("half")
        raise RuntimeError("killed")
    assert read_json(target) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["build.json"]


def test_text_outputs_are_utf8_whatever_the_locale(tmp_path):
    if WINDOWS:
        # The lane is meaningful only because Windows' default text encoding is not UTF-8.
        assert locale.getpreferredencoding(False).lower() in ("cp1252", "mbcs")
    text = "| `56A0` | Alchemist | `12.55.8` | `Intel® Arc™ A770 Graphics` |\n"
    write_text(tmp_path / "SUPPORT.md", text)
    assert (tmp_path / "SUPPORT.md").read_bytes() == text.encode("utf-8")  # and LF, not CRLF, on Windows too
    write_json(tmp_path / "m.json", {"name": "Intel® Arc™", "path": "C:\\Users\\Zoë"})
    assert read_json(tmp_path / "m.json") == {"name": "Intel® Arc™", "path": "C:\\Users\\Zoë"}


def test_error_line_survives_a_non_utf8_stream(tmp_path):
    """A path the stream's code page lacks prints as escapes; the rest of the line prints as it is."""
    app = tmp_path / USER_DIR / "Demucs-GUI"
    app.mkdir(parents=True)
    env = dict(os.environ, PYTHONIOENCODING="cp1252")
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "install", "--rollback", "--app", str(app)],
                          capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    err = proc.stderr.decode("cp1252")
    assert proc.returncode == InstallError.exit_code, err
    assert err.startswith("error: no install record under ") and "Traceback" not in err
    assert "Zoë \\u65e5\\u672c" in err and "My Apps" in err and len(err.strip().splitlines()) == 1


def test_app_folder_finds_the_package(tmp_path):
    app = tmp_path / USER_DIR / "Demucs-GUI"
    lib = app / "runtime" / "Lib" / "site-packages" / "intel_extension_for_pytorch" / "bin" / "intel-ext-pt-gpu.dll"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"MZ")
    path = "intel_extension_for_pytorch/bin/intel-ext-pt-gpu.dll"
    assert install.find_app_package(app, path) == app / "runtime" / "Lib" / "site-packages"
    with pytest.raises(InstallError, match="no intel_extension_for_pytorch/bin/other.dll under"):
        install.find_app_package(tmp_path, "intel_extension_for_pytorch/bin/other.dll")
    with pytest.raises(InstallError, match="is not a folder"):
        install.find_app_package(tmp_path / "nope", path)


def _loaded_dll(tmp_path: Path) -> Path:
    """A real DLL (the interpreter's own python3.dll) copied where an app keeps IPEX's library."""
    dll = tmp_path / USER_DIR / "Demucs-GUI" / "intel-ext-pt-gpu.dll"
    dll.parent.mkdir(parents=True)
    shutil.copyfile(Path(sys.executable).with_name("python3.dll"), dll)
    return dll


@pytest.mark.skipif(not WINDOWS, reason="Linux replaces a loaded .so by rename (the process keeps the old inode)")
def test_a_dll_loaded_by_a_running_app_is_reported_before_anything_changes(tmp_path):
    dll = _loaded_dll(tmp_path)
    before = dll.read_bytes()
    app = subprocess.Popen([sys.executable, "-c", "import ctypes, sys, time; ctypes.WinDLL(sys.argv[1]); "
                            "print('loaded', flush=True); time.sleep(60)", str(dll)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == b"loaded"
        assert platforms.host().in_use(dll)
        with pytest.raises(InstallError) as err:
            install._refuse_in_use(dll, dll.parent)
        assert err.value.message.endswith("close Demucs-GUI and run again (nothing was changed)")
        assert dll.read_bytes() == before and sorted(p.name for p in dll.parent.iterdir()) == [dll.name]
    finally:
        app.kill()
        app.wait()
    deadline = time.monotonic() + 10
    while platforms.host().in_use(dll) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert platforms.host().in_use(dll) is None  # the app closed: free again


def test_unloaded_library_is_not_in_use(tmp_path):
    lib = tmp_path / "libgpu.so"
    lib.write_bytes(b"\x7fELF")
    assert platforms.host().in_use(lib) is None
    assert platforms.host().in_use(tmp_path / "missing") is None


def test_pack_engine_is_what_the_platform_can_run():
    from ipex_aot import pack

    engine, why = pack.choose_engine()
    if WINDOWS:
        # No liblzma DLL on Windows: the lane's 7-Zip (7za.exe) packs, and the reason says so.
        assert engine == "7zz" and why.startswith("no liblzma to load on this platform; 7-Zip is ")
        assert why.lower().endswith("7za.exe")
    else:
        assert engine == "parallel" and "liblzma" in why


STANDIN = Path(__file__).parent / "data" / "toolchain" / "oneapi-standin"


def _oneapi_standin(tmp_path: Path) -> Path:
    """The stand-in oneAPI folder (tests/data/toolchain/README.md) under a path with spaces, parentheses and ë."""
    root = tmp_path / "Program Files (x86)" / "Intel Zoë" / "oneAPI"
    for src in STANDIN.rglob("*.bat"):
        dest = root / src.relative_to(STANDIN)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # cmd reads batch files in the ANSI code page and wants CRLF for its labels.
        dest.write_text(src.read_text(encoding="utf-8"), encoding="ascii", newline="\r\n")
    return root


@pytest.mark.skipif(not WINDOWS, reason="setvars.bat runs in cmd.exe; Linux sources setvars.sh in bash (test_toolchain)")
def test_setvars_bat_is_run_by_cmd_and_its_environment_captured(tmp_path):
    from ipex_aot import toolchain
    from ipex_aot.errors import ToolchainError

    root = _oneapi_standin(tmp_path)
    script = root / "setvars.bat"
    base = {k: v for k, v in os.environ.items() if k.upper() != "SETVARS_COMPLETED"}
    base["KEEP_ME"] = "yes"
    env = toolchain.activate(script, base)
    path_key = next(k for k in env if k.upper() == "PATH")
    assert env["CMPLR_ROOT"] == f"{root}\\compiler\\2025.0"
    assert env[path_key].split(";")[0] == f"{root}\\compiler\\2025.0\\bin"
    assert env["ONEAPI_ROOT"] == f"{root}\\" and env["SETVARS_VARS_PATH"] == str(script)
    assert env["WEIRD_VALUE"] == "a=b=c" and env["SETVARS_COMPLETED"] == "1" and env["KEEP_ME"] == "yes"
    assert not any("initializ" in k.lower() or k.startswith(("=", ":")) for k in env)  # the banner stayed out
    with pytest.raises(ToolchainError) as err:
        toolchain.activate(script, dict(base, IPEX_AOT_STANDIN_FAIL="1"))
    assert str(script) in err.value.message and "(exit 1)" in err.value.message and "\n" not in err.value.message


def test_long_paths_past_max_path(tmp_path):
    """A library path past Windows' old 260-character MAX_PATH: written atomically, found under --app, checked for use."""
    app = tmp_path / USER_DIR / "Demucs-GUI"
    deep = app.joinpath(*[f"level {i} with a fairly long folder name" for i in range(6)])
    lib = deep / "intel_extension_for_pytorch" / "bin" / "intel-ext-pt-gpu.dll"
    assert len(str(lib)) > 260
    lib.parent.mkdir(parents=True)
    write_json(lib.with_name("record.json"), {"path": str(lib)})
    assert read_json(lib.with_name("record.json")) == {"path": str(lib)}
    lib.write_bytes(b"MZ")
    with pytest.raises(InstallError, match="looked 5 folders deep"):
        install.find_app_package(app, "intel_extension_for_pytorch/bin/intel-ext-pt-gpu.dll")  # 7 levels down
    assert install.find_app_package(deep.parents[1], "intel_extension_for_pytorch/bin/intel-ext-pt-gpu.dll") == deep
    assert platforms.host().in_use(lib) is None


def test_each_platform_names_its_own_tools():
    from ipex_aot import toolchain

    windows, linux = platforms.get("windows-x86_64"), platforms.get("linux-x86_64")
    assert (windows.name, linux.name) == ("windows", "linux")
    assert toolchain.compiler_command("icpx", windows=True) == "icx"
    assert toolchain.compiler_command("icx", windows=False) == "icpx"
    assert (windows.library_name("canary-gpu"), linux.library_name("canary-gpu")) == ("canary-gpu.dll",
                                                                                      "libcanary-gpu.so")
    assert (windows.activation_suffix, linux.activation_suffix) == (".bat", ".sh")
    assert str(windows.oneapi_roots()[0]).endswith("Intel\\oneAPI") or str(windows.oneapi_roots()[0]).endswith(
        "Intel/oneAPI")


def test_setvars_bat_is_found_under_oneapi_root(tmp_path):
    from ipex_aot import toolchain
    from ipex_aot.settings import Settings

    root = _oneapi_standin(tmp_path)
    settings = Settings.from_env({"ONEAPI_ROOT": str(root)})
    # The component's env\\vars.bat is preferred over the root setvars.bat (it activates one version only).
    assert toolchain.find_activation(settings, "2025.0.1", windows=True) == root / "compiler" / "2025.0" / "env" / "vars.bat"
    (root / "compiler").rename(root / "other")
    assert toolchain.find_activation(settings, "2025.0.1", windows=True) == root / "setvars.bat"


def test_the_lane_counts_come_from_pytests_own_report(tmp_path):
    """tools/winlane.py fails a full lane below 150 run or above 10 skipped; the counts are read from the
    JUnit XML that a real pytest writes (deselected tests in neither count)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        import winlane
    finally:
        sys.path.pop(0)
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(4))\ndef test_ok(n): pass\n"
        "def test_skip(): pytest.skip('Windows has no FIFOs')\n"
        "def test_gone(): pass\n", encoding="utf-8")
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    "--deselect=test_sample.py::test_gone", "test_sample.py"], cwd=tmp_path, check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    assert winlane.lane_counts(junit) == (4, 1)
    assert "only 4 tests ran" in winlane.check_counts(junit)
    assert "no report" in winlane.check_counts(tmp_path / "missing.xml")
