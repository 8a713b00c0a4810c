"""Per-generation builds: one build command per generation, its library and build.json.

For every target generation of a recipe the build command (by default a
``pip wheel``) runs with the prepared toolchain environment, the recipe's
``env``, the devlist variable set to that generation's device name and
``MAX_JOBS``. The GPU library is taken out of the wheel into
``dist/<recipe>/<generation>/`` atomically and ``build.json`` is written
beside it. A generation whose inputs did not change and whose library still
matches its recorded sha256 is skipped, so an interrupted release resumes.

Build-tree reuse: the generations of one recipe run one after another in one
build tree (``dist/<recipe>/build-tree``, or the source's own ``build/`` for
recipes whose command does not take ``{build_dir}``, as IPEX's setup.py
does), so only the first compiles the host and SPIR-V code and the others
relink. Object files (``.o``/``.obj``/``.spv``) are compared before and after
each generation and the log says how many were recompiled or reused.
``--clean`` gives every generation a fresh tree instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ipex_aot import children, log, platforms
from ipex_aot import source as source_mod
from ipex_aot.devices import load_database
from ipex_aot.errors import BuildError, IpexAotError, UsageError
from ipex_aot.fsutil import CHUNK, atomic_output, read_json, sha256_file, write_json
from ipex_aot.generation import is_generation
from ipex_aot.recipe import Target as TargetType
from ipex_aot.recipe import expand_targets, load_recipe
from ipex_aot.settings import Settings
from ipex_aot.untrusted import loads_json

if TYPE_CHECKING:
    from ipex_aot.recipe import Recipe, Target

SCHEMA = 1
DEFAULT_COMMAND = ("{python}", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "{source}", "-w", "{wheel_dir}")
#: Files whose mtimes tell whether the compile-once part was redone.
OBJECT_SUFFIXES = (".o", ".obj", ".spv")
#: Lines of a failed build's log repeated on the terminal.
TAIL_LINES = 15


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- results


def recipe_dist(dist: Path, recipe_name: str) -> Path:
    return Path(dist) / recipe_name


def record_error(path: Path, what: str) -> BuildError:
    """What is wrong with a generation's build record, and the rebuild that mends it."""
    return BuildError(f"{path}: {what}; rebuild it with `ipex-aot build RECIPE --generation {path.parent.name}`")


