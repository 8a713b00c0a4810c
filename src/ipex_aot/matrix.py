"""The GitHub Actions matrix and the cibuildwheel settings, rendered from a recipe.

The recipe is the single source of truth: ``ipex-aot matrix RECIPE`` prints
``{"include": [...]}``, one entry per generation (and platform), each saying
which runner builds it and which nox session with which arguments does the
work, so the workflow never repeats a fact of the recipe. Under Actions the
same JSON is appended to ``$GITHUB_OUTPUT`` as ``matrix=…`` with the release
tag and archive name beside it.

cibuildwheel is configured from the same entries (``CIBW_BUILD``,
``CIBW_ENVIRONMENT`` with the devlist variable and the recipe's build
settings, a static test command that scans the installed GPU library), and
the selectors are checked with ``cibuildwheel --print-build-identifiers``,
which runs offline on any OS.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipex_aot import log
from ipex_aot.devices import load_database
from ipex_aot.errors import RecipeError, ToolchainError, UsageError
from ipex_aot.generation import generation_order
from ipex_aot.recipe import Recipe, Target, load_recipe, plan_targets
from ipex_aot.settings import Settings, child_env

if TYPE_CHECKING:
    from ipex_aot.devices import DeviceDatabase

#: GitHub-hosted runner per platform, used when the recipe pins no labels.
HOSTED = {"windows-x86_64": ["windows-2022"], "linux-x86_64": ["ubuntu-22.04"]}
#: The OS label a self-hosted runner of each platform carries (GitHub adds it to every self-hosted runner).
RUNNER_OS_LABEL = {"windows-x86_64": "Windows", "linux-x86_64": "Linux"}
#: cibuildwheel's platform name and wheel-tag suffix per recipe platform.
CIBW_PLATFORM = {"windows-x86_64": ("windows", "win_amd64", "AMD64"),
                 "linux-x86_64": ("linux", "manylinux_x86_64", "x86_64")}
SESSION = "build"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def runner_labels(labels: Sequence[str] | None, platform: str) -> list[str]:
    """The build job's ``runs-on`` for an entry of PLATFORM: the recipe's labels, else the hosted runner.

    A self-hosted label set gets the platform's OS label (GitHub gives every self-hosted runner one) when it
    names none, so one label set shared by both platforms (``runners.default``) never sends a Windows entry
    to a Linux machine or the other way round. Hosted labels (``ubuntu-22.04``) are taken as they are: a
    recipe may build one platform on another's runner (the canary cross-compiles its DLL on Ubuntu).
    """
    if not labels:
        return list(HOSTED[platform])
    out = list(labels)
    if is_self_hosted(out) and not {label.lower() for label in out} & {name.lower() for name in RUNNER_OS_LABEL.values()}:
        out.append(RUNNER_OS_LABEL[platform])
    return out


def is_self_hosted(labels: Sequence[str] | None) -> bool:
    """Whether LABELS name a self-hosted runner (GitHub compares labels without case)."""
    return any(label.lower() == "self-hosted" for label in labels or ())


def python_tag(version: str) -> str:
    major, minor = version.split(".")[:2]
    return f"cp{major}{minor}"


def cibw_identifier(platform: str, python: str) -> str:
    return f"{python_tag(python)}-{CIBW_PLATFORM[platform][1]}"


def _recipe_arg(recipe: Recipe, root: Path | None) -> str:
    """How the workflow names the recipe: relative to the repository when it lives there."""
    path = recipe.path.resolve()
    base = (root or Path.cwd()).resolve()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)



def cibuildwheel_settings(recipe: Recipe, entry: Mapping[str, Any]) -> dict[str, str]:
    """CIBW_* variables for one matrix entry: the build selector, its environment and the static test.

    Paths are those of the machine that computes them (the build runner), since
    cibuildwheel runs its test command in a scratch folder.
    """
    plat = entry["platform"]
    _, _, arch = CIBW_PLATFORM[plat]
    env = {k: v for k, v in recipe.env_for(plat).items() if "{" not in v}  # build-step placeholders stay local
    env[recipe.devlist_variable] = entry["devlist"]
    environment = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    recipe_path = recipe.path.resolve().as_posix()
    return {
        "CIBW_BUILD": entry["cibw_build"],
        "CIBW_ARCHS": arch,
        "CIBW_BUILD_VERBOSITY": "1",
        "CIBW_ENVIRONMENT": environment,
        # The test venv gets this project, which scans the library the installed wheel holds.
        "CIBW_TEST_REQUIRES": PROJECT_ROOT.as_posix(),
        "CIBW_TEST_COMMAND": f"python -m ipex_aot check-installed \"{recipe_path}\" --generation {entry['generation']}",
    }


def matrix_entries(recipe: Recipe, db: DeviceDatabase | None, *, python: str | None = None,
                   platforms: Iterable[str] | None = None, root: Path | None = None) -> list[dict[str, Any]]:
    """One entry per target generation and platform.

    A generation the local ocloc does not know (it needs a newer one) still gets
    its entry: the devlist is then the generation code itself, which every ocloc
    that knows the generation accepts; the build job's own ocloc picks the name.
    """

    py = python or recipe.toolchain.python[0]
    if py not in recipe.toolchain.python:
        raise UsageError(f"--python {py}: {recipe.name} builds for Python {', '.join(recipe.toolchain.python)}")
    plats = list(platforms or recipe.toolchain.platforms)
    for p in plats:
        if p not in recipe.toolchain.platforms:
            raise UsageError(f"--platform {p}: {recipe.name} builds for {', '.join(recipe.toolchain.platforms)}")
    if db is None:
        targets = _targets_without_ocloc(recipe)
        newer: set[str] = set()
    else:
        plan = plan_targets(recipe, db)
        newer = {g for g, _ in plan.unknown}
        default = recipe.targets.runners.get("default")
        targets = sorted([*plan.targets, *(Target(g, recipe.targets.devices.get(g, g), recipe.targets.runners.get(g, default))
                                            for g, _ in plan.unknown)], key=lambda t: generation_order(t.generation))
        if newer:
            log.warn(f"{recipe.name}: {len(newer)} generation(s) need a newer ocloc than {plan.ocloc_version} "
                     f"({', '.join(sorted(newer))}); their devlist is the generation code")
    recipe_arg = _recipe_arg(recipe, root)
    out = []
    for t in targets:
        for plat in plats:
            entry = {
                "name": f"{t.generation} {plat} {python_tag(py)}",
                "generation": t.generation,
                "devlist": t.device,
                "devlist_variable": recipe.devlist_variable,
                "platform": plat,
                "python": py,
                "runs-on": runner_labels(t.runner, plat),
                "self_hosted": is_self_hosted(t.runner),
                "oneapi": recipe.toolchain.oneapi or "",
                "session": SESSION,
                # --platform: the entry's platform, whatever runner picks the job up.
                "session_args": f"{recipe_arg} --generation {t.generation} --platform {plat}",
                "cibw_build": cibw_identifier(plat, py),
                "needs_newer_ocloc": t.generation in newer,
            }
            out.append(entry)
    return out


def _targets_without_ocloc(recipe: Recipe) -> list:
    """An explicit target list without asking ocloc (``--no-ocloc``): devlist = override or the code."""

    if recipe.targets.generations == "all":
        raise RecipeError(f"{recipe.where('targets.generations')}: 'all' needs the local ocloc to expand; "
                          "drop --no-ocloc or list the generations")
    default = recipe.targets.runners.get("default")
    return [Target(g, recipe.targets.devices.get(g, g), recipe.targets.runners.get(g, default))
            for g in recipe.targets.generations]


def check_cibuildwheel(entries: Sequence[Mapping[str, Any]], *, cibuildwheel: str | None = None) -> dict[str, list[str]]:
    """``cibuildwheel --print-build-identifiers`` per platform; UsageError when a selector selects nothing."""
    if cibuildwheel:
        command = [cibuildwheel]
        if not Path(cibuildwheel).exists() and not shutil.which(cibuildwheel):
            raise ToolchainError(f"{cibuildwheel}: not found")
    elif importlib.util.find_spec("cibuildwheel") is not None:
        # The module, not the console script: an environment may see the package without its scripts.
        command = [sys.executable, "-m", "cibuildwheel"]
    else:
        raise ToolchainError("cibuildwheel not found; install it (pip install cibuildwheel) to check the selectors")
    by_platform: dict[str, set[str]] = {}
    for e in entries:
        by_platform.setdefault(e["platform"], set()).add(e["cibw_build"])
    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="ipex-aot-cibw-") as tmp:
        # cibuildwheel wants a package folder; the selectors do not depend on its contents.
        Path(tmp, "pyproject.toml").write_text('[project]\nname = "probe"\nversion = "0"\nrequires-python = ">=3.8"\n', encoding="utf-8")
        for plat, wanted in sorted(by_platform.items()):
            cibw_platform, _, arch = CIBW_PLATFORM[plat]
            # The caller's environment (PATH, cibuildwheel's own settings) plus this platform's selector.
            env = child_env({"CIBW_BUILD": " ".join(sorted(wanted)), "CIBW_ARCHS": arch})
            proc = subprocess.run([*command, "--print-build-identifiers", "--platform", cibw_platform, tmp],
                                  capture_output=True, text=True, env=env, timeout=120)
            if proc.returncode != 0:
                raise ToolchainError(f"cibuildwheel --print-build-identifiers --platform {cibw_platform} failed: "
                                     f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            ids = proc.stdout.split()
            missing = sorted(wanted - set(ids))
            if missing:
                raise UsageError(f"cibuildwheel selects nothing for {', '.join(missing)} on {cibw_platform}: this "
                                 "cibuildwheel does not build that Python; change toolchain.python or update cibuildwheel")
            found[plat] = ids
    return found


def conformance_entries(entries: Sequence[Mapping[str, Any]], xpu: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The conformance jobs: every built generation on the CPU (a hosted runner of its platform) and, for
    the generations in XPU, on a self-hosted runner with that GPU (labels self-hosted, OS, xpu-<generation>).

    They run on the generation folders and wheels, before pack, so the archive's manifest carries the results.
    """
    xpu = list(xpu)
    known = {e["generation"] for e in entries}
    unknown = [g for g in xpu if g not in known]
    if unknown:
        raise UsageError(f"--conformance-xpu {', '.join(unknown)}: not among the matrix's generations "
                         f"({', '.join(sorted(known)) or 'none'})")
    out = []
    for e in entries:
        base = {"generation": e["generation"], "platform": e["platform"], "python": e["python"]}
        out.append({**base, "name": f"{e['generation']} {e['platform']} cpu", "device": "cpu",
                    "runs-on": HOSTED[e["platform"]]})
        if e["generation"] in xpu:
            out.append({**base, "name": f"{e['generation']} {e['platform']} xpu", "device": "xpu",
                        "runs-on": ["self-hosted", RUNNER_OS_LABEL[e["platform"]], f"xpu-{e['generation']}"]})
    return out


