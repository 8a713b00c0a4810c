"""oneAPI activation (a real setvars.sh run by bash), the Windows `set` parser, and the preflight."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from ipex_aot.errors import ToolchainError
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings
from ipex_aot.toolchain import (
    check_torch,
    compiler_version,
    find_activation,
    parse_set_output,
    preflight,
    prepare_environment,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "toolchain"


def write_recipe(tmp_path: Path, *, compiler: str = "icx", oneapi: str | None = "2025.0.1", torch: str = "",
                 python: str = "3.11", platforms: str = "[linux-x86_64]") -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir(exist_ok=True)
    path = folder / "tc.yaml"
    oneapi_line = f"  oneapi: {oneapi}\n" if oneapi else ""
    path.write_text(f"""package: demo
version: 1.0.0
source:
  path: src
toolchain:
{oneapi_line}  compiler: {compiler}
  torch: "{torch}"
  python: ["{python}"]
  platforms: {platforms}
devlist_variable: USE_AOT_DEVLIST
targets:
  generations: ["12.55.8"]
""")
    return path


def fake_oneapi(root: Path, banner: str | None = None, *, layout: str = "setvars") -> Path:
    """A oneAPI folder whose activation script is a real bash script; its icpx prints a recorded banner."""
    bin_dir = root / "compiler" / "2025.0" / "bin"
    bin_dir.mkdir(parents=True)
    banner_file = root / "banner.txt"
    banner_file.write_text(banner or (DATA / "icpx-version-2025.0.1.txt").read_text())
    icpx = bin_dir / "icpx"
    icpx.write_text(f'#!/bin/sh\ncat "{banner_file}"\n')
    icpx.chmod(0o755)
    script = {"setvars": root / "setvars.sh", "unified": root / "2025.0" / "oneapi-vars.sh",
              "component": root / "compiler" / "2025.0" / "env" / "vars.sh"}[layout]
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"""#!/bin/bash
# Like oneAPI's setvars.sh: refuses a second run in one shell unless --force.
if [ -n "$SETVARS_COMPLETED" ] && [ "$1" != "--force" ]; then
  echo ":: WARNING: setvars.sh has already been run. Skipping re-execution."
  return 3
