"""The GitHub Actions matrix and cibuildwheel settings rendered from every shipped recipe."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from libfixtures import build_elf_library, have_tools, ocloc_image
from test_build import cache_dir  # noqa: F401 - the session's device-database cache

from ipex_aot.devices import load_database
from ipex_aot.errors import RecipeError, ScanError, UsageError
from ipex_aot.generation import sort_generations
from ipex_aot.matrix import HOSTED, check_cibuildwheel, cibuildwheel_settings, matrix_entries
from ipex_aot.recipe import load_recipe, plan_targets
from ipex_aot.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))

pytestmark = pytest.mark.skipif(not shutil.which("ocloc"), reason="needs ocloc")


def db_for(cache: Path):
    return load_database(Settings.from_env({"IPEX_AOT_CACHE": str(cache), "MAX_JOBS": "2"}))


def cli(args: list[str], cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, IPEX_AOT_CACHE=str(cache), **env)
    full.pop("GITHUB_OUTPUT", None) if "GITHUB_OUTPUT" not in env else None
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True, env=full, cwd=REPO)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_one_entry_per_generation_and_platform_with_the_right_devlist(path, cache_dir):  # noqa: F811
    db = db_for(cache_dir)
    recipe = load_recipe(path)
    plan = plan_targets(recipe, db)
    entries = matrix_entries(recipe, db, root=REPO)
    wanted = (sort_generations(recipe.targets.generations) if recipe.targets.generations != "all"
              else [t.generation for t in plan.targets])
    devices = {t.generation: t.device for t in plan.targets}
    newer = {g for g, _ in plan.unknown}
    for platform in recipe.toolchain.platforms:
        mine = [e for e in entries if e["platform"] == platform]
        assert [e["generation"] for e in mine] == wanted
        for e in mine:
            gen = e["generation"]
            # Known to the local ocloc: the name expand_targets chose; newer: the generation code itself.
            assert e["devlist"] == (gen if gen in newer else devices[gen])
            assert e["needs_newer_ocloc"] == (gen in newer)
            assert e["devlist_variable"] == recipe.devlist_variable
            assert e["python"] == recipe.toolchain.python[0]
            runner = recipe.targets.runners.get(gen) or recipe.targets.runners.get("default")
            assert e["runs-on"] == (list(runner) if runner else HOSTED[platform])
            assert e["session"] == "build"
            assert e["session_args"] == f"recipes/{path.name} --generation {gen} --platform {platform}"
            assert e["oneapi"] == (recipe.toolchain.oneapi or "")


def test_matrix_session_is_one_nox_lists(cache_dir):  # noqa: F811
    env = dict(os.environ, IPEX_AOT_CACHE=str(cache_dir))
    # -k: without a selection `nox -l --json` lists only the default sessions.
    listed = subprocess.run([sys.executable, "-m", "nox", "-l", "--json", "-k", "build or matrix or preflight or pack "
                             "or verify"], capture_output=True, text=True, cwd=REPO, env=env)
    assert listed.returncode == 0, listed.stderr
    names = {s["session"] for s in json.loads(listed.stdout)}
    entries = matrix_entries(load_recipe("canary"), db_for(cache_dir), root=REPO)
    assert {"matrix", "preflight", "pack", "verify"} <= names
    assert {e["session"] for e in entries} <= names


def test_github_output_is_appended_and_matches_stdout(cache_dir, tmp_path):  # noqa: F811
    out = tmp_path / "github_output"
    out.write_text("earlier=kept\n")
    run = cli(["matrix", "ipex-2.1.40-xpu-2025.0.1", "--compact"], cache_dir, GITHUB_OUTPUT=str(out),
              GITHUB_ACTIONS="true")
    assert run.returncode == 0, run.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "earlier=kept"
    values = dict(line.split("=", 1) for line in lines[1:])
    assert json.loads(values["matrix"]) == json.loads(run.stdout)
    assert len(json.loads(values["matrix"])["include"]) == 30
    assert values["tag"] == "v2.1.40+xpu.2025.0.1-cp311"
    assert json.loads(values["assets"]) == {"windows-x86_64": {
        "archive": "2.1.40+xpu.2025.0.1-AOT.7z", "support": "SUPPORT.md", "manifest": "manifest.json"}}
    assert values["recipe"] == "ipex-2.1.40-xpu-2025.0.1" and json.loads(values["platforms"]) == ["windows-x86_64"]
    conformance = json.loads(values["conformance"])["include"]
    assert [(c["generation"], c["device"]) for c in conformance] == [(g, "cpu") for g in sorted(
        {e["generation"] for e in json.loads(values["matrix"])["include"]}, key=lambda g: tuple(map(int, g.split("."))))]
    # A tag push finds its recipe by the release tag.
    by_tag = cli(["matrix", "tag:v2.1.40+xpu.2025.0.1-cp311", "--compact"], cache_dir)
    assert by_tag.returncode == 0 and json.loads(by_tag.stdout) == json.loads(run.stdout)
    unknown = cli(["matrix", "tag:v9.9.9-cp311"], cache_dir)
    assert unknown.returncode == UsageError.exit_code and unknown.stderr.count("error:") == 1


def test_cibuildwheel_selectors_checked_by_cibuildwheel(cache_dir, tmp_path):  # noqa: F811
    db = db_for(cache_dir)
    for path in SHIPPED:
        recipe = load_recipe(path)
        entries = matrix_entries(recipe, db)
        found = check_cibuildwheel(entries)
        for e in entries:
            assert e["cibw_build"] in found[e["platform"]]
    # A Python this cibuildwheel cannot build is caught before any job starts.
    text = (REPO / "recipes" / "canary.yaml").read_text().replace(
        'python: ["3.10", "3.11", "3.12", "3.13"]', 'python: ["3.99"]')
    (tmp_path / "recipes").mkdir()
    bad = tmp_path / "recipes" / "py399.yaml"
    bad.write_text(text.replace("  path: canary\n", f"  path: {REPO / 'canary'}\n"))
    with pytest.raises(UsageError, match=r"selects nothing for cp399-manylinux_x86_64 on linux"):
        check_cibuildwheel(matrix_entries(load_recipe(bad), db))


def test_cibuildwheel_settings_carry_devlist_and_platform_env(cache_dir):  # noqa: F811
    recipe = load_recipe(REPO / "recipes" / "ipex-2.8.10-xpu.yaml")
    entries = matrix_entries(recipe, db_for(cache_dir))
    win = next(e for e in entries if e["platform"] == "windows-x86_64" and not e["needs_newer_ocloc"])
    lin = next(e for e in entries if e["platform"] == "linux-x86_64" and e["generation"] == win["generation"])
    for entry, tag in ((win, "win_amd64"), (lin, "manylinux_x86_64")):
        cibw = cibuildwheel_settings(recipe, entry)
        assert cibw["CIBW_BUILD"] == f"cp311-{tag}"
        env = dict(token.split("=", 1) for token in shlex.split(cibw["CIBW_ENVIRONMENT"]))
        assert env["TORCH_XPU_ARCH_LIST"] == entry["devlist"]
        assert env["IPEX_VERSIONED_BUILD"] == "0"
        assert ("BUILD_WITH_CPU" in env) == (entry["platform"] == "windows-x86_64")
        assert f"check-installed \"{recipe.path.resolve().as_posix()}\" --generation {entry['generation']}" in \
            cibw["CIBW_TEST_COMMAND"]
    one = cli(["matrix", "ipex-2.8.10-xpu", "--generation", win["generation"], "--platform", "windows-x86_64",
               "--cibuildwheel-env"], cache_dir)
    assert one.returncode == 0, one.stderr
    assert dict(line.split("=", 1) for line in one.stdout.splitlines()) == cibuildwheel_settings(recipe, win)


def test_explicit_lists_render_without_ocloc_but_all_does_not(cache_dir):  # noqa: F811
    recipe = load_recipe(REPO / "recipes" / "ipex-2.1.40-xpu.yaml")
    entries = matrix_entries(recipe, None)
    assert [e["generation"] for e in entries] == list(recipe.targets.generations)
    assert all(e["devlist"] == e["generation"] for e in entries)
    with pytest.raises(RecipeError, match="'all' needs the local ocloc"):
        matrix_entries(load_recipe("canary"), None)
    with pytest.raises(UsageError, match=r"--python 3.12: .* builds for Python 3.11"):
        matrix_entries(recipe, None, python="3.12")


@pytest.mark.skipif(not have_tools(), reason="needs ocloc and gcc")
def test_check_installed_scans_the_installed_library(cache_dir, tmp_path):  # noqa: F811
    site = tmp_path / "site"
    lib = site / "ipex_aot_canary" / "lib" / "libcanary-gpu.so"
    lib.parent.mkdir(parents=True)
    (site / "ipex_aot_canary" / "__init__.py").write_text("")
    build_elf_library(lib, [ocloc_image("acm-g10")])
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")])}
    ok = cli(["check-installed", "canary", "--generation", "12.55.8"], cache_dir, **env)
    assert ok.returncode == 0, ok.stderr
    wrong = cli(["check-installed", "canary", "--generation", "12.0.0"], cache_dir, **env)
    assert wrong.returncode == ScanError.exit_code and wrong.stderr.count("error:") == 1
    missing = cli(["check-installed", "canary", "--generation", "12.55.8"], cache_dir)
    assert missing.returncode == ScanError.exit_code and "not installed" in missing.stderr


def test_two_platforms_publish_two_archives_and_their_own_tables(cache_dir, tmp_path):  # noqa: F811
    """ipex-2.8.10 builds Windows and Linux: each platform's files get a name of their own from the recipe."""
    out = tmp_path / "github_output"
    run = cli(["matrix", "ipex-2.8.10-xpu", "--compact", "--conformance-xpu", '["12.55.8"]'], cache_dir,
              GITHUB_OUTPUT=str(out), GITHUB_ACTIONS="true")
    assert run.returncode == 0, run.stderr
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assets = json.loads(values["assets"])
    assert assets == {
        "linux-x86_64": {"archive": "2.8.10+xpu-linux-x86_64-AOT.7z", "support": "SUPPORT-linux-x86_64.md",
                         "manifest": "manifest-linux-x86_64.json"},
        "windows-x86_64": {"archive": "2.8.10+xpu-windows-x86_64-AOT.7z", "support": "SUPPORT-windows-x86_64.md",
                           "manifest": "manifest-windows-x86_64.json"}}
    names = [n for a in assets.values() for n in a.values()]
    assert len(names) == len(set(names))
    xpu = [c for c in json.loads(values["conformance"])["include"] if c["device"] == "xpu"]
    assert sorted(c["platform"] for c in xpu) == ["linux-x86_64", "windows-x86_64"]
    assert {tuple(c["runs-on"]) for c in xpu} == {("self-hosted", "Windows", "xpu-12.55.8"),
                                                 ("self-hosted", "Linux", "xpu-12.55.8")}
    wrong = cli(["matrix", "ipex-2.8.10-xpu", "--conformance-xpu", "12.99.0"], cache_dir)
    assert wrong.returncode == UsageError.exit_code and "12.99.0" in wrong.stderr


def test_nox_matrix_stdout_is_pure_json_with_warnings_on_stderr(cache_dir):  # noqa: F811
    """`nox -s matrix -- RECIPE > matrix.json`: the newer-ocloc warning must not land in the JSON."""
    env = dict(os.environ, IPEX_AOT_CACHE=str(cache_dir))
    env.pop("GITHUB_OUTPUT", None)
    run = subprocess.run([sys.executable, "-m", "nox", "-s", "matrix", "--", "ipex-2.8.10-xpu", "--compact"],
                         capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr
    assert "warning: " in run.stderr and "newer ocloc" in run.stderr  # the bookworm ocloc lacks Battlemage
    assert json.loads(run.stdout)["include"]
