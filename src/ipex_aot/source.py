"""Source preparation: a cached clone, a work tree at the recipe's ref, the recipe's patches.

The upstream repository is fetched once into ``Settings.cache_dir/git/`` (a
bare repository; later runs fetch only the ref). The work tree is a local
clone of that cache under ``dist/<recipe>/src`` (objects hard-linked, so it
costs little), checked out detached at the ref's commit, with submodules.

Patches (``patches/<recipe>/*.patch``, in name order) are checked with ``git
apply --check`` before any is applied; the applied set and each patch's
sha256 are recorded in ``ipex-aot-patches.json`` inside the tree's git folder,
so a rerun applies nothing twice and a changed patch set restores the
pristine ref first. Untracked files (the build folder IPEX's setup.py keeps)
survive that, so build-tree reuse keeps working.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ipex_aot import log
from ipex_aot.errors import SourceError
from ipex_aot.fsutil import read_json, sha256_file, write_json
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings, child_env

if TYPE_CHECKING:
    from ipex_aot.recipe import Recipe

RECORD = "ipex-aot-patches.json"
GIT_TIMEOUT = 3600  # a first clone of IPEX with submodules takes minutes


@dataclass(frozen=True)
class PreparedSource:
    path: Path
    url: str
    ref: str
    commit: str
    patches: tuple[dict, ...] = ()  # ({"name": "0001-….patch", "sha256": "…"}, …) in applied order
    applied_now: tuple[str, ...] = field(default=(), compare=False)  # names applied by this call


def _git(args: Sequence[str], cwd: Path | None = None, *, what: str, check: bool = True,
         timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env=_git_env())
    except FileNotFoundError:
        raise SourceError("git not found on PATH; install git (Debian: apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: git {' '.join(args[:2])} took over {timeout:.0f} s; check the network") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SourceError(f"{what}: {detail[-1] if detail else f'git exited {proc.returncode}'}")
    return proc


def _git_env() -> dict[str, str]:
    # No prompts: CI has no terminal.
    return child_env({"GIT_TERMINAL_PROMPT": "0"})


def cache_path(settings: Settings, url: str) -> Path:
    """A stable folder per URL: readable stem plus a short hash against collisions."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")) or "repo"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(settings.cache_dir) / "git" / f"{stem}-{digest}.git"


def fetch(url: str, ref: str, settings: Settings) -> tuple[Path, str]:
    """(cache repository, commit of REF), fetching only what is missing."""
    cache = cache_path(settings, url)
    if not (cache / "HEAD").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".partial")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        _git(["init", "--bare", "-q", str(tmp)], what=f"cache for {url}")
        _git(["remote", "add", "origin", url], tmp, what=f"cache for {url}")
        tmp.rename(cache)  # a half-made cache never looks finished
    # A commit id already in the cache needs no network; tags and branches are fetched (they may move).
    if _is_commit_id(ref) and (known := _resolve(cache, ref)):
        return cache, known
    with log.step(f"fetch {ref} from {url}"):
        got = _git(["fetch", "-q", "--tags", "--force", "origin", ref], cache, what=f"fetch {ref}", check=False)
        if got.returncode == 0:
            commit = _resolve(cache, "FETCH_HEAD")
        else:
            # A commit id the server does not hand out by itself: fetch every branch and look it up.
            _git(["fetch", "-q", "--tags", "--force", "origin", "+refs/heads/*:refs/heads/*"], cache,
                 what=f"fetch {url}", check=False)
            commit = _resolve(cache, ref)
            if commit is None:
                detail = (got.stderr or got.stdout).strip().splitlines()
                raise SourceError(f"{url}: ref {ref!r} not found ({detail[-1] if detail else 'fetch failed'}); "
                                  "fix source.ref in the recipe (a tag, branch or commit) or check the URL/network")
    assert commit is not None
    # FETCH_HEAD is overwritten by the next fetch and is no ref: name the commit, so gc keeps it.
    safe = re.sub(r"[^A-Za-z0-9._/-]+", "_", ref).strip("/.") or "ref"
    _git(["update-ref", f"refs/ipex-aot/{safe}", commit], cache, what=f"record {ref} in the cache", check=False)
    return cache, commit


