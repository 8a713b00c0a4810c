"""Wheel variants (PEP 817/825): one variant wheel per generation, a JIT-only fallback, their index.

Reads what build wrote (``dist/<recipe>/<generation>/build.json`` and the
wheel it names) and writes ``dist/<recipe>/variants/``:

- one variant wheel per built generation, with the single property
  ``intel_gpu :: ip_version :: <generation>`` and the generation as its
  variant label (``…-cp311-cp311-win_amd64-12.55.8.whl``);
- the null variant (label ``null``), variantlib's "no property" variant
  that a variant-aware installer takes when no other one fits: made from the
  JIT-only wheel (``build_jit_wheel``: the recipe's build with an empty
  devlist variable) or from a wheel given with ``--fallback`` (the
  upstream one);
- ``<name>-<version>-variants.json``, the index installers read.

Every file is made by variantlib's own commands (``make-variant``,
``generate-index-json``), run as a child process so that the provider
plugin it loads to check each property sees this run's settings. The folder
is written beside and swapped in whole, so a failed run leaves the previous
one as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ipex_aot import log
from ipex_aot.build import BuildOptions, build_jit_wheel, built_generations, make_context, recipe_dist, recipe_lock
from ipex_aot.errors import BuildError, UsageError, VariantError
from ipex_aot.generation import sort_generations
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings, child_env
from ipex_aot.variant_provider import FEATURE, NAMESPACE, PLUGIN_API

if TYPE_CHECKING:
    from ipex_aot.recipe import Recipe

#: The provider a variant-aware installer installs to run the plugin.
PROVIDER_REQUIRES = "ipex-aot"
NULL_LABEL = "null"


def variant_property(generation: str) -> str:
    return f"{NAMESPACE} :: {FEATURE} :: {generation}"


def variant_table() -> str:
    """The ``[variant]`` table (pyproject.toml form) every variant wheel of a release carries."""
    return (
        "[variant.default-priorities]\n"
        f'namespace = ["{NAMESPACE}"]\n\n'
        f"[variant.providers.{NAMESPACE}]\n"
        f'requires = ["{PROVIDER_REQUIRES}"]\n'
        f'plugin-api = "{PLUGIN_API}"\n'
    )


@dataclass(frozen=True)
class VariantWheel:
    label: str  # the generation code, or "null" for the JIT-only fallback
    generation: str | None
    path: Path
    source: Path  # the plain wheel it was made from

    def to_json(self) -> dict:
        return {"label": self.label, "generation": self.generation, "wheel": self.path.name,
                "property": variant_property(self.generation) if self.generation else None,
                "from": str(self.source)}


@dataclass(frozen=True)
class VariantsResult:
    folder: Path
    index: Path
    wheels: list[VariantWheel]

    def to_json(self) -> dict:
        return {"folder": str(self.folder), "index": str(self.index), "wheels": [w.to_json() for w in self.wheels]}


#: The child that runs variantlib's own command line, one call per job (label, argv) read from stdin.
#: One process for all wheels: variantlib caches what the provider plugin answered, so the
#: plugin (and the device database it loads) runs once, not once per wheel.
_RUNNER = """
import json, logging, sys
from variantlib.commands.main import main
for label, args in json.load(sys.stdin):
    logging.getLogger("variantlib").handlers.clear()  # main() adds one per call
    print("ipex-aot-variantlib-job " + label, file=sys.stderr, flush=True)
    main(args)
