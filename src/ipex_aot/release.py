"""A whole release: preflight → build → verify folders → conformance → pack → verify archive → notes.

Conformance runs on the built folders *before* packing, so its results go
into the archive's own ``manifest.json`` (``pack(..., conformance=...)``)
instead of being patched in afterwards; the archive is then verified as a
user would receive it. The order, each step framed with ``log.step``:

1. preflight and build every target generation (build-tree reuse as the
   recipe says; unchanged generations are skipped, so a rerun resumes);
2. verify the folders: each library must hold its own generation natively
   (``scan.require_generation``);
3. conformance for every generation on every device kind: where the device is
   not present (no Intel GPU here) the result is ``skipped``, not a failure;
4. pack the archive, its manifest carrying the conformance results;
5. verify the archive (every folder's library holds its generation, the
   manifest agrees with the files, and its signature checks out when a
   signing key was given: ``--sign-key``, ``IPEX_AOT_SIGN_KEY`` or
   ``IPEX_AOT_SIGN_KEY_FILE``);
6. ``dist/<recipe>/RELEASE_NOTES.md``: generation × device × verdict, the
   archive's sha256, and the public key with how to check a download.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipex_aot import build as build_mod
from ipex_aot import log
from ipex_aot import pack as pack_mod
from ipex_aot.build import BuildOptions, built_generations, recipe_dist
from ipex_aot.conformance import conformance_markdown, run_conformance
from ipex_aot.conformance.report import manifest_entries
from ipex_aot.devices import load_database
from ipex_aot.errors import ConformanceError, ScanError
from ipex_aot.fsutil import sha256_file, write_text
from ipex_aot.generation import generation_order
from ipex_aot.recipe import load_recipe
from ipex_aot.scan import require_generation, verify_archive
from ipex_aot.settings import Settings
from ipex_aot.signing import Trust, check_archive, load_secret_key, verify_howto

if TYPE_CHECKING:
    from ipex_aot.recipe import Recipe

#: Device kinds a release is checked on: the GPU it is for, and the CPU path every machine has.
RELEASE_DEVICES = ("xpu", "cpu")

#: The one description of the order; noxfile.py's release session and the README's sessions table say it
#: word for word (tests/test_first_hour.py compares the three).
STEP_ORDER = "preflight → build → verify folders → conformance → pack → verify archive → release notes"


@dataclass
class ReleaseReport:
    recipe: str
    release: str
    generations: list[str]
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    scans: dict[str, dict] = field(default_factory=dict)
    conformance: list[dict] = field(default_factory=list)  # manifest entries
    reports: list[dict] = field(default_factory=list)  # full conformance reports
    archive: Path | None = None
    signature: Path | None = None
    public_key: Any = None  # signing.PublicKey of the key that signed the archive
    notes: Path | None = None
    durations: dict[str, float] = field(default_factory=dict)


class _Timed:
    """log.step plus the duration kept for the notes."""

    def __init__(self, report: ReleaseReport, title: str) -> None:
        self.report, self.title = report, title

    def __enter__(self) -> None:
        self.start = time.monotonic()
        self.ctx = log.step(self.title)
        self.ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.report.durations[self.title.split(":")[0]] = time.monotonic() - self.start
        self.ctx.__exit__(*exc)


def verify_folders(dist: Path, recipe: Recipe, generations: Sequence[str]) -> dict[str, dict]:
    """Each generation's library must hold that generation natively."""

    records = built_generations(dist, recipe.name)
    scans: dict[str, dict] = {}
    for generation in generations:
        record = records.get(generation)
        if record is None:
            raise ScanError(f"{recipe_dist(dist, recipe.name) / generation}: no finished build; run the build again")
        library = recipe_dist(dist, recipe.name) / generation / record["artifact"]["name"]
        result = require_generation(library, generation)
        scans[generation] = result.to_json()
        log.info(f"{generation}: {library.name}: {result.summary} ({result.images} images)")
    return scans


def release_notes(recipe: Recipe, report: ReleaseReport, records: Mapping[str, dict]) -> str:
    lines = [f"# {recipe.package} {recipe.release}: ahead-of-time builds", ""]
    if report.archive is not None:
        install = next(iter(records.values()), {}).get("artifact", {}).get("install_path")
        lines += [f"Archive: `{report.archive.name}`, one folder per generation code"
                  + (f"; copy your folder's library over `{install}` in the installed package." if install else "."), ""]
    toolchain = next(iter(records.values()), {}).get("toolchain", {}) if records else {}
    if toolchain:
        lines += ["Toolchain: " + ", ".join(f"{k} {v}" for k, v in sorted(toolchain.items()) if v), ""]
    lines += ["## Generations", "", "| Generation | Devlist | Native images | Library size | sha256 |",
              "| --- | --- | --- | --- | --- |"]

    for generation in sorted(report.generations, key=generation_order):
        record = records.get(generation, {})
        artifact = record.get("artifact", {})
        scan = report.scans.get(generation, {})
        lines.append(
            f"| `{generation}` | `{record.get('devlist', '')}` | {scan.get('native_images', scan.get('images', ''))} | "
            f"{artifact.get('size', 0):,} | `{artifact.get('sha256', '')[:16]}…` |"
        )

    lines += ["", "## Conformance", "", conformance_markdown(report.reports).rstrip()]
    if report.archive is not None:
        lines += ["", "## Verify a download", "", *_verify_lines(report)]
    lines += ["", "## Steps", ""]
    lines += [f"- {name}: {seconds:.1f} s" for name, seconds in report.durations.items()]
    return "\n".join(lines) + "\n"