def read_build_record(path: Path) -> dict:
    """The build.json of one generation folder, checked; BuildError naming the file and what is wrong.

    The one reader of build records: pack, verify, conformance, release and
    variants all take a folder's record through it. Checked: a JSON object
    (depth-bounded), ``generation`` equal to the folder's name, ``release``,
    and ``artifact.name`` a plain file name whose library is present with the
    recorded size (the sha256 is compared by pack and verify, which read the
    bytes anyway).
    """
    generation = path.parent.name
    try:
        record = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise record_error(path, f"cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise record_error(path, f"is not valid JSON (line {e.lineno}: {e.msg})") from None
    except ValueError as e:
        raise record_error(path, f"is not a build record ({e})") from None
    if not isinstance(record, dict):
        raise record_error(path, "is not a JSON object")
    artifact = record.get("artifact")
    for key, ok in (
        ("generation", record.get("generation") == generation),
        ("release", isinstance(record.get("release"), str) and bool(record.get("release"))),
        ("artifact", isinstance(artifact, dict)),
    ):
        if not ok:
            raise record_error(path, f"key {key!r} is missing or wrong (folder {generation})")
    assert isinstance(artifact, dict)
    lib_name = artifact.get("name")
    if not isinstance(lib_name, str) or not lib_name or "/" in lib_name or "\\" in lib_name or lib_name in (".", ".."):
        raise record_error(path, f"artifact.name {lib_name!r} is not a plain file name")
    library = path.parent / lib_name
    if not library.is_file():
        raise record_error(path, f"its library {library.name} is missing")
    if isinstance(artifact.get("size"), int) and library.stat().st_size != artifact["size"]:
        raise record_error(path, f"{library.name} is {library.stat().st_size} bytes, build.json says {artifact['size']}")
    return record


def built_generations(dist: Path, recipe_name: str) -> dict[str, dict]:
    """generation -> build.json of every finished build of a recipe under ``dist``.

    A folder without build.json is an unfinished build; one whose record
    :func:`read_build_record` refuses is named in a warning and counted as
    unfinished too (the next build redoes it).
    """
    root = recipe_dist(dist, recipe_name)
    found: dict[str, dict] = {}
    if not root.is_dir():
        return found
    for record_path in sorted(root.glob("*/build.json")):
        if not is_generation(record_path.parent.name):
            continue
        try:
            found[record_path.parent.name] = read_build_record(record_path)
        except BuildError as e:
            log.warn(f"{e.message}; counted as unfinished")
    return found


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SourceInfo:
    """The source tree a build runs on and what identifies its content."""

    path: Path
    url: str
    ref: str
    commit: str
    tree: str  # content identity beyond the commit (local changes, or a path source's hash)
    patches: tuple[dict, ...] = ()

    def to_json(self) -> dict:
        return {"url": self.url, "ref": self.ref, "commit": self.commit, "tree": self.tree, "path": str(self.path)}

    @property
    def identity(self) -> dict:
        """What the build depends on. A path source inside this repository is its content
        hash alone: the repository's HEAD moves with every unrelated commit."""
        if self.url.startswith("path:"):
            return {"url": self.url, "tree": self.tree}
        return {"url": self.url, "ref": self.ref, "commit": self.commit, "tree": self.tree}


_SKIP_DIRS = {"build", "dist", "__pycache__", ".git", ".nox", ".venv", ".pytest_cache"}


def tree_hash(root: Path) -> str:
    """sha256 over the relative paths and contents of a small source tree (the canary)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(sha256_file(path).encode() + b"\0")
    return h.hexdigest()


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def describe_checkout(path: Path) -> tuple[str, str]:
    """(commit, tree identity) of a git checkout: HEAD plus a hash of local changes."""
    commit = _git(["rev-parse", "HEAD"], path) or ""
    diff = _git(["diff", "HEAD", "--no-ext-diff", "--binary"], path) or ""
    return commit, hashlib.sha256(diff.encode()).hexdigest() if diff else ""


def prepare_source(recipe: Recipe, settings: Settings, source_dir: Path | None = None) -> SourceInfo:
    """The tree to build (``ipex_aot.source``: ``--source DIR``, the in-repo path, or the patched
    checkout) and what identifies its content for the skip logic."""

    prepared = source_mod.prepare_source(recipe, settings, source_dir)
    path = Path(prepared.path)
    patches = tuple(dict(p) for p in prepared.patches)
    if prepared.url.startswith("path:") or not (path / ".git").exists():
        # In-repo (the canary) or a plain folder: its content is its identity.
        return SourceInfo(path, prepared.url, prepared.ref, prepared.commit, tree_hash(path), patches)
    _, changes = describe_checkout(path)
    # A managed checkout's changes are its patches, already named by hash; a user's
    # --source tree may carry edits of its own.
    tree = "" if patches and source_dir is None else changes
    return SourceInfo(path, prepared.url, prepared.ref, prepared.commit, tree, patches)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)



def inputs_hash(
    recipe: Recipe, target: Target, source: SourceInfo, toolchain: Mapping[str, Any], plat: str
) -> str:
    """What decides a generation's library: if this is unchanged, the build is skipped."""
    relevant = {
        "package": recipe.package,
        "release": recipe.release,
        "source": source.identity,
        "patches": list(source.patches),
        "toolchain_spec": _jsonable(recipe.toolchain),
        "env": recipe.env_for(plat),
        "command": list(recipe.build_command or DEFAULT_COMMAND),
        "artifact": recipe.artifacts.get(plat),
        "devlist_variable": recipe.devlist_variable,
        "devlist": target.device,
        "generation": target.generation,
        "platform": plat,
        "toolchain": _jsonable(toolchain),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def is_up_to_date(folder: Path, expected_hash: str) -> bool:
    """True when build.json records ``expected_hash`` and the library still matches it."""
    try:
        record = read_json(folder / "build.json")
        if record.get("inputs_hash") != expected_hash:
            return False
        library = folder / record["artifact"]["name"]
        return library.stat().st_size == record["artifact"]["size"] and sha256_file(library) == record["artifact"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


# --------------------------------------------------------------------------- running one build


def _snapshot(tree: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    if not tree.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            if name.endswith(OBJECT_SUFFIXES):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    found[path] = os.stat(path).st_mtime_ns
    return found


@dataclass
class TreeReport:
    reused: int
    recompiled: int

    def line(self) -> str:
        return f"build tree: {self.recompiled} objects recompiled, {self.reused} reused"


def compare_trees(before: Mapping[str, int], after: Mapping[str, int]) -> TreeReport:
    reused = sum(1 for p, m in after.items() if before.get(p) == m)
    return TreeReport(reused=reused, recompiled=len(after) - reused)


def _expand(text: str, values: Mapping[str, str]) -> str:
    # Plain replacement, so other braces in a command (shell, JSON) pass through.
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def run_logged(cmd: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, label: str) -> int:
    """Run ``cmd``, its output streamed into ``log_path`` and shown as a live line."""
    live = log.Progress(label, every=30.0)
    with open(log_path, "a", encoding="utf-8", errors="replace") as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        logf.flush()
        try:
            proc = subprocess.Popen(
                list(cmd), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1, **children.popen_options(),
            )
        except OSError as e:
            logf.write(f"cannot start {cmd[0]}: {e}\n")
            return 127
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                logf.write(line)
                live.show(line)
            return proc.wait()
        except BaseException:
            children.kill(proc)  # the whole group: pip wheel and the build backend it started
            raise
        finally:
            live.close()
            logf.write(f"[exit {proc.poll()}]\n")


def _first_error(path: Path) -> str:
    """The first line of a build log that says error, as the headline of a failure."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(("#", "$")) and "error" in line.lower():
                return line.strip()[:300]
    return ""


def _tail(path: Path, n: int = TAIL_LINES) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join("    " + line for line in lines[-n:])
    return ""


def extract_artifact(wheel: Path, member: str, destination: Path) -> tuple[str, int]:
    """Copy ``member`` of ``wheel`` to ``destination`` atomically; return (sha256, size)."""
    h = hashlib.sha256()
    size = 0
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise BuildError(
                    f"{wheel.name} has no {member}; fix build.artifact in the recipe (the wheel holds e.g. "
                    f"{', '.join(n for n in zf.namelist() if n.endswith(('.so', '.dll', '.pyd')))[:200] or 'no library'})"
                ) from None
            with zf.open(info) as src, atomic_output(destination) as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
    except zipfile.BadZipFile as e:
        raise BuildError(f"{wheel}: not a readable wheel ({e})") from None
    return h.hexdigest(), size


# --------------------------------------------------------------------------- the build loop


@dataclass
class BuildOptions:
    keep_going: bool = False
    clean: bool = False
    force: bool = False
    source_dir: Path | None = None
    reuse_tree: bool | None = None  # None: the recipe's build.reuse_tree
    #: The platform built for (None: this host's). Another one is a cross build: the recipe's
    #: build command must make that platform's wheel (a CI matrix entry names its platform, so a
    #: mislabelled runner fails at the artifact instead of publishing the wrong platform's file).
    platform: str | None = None


@dataclass
class GenerationResult:
    generation: str
    device: str
    status: str  # built | skipped | failed
    duration_s: float = 0.0
    error: str = ""
    record: dict | None = None
    tree: TreeReport | None = None


@dataclass
class BuildContext:
    recipe: Recipe
    settings: Settings
    source: SourceInfo
    toolchain: dict
    env: dict[str, str]
    platform: str
    options: BuildOptions = field(default_factory=BuildOptions)

    @property
    def root(self) -> Path:
        return recipe_dist(self.settings.dist_dir, self.recipe.name).resolve()

    @property
    def reuse(self) -> bool:
        if self.options.clean:
            return False
        return bool(self.recipe.reuse_tree if self.options.reuse_tree is None else self.options.reuse_tree)

    @property
    def command(self) -> tuple[str, ...]:
        return tuple(self.recipe.build_command or DEFAULT_COMMAND)

    @property
    def tree_in_source(self) -> bool:
        """IPEX-style: the command does not take {build_dir}, so the tree is the source's build/."""
        texts = [*self.command, *self.recipe.env_for(self.platform).values()]
        return not any("{build_dir}" in t for t in texts)

    def build_tree(self, generation: str) -> Path:
        if self.tree_in_source:
            return self.source.path / "build"
        if self.reuse:
            return self.root / "build-tree"
        return self.root / "build-tree.clean" / generation


def _artifact_member(ctx: BuildContext) -> str:
    member = ctx.recipe.artifacts.get(ctx.platform)
    if not member:
        known = ", ".join(sorted(ctx.recipe.artifacts)) or "none"
        raise UsageError(
            f"{ctx.recipe.path}: build.artifact has no entry for this platform {ctx.platform} (it has: {known}); "
            f"build on one of those or add {ctx.platform} to the recipe"
        )
    return member


def _command_and_env(ctx: BuildContext, device: str, values: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The build command and its environment for one device list ('' for the JIT-only build)."""
    env = dict(ctx.env)
    env.update({k: _expand(v, values) for k, v in ctx.recipe.env_for(ctx.platform).items()})
    env[ctx.recipe.devlist_variable] = device
    env["MAX_JOBS"] = str(ctx.settings.jobs)
    return env, [_expand(part, values) for part in ctx.command]


def _prepare(ctx: BuildContext, label: str) -> tuple[Path, Path]:
    """(log file, build tree) of the build LABEL: a clean build's old tree and a killed build's scratch are gone."""
    root = ctx.root
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tree = ctx.build_tree(label)
    if not ctx.reuse and tree.exists():
        shutil.rmtree(tree)
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for stale in wheels.glob(f".{label}.*"):  # a killed build's scratch (we hold the recipe lock)
        shutil.rmtree(stale, ignore_errors=True)
    return logs / f"{label}.log", tree


def _run_build(ctx: BuildContext, label: str, device: str, tree: Path, wheel_dir: Path, log_path: Path) -> int:
    """Run the recipe's build command for the device list DEVICE, wheels into WHEEL_DIR; its exit code."""
    values = {"python": sys.executable, "source": str(ctx.source.path), "wheel_dir": str(wheel_dir),
              "build_dir": str(tree), "jobs": str(ctx.settings.jobs)}
    env, cmd = _command_and_env(ctx, device, values)
    if not ctx.tree_in_source:
        tree.mkdir(parents=True, exist_ok=True)
    return run_logged(cmd, env, ctx.source.path, log_path, label)


def _one_wheel(label: str, rc: int, wheel_dir: Path, log_path: Path) -> Path:
    """The one wheel a build that exited with RC left in WHEEL_DIR; BuildError, with the log's first error, else."""
    if rc != 0:
        headline = _first_error(log_path)
        raise BuildError(f"[{label}] build command failed (exit {rc})" + (f": {headline}" if headline else "")
                         + f"; log: {log_path}\n{_tail(log_path)}")
    built = sorted(wheel_dir.glob("*.whl"))
    if len(built) != 1:
        raise BuildError(f"[{label}] expected one wheel in {wheel_dir}, found {len(built)}; log: {log_path}")
    return built[0]


def _keep_wheel(wheel: Path, kept: Path) -> Path:
    """Move WHEEL into the folder KEPT, which holds only it (the previous build's wheel goes)."""
    if kept.exists():
        shutil.rmtree(kept)
    kept.mkdir()
    os.replace(wheel, kept / wheel.name)
    return kept / wheel.name


def build_one(ctx: BuildContext, target: Target) -> GenerationResult:
    generation, device = target.generation, target.device
    root = ctx.root
    folder = root / generation
    member = _artifact_member(ctx)
    artifact_name = PurePosixPath(member).name
    expected = inputs_hash(ctx.recipe, target, ctx.source, ctx.toolchain, ctx.platform)
    if not ctx.options.force and is_up_to_date(folder, expected):
        log.info(f"[{generation}] unchanged since the last build; skipped ({folder / artifact_name})")
        return GenerationResult(generation, device, "skipped", record=read_json(folder / "build.json"))

    log_path, tree = _prepare(ctx, generation)
    reused_tree = ctx.reuse and bool(_snapshot(tree))
    started, start = _now(), time.monotonic()
    log_path.write_text(
        f"# {ctx.recipe.name} {ctx.recipe.release} generation {generation} "
        f"({ctx.recipe.devlist_variable}={device}) started {started}\n"
        f"# build tree {tree} ({'reused' if reused_tree else 'fresh'})\n",
        encoding="utf-8",
    )
    with tempfile.TemporaryDirectory(prefix=f".{generation}.", dir=root / "wheels") as tmp:
        before = _snapshot(tree)
        rc = _run_build(ctx, generation, device, tree, Path(tmp), log_path)
        report = compare_trees(before, _snapshot(tree))
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"# {report.line()}\n")
        built = _one_wheel(generation, rc, Path(tmp), log_path)
        sha, size = extract_artifact(built, member, folder / artifact_name)
        # One wheel folder per generation: the wheels of all generations share one file name.
        wheel = _keep_wheel(built, root / "wheels" / generation)
    if not ctx.reuse:
        shutil.rmtree(tree, ignore_errors=True)
    duration = time.monotonic() - start
    record = {
        "schema": SCHEMA,
        "recipe": ctx.recipe.name,
        "release": ctx.recipe.release,
        "generation": generation,
        "devlist": device,
        "devlist_variable": ctx.recipe.devlist_variable,
        "platform": ctx.platform,
        "artifact": {"name": artifact_name, "install_path": member, "sha256": sha, "size": size},
        "wheel": wheel.relative_to(root).as_posix(),
        "toolchain": _jsonable(ctx.toolchain),
        "source": {"url": ctx.source.url, "ref": ctx.source.ref, "commit": ctx.source.commit, "tree": ctx.source.tree},
        "patches": list(ctx.source.patches),
        "inputs_hash": expected,
        "started": started,
        "finished": _now(),
        "duration_s": round(duration, 2),
        "host": socket.gethostname(),
        "reused_tree": reused_tree,
        "tree": {"objects_recompiled": report.recompiled, "objects_reused": report.reused},
        "log": log_path.relative_to(root).as_posix(),
    }
    write_json(folder / "build.json", record)
    log.info(f"[{generation}] built {artifact_name} ({size} bytes) in {duration:.1f} s; {report.line()}")
    return GenerationResult(generation, device, "built", duration, record=record, tree=report)


#: wheels/<JIT>/ holds the JIT-only wheel; not a generation code, so no generation folder can clash.
JIT = "jit"


def build_jit_wheel(ctx: BuildContext) -> Path:
    """The JIT-only wheel: the recipe's build command with an empty devlist variable.

    IPEX 2.1 (and the canary) build SPIR-V alone when ``USE_AOT_DEVLIST`` is
    empty, so this wheel runs on every GPU after the driver's JIT compile:
    the fallback beside the per-generation wheels. It is kept in
    ``wheels/jit/`` with a ``build.json`` whose inputs hash lets a rerun skip
    it, and it reuses the build tree like any generation (only a relink).
    The caller holds :func:`recipe_lock` (the tree is shared with the generations).
    """

    root = ctx.root
    kept = root / "wheels" / JIT
    expected = inputs_hash(ctx.recipe, TargetType(generation=JIT, device="", runner=None), ctx.source, ctx.toolchain,
                           ctx.platform)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = read_json(kept / "build.json")
        wheel = kept / record["wheel"]
        if not ctx.options.force and record["inputs_hash"] == expected and sha256_file(wheel) == record["sha256"]:
            log.info(f"[{JIT}] unchanged since the last build; skipped ({wheel})")
            return wheel
    log_path, tree = _prepare(ctx, JIT)
    started, start = _now(), time.monotonic()
    log_path.write_text(
        f"# {ctx.recipe.name} {ctx.recipe.release} JIT-only ({ctx.recipe.devlist_variable} empty) started {started}\n",
        encoding="utf-8",
    )
    with tempfile.TemporaryDirectory(prefix=f".{JIT}.", dir=root / "wheels") as tmp:
        rc = _run_build(ctx, JIT, "", tree, Path(tmp), log_path)
        wheel = _keep_wheel(_one_wheel(JIT, rc, Path(tmp), log_path), kept)
    if not ctx.reuse:
        shutil.rmtree(tree, ignore_errors=True)
    write_json(kept / "build.json", {
        "schema": SCHEMA, "recipe": ctx.recipe.name, "release": ctx.recipe.release, "devlist": "",
        "devlist_variable": ctx.recipe.devlist_variable, "platform": ctx.platform, "wheel": wheel.name,
        "sha256": sha256_file(wheel), "inputs_hash": expected, "started": started, "finished": _now(),
        "duration_s": round(time.monotonic() - start, 2), "log": log_path.relative_to(root).as_posix(),
    })
    log.info(f"[{JIT}] built {wheel.name} in {time.monotonic() - start:.1f} s")
    return wheel


@contextlib.contextmanager
def recipe_lock(root: Path) -> Iterator[None]:
    """One build of a recipe at a time: two would share (and wreck) its build tree.

    An OS lock on ``dist/<recipe>/.build.lock``, released when the process
    ends, even on a crash. filelock takes it with flock() on Linux and
    msvcrt.locking() on Windows, which has no fcntl: one code path, and
    Windows builds are locked too instead of silently not at all.
    """
    import filelock

    root.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(root / ".build.lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise BuildError(f"{root}: another build of this recipe is running; wait for it to finish") from None
    try:
        yield
    finally:
        lock.release()


def build_targets(ctx: BuildContext, targets: Sequence[Target]) -> list[GenerationResult]:
    """Build ``targets`` one after another (they share the build tree); BuildError lists the failures."""
    with recipe_lock(ctx.root):
        return _build_targets(ctx, targets)


def _build_targets(ctx: BuildContext, targets: Sequence[Target]) -> list[GenerationResult]:
    results: list[GenerationResult] = []
    progress = log.Progress(f"{ctx.recipe.name} generations", len(targets), every=0.0)
    mode = "reused build tree" if ctx.reuse else "clean tree per generation"
    log.info(f"building {len(targets)} generation(s) of {ctx.recipe.name} ({mode}); logs in {ctx.root / 'logs'}")
    for target in targets:
        try:
            result = build_one(ctx, target)
        except IpexAotError as e:
            result = GenerationResult(target.generation, target.device, "failed", error=e.message)
            log.info(f"error: {e.message}")
            if not ctx.options.keep_going:
                results.append(result)
                _raise_failures(results, len(targets), ctx.root / "logs")
        results.append(result)
        progress.advance(note=f"{target.generation} {result.status}")
    _raise_failures(results, len(targets), ctx.root / "logs")
    return results


def _raise_failures(results: Sequence[GenerationResult], total: int, logs: Path) -> None:
    failed = [r.generation for r in results if r.status == "failed"]
    if failed:
        done = sum(1 for r in results if r.status != "failed")
        rest = total - len(results)
        tail = f", {rest} not attempted (use --keep-going to build them)" if rest else ""
        raise BuildError(
            f"{len(failed)} of {total} generation(s) failed: {', '.join(failed)} ({done} ok{tail}); "
            f"see {logs}/<generation>.log"
        )


# --------------------------------------------------------------------------- selection


def select_targets(targets: Sequence[Target], db: Any, wanted: Iterable[str]) -> list[Target]:
    """The targets named by generation code, acronym or PCI ID (DeviceDatabase.resolve)."""
    wanted = list(wanted)
    if not wanted:
        return list(targets)
    by_gen = {t.generation: t for t in targets}
    chosen: list[Target] = []
    for name in wanted:
        generation = db.resolve(name)
        if generation in by_gen:
            target = by_gen[generation]
        else:
            # A local rebuild of a generation the recipe does not list: build it with
            # the name the device database says resolves to exactly that generation.

            target = TargetType(generation=generation, device=db.device_name(generation), runner=None)
            log.warn(f"{generation} ({name}) is not among the recipe's targets; building it with device {target.device}")
        if target not in chosen:
            chosen.append(target)
    return chosen


def run_preflight(recipe: Recipe, settings: Settings) -> tuple[dict[str, str], dict]:
    """(build environment, toolchain versions), or ToolchainError before any other work."""
    from ipex_aot import toolchain

    with log.step(f"preflight {recipe.name}"):
        # Activation first: on a machine without the recipe's oneAPI this is where it stops.
        env = dict(toolchain.prepare_environment(recipe, settings))
        versions = dict(toolchain.preflight(recipe, settings, env=env))
        log.info("toolchain: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return env, versions


def make_context(
    recipe: Recipe, settings: Settings, options: BuildOptions, preflight: tuple[dict[str, str], dict] | None = None
) -> BuildContext:
    """Preflight (unless given), toolchain environment and source: everything before the first generation."""
    env, versions = preflight or run_preflight(recipe, settings)
    ctx_source = prepare_source(recipe, settings, options.source_dir)
    ctx = BuildContext(recipe, settings, ctx_source, versions, env, options.platform or platforms.host_platform(), options)
    _artifact_member(ctx)
    return ctx


def build(
    recipe: Recipe, settings: Settings, wanted: Iterable[str] = (), options: BuildOptions | None = None
) -> list[GenerationResult]:
    """Build the selected (default: all) target generations of ``recipe``.

    Order: preflight (seconds; stops a machine without the toolchain first),
    then the targets against the device database, then the source (a clone
    may take long), then the generations.
    """

    options = options or BuildOptions()
    checked = run_preflight(recipe, settings)
    db = load_database(settings)
    targets = select_targets(expand_targets(recipe, db), db, wanted)
    if not targets:
        raise UsageError(f"{recipe.path}: no target generations to build")
    ctx = make_context(recipe, settings, options, checked)
    with log.step(f"build {recipe.name}: {len(targets)} generation(s)"):
        return build_targets(ctx, targets)


# --------------------------------------------------------------------------- CLI


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generation", action="append", default=[], metavar="CODE", help="e.g. 12.55.8 (repeatable)")
    parser.add_argument("--device", action="append", default=[], metavar="ACRONYM", help="e.g. acm-g10 (repeatable)")
    parser.add_argument("--pci", action="append", default=[], metavar="ID", help="PCI device ID, e.g. 56A0 (repeatable)")


def selection(args: argparse.Namespace) -> list[str]:
    return [*args.generation, *args.device, *args.pci]


def _cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    recipe = load_recipe(args.recipe)
    options = BuildOptions(
        keep_going=args.keep_going,
        clean=args.clean,
        force=args.force,
        source_dir=Path(args.source) if args.source else None,
        platform=args.platform,
    )
    if args.platform and args.platform not in recipe.toolchain.platforms:
        raise UsageError(f"--platform {args.platform}: {recipe.name} builds for {', '.join(recipe.toolchain.platforms)}")
    results = build(recipe, settings, selection(args), options)
    if args.json:
        print(json.dumps([{"generation": r.generation, "status": r.status} for r in results], indent=2))
    built = sum(r.status == "built" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    log.info(f"{built} built, {skipped} unchanged, in {recipe_dist(settings.dist_dir, recipe.name)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a recipe's generations (one library per generation)",
        description="Build every target generation of RECIPE (or the selected ones) into dist/<recipe>/<generation>/.",
    )
    p.add_argument("recipe", help="recipe file or name, e.g. recipes/canary.yaml or canary")
    add_selection_arguments(p)
    p.add_argument("--keep-going", action="store_true", help="build the other generations when one fails")
    p.add_argument("--clean", action="store_true", help="a fresh build tree per generation (no reuse)")
    p.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    p.add_argument("--source", metavar="DIR", help="build this source tree instead of the recipe's")
    p.add_argument("--platform", help="the platform to build for (default: this host's); another one is a cross "
                                      "build, which the recipe's build command must be able to make")
    p.add_argument("--json", action="store_true", help="print each generation's status as JSON on stdout")
    p.set_defaults(func=_cmd_build)
