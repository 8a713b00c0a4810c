"""Recipes: one YAML file per release, validated, and expanded into per-generation targets.

A recipe is checked in two stages. Loading (:func:`load_recipe`) checks the
structure against ``resources/recipe.schema.json`` and a few semantic rules
that need no tool (placeholders, quoted environment values); every error is
one line ``file:line: key: what is wrong, what was expected``, the line taken
from PyYAML's node marks. Expanding (:func:`expand_targets`) checks the
targets against the device database of the local ocloc: a generation it does
not know, an acronym that stands for several generations, a device name that
does not resolve to exactly its generation.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import string
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipex_aot import log
from ipex_aot.devices import load_database
from ipex_aot.errors import RecipeError
from ipex_aot.generation import Generation, generation_order, is_generation
from ipex_aot.settings import Settings
from ipex_aot.untrusted import MAX_YAML_BYTES, YamlTooBig, check_yaml_bounds

if TYPE_CHECKING:
    from ipex_aot.devices import DeviceDatabase

PLATFORMS = ("windows-x86_64", "linux-x86_64")
COMMAND_PLACEHOLDERS = frozenset({"python", "source", "wheel_dir", "build_dir", "jobs"})
RELEASE_PLACEHOLDERS = frozenset({"release", "version", "local_version", "name", "package"})
#: The archive name may also say its platform; a recipe with several platforms must (one archive each).
ARCHIVE_PLACEHOLDERS = RELEASE_PLACEHOLDERS | {"platform"}
DEFAULT_TAG = "v{release}"
DEFAULT_ARCHIVE = "{release}-AOT.7z"
DEFAULT_ARCHIVE_MULTI = "{release}-{platform}-AOT.7z"


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class SourceSpec:
    url: str | None = None  # git URL (https://, file://, a local path)
    ref: str | None = None
    submodules: bool = False
    path: str | None = None  # a tree inside this repository (the canary), relative to the repository root


@dataclass(frozen=True)
class ToolchainSpec:
    compiler: str
    python: tuple[str, ...]
    platforms: tuple[str, ...]
    oneapi: str | None = None
    torch: str = ""


@dataclass(frozen=True)
class TargetsSpec:
    generations: str | tuple[str, ...]  # "all" or explicit codes/names
    from_: str | None = None
    exclude: tuple[str, ...] = ()
    devices: Mapping[str, str] = field(default_factory=dict)
    name_patterns: tuple[str, ...] = ()
    runners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    generation: str
    device: str  # the ocloc name put in the devlist for this generation
    runner: tuple[str, ...] | None = None  # runner labels when the recipe pins one


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    package: str
    version: str
    release: str
    source: SourceSpec
    patches_dir: Path | None
    patches_note: str | None
    toolchain: ToolchainSpec
    env: Mapping[str, Any]  # flat {VAR: value} or {platform: {VAR: value}} entries
    build_command: tuple[str, ...]  # () = the build step's default (pip wheel)
    reuse_tree: bool
    artifacts: Mapping[str, str]
    devlist_variable: str
    release_tag: str
    #: release.archive with every placeholder but {platform} filled in; see archive_for().
    archive_template: str
    # Beyond the contract's fields (additive):
    local_version: str | None = None
    targets: TargetsSpec = field(default_factory=lambda: TargetsSpec("all"))
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)  # key path -> line

    def archive_for(self, platform: str) -> str:
        """The archive file name of PLATFORM's release files (release.archive, validated at load)."""
        return self.archive_template.replace("{platform}", platform)

    @property
    def archive_names(self) -> dict[str, str]:
        """platform -> archive name; distinct per platform (load_recipe refuses a template that collides)."""
        return {p: self.archive_for(p) for p in self.toolchain.platforms}

    @property
    def archive_name(self) -> str:
        """The archive of the recipe's first platform (its only one for a single-platform recipe)."""
        return self.archive_for(self.toolchain.platforms[0])

    def release_assets(self, platform: str) -> dict[str, str]:
        """The names PLATFORM's release files are published under: the archive, its support table and manifest.

        One platform keeps the plain SUPPORT.md and manifest.json; with several, each platform's pair is
        suffixed with the platform so that one GitHub release holds them all side by side.
        """
        suffix = f"-{platform}" if len(self.toolchain.platforms) > 1 else ""
        return {"archive": self.archive_for(platform), "support": f"SUPPORT{suffix}.md",
                "manifest": f"manifest{suffix}.json"}

    def where(self, key: str) -> str:
        """``file:line: key`` prefix for a message about KEY (the nearest known parent's line)."""
        return f"{_display(self.path)}:{_line_of(self.lines, key)}: {key}"

    def env_for(self, platform: str) -> dict[str, str]:
        """The recipe's env for PLATFORM: the flat entries plus that platform's block."""
        out: dict[str, str] = {}
        for key, value in self.env.items():
            if isinstance(value, Mapping):
                if key == platform:
                    out.update({str(k): str(v) for k, v in value.items()})
            else:
                out[str(key)] = str(value)
        return out

    @property
    def repo_root(self) -> Path:
        """The repository holding ``recipes/`` (patch folders and path sources are relative to it)."""
        return self.path.resolve().parent.parent


