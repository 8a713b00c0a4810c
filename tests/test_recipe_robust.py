"""Recipe paths and typos a newcomer hits in the first hour (issue 12: stumbles 2, 5, 6; patches.dir, source.path).

Paths in a recipe are resolved against one documented base, the repository: the folder holding ``recipes/``
(the recipe file's parent's parent). Errors show the absolute path tried; nothing may point outside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ipex_aot import toolchain
from ipex_aot.devices import load_database
from ipex_aot.errors import RecipeError, SourceError, ToolchainError
from ipex_aot.recipe import expand_targets, load_recipe
from ipex_aot.settings import Settings
from ipex_aot.source import prepare_source

REPO = Path(__file__).resolve().parents[1]
CANARY = (REPO / "recipes" / "canary.yaml").read_text()


def _repo(tmp_path: Path, text: str, name: str = "demo") -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    path = tmp_path / "recipes" / f"{name}.yaml"
    path.write_text(text)
    return path


# --- patches.dir -------------------------------------------------------------------------------

def test_a_missing_patches_dir_is_an_error_with_the_absolute_path(tmp_path):
    text = CANARY.replace("  none: \"the canary is this repository's own code\"", "  dir: patches/nowhere")
    path = _repo(tmp_path, text)
    with pytest.raises(RecipeError, match=r"demo\.yaml:\d+: patches\.dir: .*" + re.escape(str(tmp_path / "patches" / "nowhere"))):
        load_recipe(path)


@pytest.mark.parametrize("where", ["../../..", "../outside", "patches/../../outside"])
def test_a_patches_dir_outside_the_repository_is_refused(tmp_path, where):
    (tmp_path / "outside").mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    text = CANARY.replace("  none: \"the canary is this repository's own code\"", f"  dir: \"{where}\"")
    with pytest.raises(RecipeError, match=r"patches\.dir: .*outside the repository"):
        load_recipe(_repo(repo, text))


def test_an_existing_patches_dir_loads(tmp_path):
    (tmp_path / "patches" / "mine").mkdir(parents=True)
    text = CANARY.replace("  none: \"the canary is this repository's own code\"", "  dir: patches/mine")
    assert load_recipe(_repo(tmp_path, text)).patches_dir == tmp_path / "patches" / "mine"


# --- source.path -------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["../../../../../", "../elsewhere", "src/../../elsewhere"])
def test_a_source_path_outside_the_repository_is_refused(tmp_path, where):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(RecipeError, match=r"source\.path: .*outside the repository " + re.escape(str(repo))):
        load_recipe(_repo(repo, CANARY.replace("path: canary", f"path: \"{where}\"")))


def test_an_absolute_source_path_is_the_writers_choice(tmp_path):
    recipe = load_recipe(_repo(tmp_path, CANARY.replace("path: canary", f"path: \"{REPO / 'canary'}\"")))
    assert recipe.source.path == str(REPO / "canary")


def test_a_missing_source_path_names_the_absolute_folder_tried(tmp_path):
    recipe = load_recipe(_repo(tmp_path, CANARY.replace("path: canary", "path: nothing/here")))
    settings = Settings.from_env({"IPEX_AOT_DIST": str(tmp_path / "dist"), "IPEX_AOT_CACHE": str(tmp_path / "c")})
    with pytest.raises(SourceError, match=re.escape(str(tmp_path / "nothing" / "here")) + ".*relative to the repository"):
        prepare_source(recipe, settings)


# --- stumble 5: a typo in a generation code --------------------------------------------------

def _targets_recipe(tmp_path: Path, block: str) -> Path:
    text = CANARY.replace("targets:\n  generations: all\n  from: gen12lp\n", f"targets:\n{block}")
    assert text != CANARY
    return _repo(tmp_path, text)


def test_a_typo_generation_names_the_nearest_known_code(tmp_path, cache_dir):  # noqa: F811
    db = load_database(Settings.from_env({"IPEX_AOT_CACHE": str(cache_dir)}))
    recipe = load_recipe(_targets_recipe(tmp_path, '  generations: ["12.55.9"]\n'))
    with pytest.raises(RecipeError, match=r"generations\[0\]: '12\.55\.9' .*nearest known code is 12\.55\.8"):
        expand_targets(recipe, db)


def test_a_typo_exclude_names_the_nearest_known_code(tmp_path, cache_dir):  # noqa: F811
    db = load_database(Settings.from_env({"IPEX_AOT_CACHE": str(cache_dir)}))
    recipe = load_recipe(_targets_recipe(tmp_path, '  generations: all\n  exclude: ["12.55.9"]\n'))
    with pytest.raises(RecipeError, match=r"exclude\[0\]: '12\.55\.9' .*nearest known code is 12\.55\.8"):
        expand_targets(recipe, db)


# --- stumble 2: the platform is checked before oneAPI -------------------------------------------

def test_a_windows_only_recipe_on_linux_says_the_platform_first(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "ipex-2.1.40-xpu-2025.0.1.yaml")
    settings = Settings.from_env({"ONEAPI_ROOT": "", "IPEX_AOT_CACHE": str(tmp_path)})
    for call in (lambda: toolchain.preflight(recipe, settings), lambda: toolchain.prepare_environment(recipe, settings)):
        with pytest.raises(ToolchainError) as info:
            call()
        assert "windows-x86_64" in info.value.message and "oneAPI 2025.0.1 not found" not in info.value.message


def test_missing_oneapi_names_the_files_looked_for(tmp_path):
    text = (REPO / "recipes" / "ipex-2.1.40-xpu-2025.0.1.yaml").read_text()
    text = text.replace("platforms: [windows-x86_64]", "platforms: [linux-x86_64]")
    recipe = load_recipe(_repo(tmp_path, text, "linux"))
    settings = Settings.from_env({"ONEAPI_ROOT": str(tmp_path / "oneapi"), "IPEX_AOT_CACHE": str(tmp_path)})
    with pytest.raises(ToolchainError) as info:
        toolchain.prepare_environment(recipe, settings)
    message = info.value.message
    assert str(tmp_path / "oneapi" / "setvars.sh") in message and "oneapi-vars.sh" in message