def _is_commit_id(ref: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{7,40}", ref))


def _resolve(repo: Path, ref: str) -> str | None:
    proc = _git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo, what="rev-parse", check=False)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def checkout(cache: Path, url: str, commit: str, tree: Path, *, submodules: bool) -> bool:
    """Put TREE at COMMIT (a local clone of CACHE); True when it was already there."""
    if not (tree / ".git").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        tmp = tree.with_name(tree.name + ".partial")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        _git(["clone", "-q", "--no-checkout", str(cache), str(tmp)], what=f"work tree {tree}")
        # Relative submodule URLs resolve against the upstream URL, not the cache.
        _git(["remote", "set-url", "origin", url], tmp, what=f"work tree {tree}")
        _git(["checkout", "-q", "--detach", commit], tmp, what=f"check out {commit[:12]} in {tree}")
        tmp.rename(tree)
        fresh = True
    else:
        head = _resolve(tree, "HEAD")
        fresh = head != commit
        if fresh:
            if _resolve(tree, commit) is None:
                _git(["fetch", "-q", str(cache), commit], tree, what=f"fetch {commit[:12]} into {tree}")
            _git(["checkout", "-q", "--force", "--detach", commit], tree, what=f"check out {commit[:12]} in {tree}")
    if submodules and (tree / ".gitmodules").is_file():
        with log.step(f"submodules of {tree.name}"):
            _git(["-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", "--recursive",
                  "--force"], tree, what=f"submodules in {tree}")
    return not fresh


# --------------------------------------------------------------------------- patches


def patch_files(recipe: Recipe) -> list[Path]:
    if recipe.patches_dir is None or not recipe.patches_dir.is_dir():
        return []
    return sorted(p for p in recipe.patches_dir.glob("*.patch") if p.is_file())


def _record_path(tree: Path) -> Path:
    proc = _git(["rev-parse", "--absolute-git-dir"], tree, what="git dir", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip()) / RECORD
    return tree / f".{RECORD}"  # an unpacked tarball given with --source


def _failed_hunk(patch: Path, output: str) -> str:
    """The hunk header git apply stopped at, from 'patch failed: FILE:LINE'."""
    m = re.search(r"patch failed: (.+?):(\d+)", output)
    if not m:
        lines = [ln for ln in output.strip().splitlines() if ln.startswith("error:")]
        return (lines[-1] if lines else output.strip()[:200]).removeprefix("error: ")
    name, line = m.group(1), m.group(2)
    current = None
    for text in patch.read_text(encoding="utf-8", errors="replace").splitlines():
        if text.startswith("+++ "):
            current = text[4:].split("\t")[0].removeprefix("b/")
        elif current == name and text.startswith((f"@@ -{line},", f"@@ -{line} ")):
            return f"hunk {text.strip()} of {name} is rejected"
    return f"the hunk at {name}:{line} is rejected"


def _created_files(patch: Path) -> list[str]:
    """Files a patch creates (``--- /dev/null``): a restore must remove them before re-applying."""
    out, new = [], False
    for text in patch.read_text(encoding="utf-8", errors="replace").splitlines():
        if text.startswith("--- "):
            new = text[4:].split("\t")[0].strip() == "/dev/null"
        elif text.startswith("+++ ") and new:
            out.append(text[4:].split("\t")[0].strip().removeprefix("b/"))
    return out


def _check(tree: Path, patch: Path, *, reverse: bool = False) -> subprocess.CompletedProcess[str]:
    args = ["apply", "--check", *(["--reverse"] if reverse else []), str(patch.resolve())]
    return _git(args, tree, what=f"check {patch.name}", check=False)


def _key(entry: dict) -> tuple[str, str]:
    return str(entry.get("name")), str(entry.get("sha256"))


def _read_record(record_file: Path, commit: str) -> list[dict] | None:
    """The recorded applied set for COMMIT; None when there is no usable record."""
    try:
        record = read_json(record_file) if record_file.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("commit") != commit:
        return None
    return [e for e in record.get("patches", []) if isinstance(e, dict)]


def _restore(tree: Path, commit: str, recorded: Sequence[dict]) -> None:
    """Back to the pristine commit: tracked files reset, files the old patches created removed;
    other untracked files (the build folder) stay."""
    _restore_created(tree, recorded)
    _git(["checkout", "-q", "--force", "--detach", commit], tree, what=f"restore {tree}")


def _restore_created(tree: Path, recorded: Sequence[dict]) -> None:
    for entry in recorded:
        for rel in entry.get("created", []):
            target = (tree / rel).resolve()
            if target.is_relative_to(tree.resolve()) and target.is_file():
                target.unlink()