"""
_JOB_MARK = "ipex-aot-variantlib-job "


def _variantlib(jobs: list[tuple[str, list[str]]], settings: Settings, cwd: Path,
                progress: log.Progress | None = None) -> None:
    """Run variantlib's command line for each (label, argv) job in one child process.

    A child, not in-process: the plugin check loads our provider, which must see this run's cache
    and ocloc (the device database), not whatever the parent's environment says.
    VariantError names the job that failed and variantlib's last line.
    """
    env = child_env({"IPEX_AOT_CACHE": str(settings.cache_dir.resolve())})
    if settings.ocloc:
        env["OCLOC"] = settings.ocloc
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER], cwd=cwd, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(json.dumps(jobs))
    proc.stdin.close()
    current, lines = "", []
    for line in proc.stderr:
        if line.startswith(_JOB_MARK):
            if current and progress:
                progress.advance(note=current)
            current = line[len(_JOB_MARK):].strip()
        elif line.strip():
            lines.append(line.rstrip())
    if proc.wait() != 0:
        raise VariantError(f"variantlib {current or 'start-up'} failed (exit {proc.returncode}): "
                           f"{lines[-1] if lines else 'no output'}")
    if current and progress:
        progress.advance(note=current)


def _plain_wheels(recipe: Recipe, settings: Settings, wanted: Iterable[str]) -> dict[str, Path]:
    """generation -> the wheel its build.json names, for every finished build (or the WANTED ones)."""

    root = recipe_dist(settings.dist_dir, recipe.name)
    built = built_generations(settings.dist_dir, recipe.name)
    wanted = list(wanted)
    missing = [g for g in wanted if g not in built]
    if missing:
        raise BuildError(f"{root}: no finished build of {', '.join(missing)}; run `ipex-aot build {recipe.name} "
                         f"--generation {missing[0]}` first")
    if not built:
        raise BuildError(f"{root}: no finished generation build; run `ipex-aot build {recipe.name}` first")
    wheels: dict[str, Path] = {}
    for generation in wanted or sort_generations(built):
        rel = built[generation].get("wheel")
        wheel = root / rel if rel else None
        if wheel is None or not wheel.is_file():
            raise BuildError(f"{root / generation / 'build.json'}: the wheel it names ({rel}) is missing; "
                             f"rebuild with `ipex-aot build {recipe.name} --generation {generation} --force`")
        wheels[generation] = wheel
    names = {w.name for w in wheels.values()}
    if len(names) != 1:
        raise VariantError(f"{root}/wheels: the generations' wheels have different names ({', '.join(sorted(names))}); "
                           "variants of one release share one name, version and tags")
    return wheels


def _jit_wheel(recipe: Recipe, settings: Settings) -> Path:
    with log.step(f"build {recipe.name}: JIT-only wheel ({recipe.devlist_variable} empty)"):
        return build_jit_wheel(make_context(recipe, settings, BuildOptions()))


def _same_release(fallback: Path, plain: Path) -> None:
    """The fallback must be the same distribution, version and tags: installers pick among one release's variants."""
    if not fallback.is_file() or fallback.suffix != ".whl":
        raise UsageError(f"--fallback {fallback}: not a wheel file")
    if fallback.name != plain.name:
        raise UsageError(f"--fallback {fallback.name}: a release's variants share one wheel name; the generations' "
                         f"wheel is {plain.name}")
    try:
        with zipfile.ZipFile(fallback) as zf:
            bad = zf.testzip()
    except (OSError, zipfile.BadZipFile) as e:
        raise UsageError(f"--fallback {fallback}: not a readable wheel ({e})") from None
    if bad:
        raise UsageError(f"--fallback {fallback}: member {bad} is corrupt")



def make_variants(recipe: Recipe, settings: Settings, *, generations: Iterable[str] = (),
                  fallback: Path | None = None) -> VariantsResult:
    """Variant wheels of every built generation (or GENERATIONS), the null variant, the index."""

    root = recipe_dist(settings.dist_dir, recipe.name).resolve()
    plain = _plain_wheels(recipe, settings, generations)
    first = next(iter(plain.values()))
    if fallback is not None:
        _same_release(fallback, first)
    # One run per recipe at a time: the JIT build shares the build tree, and stale staging folders
    # (a killed run's) can only be swept while no other run writes one.
    with recipe_lock(root):
        for stale in root.glob(".variants.*"):
            shutil.rmtree(stale, ignore_errors=True)
        fallback_wheel = fallback.resolve() if fallback is not None else _jit_wheel(recipe, settings)
        if fallback_wheel.name != first.name:
            raise VariantError(f"{fallback_wheel}: the JIT-only wheel's name differs from the generations' "
                               f"({first.name}); variants of one release share one name, version and tags")
        return _make_variants(recipe, settings, root, plain, fallback_wheel)