# --------------------------------------------------------------------------- loading


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _line_of(lines: Mapping[str, int], key: str) -> int:
    probe = key
    while probe:
        if probe in lines:
            return lines[probe]
        cut = max(probe.rfind("."), probe.rfind("["))
        probe = probe[:cut] if cut > 0 else ""
    return lines.get("", 1)


def key_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def recipe_name(path_or_name: str | Path) -> str:
    """The recipe's name, its file stem: ``recipes/canary.yaml`` and ``canary`` are both ``canary``.

    Outputs live under ``dist/<name>/``, so every step that takes a recipe
    argument finds the same folder, whether or not the file is at hand.
    """
    path = Path(path_or_name)
    return path.stem if path.suffix in (".yaml", ".yml") else path.name


def find_recipe(path_or_name: str | Path) -> Path:
    """A recipe file from a path or a name (``canary`` → ``recipes/canary.yaml``)."""
    text = str(path_or_name)
    direct = Path(text)
    if direct.is_file():
        return direct
    if "/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml")):
        # Names are looked up under recipes/ of the working directory, then of this checkout.
        here = Path(__file__).resolve().parents[2] / "recipes"
        for folder in (Path("recipes"), here):
            candidate = folder / f"{text}.yaml"
            if candidate.is_file():
                return candidate
        known = sorted(p.stem for p in Path("recipes").glob("*.yaml")) or sorted(p.stem for p in here.glob("*.yaml"))
        raise RecipeError(f"no recipe named {text!r} (looked for recipes/{text}.yaml); known: {', '.join(known) or 'none'}")
    raise RecipeError(f"{text}: no such recipe file; give a path like recipes/canary.yaml or a name like canary")


def _node_lines(node: Any, prefix: tuple = (), out: dict[str, int] | None = None) -> dict[str, int]:
    """key path -> 1-based line of every key and item under NODE; raises on duplicate keys."""
    import yaml

    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            path = (*prefix, key)
            if key in seen:
                raise _Located(key_path(path), key_node.start_mark.line + 1, "duplicate key; keep one of them")
            seen.add(key)
            out[key_path(path)] = key_node.start_mark.line + 1
            _node_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, i)
            out[key_path(path)] = item.start_mark.line + 1
            _node_lines(item, path, out)
    return out


class _Located(Exception):
    def __init__(self, key: str, line: int, message: str) -> None:
        super().__init__(message)
        self.key, self.line, self.message = key, line, message


