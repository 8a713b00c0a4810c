"""Recipes: loading, one-line errors with file:line: key, and target expansion against the real ocloc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import libfixtures  # noqa: E402

from ipex_aot.devices import load_database
from ipex_aot.errors import RecipeError
from ipex_aot.recipe import expand_targets, find_recipe, load_recipe, plan_targets
from ipex_aot.settings import Settings

REPO = Path(__file__).resolve().parents[1]
BROKEN = REPO / "tests" / "data" / "recipes"
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))


#: broken file -> (key the error must name, words it must say). The line comes from the file's #! marker.
CASES = {
    "syntax_error": ("YAML syntax error", "flow sequence"),
    "unknown_key": ("devlist_varaible", "unknown key 'devlist_varaible'; expected one of"),
    "unknown_nested_key": ("source.submodule", "unknown key 'submodule'"),
    "wrong_type": ("source.submodules", "expected true or false, got 'yes'"),
    "missing_source": ("(top)", "missing required key 'source'"),
    "source_without_ref": ("source", "missing ref"),
    "bad_generation_string": ("targets.generations[0]", "'12.55' is not valid; expected a generation code"),
    "unknown_generation": ("targets.exclude[0]", "'12.99.9' is not a generation the local ocloc"),
    "ambiguous_acronym": ("targets.generations[1]", "'xe-hpg' stands for"),
    "wrong_device_override": ("targets.devices.12.55.8", "'acm-g11' stands for 12.56.5"),
    "bad_devlist_variable": ("devlist_variable", "expected one of: USE_AOT_DEVLIST, TORCH_XPU_ARCH_LIST"),
    "empty_targets": ("targets.generations", "is empty"),
    "bad_platform": ("toolchain.platforms[1]", "'windows-arm64' is not allowed"),
    "unquoted_off": ("env.BUILD_WITH_CPU", "got the boolean false"),
    "bad_placeholder": ("build.command[3]", "unknown placeholder {wheeldir}"),
    "archive_without_platform": ("release.archive", "add {platform}"),
    "duplicate_key": ("version", "duplicate key"),
    "not_a_mapping": ("", "expected a mapping of recipe keys"),
    "from_with_list": ("targets.from", "only means something with generations: all"),
    "oneapi_missing": ("toolchain.compiler", "add toolchain.oneapi"),
}


def marker_line(path: Path) -> int:
    lines = [i for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "#!" in text]
    assert len(lines) == 1, path
    return lines[0]


def settings(cache: Path, **extra: str) -> Settings:
    return Settings.from_env({"IPEX_AOT_CACHE": str(cache), "MAX_JOBS": "2", **extra})


def cli(args: list[str], cache: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IPEX_AOT_CACHE=str(cache), PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True, env=env, cwd=cwd)


def error_of(path: Path, cache: Path) -> str:
    with pytest.raises(RecipeError) as err:
        recipe = load_recipe(path)
        expand_targets(recipe, load_database(settings(cache)))
    return err.value.message


def test_every_broken_file_has_a_case():
    assert {p.stem for p in BROKEN.glob("*.yaml")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_recipe_names_file_line_and_key(name, cache_dir):  # noqa: F811
    path = BROKEN / f"{name}.yaml"
    key, words = CASES[name]
    message = error_of(path, cache_dir)
    assert "\n" not in message
    assert f"{name}.yaml:{marker_line(path)}: {key}" in message, message
    assert words in message, message
    # The CLI: a non-zero exit with exactly that one line.
    run = cli(["recipe", "validate", str(path)], cache_dir)
    assert run.returncode == RecipeError.exit_code
    errors = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert errors == [f"error: {message}"], run.stderr


def test_first_problem_is_reported_with_a_count(tmp_path):
    path = tmp_path / "recipes" / "two.yaml"
    path.parent.mkdir()
    text = (BROKEN / "bad_platform.yaml").read_text().replace("devlist_variable: USE_AOT_DEVLIST",
                                                              "devlist_variable: NOPE")
    path.write_text(text)
    with pytest.raises(RecipeError, match=r"two.yaml:12: toolchain.platforms\[1\]: .*\(and 1 more problem\)"):
        load_recipe(path)


def test_shipped_recipes_load_and_split_known_and_newer_generations(cache_dir):  # noqa: F811
    db = load_database(settings(cache_dir))
    # What this ocloc can build, from `ocloc ids` over the names its --help lists (not from our database).
    known = libfixtures.ocloc_known_generations()
    assert len(SHIPPED) >= 6
    for path in SHIPPED:
        recipe = load_recipe(path)
        plan = plan_targets(recipe, db)
        wanted = recipe.targets.generations
        if wanted == "all":
            assert not plan.unknown and plan.targets
            continue
        assert [t.generation for t in plan.targets] == [g for g in wanted if g in known]
        assert [g for g, _ in plan.unknown] == [g for g in wanted if g not in known]
        if plan.unknown:
            with pytest.raises(RecipeError) as err:
                expand_targets(recipe, db)
            msg = err.value.message
            assert msg.startswith(f"recipes/{path.name}:") and "targets.generations[" in msg
            assert "newer ocloc" in msg and "OCLOC" in msg and plan.unknown[0][0] in msg


def test_devlist_names_resolve_to_exactly_their_generation_in_ocloc(cache_dir):  # noqa: F811
    """Ground truth: `ocloc ids NAME` prints exactly the target's generation."""
    db = load_database(settings(cache_dir))
    checked = 0
    for path in SHIPPED:
        recipe = load_recipe(path)
        for target in plan_targets(recipe, db).targets:
            if target.device == target.generation:
                continue  # the IP version itself, which ocloc takes as -device
            # ocloc lists families (xe-hp = 12.50.4 in 22.43) but refuses them as compile targets.
            assert target.device not in db.groups, (path.name, target)
            out = subprocess.run(["ocloc", "ids", target.device], capture_output=True, text=True).stdout
            ids = [ln.strip() for ln in out.splitlines() if ln.strip() and ln.strip()[0].isdigit()]
            assert ids == [target.generation], (path.name, target, out)
            checked += 1
    assert checked >= 10