def apply_patches(tree: Path, patches: Sequence[Path], commit: str, *, managed: bool) -> tuple[list[dict], list[str]]:
    """Apply PATCHES in order, each checked first; (the applied set, names applied by this call).

    Each applied patch is recorded at once, so a stop at a bad patch keeps the
    good ones recorded and a rerun (after the patch is fixed) goes on from there.
    """
    wanted = [{"name": p.name, "sha256": sha256_file(p), "created": _created_files(p)} for p in patches]
    record_file = _record_path(tree)
    recorded = _read_record(record_file, commit)
    done: list[dict] = []
    if recorded is not None:
        if [_key(e) for e in recorded] == [_key(e) for e in wanted[: len(recorded)]]:
            done = list(recorded)
        elif managed:
            log.info(f"{tree}: the patch set changed; restoring {commit[:12]} before patching")
            _restore(tree, commit, recorded)
        else:
            names = ", ".join(str(e.get("name")) for e in recorded)
            raise SourceError(f"{tree}: holds patches from another patch set ({names}); restore it "
                              f"(git checkout -- . there) and rerun")
    applied_now: list[str] = []
    for patch, entry in zip(patches[len(done):], wanted[len(done):], strict=True):
        check = _check(tree, patch)
        if check.returncode != 0:
            if recorded is None and _check(tree, patch, reverse=True).returncode == 0:
                # A tree patched before (by hand, or by a run that lost its record): nothing to do.
                log.info(f"{patch.name}: already applied in {tree}")
            else:
                raise SourceError(f"{patch}: does not apply to {tree}: {_failed_hunk(patch, check.stderr + check.stdout)};"
                                  " refresh the patch against the recipe's ref or remove it")
        else:
            _git(["apply", "--whitespace=nowarn", str(patch.resolve())], tree, what=f"apply {patch.name}")
            applied_now.append(patch.name)
            log.info(f"applied {patch.name}")
        done.append(entry)
        write_json(record_file, {"schema": 1, "commit": commit, "patches": done})
    if recorded is None and not patches:
        write_json(record_file, {"schema": 1, "commit": commit, "patches": []})
    return [{"name": e["name"], "sha256": e["sha256"]} for e in done], applied_now


# --------------------------------------------------------------------------- the step


def prepare_source(recipe: Recipe, settings: Settings, source_dir: Path | None = None) -> PreparedSource:
    """The tree to build for RECIPE, patched: ``--source DIR``, the recipe's in-repo path, or a checkout."""
    spec = recipe.source
    patches = patch_files(recipe)
    if source_dir is not None:
        tree = Path(source_dir).resolve()
        if not tree.is_dir():
            raise SourceError(f"--source {source_dir}: no such folder; give the path of a checkout of {spec.url or 'the source'}")
        commit = _resolve(tree, "HEAD") or "" if (tree / ".git").exists() else ""
        done, now = apply_patches(tree, patches, commit, managed=False)
        return PreparedSource(tree, str(spec.url or tree), str(spec.ref or ""), commit, tuple(done), tuple(now))
    if spec.path:
        tree = (recipe.repo_root / spec.path).resolve()
        if not tree.is_dir():
            raise SourceError(f"{recipe.where('source.path')}: no folder {tree} ({spec.path} relative to the repository "
                              f"{recipe.repo_root}, the folder holding recipes/)")
        commit = _resolve(tree, "HEAD") or ""
        return PreparedSource(tree, f"path:{spec.path}", "", commit)
    assert spec.url and spec.ref  # the schema requires both when there is no path
    cache, commit = fetch(spec.url, spec.ref, settings)
    tree = (Path(settings.dist_dir) / recipe.name / "src").resolve()
    if (tree / ".git").exists() and _resolve(tree, "HEAD") != commit:
        # Another ref: the old patches' new files go, the record with them; checkout resets the rest.
        _restore_created(tree, _read_record(_record_path(tree), _resolve(tree, "HEAD") or "") or [])
        _record_path(tree).unlink(missing_ok=True)
    with log.step(f"source {recipe.name}: {spec.ref} ({commit[:12]})"):
        checkout(cache, spec.url, commit, tree, submodules=spec.submodules)
        done, now = apply_patches(tree, patches, commit, managed=True)
    return PreparedSource(tree, spec.url, spec.ref, commit, tuple(done), tuple(now))


# --------------------------------------------------------------------------- CLI


def _cmd_source(args: argparse.Namespace, settings: Settings) -> int:
    recipe = load_recipe(args.recipe)
    prepared = prepare_source(recipe, settings, Path(args.source) if args.source else None)
    info = {"path": str(prepared.path), "url": prepared.url, "ref": prepared.ref, "commit": prepared.commit,
            "patches": list(prepared.patches), "applied_now": list(prepared.applied_now)}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        log.info(f"{recipe.name}: {prepared.path} at {prepared.commit[:12] or '(no git)'}, "
                 f"{len(prepared.patches)} patch(es) applied ({len(prepared.applied_now)} now)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("source", help="fetch a recipe's source at its ref and apply its patches",
                              description="Clone (or reuse the cache of) the recipe's repository into "
                                          "dist/<recipe>/src at the ref, with submodules, and apply patches/<recipe>/.")
    p.add_argument("recipe", help="recipe file or name")
    p.add_argument("--source", metavar="DIR", help="use this checkout instead of cloning (patches still apply)")
    p.add_argument("--json", action="store_true", help="what was prepared, as JSON on stdout")
    p.set_defaults(func=_cmd_source)
