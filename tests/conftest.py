"""Each lane names the tools it needs and stops with one line when one is missing (no silent skips).

The Linux lane runs everything with the real tools; the Windows lane (``nox -s
tests-windows``: CPython for Windows under Wine) runs the files listed in
``tools/winlane.py`` with 7-Zip's Windows command line and the artifacts the
Linux side built for it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import corpus as _corpus  # noqa: E402
import fakegpu  # noqa: E402
import libfixtures  # noqa: E402

WINDOWS = sys.platform == "win32"
LINUX_TOOLS = ("ocloc", "gcc", "objdump", "git", "x86_64-w64-mingw32-gcc",
               # the corpus's independent answers (tests/data/corpus/expected.sh)
               "readelf", "ar", "zstd", "gawk")
WINDOWS_TOOLS = ("7za",)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("IPEX_AOT_TEST_NO_TOOL_CHECK") == "1":  # tests of this check itself
        return
    tools = WINDOWS_TOOLS if WINDOWS else LINUX_TOOLS
    missing = [t for t in tools if shutil.which(t) is None]
    if not (WINDOWS or shutil.which("7zz") or shutil.which("7z")):
        missing.append("7zz or 7z")
    if not WINDOWS:
        # The device database is tested with both oclocs: PATH's (bookworm 22.43) and Debian sid's.
        from libfixtures import MODERN_OCLOC_DEST

        from ipex_aot.ocloc_fetch import installed

        if installed(MODERN_OCLOC_DEST) is None:
            missing.append(f"the modern ocloc in {MODERN_OCLOC_DEST} (ipex-aot ocloc fetch)")
        if not any(Path(d, "libOpenCL.so.1").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")):
            missing.append("libOpenCL.so.1 (ocl-icd-libopencl1)")
    if missing:
        lane = "Windows" if WINDOWS else "Linux"
        pytest.exit(f"error: the {lane} test lane needs {', '.join(missing)}; run ./setup.sh", returncode=4)


@pytest.fixture(scope="session")
def fake_icd(tmp_path_factory) -> Path:
    """The fake OpenCL ICD (tests/fakegpu.py), built once per session with gcc."""
    return fakegpu.build_fake_icd(tmp_path_factory.mktemp("fake-icd"))


@pytest.fixture(scope="session")
def fake_level_zero(tmp_path_factory) -> Path:
    """The fake Level Zero loader (tests/fakegpu.py), built once per session with gcc."""
    return fakegpu.build_fake_level_zero(tmp_path_factory.mktemp("fake-ze"))


@pytest.fixture
def fake_gpus(fake_icd, tmp_path, monkeypatch):
    """``fake_gpus(*gpus, icd=True)``: register the fake ICD reporting GPUS (fakegpu.gpu_spec tuples) in this
    process's environment, so child processes (the driver probe, the CLI) see it; ``icd=False`` registers none."""

    def apply(*gpus: tuple, icd: bool = True) -> dict[str, str]:
        env = fakegpu.icd_env(fake_icd if icd else None, fakegpu.gpu_spec(*gpus), vendors_dir=tmp_path / "vendors")
        for key in ("OCL_ICD_VENDORS", "OCL_ICD_FILENAMES", "FAKE_GPUS"):
            if key in env:
                monkeypatch.setenv(key, env[key])
            else:
                monkeypatch.delenv(key, raising=False)
        return env

    return apply


@pytest.fixture(scope="session")
def corpus() -> dict[str, Path]:
    """Library id -> path of each real SYCL library of tests/data/corpus/corpus.json, fetched from PyPI once.

    CI reaches PyPI; a machine that cannot fails here with pip's message (never a skip).
    """
    try:
        return _corpus.fetch()
    except RuntimeError as e:
        pytest.fail(f"the real-library corpus could not be fetched into {_corpus.cache_dir()}: {e}")


# --- the device-database cache and the install fixtures, shared by several test files ------------

@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A device-database cache filled by a real sweep of TEST_PCI_IDS, stored where the
    full database would be, so build (and the CLI) find it instead of sweeping everything."""
    from ipex_aot.devices import build_database, cache_path, pci_ids_file
    from ipex_aot.fsutil import write_json
    from ipex_aot.ocloc import find_ocloc
    from ipex_aot.settings import Settings

    # A fixed folder under the session's base temp, where the CLI runs of several test files find it.
    cache = tmp_path_factory.getbasetemp() / "ipex-aot-build-cache"
    settings = Settings.from_env({"IPEX_AOT_CACHE": str(cache), "MAX_JOBS": "2"})
    ocloc = find_ocloc(settings)
    path = cache_path(settings, ocloc, pci_ids_file())
    if not path.is_file():
        db = build_database(ocloc, ids=libfixtures.TEST_PCI_IDS, jobs=2)
        assert set(libfixtures.GENERATIONS) <= set(db.generations())
        write_json(path, db.to_json())
    return cache


@pytest.fixture(scope="module")
def settings(tmp_path_factory):  # noqa: ANN201 - ipex_aot.settings.Settings, imported late
    """The install tests' settings: the session's ocloc-signature cache and a dist folder per module."""
    from ipex_aot.settings import Settings

    return Settings.from_env({"IPEX_AOT_CACHE": str(libfixtures.shared_cache(tmp_path_factory)),
                              "IPEX_AOT_DIST": str(tmp_path_factory.mktemp("dist"))})


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """An archive with two generation folders, like pack writes it (built here with py7zr)."""
    tmp = tmp_path_factory.mktemp("release")
    g10, pvc = libfixtures.ocloc_ids("acm-g10")[0], libfixtures.ocloc_ids("pvc")[0]
    libs = {g10: libfixtures.build_elf_library(tmp / g10 / "libgpu.so", [libfixtures.ocloc_image("acm-g10")]),
            pvc: libfixtures.build_elf_library(tmp / pvc / "libgpu.so", [libfixtures.ocloc_image("pvc")])}
    archive = libfixtures.make_archive(tmp / "r.7z", libs, pci_ids={g10: ["56A0"], pvc: ["0BD5"]})
    return archive, libs


@pytest.fixture(scope="module")
def db(settings):
    """A real device database for two PCI IDs, swept with the installed ocloc."""
    from ipex_aot import devices
    from ipex_aot.ocloc import find_ocloc

    ocloc = find_ocloc(settings)
    result = devices.sweep(ocloc, [0x56A0, 0x0BD5], jobs=2)
    rows = devices.build_rows(result, devices.read_pci_names(devices.pci_ids_file()))
    return devices.DeviceDatabase(ocloc.to_json(), rows, result.names, result.groups)
