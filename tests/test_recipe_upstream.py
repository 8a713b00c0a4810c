"""The shipped IPEX recipes agree with the upstream files (recorded excerpts under tests/data/recipes/upstream/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ipex_aot.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO / "tests" / "data" / "recipes" / "upstream"
IPEX_RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("ipex-*.yaml"))


def excerpt(name: str) -> str:
    text = (UPSTREAM / name).read_text()
    head, _, body = text.partition("\n\n")
    assert head.startswith("# source: ") and "\n# ref: " in head, name
    return body


def upstream_torch(version: str) -> str:
    """The torch an IPEX release pairs with, read from the excerpts of that release."""
    pip = UPSTREAM / f"install-pip@{version}.txt"
    if pip.is_file():
        body = excerpt(pip.name)
        assert f"intel-extension-for-pytorch=={version}" in body
        return re.search(r"\btorch==(\S+)", body).group(1)
    # 2.1.10 built its own torch: the commit from dependency_version.yml, 'v' dropped, 'a0' added.
    bundle = excerpt(f"compile_bundle.sh@v{version}.txt")
    commit = re.search(r"^\s*commit: (v\S+)", excerpt(f"dependency_version.yml@v{version}.txt"), re.M).group(1)
    assert 'echo "${VER_TORCH:1}a0" > version.txt' in bundle
    return commit[1:] + "a0"


def upstream_libraries() -> dict[str, str]:
    setup = excerpt("setup.py@xpu-main.txt")
    package = re.search(r'PACKAGE_NAME = "(\w+)"', setup).group(1)
    lib_dir = re.search(r'PACKAGE_NAME, "(\w+)", "\*\*/\*\.so"', setup).group(1)
    bin_dir = re.search(r'PACKAGE_NAME, "(\w+)", "\*\*/\*\.dll"', setup).group(1)
    so = re.search(r"/lib/(lib[\w-]+)\.so", excerpt("cppsdk-doc@xpu.txt")).group(1)
    # CMake names a shared library libNAME.so on Linux and NAME.dll on Windows.
    return {"linux-x86_64": f"{package}/{lib_dir}/{so}.so",
            "windows-x86_64": f"{package}/{bin_dir}/{so.removeprefix('lib')}.dll"}


def test_every_ipex_recipe_is_covered():
    assert set(IPEX_RECIPES) >= {"ipex-2.1.10-xpu", "ipex-2.1.30-xpu", "ipex-2.1.40-xpu",
                                 "ipex-2.1.40-xpu-2025.0.1", "ipex-2.8.10-xpu"}


@pytest.mark.parametrize("name", IPEX_RECIPES)
def test_tag_torch_and_library_path_agree_with_upstream(name):
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    assert recipe.source.url == "https://github.com/intel/intel-extension-for-pytorch.git"
    assert recipe.source.ref == f"v{recipe.version}" and recipe.source.submodules
    bundle = UPSTREAM / f"compile_bundle.sh@{recipe.source.ref}.txt"
    if bundle.is_file():
        assert re.search(r"^VER_IPEX=(\S+)$", excerpt(bundle.name), re.M).group(1) == recipe.source.ref
    assert recipe.toolchain.torch == upstream_torch(recipe.version)
    libs = upstream_libraries()
    assert {p: recipe.artifacts[p] for p in recipe.toolchain.platforms} == {p: libs[p] for p in recipe.toolchain.platforms}
    assert recipe.package == re.search(r'PACKAGE_NAME = "(\w+)"', excerpt("setup.py@xpu-main.txt")).group(1)


@pytest.mark.parametrize("name", IPEX_RECIPES)
def test_devlist_variable_is_the_one_the_release_reads(name):
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    setup = excerpt("setup.py@xpu-main.txt")
    # setup.py forwards every USE_*/BUILD_*/CMAKE_* variable to CMake, which turns the list into -device.
    assert '"BUILD_", "USE_", "CMAKE_"' in setup
    major_minor = tuple(int(x) for x in recipe.version.split("+")[0].split(".")[:2])
    if major_minor < (2, 7):
        assert recipe.devlist_variable == "USE_AOT_DEVLIST"
        assert "-Xs '-device ${USE_AOT_DEVLIST}'" in excerpt("cmake-aot@v2.1.x.txt")
        assert recipe.reuse_tree  # the list only enters the device-link flags
    else:
        assert recipe.devlist_variable == "TORCH_XPU_ARCH_LIST"
        assert "TORCH_XPU_ARCH_LIST" in excerpt("pytorch-setup.py@v2.8.0.txt")
        assert recipe.targets.name_patterns
    # The wheel must be 2.1.40+xpu, not 2.1.40+git<sha>: setup.py versions builds unless told not to.
    assert 'IPEX_VERSIONED_BUILD", default="1"' in setup
    assert recipe.env.get("IPEX_VERSIONED_BUILD") == "0"


def test_published_archives_folder_lists():
    text = (REPO / "tests" / "data" / "recipes" / "published-folders.md").read_text()
    lists = dict(re.findall(r"^(ipex-[\w.-]+): (.+)$", text, re.M))
    assert set(lists) == {"ipex-2.1.40-xpu", "ipex-2.1.40-xpu-2025.0.1"}
    for name, folders in lists.items():
        recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
        assert list(recipe.targets.generations) == folders.split()
        assert recipe.toolchain.platforms == ("windows-x86_64",) and recipe.toolchain.python == ("3.11",)
    assert len(lists["ipex-2.1.40-xpu"].split()) == 17 and len(lists["ipex-2.1.40-xpu-2025.0.1"].split()) == 30
