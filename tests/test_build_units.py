"""build.py's parts that need no recipe: wheel extraction, skip logic, tree comparison, records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ipex_aot import build
from ipex_aot.errors import BuildError, SourceError
from ipex_aot.fsutil import write_json
from ipex_aot.recipe import load_recipe
from ipex_aot.settings import Settings


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_artifact_writes_the_member_and_its_hash(tmp_path):
    payload = os.urandom(200_000)
    wheel = make_wheel(tmp_path / "p-1-cp311-cp311-linux_x86_64.whl", {"pkg/lib/libx.so": payload, "pkg/__init__.py": b""})
    sha, size = build.extract_artifact(wheel, "pkg/lib/libx.so", tmp_path / "out" / "libx.so")
    assert (tmp_path / "out" / "libx.so").read_bytes() == payload
    assert (sha, size) == (hashlib.sha256(payload).hexdigest(), len(payload))


def test_missing_member_names_the_wheel_and_keeps_the_old_library(tmp_path):
    wheel = make_wheel(tmp_path / "p.whl", {"pkg/lib/other.so": b"x"})
    old = tmp_path / "out" / "libx.so"
    old.parent.mkdir()
    old.write_bytes(b"finished library")
    with pytest.raises(BuildError, match=r"p\.whl has no pkg/lib/libx\.so.*pkg/lib/other\.so"):
        build.extract_artifact(wheel, "pkg/lib/libx.so", old)
    assert old.read_bytes() == b"finished library"
    assert sorted(p.name for p in old.parent.iterdir()) == ["libx.so"]


def test_truncated_wheel_is_a_build_error_and_writes_nothing(tmp_path):
    wheel = make_wheel(tmp_path / "p.whl", {"pkg/lib/libx.so": os.urandom(50_000)})
    data = wheel.read_bytes()
    wheel.write_bytes(data[: len(data) // 2])
    with pytest.raises(BuildError, match="not a readable wheel"):
        build.extract_artifact(wheel, "pkg/lib/libx.so", tmp_path / "out" / "libx.so")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_corrupt_member_crc_leaves_no_partial_file(tmp_path):
    payload = b"A" * 100_000
    wheel = make_wheel(tmp_path / "p.whl", {"pkg/lib/libx.so": payload})
    raw = bytearray(wheel.read_bytes())
    at = raw.index(b"AAAA", 40)  # stored uncompressed: flip a byte of the data
    raw[at + 10] ^= 0xFF
    wheel.write_bytes(bytes(raw))
    # zipfile notices the CRC at the end of the member; the user gets one BuildError naming it.
    with pytest.raises(BuildError, match=r"not a readable wheel \(Bad CRC-32 for file 'pkg/lib/libx.so'\)"):
        build.extract_artifact(wheel, "pkg/lib/libx.so", tmp_path / "out" / "libx.so")
    assert list((tmp_path / "out").iterdir()) == []


def record_for(folder: Path, data: bytes, inputs: str = "h1") -> dict:
    lib = folder / "libx.so"
    folder.mkdir(parents=True, exist_ok=True)
    lib.write_bytes(data)
    record = {
        "schema": 1, "release": "0.1.0", "generation": folder.name, "inputs_hash": inputs,
        "artifact": {"name": "libx.so", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
    }
    write_json(folder / "build.json", record)
    return record


def test_up_to_date_needs_same_inputs_and_intact_library(tmp_path):
    folder = tmp_path / "canary" / "12.55.8"
    record_for(folder, b"library bytes")
    assert build.is_up_to_date(folder, "h1")
    assert not build.is_up_to_date(folder, "h2")
    (folder / "libx.so").write_bytes(b"library bytez")  # same size, other content
    assert not build.is_up_to_date(folder, "h1")
    (folder / "libx.so").unlink()
    assert not build.is_up_to_date(folder, "h1")
    (folder / "build.json").write_text("{not json")
    assert not build.is_up_to_date(folder, "h1")


def test_built_generations_lists_only_finished_builds(tmp_path, capsys):
    root = tmp_path / "canary"
    record_for(root / "12.55.8", b"a" * 10)
    record_for(root / "12.60.7", b"b" * 10)
    (root / "12.60.7" / "libx.so").write_bytes(b"b" * 4)  # truncated after the build
    (root / "12.0.0").mkdir()  # started, never finished
    (root / "12.0.0" / "libx.so").write_bytes(b"c")
    (root / "logs").mkdir()
    found = build.built_generations(tmp_path, "canary")
    assert sorted(found) == ["12.55.8"]
    assert found["12.55.8"]["artifact"]["size"] == 10
    # The truncated library is named, not skipped in silence.
    err = capsys.readouterr().err
    assert "12.60.7" in err and "libx.so is 4 bytes, build.json says 10" in err and "counted as unfinished" in err
    assert build.built_generations(tmp_path, "other") == {}


def test_compare_trees_counts_reused_and_recompiled():
    before = {"a.o": 1, "b.o": 2, "c.spv": 3}
    after = {"a.o": 1, "b.o": 5, "c.spv": 3, "d.o": 9}
    report = build.compare_trees(before, after)
    assert (report.reused, report.recompiled) == (2, 2)
    assert "2 objects recompiled, 2 reused" in report.line()


def test_snapshot_sees_only_object_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("sub/a.o", "b.obj", "k.spv", "notes.txt", "lib.so"):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(Path(p).name for p in build._snapshot(tmp_path)) == ["a.o", "b.obj", "k.spv"]
    assert build._snapshot(tmp_path / "missing") == {}


def test_placeholders_expand_and_other_braces_pass_through():
    values = {"python": "/py", "build_dir": "/b"}
    assert build._expand("{python} -c '{x: 1}' {build_dir}/t", values) == "/py -c '{x: 1}' /b/t"


def test_platform_env_takes_flat_and_this_platforms_values():
    env = {"A": "1", "linux-x86_64": {"B": "2"}, "windows-x86_64": {"C": "3"}}
    recipe = load_recipe("canary")
    recipe = dataclasses.replace(recipe, env=env)
    assert recipe.env_for("linux-x86_64") == {"A": "1", "B": "2"}


def test_tree_hash_follows_content_not_build_outputs(tmp_path):
    (tmp_path / "k.cl").write_text("kernel")
    first = build.tree_hash(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "x.o").write_bytes(b"obj")
    (tmp_path / "p.egg-info").mkdir()
    assert build.tree_hash(tmp_path) == first
    (tmp_path / "k.cl").write_text("kernel2")
    assert build.tree_hash(tmp_path) != first


def test_raise_failures_names_failed_and_not_attempted(tmp_path):
    results = [
        build.GenerationResult("12.55.8", "acm-g10", "built"),
        build.GenerationResult("12.60.7", "pvc", "failed", error="boom"),
    ]
    with pytest.raises(BuildError) as err:
        build._raise_failures(results, 3, tmp_path)
    assert "12.60.7" in err.value.message and "1 not attempted" in err.value.message
    assert err.value.exit_code == 7
    build._raise_failures(results[:1], 1, tmp_path)  # nothing failed: no error


def test_source_dir_must_exist_and_a_plain_folder_is_hashed(tmp_path):
    from ipex_aot.recipe import load_recipe

    repo = Path(__file__).resolve().parents[1]
    recipe = load_recipe(repo / "recipes" / "canary.yaml")
    settings = Settings.from_env({"IPEX_AOT_DIST": str(tmp_path / "dist"), "IPEX_AOT_CACHE": str(tmp_path / "c")})
    with pytest.raises(SourceError, match="no such folder"):
        build.prepare_source(recipe, settings, tmp_path / "nope")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "setup.py").write_text("print(1)\n")
    info = build.prepare_source(recipe, settings, tmp_path / "src")
    assert info.path == (tmp_path / "src").resolve() and info.tree == build.tree_hash(tmp_path / "src")
    assert json.loads(json.dumps(info.to_json()))["path"] == str((tmp_path / "src").resolve())
    own = build.prepare_source(recipe, settings)
    assert own.path == repo / "canary" and own.identity == {"url": "path:canary", "tree": build.tree_hash(repo / "canary")}


def test_a_second_build_of_the_same_recipe_is_refused_while_one_runs(tmp_path):
    with build.recipe_lock(tmp_path / "canary"):
        code = (
            "import sys; from pathlib import Path; from ipex_aot import build\n"
            "try:\n    with build.recipe_lock(Path(sys.argv[1])): print('got it')\n"
            "except build.BuildError as e:\n    print(e.message)"
        )
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "canary")], capture_output=True, text=True).stdout
        assert "another build of this recipe is running" in out
    with build.recipe_lock(tmp_path / "canary"):  # released: free again
        pass