fi
export ONEAPI_ROOT="{root}"
export CMPLR_ROOT="{root}/compiler/2025.0"
export PATH="{bin_dir}:$PATH"
export MULTI_LINE=$'first line\\nsecond=line'
export SETVARS_COMPLETED=1
echo ":: initializing oneAPI environment ..."
echo ":: oneAPI environment initialized ::"
""")
    return script


def settings_with(root: Path | None) -> Settings:
    env = {"ONEAPI_ROOT": str(root)} if root else {}
    return Settings.from_env(env)


def test_windows_set_output_parser():
    text = (DATA / "set-windows-oneapi-2025.0.1.txt").read_text()
    env = parse_set_output(":: initializing oneAPI environment...\r\n=C:=C:\\work\r\n" + text)
    assert env["ONEAPI_ROOT"] == "C:\\Program Files (x86)\\Intel\\oneAPI\\"
    assert env["Path"].split(";")[0].endswith("compiler\\2025.0\\bin")
    assert env["WEIRD_VALUE"] == "a=b=c" and env["PROMPT"] == "$P$G"
    assert env["SETVARS_COMPLETED"] == "1"
    assert "=C:" not in env and not any(k.startswith(":") for k in env)
    assert len(env) == len([ln for ln in text.splitlines() if ln])


def test_setvars_captured_from_real_bash(tmp_path):
    root = tmp_path / "oneapi"
    fake_oneapi(root)
    recipe = load_recipe(write_recipe(tmp_path))
    base = {"PATH": os.environ["PATH"], "KEEP_ME": "yes", "SETVARS_COMPLETED": "1"}  # as in a CI shell that ran it
    env = prepare_environment(recipe, settings_with(root), base)
    assert env["KEEP_ME"] == "yes"
    assert env["PATH"].split(":")[0] == str(root / "compiler" / "2025.0" / "bin")
    assert env["MULTI_LINE"] == "first line\nsecond=line"
    assert env["CMPLR_ROOT"] == str(root / "compiler" / "2025.0")
    assert not any("initializ" in k or "initializ" in v for k, v in env.items() if k != "MULTI_LINE")
    assert "SHLVL" not in env and "_" not in env


def test_failing_activation_is_one_line(tmp_path):
    root = tmp_path / "oneapi"
    script = fake_oneapi(root)
    script.write_text("echo 'cannot find the compiler component' >&2\nreturn 2\n")
    recipe = load_recipe(write_recipe(tmp_path))
    with pytest.raises(ToolchainError) as err:
        prepare_environment(recipe, settings_with(root), {"PATH": os.environ["PATH"]})
    msg = err.value.message
    assert str(script) in msg and "exit 2" in msg and "cannot find the compiler component" in msg and "\n" not in msg


@pytest.mark.parametrize("layout", ["setvars", "unified", "component"])
def test_find_activation_layouts(tmp_path, layout):
    root = tmp_path / "oneapi"
    script = fake_oneapi(root, layout=layout)
    assert find_activation(settings_with(root), "2025.0.1", windows=False) == script
    if layout != "setvars":
        # A folder for another version is not taken for this one.
        assert find_activation(settings_with(root), "2024.2.1", windows=False) is None
    assert find_activation(settings_with(tmp_path / "nowhere"), "2025.0.1", windows=False) in (None, *[
        p for p in (Path("/opt/intel/oneapi/setvars.sh"),) if p.is_file()])


def test_preflight_with_activated_oneapi(tmp_path):
    root = tmp_path / "oneapi"
    fake_oneapi(root)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    recipe = load_recipe(write_recipe(tmp_path, python=py))
    versions = preflight(recipe, settings_with(root))
    assert versions["oneapi"] == "2025.0.1"
    assert versions["compiler"].startswith("Intel(R) oneAPI DPC++/C++ Compiler 2025.0.1")
    assert versions["python"] == platform.python_version()
    ocloc_version = subprocess.run(["ocloc", "query", "OCL_DRIVER_VERSION"], capture_output=True, text=True,
                                   cwd=tmp_path).returncode == 0
    assert ocloc_version and versions["ocloc"] == (tmp_path / "OCL_DRIVER_VERSION").read_text().strip("\x00 \n")


def test_preflight_rejects_another_oneapi_version(tmp_path):
    root = tmp_path / "oneapi"
    fake_oneapi(root, "Intel(R) oneAPI DPC++/C++ Compiler 2024.2.1 (2024.2.1.20240711)\n")
    recipe = load_recipe(write_recipe(tmp_path, python=f"{sys.version_info.major}.{sys.version_info.minor}"))
    with pytest.raises(ToolchainError, match=r"compiler: icpx is 2024\.2\.1 but tc needs oneAPI 2025\.0\.1"):
        preflight(recipe, settings_with(root))


def test_missing_oneapi_stops_before_any_work(tmp_path):
    if Path("/opt/intel/oneapi").exists():
        pytest.skip("this machine has oneAPI")
    empty = tmp_path / "no-oneapi"
    empty.mkdir()
    env = dict(os.environ, ONEAPI_ROOT=str(empty), IPEX_AOT_DIST=str(tmp_path / "dist"),
               IPEX_AOT_CACHE=str(tmp_path / "cache"))
    # The shipped recipe is Windows-only, which this Linux host is told first (issue 12, stumble 2): a Linux copy.
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "ipex-2.1.40-xpu-2025.0.1.yaml"
    recipe.write_text((REPO / "recipes" / recipe.name).read_text().replace("platforms: [windows-x86_64]",
                                                                         "platforms: [linux-x86_64]"))
    run = subprocess.run([sys.executable, "-m", "ipex_aot", "preflight", str(recipe)],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert run.returncode == ToolchainError.exit_code
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "oneAPI 2025.0.1 not found" in lines[0]
    assert "install the Intel oneAPI Base Toolkit" in lines[0] and "ONEAPI_ROOT" in lines[0]
    assert not (tmp_path / "dist").exists() and not (tmp_path / "cache").exists()


def test_canary_preflight_is_gcc_ocloc_python():
    versions = preflight(load_recipe(REPO / "recipes" / "canary.yaml"), Settings.from_env({}))
    assert set(versions) == {"compiler", "ocloc", "python"}
    assert "gcc" in versions["compiler"] and versions["python"] == platform.python_version()


def test_torch_and_python_checks_use_the_build_interpreter(tmp_path):
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    have = importlib.metadata.version("torch")
    base = have.split("+")[0]
    ok = load_recipe(write_recipe(tmp_path, compiler="gcc", oneapi=None, torch=base, python=py))
    assert preflight(ok, Settings.from_env({}))["torch"] == have
    wrong = load_recipe(write_recipe(tmp_path, compiler="gcc", oneapi=None, torch="2.1.0.post3", python=py))
    with pytest.raises(ToolchainError, match=rf"has torch {have.replace('+', '.')} but tc needs 2\.1\.0\.post3"):
        preflight(wrong, Settings.from_env({}))
    old_python = load_recipe(write_recipe(tmp_path, compiler="gcc", oneapi=None, python="3.9"))
    with pytest.raises(ToolchainError, match=r"builds for Python 3\.9"):
        preflight(old_python, Settings.from_env({}))
    windows_only = load_recipe(write_recipe(tmp_path, compiler="gcc", oneapi=None, python=py,
                                            platforms="[windows-x86_64]"))
    with pytest.raises(ToolchainError, match=r"builds for windows-x86_64; this host is linux-x86_64"):
        preflight(windows_only, Settings.from_env({}))


def test_version_rules():
    assert compiler_version((DATA / "icpx-version-2025.0.1.txt").read_text().splitlines()[0]) == "2025.0.1"
    assert check_torch("2.1.0.post3+cxx11.abi", "2.1.0.post3")
    assert check_torch("2.1.0a0+git7bcf7da", "2.1.0a0")
    assert not check_torch("2.1.0.post2+cxx11.abi", "2.1.0.post3")
    assert not check_torch("2.8.0+cpu", "2.8.0+xpu") and check_torch("2.8.0+xpu", "2.8.0+xpu")