def _make_variants(recipe: Recipe, settings: Settings, root: Path, plain: dict[str, Path],
                   fallback_wheel: Path) -> VariantsResult:
    folder = root / "variants"
    with log.step(f"variants {recipe.name}: {len(plain)} generation(s) + JIT-only fallback"):
        # mkdir, not mkdtemp: the folder users publish gets the umask's mode, not 0700.
        stage = root / f".variants.{os.getpid()}.{secrets.token_hex(4)}"
        stage.mkdir()
        try:
            work = stage / ".work"
            work.mkdir()
            (work / "pyproject.toml").write_text(variant_table(), encoding="utf-8")
            made: list[VariantWheel] = []
            jobs: list[tuple[str, list[str]]] = []
            for generation, wheel in plain.items():
                jobs.append((f"make-variant for {generation}",
                             ["make-variant", "-f", str(wheel), "-o", str(stage), "--no-isolation",
                              "--pyproject-toml", "pyproject.toml", "--variant-label", generation,
                              "-p", variant_property(generation)]))
                made.append(VariantWheel(generation, generation, folder / _variant_name(wheel, generation), wheel))
            jobs.append(("make-variant --null-variant (the JIT-only fallback)",
                         ["make-variant", "-f", str(fallback_wheel), "-o", str(stage), "--null-variant",
                          "--pyproject-toml", "pyproject.toml"]))
            made.append(VariantWheel(NULL_LABEL, None, folder / _variant_name(fallback_wheel, NULL_LABEL),
                                     fallback_wheel))
            jobs.append(("generate-index-json", ["generate-index-json", "-d", str(stage)]))
            _variantlib(jobs, settings, work, log.Progress("variantlib jobs", len(jobs), every=0.0))
            shutil.rmtree(work)
            index = _check_index(stage, made)
            for w in made:
                if not (stage / w.path.name).is_file():
                    raise VariantError(f"variantlib make-variant wrote no {w.path.name}")
            _swap(stage, folder)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    for w in made:
        log.info(f"  {w.label:>10}  {w.path.name}")
    return VariantsResult(folder, folder / index.name, made)


def _variant_name(wheel: Path, label: str) -> str:
    return f"{wheel.name[: -len('.whl')]}-{label}.whl"


def _check_index(stage: Path, made: list[VariantWheel]) -> Path:
    """generate-index-json logs and skips what it cannot merge; make sure every label is in the one index."""
    indexes = sorted(stage.glob("*-variants.json"))
    if len(indexes) != 1:
        raise VariantError(f"variantlib generate-index-json wrote {len(indexes)} index files, expected one")
    data = json.loads(indexes[0].read_text(encoding="utf-8"))
    labels = set(data.get("variants", {}))
    expected = {w.label for w in made}
    if labels != expected:
        raise VariantError(f"{indexes[0].name} lists variants {sorted(labels)}, expected {sorted(expected)}")
    return indexes[0]


def _swap(stage: Path, folder: Path) -> None:
    """Put the staged folder in place of FOLDER: the old one is moved aside first, removed last."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(stage, folder)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def _cmd_variants(args: argparse.Namespace, settings: Settings) -> int:
    recipe = load_recipe(args.recipe)
    result = make_variants(recipe, settings, generations=args.generation,
                           fallback=Path(args.fallback) if args.fallback else None)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    log.info(f"{len(result.wheels)} variant wheels and {result.index.name} in {result.folder}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "variants",
        help="turn a recipe's built wheels into wheel variants (one per generation + JIT-only) and their index",
        description="Make dist/<recipe>/variants/: a variant wheel per built generation "
                    f"({NAMESPACE} :: {FEATURE} :: <generation>), the null variant from the JIT-only wheel, "
                    "and the *-variants.json index, with variantlib.",
    )
    p.add_argument("recipe", help="recipe file or name, e.g. recipes/canary.yaml or canary")
    p.add_argument("--generation", action="append", default=[], metavar="CODE",
                   help="only this built generation (repeatable; default: every built one)")
    p.add_argument("--fallback", metavar="WHEEL",
                   help="the JIT-only wheel to make the null variant from (e.g. the upstream wheel); "
                        "default: build it with an empty devlist variable")
    p.add_argument("--json", action="store_true", help="print the variant wheels and the index as JSON on stdout")
    p.set_defaults(func=_cmd_variants)
