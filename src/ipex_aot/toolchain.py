"""The build toolchain: oneAPI activation and the preflight check.

oneAPI is activated the way its documentation says (``setvars.sh`` sourced in
bash; ``setvars.bat`` or the compiler's ``env\\vars.bat`` called by cmd), and
the environment those scripts leave behind is captured (``env -0`` / ``set``)
so the build runs in exactly that environment without a wrapper shell.

The preflight runs before any source is fetched: it names each missing piece
(oneAPI, compiler, ocloc, torch, Python) and reports the versions that go into
``build.json``'s ``toolchain`` field.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ipex_aot import log, platforms
from ipex_aot.errors import ToolchainError
from ipex_aot.ocloc import find_ocloc
from ipex_aot.platforms import windows as windows_platform
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings, child_env

if TYPE_CHECKING:
    from ipex_aot.recipe import Recipe

INSTALL_HINT = ("install the Intel oneAPI Base Toolkit {version} (https://www.intel.com/content/www/us/en/developer/"
                "tools/oneapi/base-toolkit-download.html; on CI the workflow installs it) or set ONEAPI_ROOT to its folder")
_VERSION_RE = re.compile(r"\b(\d{4}\.\d+(?:\.\d+)?)(?:\.\d{8})?\b")
TIMEOUT = 300


# --------------------------------------------------------------------------- finding oneAPI


def _platform(windows: bool | None) -> ModuleType:
    """The host's platform module, or the one WINDOWS names (tests look up the other platform's folders)."""
    return platforms.host() if windows is None else platforms.get("windows" if windows else "linux")


def oneapi_roots(settings: Settings, windows: bool | None = None) -> list[Path]:
    """Where oneAPI may be: ONEAPI_ROOT first, then the installer's standard folders."""
    roots = [settings.oneapi_root] if settings.oneapi_root else []
    return roots + _platform(windows).oneapi_roots()


def _version_matches(found: str, wanted: str) -> bool:
    """2025.0 (a folder) or 2025.0.1 (a compiler) matches the wanted 2025.0.1 by its leading parts."""
    a, b = found.split("."), wanted.split(".")
    n = min(len(a), len(b))
    return n >= 2 and a[:n] == b[:n]


def find_activation(settings: Settings, version: str, *, windows: bool | None = None) -> Path | None:
    """The script that activates oneAPI VERSION: versioned ``oneapi-vars``, the compiler's
    ``env/vars``, then the root ``setvars`` (whose version is checked later, by the compiler)."""
    ext = _platform(windows).activation_suffix
    for root in oneapi_roots(settings, windows):
        if not root.is_dir():
            continue
        candidates: list[Path] = []
        # 2024+ unified layout: <root>/2025.0/oneapi-vars.sh; component layout: <root>/compiler/2025.0/env/vars.sh
        for folder in sorted(root.glob("20*"), reverse=True):
            if _version_matches(folder.name, version):
                candidates.append(folder / f"oneapi-vars{ext}")
        for folder in sorted((root / "compiler").glob("20*"), reverse=True):
            if _version_matches(folder.name, version):
                candidates.append(folder / "env" / f"vars{ext}")
        candidates.append(root / f"setvars{ext}")
        for c in candidates:
            if c.is_file():
                return c
    return None


# --------------------------------------------------------------------------- capturing the environment


def parse_set_output(text: str) -> dict[str, str]:
    """cmd's ``set`` output (see :func:`ipex_aot.platforms.windows.parse_set_output`)."""
    return windows_platform.parse_set_output(text)


def activate(script: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment after running an activation script (setvars/oneapi-vars/vars)."""
    plat = platforms.get("windows" if script.suffix.lower() == ".bat" else "linux")
    return plat.capture_activation(script, plat.activation_args(script), base, TIMEOUT)


def _base_env(base: Mapping[str, str] | None) -> dict[str, str]:
    return child_env(base=base)


def prepare_environment(recipe: Recipe, settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the recipe's build runs in: the caller's, with oneAPI activated when the recipe needs it."""
    check_platform(recipe)
    env = _base_env(base)
    version = recipe.toolchain.oneapi
    if not version:
        return env
    script = find_activation(settings, version)
    if script is None:
        raise ToolchainError(missing_oneapi_message(recipe, settings))
    log.info(f"oneAPI {version}: activating {script}")
    return activate(script, env)


def check_platform(recipe: Recipe) -> None:
    """ToolchainError when this host is not one of the recipe's platforms: asked before any tool is looked for."""
    plat = platforms.host_platform()
    if plat not in recipe.toolchain.platforms:
        raise ToolchainError(f"{recipe.name} builds for {', '.join(recipe.toolchain.platforms)}; this host is {plat}: "
                             "build it on one of those (or add this platform to toolchain.platforms)")


def missing_oneapi_message(recipe: Recipe, settings: Settings) -> str:
    version = recipe.toolchain.oneapi or "?"
    ext = _platform(None).activation_suffix
    short = ".".join(version.split(".")[:2])
    # The files find_activation looks for, by name, so that a user can see why their install was not found.
    looked = ", ".join(str(p) for r in oneapi_roots(settings) for p in
                       (r / short / f"oneapi-vars{ext}", r / "compiler" / short / "env" / f"vars{ext}", r / f"setvars{ext}"))
    return (f"oneAPI {version} not found (looked for {looked}) for {recipe.name}: "
            + INSTALL_HINT.format(version=version))


# --------------------------------------------------------------------------- preflight


def _run_version(cmd: Sequence[str], env: Mapping[str, str], what: str, hint: str) -> str:
    exe = shutil.which(cmd[0], path=env.get("PATH") or env.get("Path"))
    if not exe:
        raise ToolchainError(f"{what}: {cmd[0]} not found on PATH; {hint}")
    try:
        proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, env=dict(env), timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"{what}: {exe} did not run: {e}; {hint}") from None
    out = (proc.stdout or proc.stderr).strip()
    if proc.returncode != 0 or not out:
        raise ToolchainError(f"{what}: `{' '.join(cmd)}` failed (exit {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[:200]}; {hint}")
    return out.splitlines()[0].strip()


