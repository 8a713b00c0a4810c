"""Source preparation with real git: a bare upstream served as file://, a tag, a submodule, patches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipex_aot.errors import SourceError
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings
from ipex_aot.source import RECORD, cache_path, prepare_source

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args, cwd=None):
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main", *args],
                          cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_patch(tmp: Path, old: dict[str, str], new: dict[str, str]) -> str:
    """A real git diff between two small trees (paths a/ b/)."""
    work = tmp / "patchwork"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    git("init", "-q", cwd=work)
    for name, text in old.items():
        (work / name).write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-qm", "old", "--allow-empty", cwd=work)
    for name in old:
        if name not in new:
            (work / name).unlink()
    for name, text in new.items():
        (work / name).write_text(text)
    git("add", "-A", cwd=work)
    return subprocess.run(["git", "diff", "--cached"], cwd=work, check=True, capture_output=True, text=True).stdout


SETUP_V1 = "".join(f"line {i}\n" for i in range(1, 21))


@pytest.fixture
def upstream(tmp_path):
    """file:// URL of a bare repository with tag v1.0 (setup.py + a submodule) and a later commit on main."""
    sub = tmp_path / "sub"
    sub.mkdir()
    git("init", "-q", cwd=sub)
    (sub / "kernel.cl").write_text("kernel void k() {}\n")
    git("add", "-A", cwd=sub)
    git("commit", "-qm", "sub", cwd=sub)
    git("clone", "-q", "--bare", str(sub), str(tmp_path / "sub.git"))
    up = tmp_path / "up"
    up.mkdir()
    git("init", "-q", cwd=up)
    (up / "setup.py").write_text(SETUP_V1)
    git("add", "-A", cwd=up)
    git("submodule", "add", "-q", (tmp_path / "sub.git").as_uri(), "third_party/sub", cwd=up)
    git("commit", "-qm", "v1", cwd=up)
    git("tag", "v1.0", cwd=up)
    (up / "setup.py").write_text(SETUP_V1.replace("line 20", "line twenty"))
    git("commit", "-qam", "later", cwd=up)
    git("clone", "-q", "--bare", str(up), str(tmp_path / "up.git"))
    return (tmp_path / "up.git").as_uri()


def write_recipe(root: Path, url: str, ref: str = "v1.0", name: str = "demo") -> Path:
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    path = root / "recipes" / f"{name}.yaml"
    path.write_text(f"""package: demo
version: 1.0.0
source:
  git: {url}
  ref: {ref}
  submodules: true
toolchain:
  compiler: gcc
  python: ["3.11"]
  platforms: [linux-x86_64]
devlist_variable: USE_AOT_DEVLIST
targets:
  generations: ["12.55.8"]
""")
    return path


def settings_for(tmp_path: Path) -> Settings:
    return Settings.from_env({"IPEX_AOT_DIST": str(tmp_path / "dist"), "IPEX_AOT_CACHE": str(tmp_path / "cache")})


def add_patch(root: Path, name: str, text: str, recipe: str = "demo") -> Path:
    folder = root / "patches" / recipe
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"Why: test patch {name}\n\n{text}")
    return folder / name


P1 = {"setup.py": (SETUP_V1, SETUP_V1.replace("line 3\n", "line 3 patched\n"))}
P2_NEW_FILE = {"NOTES": ("", "created by 0002\n")}


def patch_text(tmp_path, spec):
    old = {k: v[0] for k, v in spec.items() if v[0]}
    new = {k: v[1] for k, v in spec.items()}
    return make_patch(tmp_path, old, new)


def test_clone_tag_submodule_patches_and_idempotent_rerun(tmp_path, upstream):
    root = tmp_path / "repo"
    recipe_path = write_recipe(root, upstream)
    add_patch(root, "0001-setup.patch", patch_text(tmp_path, P1))
    add_patch(root, "0002-notes.patch", patch_text(tmp_path, P2_NEW_FILE))
    settings = settings_for(tmp_path)
    first = prepare_source(load_recipe(recipe_path), settings)
    tree = first.path
    assert tree == (tmp_path / "dist" / "demo" / "src").resolve()
    assert first.commit == git("rev-parse", "v1.0^{commit}", cwd=tmp_path / "up")
    assert (tree / "third_party" / "sub" / "kernel.cl").read_text() == "kernel void k() {}\n"
    assert "line 3 patched" in (tree / "setup.py").read_text()
    assert "line twenty" not in (tree / "setup.py").read_text()  # the tag, not main
    assert (tree / "NOTES").read_text() == "created by 0002\n"
    assert first.applied_now == ("0001-setup.patch", "0002-notes.patch")
    assert [p["name"] for p in first.patches] == ["0001-setup.patch", "0002-notes.patch"]
    record = json.loads((tree / ".git" / RECORD).read_text())
    assert record["commit"] == first.commit and len(record["patches"]) == 2
    assert (cache_path(settings, upstream) / "HEAD").is_file()
    (tree / "build").mkdir()
    (tree / "build" / "obj.o").write_text("kept")

    again = prepare_source(load_recipe(recipe_path), settings)
    assert again.applied_now == ()
    assert again.patches == first.patches
    assert (tree / "setup.py").read_text().count("patched") == 1
    assert (tree / "build" / "obj.o").read_text() == "kept"


def test_cache_is_reused_without_the_upstream(tmp_path, upstream):
    root = tmp_path / "repo"
    recipe_path = write_recipe(root, upstream)
    settings = settings_for(tmp_path)
    first = prepare_source(load_recipe(recipe_path), settings)
    shutil.rmtree(first.path)
    shutil.rmtree(tmp_path / "up.git")  # the network is gone: the tag is in the cache
    again = prepare_source(load_recipe(recipe_path), settings)
    assert again.commit == first.commit and (again.path / "setup.py").is_file()


