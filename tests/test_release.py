"""The canary release end to end through the CLI: build → verify → conformance → pack → verify → notes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import py7zr
import pytest
from libfixtures import write_recipe

from ipex_aot import release, signing
from ipex_aot.fsutil import read_json

REPO = Path(__file__).resolve().parents[1]
GENERATIONS = ["12.0.0", "12.55.8"]



def run_cli(*args: str, dist: Path, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IPEX_AOT_DIST=str(dist), IPEX_AOT_CACHE=str(cache), PIP_DISABLE_PIP_VERSION_CHECK="1",
               **env)
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def released(tmp_path_factory, cache_dir):  # noqa: F811 - the fixture imported above
    """The release, signed with a key from the environment as the workflow passes its secret."""
    tmp = tmp_path_factory.mktemp("release")
    recipe = write_recipe(tmp / "recipes", GENERATIONS)
    (tmp / "sign.key").write_text(signing.SecretKey.generate().to_text(None))
    proc = run_cli("release", str(recipe), "--json", dist=tmp / "dist", cache=cache_dir,
                   IPEX_AOT_SIGN_KEY=(tmp / "sign.key").read_text())
    assert proc.returncode == 0, proc.stderr
    return tmp, recipe, proc, tmp / "dist" / "canary"


@pytest.mark.slow
def test_release_writes_archive_manifest_notes_and_reports(released, tmp_path):
    base, _, proc, root = released
    tmp = tmp_path
    summary = json.loads(proc.stdout)
    archive = Path(summary["archive"])
    assert archive.is_file() and archive.parent == root
    assert sorted(summary["generations"]) == GENERATIONS
    with py7zr.SevenZipFile(archive) as z:
        names = set(z.getnames())
    with py7zr.SevenZipFile(archive) as z:
        z.extract(path=tmp / "unpacked", targets=["manifest.json"])
    inside = read_json(tmp / "unpacked" / "manifest.json")
    assert {f"{g}/libcanary-gpu.so" for g in GENERATIONS} <= names
    manifest = read_json(root / "manifest.json")
    # Conformance ran before pack, so the archive's own manifest carries the results.
    assert inside == manifest and inside["conformance"]
    assert sorted(manifest["folders"]) == GENERATIONS
    verdicts = {(c["generation"], c["device"]): c["verdict"] for c in manifest["conformance"]}
    # No Intel GPU here: the CPU path of every generation passes, the XPU runs are skipped, never passed.
    assert verdicts == {**{(g, "cpu"): "pass" for g in GENERATIONS}, **{(g, "xpu"): "skipped" for g in GENERATIONS}}
    for entry in manifest["conformance"]:
        assert (root / entry["report"]).is_file()
    notes = (root / "RELEASE_NOTES.md").read_text()
    assert archive.name in notes and "| Generation | cpu | xpu |" in notes
    for g in GENERATIONS:
        assert f"| `{g}` | pass | skipped" in notes
    # Signed with the key from IPEX_AOT_SIGN_KEY; the notes give the key and the hand check, which works.
    public = signing.SecretKey.parse((base / "sign.key").read_text()).public_key().to_base64()
    assert summary["signature"] == str(archive) + ".minisig"
    assert "## Verify a download" in notes and f"minisign -Vm {archive.name} -P {public}" in notes
    check = subprocess.run(["minisign", "-Vm", str(archive), "-P", public], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert f"sha256 of `{archive.name}`: `{hashlib.sha256(archive.read_bytes()).hexdigest()}`" in notes


@pytest.mark.slow
def test_each_step_is_framed_in_pipeline_order(released):
    _, _, proc, _ = released
    steps = [line[4:] for line in proc.stderr.splitlines() if line.startswith("==> ")]
    order = ["preflight", "build", "verify folders", "conformance", "pack", "verify archive"]
    positions = [next(i for i, s in enumerate(steps) if s.startswith(name)) for name in order]
    assert positions == sorted(positions), steps


@pytest.mark.slow
def test_second_release_resumes_without_rebuilding(released, cache_dir):  # noqa: F811
    tmp, recipe, _, root = released
    before = {g: (root / g / "build.json").read_text() for g in GENERATIONS}
    proc = run_cli("release", str(recipe), "--json", dist=tmp / "dist", cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["built"] == [] and sorted(summary["skipped"]) == GENERATIONS
    assert {g: (root / g / "build.json").read_text() for g in GENERATIONS} == before


def test_release_of_a_broken_recipe_is_one_line(tmp_path, cache_dir):  # noqa: F811
    bad = tmp_path / "bad.yaml"
    bad.write_text("package: [unclosed\n")
    proc = run_cli("release", str(bad), dist=tmp_path / "dist", cache=cache_dir)
    assert proc.returncode == 3, proc.stderr  # RecipeError
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "dist").exists()


def test_manifest_entries_point_at_the_reports():
    reports = [
        {"generation": "12.55.8", "device": "xpu", "verdict": "skipped", "reasons": ["no XPU device"]},
        {"generation": "12.55.8", "device": "cpu", "verdict": "pass", "reasons": []},
    ]
    entries = release.manifest_entries(reports)
    assert [e["report"] for e in entries] == ["conformance/12.55.8-xpu.json", "conformance/12.55.8-cpu.json"]
    assert entries[0]["verdict"] == "skipped" and entries[0]["reasons"] == ["no XPU device"]