@cache
def schema() -> dict:
    text = resources.files("ipex_aot").joinpath("resources/recipe.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


_TYPE_WORDS = {"string": "a string", "object": "a mapping", "array": "a list", "boolean": "true or false",
               "integer": "a whole number", "number": "a number", "null": "nothing"}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _explain(error: Any) -> tuple[list[Any], str]:
    """(key path, message) for one jsonschema error, in the recipe writer's words."""
    path = list(error.absolute_path)
    v, inst, sch = error.validator, error.instance, error.validator_value
    if v == "additionalProperties" and isinstance(inst, Mapping):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in allowed)
        key = extra[0] if extra else "?"
        return [*path, key], f"unknown key {key!r}; expected one of: {', '.join(allowed)}"
    if v == "required":
        missing = [k for k in sch if k not in inst]
        return path, f"missing required key {missing[0]!r}" + (f" (also {', '.join(missing[1:])})" if missing[1:] else "")
    if v == "type":
        want = " or ".join(_TYPE_WORDS.get(t, t) for t in ([sch] if isinstance(sch, str) else sch))
        hint = ""
        if want == "a string" and isinstance(inst, (bool, int, float)):
            hint = "; YAML reads unquoted ON/OFF/yes/no and numbers as such: quote the value"
        return path, f"expected {want}, got {_describe(inst)}{hint}"
    if v == "enum":
        return path, f"{_describe(inst)} is not allowed; expected one of: {', '.join(map(str, sch))}"
    if v == "const":
        return path, f"{_describe(inst)} is not allowed; expected {sch!r}"
    if v == "pattern":
        desc = error.schema.get("description") or f"text matching {sch}"
        if error.schema is schema()["$defs"]["generation"] or sch == schema()["$defs"]["generation"]["pattern"]:
            desc = "a generation code major.minor.revision like 12.55.8"
        elif sch == schema()["$defs"]["device"]["pattern"]:
            desc = "a generation code like 12.55.8 or an ocloc device name like acm-g10"
        return path, f"{_describe(inst)} is not valid; expected {desc}"
    if v == "propertyNames":
        return path, f"key {_describe(inst)} is not valid here"
    if v in ("minItems", "minProperties", "minLength"):
        return path, f"{_describe(inst)} is empty; give at least {sch} entr{'y' if sch == 1 else 'ies'}"
    if v == "uniqueItems":
        return path, "has a duplicate entry; list each one once"
    if v in ("oneOf", "anyOf"):
        return _explain_choice(error, path)
    if v == "not":
        return path, "has conflicting keys; see the recipe format in README.md"
    return path, error.message


def _explain_choice(error: Any, path: list[Any]) -> tuple[list[Any], str]:
    inst = error.instance
    where = key_path(path)
    if where == "source" and isinstance(inst, Mapping):
        if "path" in inst and ("git" in inst or "ref" in inst):
            return path, "give either git + ref (an upstream repository) or path (a tree in this repository), not both"
        missing = "ref" if "git" in inst else "git" if "ref" in inst else "git and ref (or path)"
        return path, f"missing {missing}; expected git: URL and ref: TAG, or path: DIR"
    if where == "patches" and isinstance(inst, Mapping):
        return path, "give either dir: FOLDER or none: \"why no patch is needed\", exactly one"
    # Otherwise report the branch that got furthest: the deepest error among the alternatives.
    from jsonschema.exceptions import best_match

    if where == "targets.generations" and isinstance(inst, list) and not inst:
        return path, "is empty; list at least one generation code, or write all"
    if where == "targets.generations" and not isinstance(inst, list):
        return path, f"expected all or a list of generation codes, got {_describe(inst)}"
    # The alternative that got deepest into the value names the real problem (an item, not the list).
    deepest = max(error.context, key=lambda e: len(e.absolute_path), default=None)
    sub = deepest if deepest is not None and len(deepest.absolute_path) > len(path) else (
        best_match(error.context) if error.context else None)
    if sub is not None:
        return _explain(sub)
    return path, error.message