def test_bad_patch_names_file_and_hunk_and_rerun_continues(tmp_path, upstream):
    root = tmp_path / "repo"
    recipe_path = write_recipe(root, upstream)
    add_patch(root, "0001-setup.patch", patch_text(tmp_path, P1))
    wrong_base = SETUP_V1.replace("line 12\n", "line 12 (not upstream)\n")
    bad = make_patch(tmp_path, {"setup.py": wrong_base}, {"setup.py": wrong_base.replace("line 13\n", "line 13 x\n")})
    bad_path = add_patch(root, "0002-bad.patch", bad)
    settings = settings_for(tmp_path)
    with pytest.raises(SourceError) as err:
        prepare_source(load_recipe(recipe_path), settings)
    msg = err.value.message
    assert "0002-bad.patch" in msg and "@@ -" in msg and "setup.py" in msg and "\n" not in msg
    tree = tmp_path / "dist" / "demo" / "src"
    # The good patch stays applied and recorded; the bad one left nothing behind.
    assert "line 3 patched" in (tree / "setup.py").read_text() and "line 13 x" not in (tree / "setup.py").read_text()
    bad_path.write_text(patch_text(tmp_path, {"setup.py": (
        SETUP_V1.replace("line 3\n", "line 3 patched\n"),
        SETUP_V1.replace("line 3\n", "line 3 patched\n").replace("line 13\n", "line 13 x\n"))}))
    fixed = prepare_source(load_recipe(recipe_path), settings)
    assert fixed.applied_now == ("0002-bad.patch",)
    assert "line 13 x" in (tree / "setup.py").read_text()


def test_changed_patch_set_restores_the_ref_first(tmp_path, upstream):
    root = tmp_path / "repo"
    recipe_path = write_recipe(root, upstream)
    p1 = add_patch(root, "0001-setup.patch", patch_text(tmp_path, P1))
    add_patch(root, "0002-notes.patch", patch_text(tmp_path, P2_NEW_FILE))
    settings = settings_for(tmp_path)
    prepare_source(load_recipe(recipe_path), settings)
    p1.write_text(patch_text(tmp_path, {"setup.py": (SETUP_V1, SETUP_V1.replace("line 5\n", "line 5 v2\n"))}))
    again = prepare_source(load_recipe(recipe_path), settings)
    text = (again.path / "setup.py").read_text()
    assert "line 5 v2" in text and "line 3 patched" not in text
    assert again.applied_now == ("0001-setup.patch", "0002-notes.patch")
    (root / "patches" / "demo" / "0002-notes.patch").unlink()
    third = prepare_source(load_recipe(recipe_path), settings)
    assert not (third.path / "NOTES").exists()  # the file the dropped patch created is gone
    assert [p["name"] for p in third.patches] == ["0001-setup.patch"]


def test_ref_change_moves_the_tree(tmp_path, upstream):
    root = tmp_path / "repo"
    settings = settings_for(tmp_path)
    first = prepare_source(load_recipe(write_recipe(root, upstream)), settings)
    moved = prepare_source(load_recipe(write_recipe(root, upstream, ref="main")), settings)
    assert moved.commit != first.commit and "line twenty" in (moved.path / "setup.py").read_text()
    # The branch is kept under a ref in the cache (FETCH_HEAD alone would not survive a gc).
    cache = cache_path(settings, upstream)
    assert git("rev-parse", "refs/ipex-aot/main", cwd=cache) == moved.commit


def test_user_checkout_with_source_dir(tmp_path, upstream):
    root = tmp_path / "repo"
    recipe_path = write_recipe(root, upstream)
    add_patch(root, "0001-setup.patch", patch_text(tmp_path, P1))
    mine = tmp_path / "mine"
    git("clone", "-q", "--branch", "v1.0", upstream, str(mine))
    settings = settings_for(tmp_path)
    got = prepare_source(load_recipe(recipe_path), settings, mine)
    assert got.path == mine.resolve() and got.applied_now == ("0001-setup.patch",)
    assert not (tmp_path / "dist").exists()  # nothing cloned
    again = prepare_source(load_recipe(recipe_path), settings, mine)
    assert again.applied_now == () and (mine / "setup.py").read_text().count("patched") == 1
    # A tree patched by hand (no record) is recognised instead of failing.
    (mine / ".git" / RECORD).unlink()
    third = prepare_source(load_recipe(recipe_path), settings, mine)
    assert third.applied_now == () and [p["name"] for p in third.patches] == ["0001-setup.patch"]


def test_unknown_ref(tmp_path, upstream):
    recipe_path = write_recipe(tmp_path / "repo", upstream, ref="v9.9")
    with pytest.raises(SourceError, match=r"ref 'v9.9' not found.*source.ref"):
        prepare_source(load_recipe(recipe_path), settings_for(tmp_path))


def test_cli_one_line_error_and_json(tmp_path, upstream):
    root = tmp_path / "repo"
    recipe_path = write_recipe(root, upstream)
    env = {**os.environ, "IPEX_AOT_DIST": str(tmp_path / "dist"), "IPEX_AOT_CACHE": str(tmp_path / "cache")}
    ok = subprocess.run([sys.executable, "-m", "ipex_aot", "source", str(recipe_path), "--json"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["commit"] == git("rev-parse", "v1.0^{commit}", cwd=tmp_path / "up")
    add_patch(root, "0001-junk.patch", "--- a/nothere.py\n+++ b/nothere.py\n@@ -1 +1 @@\n-a\n+b\n")
    bad = subprocess.run([sys.executable, "-m", "ipex_aot", "source", str(recipe_path)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == SourceError.exit_code
    errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "0001-junk.patch" in errors[0] and "nothere.py" in errors[0]
