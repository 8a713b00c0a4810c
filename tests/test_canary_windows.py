"""The canary's Windows DLL, cross-compiled with MinGW-w64, through scan, pack, verify, install and its CPU path.

The DLLs are built on Linux (canary/canary_build.py with CANARY_TARGET=windows-x86_64:
x86_64-w64-mingw32-gcc, the images in the DPC++ bundle sections, the .tgtimg table)
and, for the Windows lane, handed over by tests/libfixtures.py. A second copy has
the section names cut to 8 characters (``__CLANG_``), as link.exe leaves them.
Under the Windows lane the DLL is loaded with ctypes by CPython for Windows.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ipex_aot import install, pack, scan
from ipex_aot.fsutil import sha256_file, write_json
from ipex_aot.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
import libfixtures as L  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CANARY = REPO / "canary"
WINDOWS = sys.platform == "win32"
DEVICES = {"acm-g10": "12.55.8", "tgllp": "12.0.0"}
INSTALL_PATH = "ipex_aot_canary/lib/canary-gpu.dll"
APP = "Zoë 日本/My Apps/Demucs-GUI"


def _build_dll(device: str, short_names: bool) -> bytes:
    work = Path(tempfile.mkdtemp())
    env = dict(os.environ, CANARY_TARGET="windows-x86_64", OCLOC=L._ocloc_exe())
    out = work / "canary-gpu.dll"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import canary_build as c; from pathlib import Path; "
            "c.build_library(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))")
    subprocess.run([sys.executable, "-c", code, str(CANARY), str(work / "tree"), device, str(out)], env=env,
                   check=True, capture_output=True)
    if short_names:
        short = work / "short.dll"
        subprocess.run(["x86_64-w64-mingw32-objcopy",
                        "--rename-section", "__CLANG_OFFLOAD_BUNDLE__sycl-spir64_gen=__CLANG_",
                        "--rename-section", "__CLANG_OFFLOAD_BUNDLE__sycl-spir64=__CLANG_", str(out), str(short)],
                       check=True, capture_output=True)
        out = short
    data = out.read_bytes()
    shutil.rmtree(work, ignore_errors=True)
    return data


def canary_dll(device: str, *, short_names: bool = False) -> bytes:
    """The canary DLL for DEVICE (built on Linux; read back in the Windows lane)."""
    sources = b"".join(p.read_bytes() for p in sorted([CANARY / "canary_build.py", *CANARY.glob("csrc/*.c"),
                                                        *CANARY.glob("kernels/*.cl")]))
    key = L._digest("canary-dll", sources, device, short_names)
    return L._recorded(key, lambda: _build_dll(device, short_names))


@pytest.fixture(scope="module")
def dlls(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dlls")
    paths = {}
    for device, gen in DEVICES.items():
        assert L.ocloc_ids(device) == [gen]
        paths[gen] = out / gen / "canary-gpu.dll"
        paths[gen].parent.mkdir()
        paths[gen].write_bytes(canary_dll(device))
    return paths


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings.from_env({"IPEX_AOT_CACHE": str(tmp_path_factory.mktemp("cache")), "MAX_JOBS": "2"})


@pytest.mark.parametrize("short_names", [False, True], ids=["lld-mingw-names", "link.exe-8-char-names"])
def test_scan_reads_the_mingw_dll(tmp_path, settings, short_names):
    lib = tmp_path / "canary-gpu.dll"
    lib.write_bytes(canary_dll("acm-g10", short_names=short_names))
    r = scan.scan_file(lib, settings=settings)
    assert r.format == "pe" and r.found_by == "tgtimg"
    assert r.generations == ["12.55.8"] and not r.unresolved
    assert r.native_images == 3 and r.spirv_images >= 3  # one native + one SPIR-V image per kernel


@pytest.mark.skipif(not WINDOWS, reason="a Windows DLL loads only into a Windows process")
def test_cpu_path_conformance_through_ctypes(tmp_path, dlls):
    """The canary package as an app has it, under a user folder with a space and non-ASCII letters."""
    site = tmp_path / APP / "site-packages"
    shutil.copytree(CANARY / "ipex_aot_canary", site / "ipex_aot_canary")
    (site / "ipex_aot_canary" / "lib").mkdir()
    shutil.copyfile(dlls["12.55.8"], site / INSTALL_PATH)
    sys.path.insert(0, str(site))
    try:
        sys.modules.pop("ipex_aot_canary", None)
        canary = importlib.import_module("ipex_aot_canary")
        assert canary.library_path() == site / INSTALL_PATH
        assert canary.devlist() == "acm-g10"
        assert canary.vadd([1.0, 2.5], [3.0, -0.5]) == [4.0, 2.0]
        assert canary.saxpy(2.0, [1.0, 2.0], [0.5, 0.25]) == [2.5, 4.25]
        assert canary.total([float(i) for i in range(16)]) == 120.0
        kinds = [kind for kind, _ in canary.images()]
        assert kinds.count("native") == 3 and kinds.count("spirv") == 3
        native = next(data for kind, data in canary.images() if kind == "native")
        assert native.startswith(b"!<arch>\n") and b"64.12.55.8/" in native  # the image scan maps, read in-process
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("ipex_aot_canary", None)


def _dist(root: Path, dlls: dict[str, Path]) -> Path:
    """dist/canary/<generation>/canary-gpu.dll + build.json, the build records a windows-x86_64 build writes."""
    for gen, dll in dlls.items():
        folder = root / "canary" / gen
        folder.mkdir(parents=True)
        shutil.copyfile(dll, folder / dll.name)
        data = dll.read_bytes()
        write_json(folder / "build.json", {
            "schema": 1, "recipe": "canary", "release": "0.1.0", "generation": gen, "devlist": gen,
            "devlist_variable": "USE_AOT_DEVLIST", "platform": "windows-x86_64",
            "artifact": {"name": dll.name, "install_path": INSTALL_PATH, "sha256": hashlib.sha256(data).hexdigest(),
                         "size": len(data)},
            "toolchain": {"compiler": "x86_64-w64-mingw32-gcc"}, "source": {"commit": "0123abc"},
            "finished": "2026-12-03T08:00:00Z"})
    return root


def test_pack_verify_install_rollback_windows_x86_64(tmp_path, dlls, settings):
    dist = _dist(tmp_path / "dist", dlls)
    s = Settings.from_env({"IPEX_AOT_DIST": str(dist), "IPEX_AOT_CACHE": str(settings.cache_dir), "MAX_JOBS": "2"})
    result = pack.pack("canary", s)
    manifest = json.loads((dist / "canary" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["artifact_install_path"] == INSTALL_PATH and manifest["platform"] == "windows-x86_64"
    assert list(manifest["folders"]) == ["12.0.0", "12.55.8"]
    assert result.engine == ("7zz" if WINDOWS else "parallel")  # what the platform can run
    env = dict(os.environ, IPEX_AOT_CACHE=str(settings.cache_dir), PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "verify", str(result.archive)], capture_output=True,
                          text=True, encoding="utf-8", env=env, stdin=subprocess.DEVNULL, cwd=REPO)
    assert proc.returncode == 0, proc.stderr

    app = tmp_path / APP
    lib = app / "python" / "Lib" / "site-packages" / INSTALL_PATH
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"MZ the JIT-only canary DLL")
    before = {p.relative_to(app): p.read_bytes() for p in app.rglob("*") if p.is_file()}
    cli = [sys.executable, "-m", "ipex_aot", "install", str(result.archive), "--app", str(app)]
    proc = subprocess.run([*cli, "--generation", "12.55.8"], capture_output=True, text=True, encoding="utf-8",
                          env=env, stdin=subprocess.DEVNULL, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(lib) == manifest["folders"]["12.55.8"]["sha256"]
    assert f"installed 12.55.8 into {lib}" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "install", "--rollback", "--app", str(app)],
                          capture_output=True, text=True, encoding="utf-8", env=env, stdin=subprocess.DEVNULL, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    after = {p.relative_to(app): p.read_bytes() for p in app.rglob("*") if p.is_file()}
    assert after == before  # byte for byte, and nothing left beside it
    assert install.find_app_package(app, INSTALL_PATH) == lib.parents[2]


@pytest.mark.skipif(not WINDOWS, reason="Linux replaces a loaded .so by rename; only Windows refuses")
def test_install_over_a_dll_a_running_app_has_loaded_changes_nothing(tmp_path, dlls, settings):
    dist = _dist(tmp_path / "dist", dlls)
    s = Settings.from_env({"IPEX_AOT_DIST": str(dist), "IPEX_AOT_CACHE": str(settings.cache_dir), "MAX_JOBS": "2"})
    archive = pack.pack("canary", s).archive
    app = tmp_path / APP
    lib = app / INSTALL_PATH
    lib.parent.mkdir(parents=True)
    shutil.copyfile(dlls["12.0.0"], lib)  # the app's current DLL, a real one it can load
    before = {p.relative_to(app): p.read_bytes() for p in app.rglob("*") if p.is_file()}
    running = subprocess.Popen([sys.executable, "-c", "import ctypes, sys, time; ctypes.CDLL(sys.argv[1]); "
                                "print('loaded', flush=True); time.sleep(120)", str(lib)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert running.stdout is not None and running.stdout.readline().strip() == b"loaded"
        env = dict(os.environ, IPEX_AOT_CACHE=str(settings.cache_dir), PYTHONIOENCODING="utf-8")
        proc = subprocess.run([sys.executable, "-m", "ipex_aot", "install", str(archive), "--app", str(app),
                               "--generation", "12.55.8"], capture_output=True, text=True, encoding="utf-8",
                              env=env, stdin=subprocess.DEVNULL, cwd=REPO)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == install.InstallError.exit_code, proc.stderr
        assert last.startswith(f"error: {lib} is in use") and last.endswith(
            "close Demucs-GUI and run again (nothing was changed)"), last
    finally:
        running.kill()
        running.wait()
    after = {p.relative_to(app): p.read_bytes() for p in app.rglob("*") if p.is_file()}
    assert after == before  # no record, no backup, no temporary folder, the old DLL


@pytest.mark.skipif(not WINDOWS, reason="Linux replaces a loaded .so by rename; only Windows refuses")
def test_rollback_while_the_app_runs_changes_nothing(tmp_path, dlls, settings):
    dist = _dist(tmp_path / "dist", dlls)
    s = Settings.from_env({"IPEX_AOT_DIST": str(dist), "IPEX_AOT_CACHE": str(settings.cache_dir), "MAX_JOBS": "2"})
    archive = pack.pack("canary", s).archive
    app = tmp_path / APP
    lib = app / INSTALL_PATH
    lib.parent.mkdir(parents=True)
    shutil.copyfile(dlls["12.0.0"], lib)
    install.install(archive, s, app=app, generation="12.55.8")
    installed = {p.relative_to(app): p.read_bytes() for p in app.rglob("*") if p.is_file()}
    running = subprocess.Popen([sys.executable, "-c", "import ctypes, sys, time; ctypes.CDLL(sys.argv[1]); "
                                "print('loaded', flush=True); time.sleep(120)", str(lib)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert running.stdout is not None and running.stdout.readline().strip() == b"loaded"
        with pytest.raises(install.InstallError, match=r"close Demucs-GUI and run again \(nothing was changed\)$"):
            install.rollback(None, None, s, app=app)
    finally:
        running.kill()
        running.wait()
    assert {p.relative_to(app): p.read_bytes() for p in app.rglob("*") if p.is_file()} == installed
    install.rollback(None, None, s, app=app)  # the app closed: now it goes back
    assert lib.read_bytes() == dlls["12.0.0"].read_bytes()


def test_a_second_install_into_the_same_app_waits_for_none(tmp_path, dlls, settings):
    """The install lock (filelock: msvcrt.locking on Windows, flock on Linux) is held by another process."""
    app = tmp_path / APP
    lib = app / INSTALL_PATH
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"MZ old")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from ipex_aot import install; "
                               "held = install._install_lock(Path(sys.argv[1])); "
                               "print('locked', flush=True); time.sleep(120)", str(lib)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        dist = _dist(tmp_path / "dist", dlls)
        s = Settings.from_env({"IPEX_AOT_DIST": str(dist), "IPEX_AOT_CACHE": str(settings.cache_dir), "MAX_JOBS": "2"})
        archive = pack.pack("canary", s).archive
        with pytest.raises(install.InstallError, match="another ipex-aot install into .* is running"):
            install.install(archive, s, app=app, generation="12.55.8")
    finally:
        holder.kill()
        holder.wait()
    assert lib.read_bytes() == b"MZ old"


#: What the build command makes here: the canary's wheel around a DLL built beforehand (the MinGW DLLs above;
#: no compiler runs under this Python). Picked by the devlist variable, as canary_build.py picks its kernels.
_WHEEL_FROM_PREBUILT = (
    "import json, os, sys, zipfile; from pathlib import Path; "
    "dll = json.loads(os.environ['CANARY_PREBUILT'])[os.environ['USE_AOT_DEVLIST']]; "
    "out = Path(sys.argv[2]) / 'ipex_aot_canary-0.1.0-py3-none-win_amd64.whl'; "
    "z = zipfile.ZipFile(out, 'w'); z.write(Path(sys.argv[1]) / '__init__.py', 'ipex_aot_canary/__init__.py'); "
    "z.write(dll, 'ipex_aot_canary/lib/canary-gpu.dll'); z.close(); print('made', out.name)")


def test_build_records_and_cpu_conformance_of_a_windows_build(tmp_path, dlls, settings):
    """`build`'s own per-generation step (command, wheel, artifact, build.json, skip when unchanged) for
    windows-x86_64 under this Python, then `conformance --device cpu` on what it recorded: the static half
    scans each DLL; under Windows the canary's CPU path runs from each generation's installed wheel
    (ctypes, a fresh process, no torch), under Linux the device half is left to a Windows machine."""
    from dataclasses import replace

    from ipex_aot import build
    from ipex_aot.conformance.runner import Options, run_conformance
    from ipex_aot.recipe import Target, load_recipe

    dist = tmp_path / "dist"
    s = Settings.from_env({"IPEX_AOT_DIST": str(dist), "IPEX_AOT_CACHE": str(settings.cache_dir), "MAX_JOBS": "2"})
    recipe = replace(load_recipe(REPO / "recipes" / "canary.yaml"),
                     build_command=("{python}", "-c", _WHEEL_FROM_PREBUILT, str(CANARY / "ipex_aot_canary"),
                                    "{wheel_dir}"))
    by_device = {device: str(dlls[gen]) for device, gen in DEVICES.items()}
    source = build.SourceInfo(CANARY, "path:canary", "", "", build.tree_hash(CANARY))
    env = dict(os.environ, CANARY_PREBUILT=json.dumps(by_device))
    ctx = build.BuildContext(recipe, s, source, {"compiler": "x86_64-w64-mingw32-gcc (on Linux)"}, env,
                             "windows-x86_64")
    for device, gen in DEVICES.items():
        result = build.build_one(ctx, Target(gen, device))
        assert result.status == "built", result.error
        record = build.read_build_record(dist / "canary" / gen / "build.json")  # the one reader checks sha and size
        assert record["platform"] == "windows-x86_64" and record["devlist"] == device
        assert record["artifact"]["install_path"] == INSTALL_PATH
        assert (dist / "canary" / gen / "canary-gpu.dll").read_bytes() == dlls[gen].read_bytes()
        assert (dist / "canary" / record["wheel"]).is_file()
        assert build.build_one(ctx, Target(gen, device)).status == "skipped"  # unchanged inputs, intact library
    assert sorted(build.built_generations(dist, "canary")) == ["12.0.0", "12.55.8"]

    reports = run_conformance("canary", None, "cpu", s, Options(timeout_s=300))
    assert [r["generation"] for r in reports] == ["12.0.0", "12.55.8"]
    for r in reports:
        assert r["static"]["ok"], r["static"]
        assert (dist / "canary" / "conformance" / f"{r['generation']}-cpu.json").is_file()
        # Never a pass: the torch workloads did not run (no torch for Windows here; Linux cannot load the DLL).
        assert r["verdict"] == "skipped", r["reasons"]
        if WINDOWS:
            assert r["reasons"][0].startswith("torch is not importable"), r["reasons"]
            assert r["package"]["library_is_build"], r["package"]
            assert r["package"]["check"]["pass"], r["package"]["check"]
        else:
            assert r["reasons"] == ["the build is for windows-x86_64, this machine is linux-x86_64: "
                                    "the device half runs on a windows-x86_64 machine"]
