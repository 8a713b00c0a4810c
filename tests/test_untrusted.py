"""Input the project did not write itself: YAML bombs, deep JSON, a broken device cache (issue 12, High).

Every case must end in one ``error:`` line (or a silent rebuild of a cache) within a second, never a
traceback, a MemoryError or a RecursionError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipex_aot import devices
from ipex_aot.devices import load_database, pci_ids_file
from ipex_aot.errors import RecipeError
from ipex_aot.fsutil import read_json
from ipex_aot.ocloc import find_ocloc
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings
from ipex_aot.untrusted import MAX_JSON_DEPTH, loads_json

REPO = Path(__file__).resolve().parents[1]
CANARY = (REPO / "recipes" / "canary.yaml").read_text()


def _cli(*args: str, cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60)


def _one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr.replace("error:", "")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    out = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        out.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(out) + f"\n{CANARY}\nextra: *a{levels - 1}\n"


def test_a_yaml_alias_bomb_is_refused_in_well_under_a_second(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    path = recipes / "bomb.yaml"
    path.write_text(_alias_bomb())
    # No timing assertion (the house rule); before the bound this ran over 60 s into a MemoryError.
    with pytest.raises(RecipeError, match=r"bomb\.yaml:\d+: .*alias"):
        load_recipe(path)
    line = _one_error_line(_cli("recipe", "validate", "--structure-only", str(path), cwd=tmp_path), 3)
    assert "aliases" in line


def test_a_deeply_nested_recipe_is_one_line_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(CANARY + "extra: " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(RecipeError, match=r"deep\.yaml:\d+: .*nested deeper than"):
        load_recipe(path)
    block = CANARY + "extra:\n" + "".join("  " * i + f"k{i}:\n" for i in range(500)) + "  " * 500 + "v: 1\n"
    path.write_text(block)
    _one_error_line(_cli("recipe", "validate", "--structure-only", str(path), cwd=tmp_path), 3)


def test_an_oversized_recipe_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(CANARY + "# " + "x" * (2 << 20) + "\n")
    with pytest.raises(RecipeError, match="larger than"):
        load_recipe(path)


def test_ordinary_anchors_still_work(tmp_path):
    # A small, legitimate use of anchors (a shared env block) is not a bomb.
    text = CANARY.replace("env:", "x-common: &common {A: \"1\"}\nenv:") if "env:" in CANARY else CANARY
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    if "x-common" in text:
        with pytest.raises(RecipeError, match="unknown key 'x-common'"):
            load_recipe(path)  # the schema still speaks, the bound did not fire
    else:
        load_recipe(path)


def test_deep_json_is_a_value_error_not_a_recursion_error(tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_JSON_DEPTH}"):
        loads_json(deep)
    # Brackets inside strings do not count, escaped quotes do not end a string.
    assert loads_json(json.dumps({"a": "[[[[" * 100 + '\\"]', "b": [[1]]})) == {"a": "[[[[" * 100 + '\\"]', "b": [[1]]}
    (tmp_path / "x.json").write_text('{"a": ' + "{\"b\": " * 100_000 + "1" + "}" * 100_000 + "}")
    with pytest.raises(ValueError, match="nested deeper"):
        read_json(tmp_path / "x.json")


@pytest.fixture(scope="module")
def ocloc():
    return find_ocloc(Settings.from_env())


@pytest.mark.parametrize("broken", ["[]", '{"schema": 1, "rows": [], "ocloc": {}}', "nested", "directory",
                                    '{"schema": 1, "ocloc": {}, "rows": [{"pci_ids": 1}]}'])
def test_a_wrong_device_cache_is_rebuilt(ocloc, tmp_path, broken):
    settings = Settings.from_env({"IPEX_AOT_CACHE": str(tmp_path), "HOME": str(tmp_path), "MAX_JOBS": "2"})
    ids = range(0x46D0, 0x46D2)
    path = devices.cache_path(settings, ocloc, pci_ids_file(), ids)
    path.parent.mkdir(parents=True)
    if broken == "directory":
        path.mkdir()
        (path / "junk").write_text("x")
    elif broken == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_text(broken)
    db = load_database(settings, ocloc=ocloc, ids=ids)
    assert db.rows and path.is_file()
    assert json.loads(path.read_text())["rows"], "the rebuilt cache has rows"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_cache_this_version_writes_is_read_back_without_a_rebuild(ocloc, tmp_path, monkeypatch):
    settings = Settings.from_env({"IPEX_AOT_CACHE": str(tmp_path), "HOME": str(tmp_path), "MAX_JOBS": "2"})
    ids = range(0x46D0, 0x46D2)
    first = load_database(settings, ocloc=ocloc, ids=ids)
    devices.validate_cache(first.to_json())  # what build_database makes matches the schema

    def no_sweep(*a, **k):
        raise AssertionError("a sound cache was swept again")

    monkeypatch.setattr(devices, "build_database", no_sweep)
    assert load_database(settings, ocloc=ocloc, ids=ids).to_json()["rows"] == first.to_json()["rows"]