def compiler_command(compiler: str, windows: bool | None = None) -> str:
    """icx names the oneAPI DPC++ compiler: icx on Windows (clang-cl mode), its icpx driver on Linux."""
    return _platform(windows).compiler(compiler)


def compiler_version(line: str) -> str | None:
    """The oneAPI version in ``icpx --version``'s first line, e.g. 2025.0.1."""
    m = _VERSION_RE.search(line)
    return m.group(1) if m else None


def torch_base(version: str) -> str:
    return version.split("+", 1)[0]


def check_torch(found: str, wanted: str) -> bool:
    """2.1.0.post3+cxx11.abi satisfies 2.1.0.post3; a wanted local part must match too."""
    return found == wanted if "+" in wanted else torch_base(found) == wanted


def preflight(recipe: Recipe, settings: Settings, env: Mapping[str, str] | None = None,
              python: str | None = None) -> dict[str, str]:
    """Check the toolchain before any work; the versions for build.json's ``toolchain`` field.

    ENV is the activated environment (default: :func:`prepare_environment`),
    PYTHON the build's interpreter (default: this one).
    """

    spec = recipe.toolchain
    python = python or sys.executable
    check_platform(recipe)
    if env is None:
        env = prepare_environment(recipe, settings)
    versions: dict[str, str] = {}
    if spec.oneapi:
        versions["oneapi"] = spec.oneapi
    hint = (f"it comes with oneAPI {spec.oneapi}; check ONEAPI_ROOT" if spec.oneapi
            else "install it (Debian: apt-get install gcc)")
    command = compiler_command(spec.compiler)
    line = _run_version([command, "--version"], env, "compiler", hint)
    versions["compiler"] = line
    if spec.oneapi:
        found = compiler_version(line)
        if not found or not _version_matches(found, spec.oneapi):
            raise ToolchainError(f"compiler: {command} is {found or repr(line)} but {recipe.name} needs oneAPI "
                                 f"{spec.oneapi}; install that version or point ONEAPI_ROOT at it")
    ocloc = find_ocloc(settings)
    versions["ocloc"] = ocloc.version
    try:
        proc = subprocess.run([python, "-c", "import sys, platform; print(platform.python_version())"],
                              capture_output=True, text=True, env=dict(env), timeout=60)
    except OSError as e:
        raise ToolchainError(f"python: {python} does not run: {e}") from None
    py = proc.stdout.strip()
    if proc.returncode != 0 or not py:
        raise ToolchainError(f"python: {python} does not run: {proc.stderr.strip()[:200]}")
    if ".".join(py.split(".")[:2]) not in spec.python:
        raise ToolchainError(f"python: the build interpreter is {py} but {recipe.name} builds for Python "
                             f"{', '.join(spec.python)}; run with one of those")
    versions["python"] = py
    if spec.torch:
        code = "import torch; print(torch.__version__)"
        try:
            proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=dict(env), timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolchainError(f"torch: could not ask {python} for torch: {e}") from None
        found = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
        if not found:
            raise ToolchainError(f"torch: {python} has no torch; {recipe.name} needs torch {spec.torch}: install it "
                                 f"(pip install torch=={spec.torch}) into that interpreter")
        if not check_torch(found, spec.torch):
            raise ToolchainError(f"torch: {python} has torch {found} but {recipe.name} needs {spec.torch}; "
                                 f"install torch=={spec.torch} there")
        versions["torch"] = found
    return versions


# --------------------------------------------------------------------------- CLI


def _lines(versions: Mapping[str, str]) -> Iterable[str]:
    for key in ("oneapi", "compiler", "ocloc", "python", "torch"):
        if key in versions:
            yield f"{key:9} {versions[key]}"


def _cmd_preflight(args: argparse.Namespace, settings: Settings) -> int:
    recipe = load_recipe(args.recipe)
    with log.step(f"preflight {recipe.name}"):
        versions = preflight(recipe, settings, python=args.python)
    if args.json:
        print(json.dumps(versions, indent=2))
    else:
        for line in _lines(versions):
            log.info(line)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("preflight", help="check a recipe's toolchain (oneAPI, compiler, ocloc, python, torch)",
                              description="Stop before hours of work when a tool the recipe needs is missing.")
    p.add_argument("recipe", help="recipe file or name, e.g. recipes/canary.yaml or canary")
    p.add_argument("--python", help="the build interpreter (default: this one)")
    p.add_argument("--json", action="store_true", help="versions as JSON on stdout")
    p.set_defaults(func=_cmd_preflight)