def _verify_lines(report: ReleaseReport) -> list[str]:
    assert report.archive is not None
    name, digest = report.archive.name, sha256_file(report.archive)
    lines = [f"sha256 of `{name}`: `{digest}`; pin it with `ipex-aot install {name} --sha256 {digest}`.", ""]
    if report.public_key is None:
        return lines + ["This archive is not signed."]
    return lines + verify_howto(report.public_key, name).rstrip("\n").splitlines()


def run_release(recipe: Recipe, settings: Settings, options: BuildOptions | None = None, *,
                sign_key: Any = None) -> ReleaseReport:
    """The whole release; ``sign_key`` (a signing.SecretKey) signs the archive."""

    options = options or BuildOptions()
    dist = settings.dist_dir
    report = ReleaseReport(recipe.name, recipe.release, [])
    start = time.monotonic()
    results = build_mod.build(recipe, settings, (), options)  # frames its own preflight and build steps
    report.durations["preflight + build"] = time.monotonic() - start
    report.generations = [r.generation for r in results]
    report.built = [r.generation for r in results if r.status == "built"]
    report.skipped = [r.generation for r in results if r.status == "skipped"]
    with _Timed(report, f"verify folders: {len(report.generations)} libraries"):
        report.scans = verify_folders(dist, recipe, report.generations)
    with _Timed(report, "conformance: every generation on every present device"):
        report.reports = _conformance(recipe, settings, report.generations)
        report.conformance = manifest_entries(report.reports)
    with _Timed(report, "pack: archive, manifest.json with conformance, SUPPORT.md"):
        report.archive, report.signature = _pack(recipe, settings, report.generations, report.conformance, sign_key)
        report.public_key = sign_key.public_key() if sign_key is not None else None
    with _Timed(report, f"verify archive: {report.archive.name}"):
        _verify_archive(report.archive, settings, report.public_key)
    records = built_generations(dist, recipe.name)
    report.notes = recipe_dist(dist, recipe.name) / "RELEASE_NOTES.md"
    write_text(report.notes, release_notes(recipe, report, records))
    log.info(f"release notes: {report.notes}")
    failed = [f"{r['generation']}/{r['device']}" for r in report.conformance if r["verdict"] == "fail"]
    if failed:
        raise ConformanceError(
            f"conformance failed for {', '.join(failed)}; the archive {report.archive} is built but must not be "
            f"published; see {recipe_dist(dist, recipe.name) / 'conformance'}"
        )
    return report


# --------------------------------------------------------------------------- the steps after build


def _conformance(recipe: Recipe, settings: Settings, generations: Sequence[str]) -> list[dict]:
    """Every generation on every device kind of an Intel GPU release: absent devices give ``skipped``."""

    reports: list[dict] = []
    for device in RELEASE_DEVICES:
        reports += run_conformance(recipe.name, list(generations), device, settings)
    return reports


def _pack(recipe: Recipe, settings: Settings, generations: Sequence[str], conformance: list[dict],
          sign_key: Any = None) -> tuple[Path, Path | None]:
    """pack, with the conformance results in the archive's own manifest; (archive, signature or None)."""

    result = pack_mod.pack(recipe.name, settings, database=load_database(settings), conformance=conformance,
                           generations=generations, sign_key=sign_key, archive_name=recipe.archive_for,
                           release=recipe.release)
    missing = sorted(set(generations) - set(result.manifest.get("folders", {})))
    if missing:
        raise ScanError(f"{result.archive}: built generation(s) {', '.join(missing)} are not in the archive; pack again")
    return result.archive, result.signature


def _verify_archive(archive: Path, settings: Settings, public_key: Any = None) -> list[dict]:
    """Every folder of the archive as a user receives it: signature, manifest hash and native generation."""

    if public_key is not None:
        log.info(check_archive(archive, Trust(public_key)))
    checked = []
    for folder, path, result in verify_archive(archive, settings):
        log.info(f"{folder}: {path}: {result.summary}")
        checked.append({"folder": folder, "native": list(result.native), "jit": result.jit})
    return checked


# --------------------------------------------------------------------------- CLI


def _cmd_release(args: argparse.Namespace, settings: Settings) -> int:
    recipe = load_recipe(args.recipe)
    options = BuildOptions(keep_going=args.keep_going, clean=args.clean, source_dir=Path(args.source) if args.source else None)

    # The key (and its password) before hours of building, not after.
    report = run_release(recipe, settings, options, sign_key=load_secret_key(settings, args.sign_key))
    if args.json:
        print(json.dumps({
            "recipe": report.recipe, "release": report.release, "generations": report.generations,
            "built": report.built, "skipped": report.skipped, "archive": str(report.archive),
            "signature": str(report.signature) if report.signature else None,
            "notes": str(report.notes), "conformance": report.conformance,
        }, indent=2))
    log.info(f"release {recipe.release}: {len(report.generations)} generations, archive {report.archive}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "release",
        help=STEP_ORDER,
        description=f"Run a recipe's whole release into dist/<recipe>/: {STEP_ORDER} (default recipe of `nox`: "
                    "the canary).",
    )
    p.add_argument("recipe", help="recipe file or name, e.g. recipes/canary.yaml")
    p.add_argument("--keep-going", action="store_true", help="build the other generations when one fails (the release still stops)")
    p.add_argument("--clean", action="store_true", help="a fresh build tree per generation")
    p.add_argument("--source", metavar="DIR", help="build this source tree instead of the recipe's")
    p.add_argument("--sign-key", type=Path, metavar="FILE",
                   help="sign the archive with this minisign secret key (default: IPEX_AOT_SIGN_KEY, then "
                        "IPEX_AOT_SIGN_KEY_FILE; none: unsigned)")
    p.add_argument("--json", action="store_true", help="print a summary as JSON on stdout")
    p.set_defaults(func=_cmd_release)
