"""ocloc discovery, its version, and running it: against the real ocloc of this machine."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ipex_aot import errors
from ipex_aot.devices import binary_info
from ipex_aot.ocloc import Libocloc, find_ocloc, parse_acronyms
from ipex_aot.settings import Settings

KERNEL = "kernel void k(global int *a) { a[0] = 1; }\n"


def _settings(tmp_path: Path, **env: str) -> Settings:
    base = {"HOME": str(tmp_path / "home"), "IPEX_AOT_CACHE": str(tmp_path / "cache"),
            "IPEX_AOT_DIST": str(tmp_path / "dist")}
    base.update(env)
    return Settings.from_env(base)


def _wrapper(tmp_path: Path, target: str) -> Path:
    """A bash script that execs the real ocloc: no libocloc beside it, so only the subprocess path fits."""
    script = tmp_path / "bin" / "my-ocloc"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/bash\nexec {target} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture(scope="module")
def ocloc():
    return find_ocloc(Settings.from_env({"HOME": os.environ.get("HOME", "/root")}))


def _query_by_hand(path: str, what: str, cwd: Path) -> str:
    subprocess.run([path, "query", what], cwd=cwd, check=True, capture_output=True)
    return (cwd / what).read_text().replace("\0", "").strip()


def test_found_on_path_with_the_version_ocloc_writes(ocloc, tmp_path):
    assert Path(ocloc.path).name in ("ocloc", "ocloc.exe")
    assert ocloc.found_by == "PATH"
    assert ocloc.version == _query_by_hand(ocloc.path, "OCL_DRIVER_VERSION", tmp_path)
    assert ocloc.neo_revision == _query_by_hand(ocloc.path, "NEO_REVISION", tmp_path)
    assert re.fullmatch(r"\d+\.\d+\.\d+", ocloc.version)


def test_version_query_leaves_no_files_in_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    find_ocloc(_settings(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == []


def test_the_library_beside_ocloc_is_used_and_agrees(ocloc):
    assert ocloc.library, "the Debian ocloc loads libocloc.so: the in-process path must be found"
    lib = Libocloc(ocloc.library)
    r = lib.invoke(["query", "OCL_DRIVER_VERSION"])
    assert r.rc == 0
    assert r.outputs["OCL_DRIVER_VERSION"].replace(b"\0", b"").decode().strip() == ocloc.version


def test_wrapper_script_in_OCLOC_is_taken_first_and_run_as_a_subprocess(ocloc, tmp_path):
    script = _wrapper(tmp_path, ocloc.path)
    found = find_ocloc(_settings(tmp_path, OCLOC=str(script)))
    assert found.path == str(script)
    assert found.found_by == "OCLOC"
    assert found.library is None  # a script loads no libocloc: never call a library behind its back
    assert found.version == ocloc.version
    assert found.ids("acm-g10") == ocloc.ids("acm-g10")


def test_OCLOC_that_is_not_executable_is_a_toolchain_error(tmp_path):
    bad = tmp_path / "not-ocloc"
    bad.write_text("just text\n")
    with pytest.raises(errors.ToolchainError, match="OCLOC="):
        find_ocloc(_settings(tmp_path, OCLOC=str(bad)))


def test_OCLOC_that_is_not_ocloc_is_a_toolchain_error(tmp_path):
    with pytest.raises(errors.ToolchainError, match="does not answer"):
        find_ocloc(_settings(tmp_path, OCLOC="/bin/false"))


def test_missing_ocloc_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(errors.ToolchainError) as e:
        find_ocloc(_settings(tmp_path, ONEAPI_ROOT=str(tmp_path / "oneapi")))
    msg = e.value.message
    assert "intel-opencl-icd" in msg and "intel-ocloc" in msg and "oneAPI" in msg
    assert "\n" not in msg


def test_missing_ocloc_from_the_cli_is_one_line_and_exit_4(tmp_path):
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path), "IPEX_AOT_CACHE": str(tmp_path / "c"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "devices", "--json"], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == errors.ToolchainError.exit_code
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ocloc not found")


def test_oneapi_folder_is_searched_when_path_has_none(ocloc, tmp_path, monkeypatch):
    bindir = tmp_path / "oneapi" / "compiler" / "latest" / "bin"
    bindir.mkdir(parents=True)
    _wrapper(tmp_path, ocloc.path).rename(bindir / "ocloc")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = find_ocloc(_settings(tmp_path, ONEAPI_ROOT=str(tmp_path / "oneapi")))
    assert found.path == str(bindir / "ocloc")
    assert found.found_by == "oneAPI"


def test_ids_for_a_product_a_release_and_an_unknown_name(ocloc):
    assert ocloc.ids("acm-g10") == ["12.55.8"]
    release = ocloc.ids("xe-hpg")
    assert "12.55.8" in release and len(release) > 1
    assert ocloc.ids("no-such-gpu") == []


def test_acronyms_are_parsed_from_ocloc_help(ocloc):
    names = ocloc.acronyms()
    assert {"acm-g10", "adl-s", "xe-hpg"} <= set(names)
    # Both help texts list the same names: the parser does not depend on one wording.
    compile_help = ocloc.run(["compile", "--help"])
    assert set(parse_acronyms(compile_help.stdout + compile_help.stderr)) >= set(names)
    for n in names:
        assert re.fullmatch(r"[a-z][a-z0-9_+-]*", n)


def test_compile_one_device_gives_a_bin_and_several_a_fat_archive(ocloc, tmp_path):
    src = tmp_path / "k.cl"
    src.write_text(KERNEL)
    single = ocloc.compile(src, "acm-g10", tmp_path / "one", extra=["--format", "zebin"])
    assert single.suffix == ".bin" and single.parent == tmp_path / "one"
    info = binary_info(single.read_bytes())
    assert info.format == "zebin"
    fat = ocloc.compile(src, "acm-g10,adl-s", tmp_path / "fat")
    assert fat.suffix == ".ar" and fat.read_bytes().startswith(b"!<arch>\n")
    # Its entries, listed by binutils' ar, are one per generation that `ocloc ids` prints for the two names.
    entries = subprocess.run(["ar", "t", str(fat)], capture_output=True, text=True, check=True).stdout.split()
    wanted = []
    for name in ("acm-g10", "adl-s"):
        out = subprocess.run([ocloc.path, "ids", name], capture_output=True, text=True, check=True).stdout
        wanted += [f"64.{line.strip()}" for line in out.splitlines() if re.fullmatch(r"\d+\.\d+\.\d+", line.strip())]
    assert len(wanted) >= 2 and sorted(e for e in entries if e.startswith("64.")) == sorted(wanted)
    assert sorted(p.name for p in (tmp_path / "fat").iterdir()) == [fat.name]  # nothing else left behind


def test_compile_for_an_unknown_device_is_a_toolchain_error(ocloc, tmp_path):
    src = tmp_path / "k.cl"
    src.write_text(KERNEL)
    with pytest.raises(errors.ToolchainError, match="0x1234"):
        ocloc.compile(src, "0x1234", tmp_path / "out")


def test_ocloc_command_prints_path_and_version(ocloc, tmp_path):
    env = dict(os.environ, IPEX_AOT_CACHE=str(tmp_path / "c"))
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "ocloc"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0
    assert ocloc.path in proc.stdout and ocloc.version in proc.stdout