def test_torch_xpu_arch_list_recipes_use_names_xetla_accepts(cache_dir):  # noqa: F811
    import fnmatch

    db = load_database(settings(cache_dir))
    recipe = load_recipe(REPO / "recipes" / "ipex-2.8.10-xpu.yaml")
    assert recipe.devlist_variable == "TORCH_XPU_ARCH_LIST" and recipe.targets.name_patterns
    targets = plan_targets(recipe, db).targets
    assert targets
    for t in targets:
        shaped = any(fnmatch.fnmatchcase(t.device, p) for p in recipe.targets.name_patterns)
        assert shaped or t.device == t.generation, t
    # Where ocloc offers several names, the recipe's order of preference decides (ats-m150 before acm-g10).
    by_gen = {t.generation: t.device for t in targets}
    if "12.55.8" in by_gen and "ats-m150" in db.names:
        assert by_gen["12.55.8"] == "ats-m150"


def test_canary_all_from_family_and_excludes(cache_dir, tmp_path):  # noqa: F811
    db = load_database(settings(cache_dir))
    canary = load_recipe("canary")
    assert canary.path.resolve() == (REPO / "recipes" / "canary.yaml").resolve()
    gens = [t.generation for t in expand_targets(canary, db)]
    start = min(db.family_generations(canary.targets.from_), key=lambda g: tuple(map(int, g.split("."))))
    # `all` means every generation the local ocloc knows, also those no PCI ID maps to (acm-g12's 12.57.0 in 22.43).
    known = set(db.generations()) | {g for vs in db.names.values() for g in vs}
    assert gens == sorted((g for g in known if tuple(map(int, g.split("."))) >= tuple(map(int, start.split(".")))),
                          key=lambda g: tuple(map(int, g.split("."))))
    assert set(db.names.get("acm-g12", ())) <= set(gens)
    text = (REPO / "recipes" / "canary.yaml").read_text().replace(
        "  from: gen12lp\n", f"  from: gen12lp\n  exclude: [\"{gens[0]}\", pvc]\n")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "c2.yaml").write_text(text)
    fewer = [t.generation for t in expand_targets(load_recipe(tmp_path / "recipes" / "c2.yaml"), db)]
    assert fewer == [g for g in gens if g != gens[0] and g not in db.names["pvc"]]


def test_release_names_of_the_established_release():
    recipe = load_recipe(REPO / "recipes" / "ipex-2.1.40-xpu-2025.0.1.yaml")
    assert recipe.release == "2.1.40+xpu.2025.0.1"
    assert recipe.release_tag == "v2.1.40+xpu.2025.0.1-cp311"
    assert recipe.archive_name == "2.1.40+xpu.2025.0.1-AOT.7z"
    assert recipe.archive_names == {"windows-x86_64": "2.1.40+xpu.2025.0.1-AOT.7z"}
    assert recipe.patches_dir is None and "Windows 2 GB" in (recipe.patches_note or "")


