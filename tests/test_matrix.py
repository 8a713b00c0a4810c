"""The GitHub Actions matrix and cibuildwheel settings rendered from every shipped recipe."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import libfixtures
import pytest
import yaml
from libfixtures import build_elf_library, ocloc_image

from ipex_aot.devices import load_database
from ipex_aot.errors import RecipeError, ScanError, UsageError
from ipex_aot.matrix import HOSTED, check_cibuildwheel, cibuildwheel_settings, matrix_entries
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))



def db_for(cache: Path):
    return load_database(Settings.from_env({"IPEX_AOT_CACHE": str(cache), "MAX_JOBS": "2"}))


def cli(args: list[str], cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, IPEX_AOT_CACHE=str(cache), **env)
    full.pop("GITHUB_OUTPUT", None) if "GITHUB_OUTPUT" not in env else None
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True, env=full, cwd=REPO)


#: The folders of the two single-archive releases, as the maintainers published them (docs: the brief's
#: "established releases" table), not as our recipe loader reads them.
PUBLISHED = {
    "ipex-2.1.40-xpu": "12.0.0 12.1.0 12.2.0 12.3.0 12.4.0 12.10.0 12.55.8 12.56.5 12.57.0 12.60.7 12.61.7 12.70.4 "
                       "12.71.4 12.74.4 20.1.4 20.2.0 20.4.4",
    "ipex-2.1.40-xpu-2025.0.1": "12.0.0 12.1.0 12.2.0 12.3.0 12.4.0 12.10.0 12.55.0 12.55.1 12.55.4 12.55.8 12.56.5 "
                                "12.57.0 12.60.0 12.60.1 12.60.3 12.60.5 12.60.6 12.60.7 12.61.7 12.70.0 12.70.4 "
                                "12.71.0 12.71.4 12.74.0 12.74.4 20.1.0 20.2.0 20.4.0 20.4.1 20.4.4",
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_one_entry_per_generation_and_platform_with_the_right_devlist(path, cache_dir):  # noqa: F811
    raw = yaml.safe_load(path.read_text())  # the recipe file as written, not through the recipe loader
    recipe = load_recipe(path)
    entries = matrix_entries(recipe, db_for(cache_dir), root=REPO)
    listed = raw["targets"]["generations"]
    if path.stem in PUBLISHED:
        assert listed == PUBLISHED[path.stem].split()
    for platform in raw["toolchain"]["platforms"]:
        mine = [e for e in entries if e["platform"] == platform]
        gens = [e["generation"] for e in mine]
        if listed == "all":  # every generation the local ocloc can build, each once, in numeric order
            assert gens and len(set(gens)) == len(gens)
        else:
            assert gens == sorted(listed, key=lambda g: tuple(int(x) for x in g.split(".")))
        assert gens == sorted(gens, key=lambda g: tuple(int(x) for x in g.split(".")))
        for e in mine:
            gen = e["generation"]
            known = libfixtures.ocloc_known_generations()  # from `ocloc ids` over the names its --help lists
            if e["needs_newer_ocloc"]:
                # Newer than the local ocloc: the job passes the generation code itself, which no name this
                # ocloc lists stands for (a newer ocloc on the runner knows it).
                assert e["devlist"] == gen and gen not in known
            elif e["devlist"] == gen:
                # A generation no product name stands for alone (12.55.0: acm-g10 at revision 0; 12.50.4: only
                # the release name xe-hp): the code itself, which this ocloc knows through some listed name.
                assert gen in known, gen
            else:
                # The devlist the job passes to the build compiles exactly this generation, says ocloc.
                assert libfixtures.ocloc_ids_raw(e["devlist"]) == (gen,), (gen, e["devlist"])
            assert e["devlist_variable"] == raw["devlist_variable"]
            assert e["python"] == raw["toolchain"]["python"][0]
            runners = raw["targets"].get("runners", {})
            runner = runners.get(gen) or runners.get("default")
            labels = list(runner) if isinstance(runner, list) else [runner] if runner else HOSTED[platform]
            if "self-hosted" in labels and not {"windows", "linux"} & {x.lower() for x in labels}:
                # the entry's OS label, so a label set shared by two platforms never mixes them
                labels = [*labels, {"windows-x86_64": "Windows", "linux-x86_64": "Linux"}[platform]]
            assert e["runs-on"] == labels
            assert e["session"] == "build"
            assert e["session_args"] == f"recipes/{path.name} --generation {gen} --platform {platform}"
            assert e["oneapi"] == (raw["toolchain"].get("oneapi") or "")


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
    # source.path may not leave the recipe's repository: the canary's few files go beside it.
    shutil.copytree(REPO / "canary", tmp_path / "canary", ignore=shutil.ignore_patterns("build", "__pycache__"))
    bad.write_text(text)
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
    # runners.default (self-hosted, shared by both platforms) gets each entry's OS label.
    builds = json.loads(values["matrix"])["include"]
    assert {(e["platform"], tuple(e["runs-on"])) for e in builds} == {
        ("windows-x86_64", ("self-hosted", "x64", "ipex-build", "Windows")),
        ("linux-x86_64", ("self-hosted", "x64", "ipex-build", "Linux"))}
    wrong = cli(["matrix", "ipex-2.8.10-xpu", "--conformance-xpu", "12.99.0"], cache_dir)
    assert wrong.returncode == UsageError.exit_code and "12.99.0" in wrong.stderr


def test_canary_cross_builds_windows_on_ubuntu_and_checks_it_on_windows(cache_dir, tmp_path):  # noqa: F811
    """The shipped canary: both platforms build on ubuntu-22.04 (the DLL is a MinGW-w64 cross build), each
    archive is named for its platform, and the DLL's CPU conformance runs on the hosted Windows runner."""
    out = tmp_path / "github_output"
    run = cli(["matrix", "canary", "--compact"], cache_dir, GITHUB_OUTPUT=str(out), GITHUB_ACTIONS="true")
    assert run.returncode == 0, run.stderr
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    builds = json.loads(values["matrix"])["include"]
    assert {e["platform"] for e in builds} == {"linux-x86_64", "windows-x86_64"}
    assert {tuple(e["runs-on"]) for e in builds} == {("ubuntu-22.04",)}
    assert all(e["session_args"].endswith(f"--platform {e['platform']}") and not e["self_hosted"] for e in builds)
    checks = json.loads(values["conformance"])["include"]
    assert {(c["platform"], tuple(c["runs-on"])) for c in checks} == {("linux-x86_64", ("ubuntu-22.04",)),
                                                                   ("windows-x86_64", ("windows-2022",))}
    assert {p: a["archive"] for p, a in json.loads(values["assets"]).items()} == {
        "linux-x86_64": "0.1.0-linux-x86_64-AOT.7z", "windows-x86_64": "0.1.0-windows-x86_64-AOT.7z"}


def test_nox_matrix_stdout_is_pure_json_with_warnings_on_stderr(cache_dir):  # noqa: F811
    """`nox -s matrix -- RECIPE > matrix.json`: the newer-ocloc warning must not land in the JSON."""
    env = dict(os.environ, IPEX_AOT_CACHE=str(cache_dir))
    env.pop("GITHUB_OUTPUT", None)
    run = subprocess.run([sys.executable, "-m", "nox", "-s", "matrix", "--", "ipex-2.8.10-xpu", "--compact"],
                         capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr
    assert "warning: " in run.stderr and "newer ocloc" in run.stderr  # the bookworm ocloc lacks Battlemage
    assert json.loads(run.stdout)["include"]