def github_outputs(recipe: Recipe, entries: Sequence[Mapping[str, Any]], xpu: Iterable[str] = ()) -> str:
    """Lines for $GITHUB_OUTPUT (one line each; the JSON is compact).

    ``assets``: per platform, the names its release files are published under (the archive from the
    recipe's ``release.archive``, and its SUPPORT/manifest pair), so the release jobs never make up a name.
    """
    def compact(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    platforms = sorted({e["platform"] for e in entries})
    return (f"matrix={compact({'include': list(entries)})}\nplatforms={compact(platforms)}\n"
            f"conformance={compact({'include': conformance_entries(entries, xpu)})}\n"
            f"assets={compact({p: recipe.release_assets(p) for p in platforms})}\n"
            f"recipe={recipe.name}\nrecipe_path={_recipe_arg(recipe, None)}\nrelease={recipe.release}\n"
            f"tag={recipe.release_tag}\n")


def recipe_for_tag(tag: str, recipes_dir: Path | None = None) -> Path:
    """The recipe whose release tag is TAG (a tag push names the release, not the recipe)."""

    folder = recipes_dir or Path("recipes")
    found = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            if load_recipe(path).release_tag == tag:
                found.append(path)
        except RecipeError:
            continue
    if len(found) != 1:
        what = "no recipe" if not found else f"{len(found)} recipes ({', '.join(p.stem for p in found)})"
        raise UsageError(f"tag {tag}: {what} in {folder} release under this tag; name the recipe instead")
    return found[0]


# --------------------------------------------------------------------------- CLI


def _cmd_matrix(args: argparse.Namespace, settings: Settings) -> int:
    if args.recipe and args.recipe.startswith("tag:"):
        args.recipe, args.tag = None, args.recipe.removeprefix("tag:")
    if bool(args.recipe) == bool(args.tag):
        raise UsageError("name a RECIPE or give --tag TAG (one of them)")
    recipe = load_recipe(args.recipe or recipe_for_tag(args.tag))
    db = None
    if not args.no_ocloc:
        db = load_database(settings)
    platforms = [p.strip() for value in args.platform or () for p in value.split(",") if p.strip()]
    entries = matrix_entries(recipe, db, python=args.python, platforms=platforms or None)
    if args.generation:
        entries = [e for e in entries if e["generation"] in args.generation]
        if not entries:
            raise UsageError(f"--generation {', '.join(args.generation)}: not among {recipe.name}'s targets")
    if args.cibuildwheel_env:
        if len(entries) != 1:
            raise UsageError("--cibuildwheel-env needs exactly one entry: add --generation X and --platform P")
        for key, value in cibuildwheel_settings(recipe, entries[0]).items():
            print(f"{key}={value}")
        return 0
    if args.cibuildwheel:
        for e in entries:
            e["cibuildwheel"] = cibuildwheel_settings(recipe, e)
    if args.check_cibuildwheel:
        found = check_cibuildwheel(entries)
        log.info("cibuildwheel selects " + "; ".join(f"{p}: {' '.join(ids)}" for p, ids in found.items()))
    xpu = _xpu_generations(args.conformance_xpu)
    conformance_entries(entries, xpu)  # a wrong generation is an error here, not a job that never starts
    print(json.dumps({"include": entries}, indent=None if args.compact else 2))
    if settings.github_output:
        with open(settings.github_output, "a", encoding="utf-8") as f:
            f.write(github_outputs(recipe, entries, xpu))
        log.info(f"matrix of {len(entries)} job(s) written to $GITHUB_OUTPUT")
    return 0


def _xpu_generations(values: Sequence[str] | None) -> list[str]:
    """--conformance-xpu values: generation codes, each given alone or as a JSON list (the dispatch input)."""
    out: list[str] = []
    for value in values or ():
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as e:
                raise UsageError(f"--conformance-xpu {text!r}: not a JSON list ({e.msg}); write e.g. '[\"12.55.8\"]'") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise UsageError(f"--conformance-xpu {text!r}: expected a JSON list of generation codes")
            out += items
        elif text:
            out.append(text)
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("matrix", help="print the GitHub Actions matrix of a recipe (one entry per generation)",
                              description="Render {\"include\": [...]} from RECIPE; under Actions also append "
                                          "matrix=… (and tag/archive) to $GITHUB_OUTPUT.")
    p.add_argument("recipe", nargs="?", help="recipe file or name, or tag:TAG for the recipe released under TAG")
    p.add_argument("--tag", help="instead of RECIPE: the recipe whose release tag this is (tag pushes)")
    p.add_argument("--python", help="the Python of the build (default: the recipe's first)")
    p.add_argument("--platform", action="append",
                   help=f"only this platform ({', '.join(sorted(HOSTED))}; repeatable or comma-separated)")
    p.add_argument("--generation", action="append", help="only this generation (repeatable)")
    p.add_argument("--cibuildwheel", action="store_true", help="add each entry's CIBW_* settings")
    p.add_argument("--cibuildwheel-env", action="store_true",
                   help="print one entry's CIBW_* settings as KEY=VALUE lines (for $GITHUB_ENV)")
    p.add_argument("--check-cibuildwheel", action="store_true",
                   help="check the selectors with cibuildwheel --print-build-identifiers")
    p.add_argument("--conformance-xpu", action="append", metavar="GENERATIONS",
                   help="generations with a self-hosted GPU runner (labels self-hosted, OS, xpu-<generation>) for the "
                        "conformance matrix: a code, or a JSON list (repeatable)")
    p.add_argument("--no-ocloc", action="store_true", help="explicit target lists only, without the local ocloc")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.set_defaults(func=_cmd_matrix)
