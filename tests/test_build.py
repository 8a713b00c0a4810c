"""Per-generation builds of the canary for real: ocloc, gcc, pip, the recipe and device database.

Three generations (a gen12lp, an Xe-HPG and an Xe-HPC one) are built once in
a reused tree; the tests then look at what landed in dist/, rerun, break
things and build again. Everything is written under tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipex_aot import build
from ipex_aot.devices import load_database
from ipex_aot.errors import BuildError, RecipeError
from ipex_aot.fsutil import read_json, sha256_file
from ipex_aot.scan import scan_file
from ipex_aot.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from libfixtures import GENERATIONS, REPO, cli_env, write_recipe  # noqa: E402

LIB = "libcanary-gpu.so"


def settings_for(dist: Path, cache: Path) -> Settings:
    return Settings.from_env({"IPEX_AOT_DIST": str(dist), "IPEX_AOT_CACHE": str(cache), "MAX_JOBS": "2"})


def load(path: Path):
    from ipex_aot.recipe import load_recipe

    return load_recipe(path)


def targets_of(recipe, settings):
    from ipex_aot.recipe import expand_targets

    return expand_targets(recipe, load_database(settings))


def no_partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.part")]


@pytest.fixture(scope="module")
def three(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("build3")
    recipe = load(write_recipe(tmp / "recipes", GENERATIONS))
    settings = settings_for(tmp / "dist", cache_dir)
    results = build.build(recipe, settings)
    return recipe, settings, results, tmp / "dist" / "canary"


@pytest.mark.slow
def test_each_generation_gets_its_folder_library_and_record(three):
    recipe, settings, results, root = three
    assert [r.status for r in results] == ["built"] * 3
    assert sorted(r.generation for r in results) == GENERATIONS
    for r in results:
        folder = root / r.generation
        record = read_json(folder / "build.json")
        lib = folder / LIB
        assert record["generation"] == r.generation and record["recipe"] == "canary"
        assert record["artifact"]["sha256"] == sha256_file(lib) and record["artifact"]["size"] == lib.stat().st_size
        assert record["artifact"]["install_path"] == "ipex_aot_canary/lib/libcanary-gpu.so"
        assert record["devlist_variable"] == "USE_AOT_DEVLIST" and record["devlist"] == r.device
        assert record["platform"] == "linux-x86_64" and record["release"] == recipe.release
        assert record["toolchain"] and record["source"]["tree"] and len(record["inputs_hash"]) == 64
        assert record["started"] <= record["finished"] and record["host"]
        assert (root / record["wheel"]).is_file() and record["wheel"].startswith(f"wheels/{r.generation}/")
        assert (root / "logs" / f"{r.generation}.log").is_file()
    assert no_partial_files(root) == []


@pytest.mark.slow
def test_each_library_holds_exactly_its_generation(three):
    _, settings, results, root = three
    for r in results:
        result = scan_file(root / r.generation / LIB, settings=settings)
        assert result.generations == [r.generation], result.to_json()
        assert result.format == "elf" and result.found_by == "tgtimg" and result.generic_ir
        assert result.to_json()["native_images"] == 3 and not result.unresolved


@pytest.mark.slow
def test_the_tree_is_compiled_once_and_reused(three):
    _, _, results, root = three
    records = [read_json(root / r.generation / "build.json") for r in results]
    first, *rest = records
    assert first["reused_tree"] is False and first["tree"]["objects_recompiled"] == 4
    for record in rest:
        assert record["reused_tree"] is True
        assert record["tree"] == {"objects_recompiled": 0, "objects_reused": 4}
        text = (root / record["log"]).read_text()
        assert "canary: spirv vadd.cl: reused" in text and "canary: host canary.c: reused" in text
        assert "build tree: 0 objects recompiled, 4 reused" in text
    assert (root / "build-tree" / "canary" / "spirv" / "vadd.spv").is_file()


@pytest.mark.slow
def test_rerun_with_nothing_changed_builds_nothing(three):
    recipe, settings, _, root = three
    mtimes = {g: (root / g / LIB).stat().st_mtime_ns for g in GENERATIONS}
    results = build.build(recipe, settings)
    assert [r.status for r in results] == ["skipped"] * 3
    assert {g: (root / g / LIB).stat().st_mtime_ns for g in GENERATIONS} == mtimes


@pytest.mark.slow
def test_a_damaged_library_is_rebuilt_alone(three):
    recipe, settings, _, root = three
    lib = root / "12.55.8" / LIB
    lib.write_bytes(lib.read_bytes()[:1000])  # truncated, e.g. by a crash of some other tool
    results = {r.generation: r.status for r in build.build(recipe, settings)}
    assert results == {"12.0.0": "skipped", "12.55.8": "built", "12.60.7": "skipped"}
    assert sha256_file(lib) == read_json(root / "12.55.8" / "build.json")["artifact"]["sha256"]


@pytest.mark.slow
def test_keep_going_builds_the_rest_and_names_the_failed_one(tmp_path, cache_dir):
    settings = settings_for(tmp_path / "dist", cache_dir)
    bogus = write_recipe(tmp_path / "bogus", GENERATIONS[:2], devices={"12.0.0": "no-such-gpu"})
    # The recipe step already refuses a device ocloc does not know, before any build starts ...
    with pytest.raises(RecipeError, match=r"canary\.yaml:\d+: targets\.devices\.12\.0\.0: 'no-such-gpu'"):
        build.build(load(bogus), settings, options=build.BuildOptions(keep_going=True))
    assert not (tmp_path / "dist").exists()
    # ... so the same failure is forced one step later, on the real target list of a valid recipe.
    # The failing generation comes first, so "the rest" is built after it.
    recipe = load(write_recipe(tmp_path / "recipes", GENERATIONS[:2]))
    targets = [t if t.generation != "12.0.0" else dataclasses.replace(t, device="no-such-gpu")
               for t in targets_of(recipe, settings)]
    with pytest.raises(BuildError) as err:
        build.build_targets(build.make_context(recipe, settings, build.BuildOptions(keep_going=True)), targets)
    assert err.value.exit_code == 7
    assert "12.0.0" in err.value.message and "1 of 2" in err.value.message
    root = tmp_path / "dist" / "canary"
    assert (root / "12.55.8" / LIB).is_file()
    assert not (root / "12.0.0" / LIB).exists() and not (root / "12.0.0" / "build.json").exists()
    assert "no-such-gpu" in (root / "logs" / "12.0.0.log").read_text()
    assert no_partial_files(root) == []
    assert sorted(build.built_generations(tmp_path / "dist", "canary")) == ["12.55.8"]


@pytest.mark.slow
def test_without_keep_going_the_first_failure_stops_the_build(tmp_path, cache_dir):
    recipe = load(write_recipe(tmp_path / "recipes", GENERATIONS))
    settings = settings_for(tmp_path / "dist", cache_dir)
    ctx = build.make_context(recipe, settings, build.BuildOptions())
    targets = targets_of(recipe, settings)
    targets[0] = dataclasses.replace(targets[0], device="no-such-gpu")
    with pytest.raises(BuildError, match="2 not attempted"):
        build.build_targets(ctx, targets)
    assert build.built_generations(tmp_path / "dist", "canary") == {}


@pytest.mark.slow
def test_clean_mode_compiles_every_generation_from_scratch(tmp_path, cache_dir):
    recipe = load(write_recipe(tmp_path / "recipes", GENERATIONS[:2]))
    settings = settings_for(tmp_path / "dist", cache_dir)
    results = build.build(recipe, settings, options=build.BuildOptions(clean=True))
    root = tmp_path / "dist" / "canary"
    for r in results:
        record = read_json(root / r.generation / "build.json")
        assert record["reused_tree"] is False and record["tree"]["objects_recompiled"] == 4
    assert not (root / "build-tree").exists()
    # Each generation's scratch tree (build-tree.clean/<generation>) is deleted once its library is out.
    assert sorted(p.name for p in (root / "build-tree.clean").iterdir()) == []


@pytest.mark.slow
def test_wrong_artifact_path_fails_naming_it_and_writes_no_library(tmp_path, cache_dir):
    recipe = load(write_recipe(tmp_path / "recipes", ["12.0.0"], artifact="ipex_aot_canary/lib/libmissing.so"))
    settings = settings_for(tmp_path / "dist", cache_dir)
    with pytest.raises(BuildError, match="1 of 1"):
        build.build(recipe, settings)
    assert not (tmp_path / "dist" / "canary" / "12.0.0").exists()


@pytest.mark.slow
def test_cli_builds_one_generation_chosen_by_acronym(tmp_path, cache_dir):
    path = write_recipe(tmp_path / "recipes", GENERATIONS)
    proc = subprocess.run(
        [sys.executable, "-m", "ipex_aot", "build", str(path), "--device", "pvc", "--json"],
        env=cli_env(tmp_path / "dist", cache_dir), capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"generation": "12.60.7", "status": "built"}]
    assert sorted(build.built_generations(tmp_path / "dist", "canary")) == ["12.60.7"]
    assert "==> preflight" in proc.stderr


def test_cli_builds_the_generation_of_a_pci_id_with_its_revision(tmp_path, cache_dir):
    """`build --pci 56A0:08` (lspci's rev 08) is the retail Arc A770's 12.55.8; without the revision it says how."""
    path = write_recipe(tmp_path / "recipes", GENERATIONS)
    env = cli_env(tmp_path / "dist", cache_dir)
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "build", str(path), "--pci", "56A0:08", "--json"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"generation": "12.55.8", "status": "built"}]
    assert sorted(build.built_generations(tmp_path / "dist", "canary")) == ["12.55.8"]
    bare = subprocess.run([sys.executable, "-m", "ipex_aot", "build", str(path), "--pci", "56A0"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode == 5, bare.stderr  # DeviceError, nothing more built
    last = bare.stderr.strip().splitlines()[-1]
    assert last.startswith("error: PCI ID 56A0 stands for") and "56A0:08" in last and "--generation 12.55.8" in last


def test_cli_unknown_device_is_one_line_and_builds_nothing(tmp_path, cache_dir):
    path = write_recipe(tmp_path / "recipes", GENERATIONS)
    proc = subprocess.run(
        [sys.executable, "-m", "ipex_aot", "build", str(path), "--generation", "99.99.99"],
        env=cli_env(tmp_path / "dist", cache_dir), capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 5, proc.stderr  # DeviceError
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "99.99.99" in proc.stderr
    assert not (tmp_path / "dist" / "canary").exists()


def test_ipex_recipe_without_oneapi_stops_at_preflight(tmp_path, cache_dir):
    """`nox -s build -- recipes/ipex-2.8.10-xpu.yaml --generation 12.55.8` on a Linux machine without oneAPI
    (a recipe this platform can build: a Windows-only one stops earlier, at the platform check)."""
    recipe = REPO / "recipes" / "ipex-2.8.10-xpu.yaml"
    env = cli_env(tmp_path / "dist", cache_dir)
    env.pop("ONEAPI_ROOT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ipex_aot", "build", str(recipe), "--generation", "12.55.8"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 4, proc.stderr  # ToolchainError
    last = proc.stderr.strip().splitlines()[-1]
    # The recipe builds for Linux too, so the platform check passes and the oneAPI lookup names what it looked for
    # (a Windows-only recipe stops before it: tests/test_first_hour.py, stumble 2).
    assert last.startswith("error:") and "oneAPI 2025.1.3 not found (looked for " in last
    assert "preflight" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "dist" / "ipex-2.8.10-xpu" / "12.55.8").exists()


# A nox installed without the project (pipx's, say) must still list the sessions: the noxfile
# may not import ipex_aot, and the list may not depend on the machine's ocloc or caches.
_NO_PROJECT = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ipex_aot" or name.startswith("ipex_aot."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _Absent())
sys.argv = ["nox", "-l"]
import nox.__main__
nox.__main__.main()
"""


def test_nox_lists_sessions_without_the_project_installed(tmp_path):
    env = cli_env(tmp_path / "dist", tmp_path / "empty-cache")
    proc = subprocess.run([sys.executable, "-c", _NO_PROJECT], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[1] for line in proc.stdout.splitlines() if line[:2] in ("* ", "- ")}
    assert {"release", "tests", "build", "pack", "verify", "matrix"} <= listed
    assert not any(name.startswith("build-") for name in listed)
    # Listing never starts a sweep or touches a cache.
    assert not (tmp_path / "empty-cache").exists()


@pytest.mark.slow
def test_a_killed_build_leaves_finished_libraries_and_resumes(tmp_path, cache_dir):
    """SIGKILL of the whole build (no cleanup runs) while the second generation builds."""
    import signal
    import time

    path = write_recipe(tmp_path / "recipes", GENERATIONS[:2])
    env = cli_env(tmp_path / "dist", cache_dir)
    root = tmp_path / "dist" / "canary"
    proc = subprocess.Popen([sys.executable, "-m", "ipex_aot", "build", str(path)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (root / "logs" / f"{GENERATIONS[1]}.log").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the build ended before the second generation"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first, second = root / GENERATIONS[0], root / GENERATIONS[1]
    assert sha256_file(first / LIB) == read_json(first / "build.json")["artifact"]["sha256"]
    assert not (second / "build.json").exists() and not (second / LIB).exists()
    assert sorted(build.built_generations(tmp_path / "dist", "canary")) == [GENERATIONS[0]]
    # The rerun keeps the finished generation and builds the other (the killed one's lock is gone with it).
    rerun = subprocess.run([sys.executable, "-m", "ipex_aot", "build", str(path), "--json"], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout) == [{"generation": GENERATIONS[0], "status": "skipped"},
                                        {"generation": GENERATIONS[1], "status": "built"}]
    assert no_partial_files(root) == [] and not list((root / "wheels").glob(".*"))


@pytest.mark.slow
def test_a_build_tree_inside_the_source_is_reused_like_ipex_build_dir(tmp_path, cache_dir):
    """A command that takes no {build_dir} keeps its tree in the source (IPEX's build/): a copy of
    the canary given with --source, its CANARY_BUILD_DIR left unset so it uses its own build/."""
    text = write_recipe(tmp_path / "recipes", GENERATIONS[:2]).read_text()
    assert '  CANARY_BUILD_DIR: "{build_dir}"\n' in text
    path = tmp_path / "recipes" / "canary.yaml"
    path.write_text(text.replace('  CANARY_BUILD_DIR: "{build_dir}"\n', ""))
    source = tmp_path / "canary-src"
    shutil.copytree(REPO / "canary", source, ignore=shutil.ignore_patterns("build", "__pycache__", "*.egg-info"))
    settings = settings_for(tmp_path / "dist", cache_dir)
    results = build.build(load(path), settings, options=build.BuildOptions(source_dir=source))
    root = tmp_path / "dist" / "canary"
    first, second = (read_json(root / r.generation / "build.json") for r in results)
    assert first["tree"]["objects_recompiled"] == 4 and second["tree"] == {"objects_recompiled": 0, "objects_reused": 4}
    assert (source / "build" / "canary" / "host" / "canary.o").is_file() and not (root / "build-tree").exists()
    assert first["source"]["url"] == str(source.resolve()) and first["source"]["tree"] == build.tree_hash(source)
    # --clean starts from an empty build/ for each generation.
    results = build.build(load(path), settings, options=build.BuildOptions(source_dir=source, clean=True, force=True))
    for r in results:
        assert read_json(root / r.generation / "build.json")["tree"]["objects_recompiled"] == 4
    assert not (source / "build").exists()
