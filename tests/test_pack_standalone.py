"""A standalone `pack` after a release (issue 12, stumbles 3 and 4): stray generations, conformance results."""

# ruff: noqa: F811 - fixtures imported from test_pack are parameters here
from __future__ import annotations

import json

from test_pack import TARGETS, cache, libraries, make_dist, run_pack_cli, write_demo_recipe  # noqa: F401


def _two_target_recipe(tmp_path):
    recipe = write_demo_recipe(tmp_path, platforms="linux-x86_64", archive="{release}-AOT.7z")
    recipe.write_text(recipe.read_text().replace('["12.0.0", "12.10.0", "12.55.8"]', '["12.0.0", "12.10.0"]'))
    return recipe


def _manifest(dist):
    return json.loads((dist / "demo" / "manifest.json").read_text())


def test_a_generation_outside_the_targets_is_not_packed_silently(tmp_path, libraries, cache):
    recipe = _two_target_recipe(tmp_path)
    dist = make_dist(tmp_path / "dist", libraries)  # 12.55.8 was built by hand, outside the targets
    proc = run_pack_cli([str(recipe)], dist, cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_manifest(dist)["folders"]) == ["12.0.0", "12.10.0"]
    warning = next(line for line in proc.stderr.splitlines() if "12.55.8" in line)
    assert "not among the recipe's targets" in warning and "rm -r" in warning and "--generation" in warning
    # Asked for by name, it is packed: the documented way to include it.
    proc = run_pack_cli([str(recipe), "--generation", "12.0.0", "--generation", "12.55.8"], dist, cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_manifest(dist)["folders"]) == ["12.0.0", "12.55.8"]


def _reports(dist, gens, verdict="pass"):
    folder = dist / "demo" / "conformance"
    folder.mkdir(parents=True, exist_ok=True)
    for g in gens:
        (folder / f"{g}-cpu.json").write_text(json.dumps({"generation": g, "device": "cpu", "verdict": verdict,
                                                          "reasons": []}))


def test_a_standalone_pack_keeps_the_conformance_results(tmp_path, libraries, cache):
    recipe = write_demo_recipe(tmp_path, platforms="linux-x86_64", archive="{release}-AOT.7z")
    dist = make_dist(tmp_path / "dist", libraries)
    _reports(dist, TARGETS)
    proc = run_pack_cli([str(recipe), "--conformance"], dist, cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(_manifest(dist)["conformance"]) == 3
    proc = run_pack_cli([str(recipe)], dist, cache, tmp_path)  # what `nox -s pack` runs after `nox`
    assert proc.returncode == 0, proc.stderr
    assert len(_manifest(dist)["conformance"]) == 3, "the repack keeps the results"
    assert "conformance" in proc.stderr


def test_a_repack_that_loses_conformance_results_says_so(tmp_path, libraries, cache):
    recipe = write_demo_recipe(tmp_path, platforms="linux-x86_64", archive="{release}-AOT.7z")
    dist = make_dist(tmp_path / "dist", libraries)
    _reports(dist, TARGETS)
    assert run_pack_cli([str(recipe), "--conformance"], dist, cache, tmp_path).returncode == 0
    (dist / "demo" / "conformance" / "12.10.0-cpu.json").unlink()  # one report gone
    proc = run_pack_cli([str(recipe)], dist, cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _manifest(dist)["conformance"] == []
    assert any(line.startswith("warning:") and "3 conformance result(s)" in line and "12.10.0" in line
               for line in proc.stderr.splitlines()), proc.stderr