def test_two_platforms_name_two_archives_from_the_template(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "ipex-2.8.10-xpu.yaml")
    assert recipe.archive_names == {"windows-x86_64": "2.8.10+xpu-windows-x86_64-AOT.7z",
                                    "linux-x86_64": "2.8.10+xpu-linux-x86_64-AOT.7z"}
    # Without release.archive, a two-platform recipe gets the default that says the platform.
    text = (REPO / "recipes" / "ipex-2.8.10-xpu.yaml").read_text()
    start = text.index("release:\n")
    (tmp_path / "recipes").mkdir()
    plain = tmp_path / "recipes" / "two.yaml"
    plain.write_text(text[:start] + "release:\n  tag: \"v{release}\"\n")
    assert load_recipe(plain).archive_names == {"windows-x86_64": "2.8.10+xpu-windows-x86_64-AOT.7z",
                                                "linux-x86_64": "2.8.10+xpu-linux-x86_64-AOT.7z"}
    # {platform} names nothing in a tag: one release (one tag) holds every platform.
    plain.write_text(text[:start] + "release:\n  tag: \"v{release}-{platform}\"\n")
    with pytest.raises(RecipeError, match=r"release.tag: unknown placeholder \{platform\}"):
        load_recipe(plain)


def test_recipe_name_resolution(tmp_path):
    assert find_recipe("canary").name == "canary.yaml"
    with pytest.raises(RecipeError, match=r"no recipe named 'nope'.*known: .*canary"):
        find_recipe("nope")
    with pytest.raises(RecipeError, match="no such recipe file"):
        find_recipe(str(tmp_path / "missing.yaml"))


def test_show_json_lists_every_generation_and_platform(cache_dir, tmp_path):  # noqa: F811
    run = cli(["recipe", "show", "ipex-2.8.10-xpu", "--json"], cache_dir)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    recipe = load_recipe(REPO / "recipes" / "ipex-2.8.10-xpu.yaml")
    plan = plan_targets(recipe, load_database(settings(cache_dir)))
    assert len(data["targets"]) == len(plan.targets) * len(recipe.toolchain.platforms)
    assert {r["devlist_variable"] for r in data["targets"]} == {"TORCH_XPU_ARCH_LIST"}
    assert data["needs_newer_ocloc"] == [g for g, _ in plan.unknown]
    # Markdown by default; names work from another folder too.
    md = cli(["recipe", "show", "canary"], cache_dir, cwd=tmp_path)
    assert md.returncode == 0 and "| generation | device | platform | python | devlist variable |" in md.stdout


def test_validate_reports_newer_generations_and_strict_fails(cache_dir):  # noqa: F811
    name = "ipex-2.1.40-xpu-2025.0.1"
    ok = cli(["recipe", "validate", name], cache_dir)
    assert ok.returncode == 0 and "structure ok" in ok.stderr and "need a newer ocloc" in ok.stderr
    strict = cli(["recipe", "validate", name, "--strict"], cache_dir)
    assert strict.returncode == RecipeError.exit_code and "newer ocloc" in strict.stderr
    structure = cli(["recipe", "validate", name, "--structure-only"], cache_dir)
    assert structure.returncode == 0 and "structure ok" in structure.stderr


def test_a_family_name_is_never_the_devlist(cache_dir, tmp_path):  # noqa: F811
    db = load_database(settings(cache_dir))
    families = {g: n for n, gens in db.names.items() if n in db.groups and len(gens) == 1 for g in gens}
    if not families:
        pytest.skip("this ocloc lists no family that stands for a single generation")
    gen, family = sorted(families.items())[0]
    path = tmp_path / "recipes" / "fam.yaml"
    path.parent.mkdir()
    path.write_text((BROKEN / "bad_platform.yaml").read_text()
                    .replace("    - windows-arm64  #!\n", "").replace('"12.55.8"', f'"{gen}"'))
    [target] = expand_targets(load_recipe(path), db)
    assert target.generation == gen and target.device != family
    # Ground truth from ocloc itself: the devlist compiles exactly this generation, and it is one of the
    # names ocloc maps to it alone (or the generation code when no product name is left).
    products = [n for n in libfixtures.ocloc_names_by_generation().get(gen, []) if n != family]
    assert target.device in products if products else target.device == gen
    assert libfixtures.ocloc_ids_raw(target.device) == (gen,) or target.device == gen