def _check_placeholders(text: str, allowed: frozenset[str], key: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise _Located(key, 0, f"{text!r}: {e}; write literal braces as {{{{ }}}}") from None
    for name in fields:
        if name not in allowed:
            raise _Located(key, 0, f"unknown placeholder {{{name}}} in {text!r}; expected one of: "
                           + ", ".join(f"{{{a}}}" for a in sorted(allowed)))


def _semantic_checks(data: Mapping[str, Any]) -> None:
    build = data.get("build") or {}
    for i, part in enumerate(build.get("command") or ()):
        _check_placeholders(part, COMMAND_PLACEHOLDERS, f"build.command[{i}]")
    for key, allowed in (("tag", RELEASE_PLACEHOLDERS), ("archive", ARCHIVE_PLACEHOLDERS)):
        value = (data.get("release") or {}).get(key)
        if value is not None:
            _check_placeholders(value, allowed, f"release.{key}")
    archive = (data.get("release") or {}).get("archive")
    platforms = data["toolchain"]["platforms"]
    if archive is not None and len(platforms) > 1 and "{platform}" not in archive:
        # Each platform's pack job writes one archive; one name for all of them collides in the release.
        raise _Located("release.archive", 0, f"{archive!r} names every platform's archive alike "
                       f"({', '.join(platforms)}); add {{platform}}, e.g. \"{DEFAULT_ARCHIVE_MULTI}\"")
    toolchain = data["toolchain"]
    if toolchain["compiler"] in ("icx", "icpx") and not toolchain.get("oneapi"):
        raise _Located("toolchain.compiler", 0, f"{toolchain['compiler']} comes with oneAPI; add toolchain.oneapi "
                       "(the oneAPI Base Toolkit version, e.g. 2025.0.1)")
    if toolchain["compiler"] == "icpx" and "windows-x86_64" in toolchain["platforms"]:
        raise _Located("toolchain.compiler", 0, "icpx is the Linux driver; write icx (Windows builds use it in clang-cl "
                       "mode, Linux builds its icpx sibling)")
    artifacts = build.get("artifact") or {}
    for plat in toolchain["platforms"]:
        if artifacts and plat not in artifacts:
            raise _Located("build.artifact", 0, f"no entry for platform {plat} of toolchain.platforms; add "
                           f"{plat}: <path of the GPU library inside the wheel>")
    targets = data["targets"]
    if targets.get("from") is not None and targets["generations"] != "all":
        raise _Located("targets.from", 0, "only means something with generations: all; remove it or use all")
    for name in data.get("env") or {}:
        value = data["env"][name]
        if isinstance(value, Mapping) and name not in PLATFORMS:
            raise _Located(f"env.{name}", 0, f"a per-platform block must be named after a platform ({', '.join(PLATFORMS)})")
    for gen in targets.get("runners") or {}:
        if gen != "default" and targets["generations"] != "all" and gen not in targets["generations"]:
            raise _Located(f"targets.runners.{gen}", 0, f"{gen} is not among targets.generations")


def load_recipe(path_or_name: str | Path) -> Recipe:
    """Load and validate a recipe; RecipeError ``file:line: key: …`` on the first problem found."""
    import yaml
    from jsonschema import Draft202012Validator

    path = find_recipe(path_or_name)
    shown = _display(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise RecipeError(f"{shown}: larger than {MAX_YAML_BYTES >> 20} MiB; a recipe is a few KB, is this the "
                              "right file?")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{shown}: cannot read the recipe: {e}") from None
    try:
        check_yaml_bounds(text)
    except YamlTooBig as e:
        raise RecipeError(f"{shown}:{e.line}: {e.message}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise RecipeError(f"{shown}:{line}: YAML syntax error: {what}; fix the indentation or quoting there") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{shown}:1: YAML error: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{shown}:1: expected a mapping of recipe keys (package, version, source, …), "
                          f"got {_describe(data)}")
    try:
        lines = _node_lines(node)
    except _Located as e:
        raise RecipeError(f"{shown}:{e.line}: {e.key}: {e.message}") from None
    lines[""] = 1
    errors = []
    for err in Draft202012Validator(schema()).iter_errors(data):
        key_parts, message = _explain(err)
        key = key_path(key_parts)
        # A misspelt key also makes the right one "missing": report the misspelling first.
        rank = 0 if message.startswith("unknown key") else 2 if err.validator == "required" else 1
        errors.append((rank, _line_of(lines, key), key, message))
    if errors:
        errors.sort()
        _, line, key, message = errors[0]
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise RecipeError(f"{shown}:{line}: {key or '(top)'}: {message}{more}")
    try:
        _semantic_checks(data)
    except _Located as e:
        raise RecipeError(f"{shown}:{_line_of(lines, e.key)}: {e.key}: {e.message}") from None
    return _build(path, data, lines)


def _inside_repository(path: Path, lines: Mapping[str, int], key: str, root: Path, value: str) -> Path:
    """VALUE resolved against the repository ROOT (the folder holding recipes/); RecipeError when it leaves ROOT.

    An absolute path is the writer's explicit choice (test harnesses point at a checkout elsewhere); a
    relative one that climbs out with '..' is a mistake or a trick, and is refused.
    """
    target = (root / value).resolve()
    if not Path(value).is_absolute() and not target.is_relative_to(root):
        raise RecipeError(f"{_display(path)}:{_line_of(lines, key)}: {key}: {value!r} resolves to {target}, outside the "
                          f"repository {root}; give a folder inside it, relative to it")
    return target


def _build(path: Path, data: Mapping[str, Any], lines: Mapping[str, int]) -> Recipe:
    name = path.stem
    version = data["version"]
    local = data.get("local_version")
    release = f"{version}.{local}" if local else version
    src = data["source"]
    source = SourceSpec(url=src.get("git"), ref=src.get("ref"), submodules=bool(src.get("submodules", False)),
                        path=src.get("path"))
    root = path.resolve().parent.parent
    if source.path is not None:
        _inside_repository(path, lines, "source.path", root, source.path)
    patches = data.get("patches") or {}
    note = patches.get("none")
    patches_dir = None if note else root / patches.get("dir", f"patches/{name}")
    if "dir" in patches:
        patches_dir = _inside_repository(path, lines, "patches.dir", root, patches["dir"])
        if not patches_dir.is_dir():
            raise RecipeError(f"{_display(path)}:{_line_of(lines, 'patches.dir')}: patches.dir: no folder {patches_dir} "
                              f"(relative to the repository {root}); create it with the *.patch files, or write "
                              "none: \"why no patch is needed\"")
    tc = data["toolchain"]
    toolchain = ToolchainSpec(compiler=tc["compiler"], python=tuple(tc["python"]), platforms=tuple(tc["platforms"]),
                              oneapi=tc.get("oneapi"), torch=tc.get("torch", ""))
    build = data.get("build") or {}
    t = data["targets"]
    gens = t["generations"]
    targets = TargetsSpec(
        generations=gens if gens == "all" else tuple(gens),
        from_=t.get("from"),
        exclude=tuple(t.get("exclude") or ()),
        devices=dict(t.get("devices") or {}),
        name_patterns=tuple(t.get("name_patterns") or ()),
        runners={k: tuple(v) for k, v in (t.get("runners") or {}).items()},
    )
    values = {"release": release, "version": version, "local_version": local or "", "name": name,
              "package": data["package"]}
    rel = data.get("release") or {}
    return Recipe(
        path=path, name=name, package=data["package"], version=version, release=release, source=source,
        patches_dir=patches_dir, patches_note=note, toolchain=toolchain, env=dict(data.get("env") or {}),
        build_command=tuple(build.get("command") or ()), reuse_tree=bool(build.get("reuse_tree", False)),
        artifacts=dict(build.get("artifact") or {}), devlist_variable=data["devlist_variable"],
        release_tag=rel.get("tag", DEFAULT_TAG).format(**values),
        # {platform} stays for archive_for(); the other placeholders are the recipe's own facts.
        archive_template=rel.get("archive", DEFAULT_ARCHIVE if len(toolchain.platforms) == 1 else DEFAULT_ARCHIVE_MULTI
                                 ).format(**values, platform="{platform}"),
        local_version=local, targets=targets, lines=dict(lines),
    )


# --------------------------------------------------------------------------- expanding the targets


@dataclass(frozen=True)
class TargetPlan:
    """What the local ocloc makes of a recipe's targets."""

    targets: list[Target]
    unknown: list[tuple[str, str]]  # (generation, key) the local ocloc does not know: a newer ocloc needs to
    ocloc_version: str

    def newer_ocloc_message(self, recipe: Recipe) -> str:
        gens = [g for g, _ in self.unknown]
        key = self.unknown[0][1]
        return (f"{recipe.where(key)}: {len(gens)} generation(s) are unknown to the local ocloc "
                f"{self.ocloc_version} ({', '.join(gens)}); they need a newer ocloc: install one (oneAPI "
                f"{recipe.toolchain.oneapi or '2025'} or Ubuntu's intel-ocloc) and point OCLOC at it")


def nearest_generation(code: str, known: Sequence[str]) -> str:
    """The known generation code closest to CODE: the same family's nearest stepping, else the numerically nearest."""
    want = tuple(int(p) for p in code.split("."))

    def distance(g: str) -> tuple[int, ...]:
        have = tuple(int(p) for p in g.split("."))
        return tuple(abs(a - b) for a, b in zip(want, have, strict=True)) + tuple(-x for x in have)

    return min(known, key=distance) if known else "none"


def _resolve_names(recipe: Recipe, db: DeviceDatabase, key: str, name: str, known: list[str],
                   *, several: bool) -> list[str] | None:
    """Generations a recipe entry stands for; None when it is a generation code ocloc does not know."""
    version = db.ocloc.get("version", "?")
    if is_generation(name):
        if name in known:
            return [name]
        family = name.rsplit(".", 1)[0]
        siblings = [g for g in known if g.rsplit(".", 1)[0] == family]
        if siblings:
            # ocloc lists a family's steppings together: one it knows the family of but not this code is a typo.
            raise RecipeError(f"{recipe.where(key)}: {name!r} is not a generation of the {family} family (ocloc "
                              f"{version} knows {', '.join(siblings)}); the nearest known code is "
                              f"{nearest_generation(name, known)}: a typo?")
        return None
    gens = db.names.get(name.lower())
    if gens is None:
        shown = ", ".join(sorted(n for n in db.names if n not in db.groups)[:40])
        raise RecipeError(f"{recipe.where(key)}: {name!r} is not a device name the local ocloc {version} accepts; "
                          f"give a generation code or one of: {shown}, …")
    if len(gens) != 1 and not several:
        raise RecipeError(f"{recipe.where(key)}: {name!r} stands for {len(gens)} generations ({', '.join(gens)}); "
                          "name one generation code instead")
    return list(gens)


def _choose_device(recipe: Recipe, db: DeviceDatabase, generation: str) -> str:
    """An ocloc name that resolves to exactly GENERATION, shaped as the release's build wants it.

    Only product acronyms qualify: ocloc lists family names too (xe-hp is exactly
    12.50.4 in 22.43) but refuses them as compile targets. Without a product
    name the IP version itself is used, which ocloc takes as -device.
    """
    products = [n for n, vs in db.names.items() if list(vs) == [generation] and n not in db.groups]
    for pattern in recipe.targets.name_patterns or ("*",):
        hits = [n for n in products if fnmatch.fnmatchcase(n, pattern)]
        if hits:
            return hits[0]
    return generation


def plan_targets(recipe: Recipe, db: DeviceDatabase) -> TargetPlan:
    """Targets the local ocloc can build, plus the recipe's generations it does not know."""

    version = str(db.ocloc.get("version", "?"))
    known = db.known_generations()
    spec = recipe.targets
    unknown: list[tuple[str, str]] = []
    if spec.generations == "all":
        start = Generation(0, 0, 0)
        if spec.from_:
            first = _resolve_names(recipe, db, "targets.from", spec.from_, known, several=True)
            if first is None:
                raise RecipeError(f"{recipe.where('targets.from')}: {spec.from_!r} is not a generation the local "
                                  f"ocloc {version} knows; known: {', '.join(known)}")
            start = min(Generation.parse(g) for g in first)
        wanted = [g for g in known if Generation.parse(g) >= start]
    else:
        wanted = []
        for i, entry in enumerate(spec.generations):
            key = f"targets.generations[{i}]"
            gens = _resolve_names(recipe, db, key, entry, known, several=False)
            if gens is None:
                unknown.append((entry, key))
            else:
                wanted.extend(g for g in gens if g not in wanted)
    excluded: set[str] = set()
    for i, entry in enumerate(spec.exclude):
        key = f"targets.exclude[{i}]"
        gens = _resolve_names(recipe, db, key, entry, known, several=True)
        if gens is None:
            listed = spec.generations != "all" and entry in spec.generations
            if not listed:
                raise RecipeError(f"{recipe.where(key)}: {entry!r} is not a generation the local ocloc {version} "
                                  f"knows (the nearest known code is {nearest_generation(entry, known)}); known: "
                                  f"{', '.join(known)} (a newer generation needs a newer ocloc: set OCLOC)")
            unknown = [u for u in unknown if u[0] != entry]
            continue
        excluded.update(gens)
    all_listed = {g for g, _ in unknown} | set(wanted)
    for gen, name in spec.devices.items():
        key = f"targets.devices.{gen}"
        if gen not in all_listed:
            if spec.generations == "all":
                continue  # an override for a generation this ocloc does not list: nothing to build
            raise RecipeError(f"{recipe.where(key)}: {gen} is not among the recipe's target generations")
        if gen in {g for g, _ in unknown}:
            continue
        gens = _resolve_names(recipe, db, key, name, known, several=True)
        if gens != [gen]:
            what = "is unknown to" if gens is None else f"stands for {', '.join(gens)} in"
            raise RecipeError(f"{recipe.where(key)}: {name!r} {what} the local ocloc {version}; the devlist name for "
                              f"{gen} must resolve to exactly that generation (`ocloc ids {name}`)")
    targets = []
    default_runner = spec.runners.get("default")
    for gen in sorted((g for g in wanted if g not in excluded), key=generation_order):
        device = spec.devices.get(gen) or _choose_device(recipe, db, gen)
        targets.append(Target(generation=gen, device=device, runner=spec.runners.get(gen, default_runner)))
    if not targets and not unknown:
        raise RecipeError(f"{recipe.where('targets')}: no generation is left to build (ocloc {version} knows "
                          f"{', '.join(known)}); check targets.from and targets.exclude")
    return TargetPlan(targets, unknown, version)


def expand_targets(recipe: Recipe, db: DeviceDatabase) -> list[Target]:
    """One Target per generation to build; RecipeError naming file, line and key when ocloc cannot build one."""
    plan = plan_targets(recipe, db)
    if plan.unknown:
        raise RecipeError(plan.newer_ocloc_message(recipe))
    return plan.targets


# --------------------------------------------------------------------------- CLI


def _target_rows(recipe: Recipe, targets: Sequence[Target]) -> list[dict[str, Any]]:
    return [{"generation": t.generation, "device": t.device, "platform": plat, "python": list(recipe.toolchain.python),
             "devlist_variable": recipe.devlist_variable, "runner": list(t.runner) if t.runner else None}
            for t in targets for plat in recipe.toolchain.platforms]


def recipe_summary(recipe: Recipe, plan: TargetPlan | None) -> dict[str, Any]:
    return {
        "name": recipe.name, "path": str(recipe.path), "package": recipe.package, "release": recipe.release,
        "source": {"git": recipe.source.url, "ref": recipe.source.ref, "path": recipe.source.path},
        "toolchain": {"compiler": recipe.toolchain.compiler, "oneapi": recipe.toolchain.oneapi,
                      "torch": recipe.toolchain.torch, "python": list(recipe.toolchain.python),
                      "platforms": list(recipe.toolchain.platforms)},
        "devlist_variable": recipe.devlist_variable, "release_tag": recipe.release_tag,
        "archive": recipe.archive_name,
        "archives": recipe.archive_names,
        "ocloc": plan.ocloc_version if plan else None,
        "targets": _target_rows(recipe, plan.targets) if plan else [],
        "needs_newer_ocloc": [g for g, _ in plan.unknown] if plan else [],
    }


def _load_plan(recipe: Recipe, settings: Settings) -> TargetPlan:
    return plan_targets(recipe, load_database(settings))


def _cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    recipe = load_recipe(args.recipe)
    if args.structure_only:
        log.info(f"{_display(recipe.path)}: structure ok")
        return 0
    plan = _load_plan(recipe, settings)
    if plan.unknown:
        if args.strict:
            raise RecipeError(plan.newer_ocloc_message(recipe))
        log.warn(f"{_display(recipe.path)}: structure ok; {len(plan.targets)} generation(s) build with ocloc "
                 f"{plan.ocloc_version}; {len(plan.unknown)} need a newer ocloc ({', '.join(g for g, _ in plan.unknown)})")
    else:
        log.info(f"{_display(recipe.path)}: ok; {len(plan.targets)} generation(s) with ocloc {plan.ocloc_version}")
    return 0


def _cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    recipe = load_recipe(args.recipe)
    plan = _load_plan(recipe, settings)
    summary = recipe_summary(recipe, plan)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    out = sys.stdout
    out.write(f"{recipe.name}: {recipe.package} {recipe.release} ({recipe.release_tag}, {', '.join(recipe.archive_names.values())})\n")
    out.write(f"ocloc {plan.ocloc_version}; devlist variable {recipe.devlist_variable}\n\n")
    out.write("| generation | device | platform | python | devlist variable |\n| --- | --- | --- | --- | --- |\n")
    for row in summary["targets"]:
        out.write(f"| {row['generation']} | {row['device']} | {row['platform']} | {' '.join(row['python'])} | "
                  f"{row['devlist_variable']} |\n")
    for gen, _ in plan.unknown:
        out.write(f"| {gen} | (needs a newer ocloc) | | | {recipe.devlist_variable} |\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recipe", help="validate a recipe or show its expanded target matrix")
    sub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    v = sub.add_parser("validate", help="check a recipe's structure and its targets against the local ocloc")
    v.add_argument("recipe", help="recipe file or name, e.g. recipes/canary.yaml or canary")
    v.add_argument("--strict", action="store_true", help="fail when a generation needs a newer ocloc")
    v.add_argument("--structure-only", action="store_true", help="check the YAML and schema only (no ocloc)")
    v.set_defaults(func=_cmd_validate)
    s = sub.add_parser("show", help="print the expanded matrix (generation, device, platform, python, variable)")
    s.add_argument("recipe", help="recipe file or name")
    s.add_argument("--json", action="store_true", help="JSON on stdout")
    s.set_defaults(func=_cmd_show)
