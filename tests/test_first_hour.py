"""A newcomer's first hour (issue 12): noise, misleading lines, exit codes through nox, benchmark inputs."""

# ruff: noqa: F811 - fixtures imported from test_install are parameters here
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from libfixtures import ocloc_ids as ids  # the db, release and settings fixtures are in conftest
from libfixtures import site

from ipex_aot import install, log

REPO = Path(__file__).resolve().parents[1]
NOX = [sys.executable, "-m", "nox", "-f", str(REPO / "noxfile.py")]


def test_pyproject_raises_no_setuptools_deprecation_warning():
    # Stumble 9: `project.license` as a TOML table printed a deprecation banner twice on every install.
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_configuration(Distribution(), REPO / "pyproject.toml")


def test_nox_prints_no_uv_noise(tmp_path):
    proc = subprocess.run([*NOX, "-s", "matrix"], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, IPEX_AOT_DIST=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert "uv binary not found" not in proc.stdout + proc.stderr


def test_nox_says_the_per_cause_exit_code(tmp_path):
    # Stumble 12: nox ends with 1 whatever the cause; the cause's code is on nox's failure line and in the README.
    proc = subprocess.run([*NOX, "-s", "pack", "--", "recipes/nonexistent.yaml"], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, IPEX_AOT_DIST=str(tmp_path)))
    assert proc.returncode == 1
    assert "failed with exit code 7" in proc.stdout + proc.stderr  # BuildError: nothing built
    sessions = (REPO / "docs" / "reference" / "sessions.md").read_text(encoding="utf-8")
    assert "nox ends with exit code 1" in sessions


def test_a_step_frame_never_says_ok_about_work_that_did_not_run(capsys):
    with log.step("conformance 12.0.0 on xpu") as outcome:
        outcome.verdict = "skipped"
    err = capsys.readouterr().err
    assert "<== conformance 12.0.0 on xpu: skipped (" in err and ": ok (" not in err


def test_install_takes_a_device_name_like_build_does(tmp_path, settings, release, db):
    archive, libs = release
    root, lib = site(tmp_path)
    record = install.install(archive, settings, ipex_dir=root, generation="acm-g10", db=db)
    assert record["installed"]["generation"] == ids("acm-g10")[0]
    assert lib.read_bytes() == libs[ids("acm-g10")[0]].read_bytes()


def test_install_shows_a_real_size_and_no_minutes_warning_for_a_small_file(tmp_path, settings, release, capsys):
    archive, libs = release
    root, _ = site(tmp_path)
    install.install(archive, settings, ipex_dir=root, generation=next(iter(libs)))
    err = capsys.readouterr().err
    assert "(0 MB" not in err and "kB)" in err and "can take minutes" not in err


@pytest.mark.parametrize("script", ["bench_pack.py", "bench_scan.py"])
def test_benchmarks_take_the_corpus_from_an_option_or_the_environment(tmp_path, script):
    # Stumble 14: no benchmark may name a fixed absolute corpus folder.
    for path in (REPO / "benchmarks").glob("*.py"):
        assert "/work/corpus" not in path.read_text() and "/work/shared" not in path.read_text(), path
    env = {k: v for k, v in os.environ.items() if k != "IPEX_AOT_BENCH_CORPUS"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "IPEX_AOT_BENCH_CORPUS" in proc.stderr
    env["IPEX_AOT_BENCH_CORPUS"] = str(tmp_path / "no-corpus")
    args = [] if script == "bench_scan.py" else ["--limit", "1"]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert str(tmp_path / "no-corpus") in proc.stdout + proc.stderr


def test_the_step_order_is_said_one_way_everywhere():
    # Stumble 10: nox -l, ipex-aot release --help and the README each told another order.
    from ipex_aot.release import STEP_ORDER

    listing = subprocess.run([*NOX, "-l"], capture_output=True, text=True, cwd=REPO).stdout
    helptext = subprocess.run([sys.executable, "-m", "ipex_aot", "release", "--help"], capture_output=True,
                              text=True).stdout
    readme = (REPO / "docs" / "reference" / "sessions.md").read_text(encoding="utf-8")
    line = next(ln for ln in listing.splitlines() if ln.lstrip("*- ").startswith("release ->"))
    assert STEP_ORDER in line
    assert " ".join(STEP_ORDER.split()) in " ".join(helptext.split())
    assert STEP_ORDER in next(ln for ln in readme.splitlines() if ln.startswith("| `release` (default)"))
    verify = next(ln for ln in listing.splitlines() if ln.lstrip("*- ").startswith("verify ->"))
    assert "archive's" not in verify and "dist/<recipe>/<generation>/" in verify


def test_detect_without_a_gpu_says_where_it_looked_and_what_to_do():
    # Stumble 7 (this machine has no Intel GPU and no Intel driver: the real answer, not a fake one).
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "detect"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "no Intel GPU found" in proc.stderr and "/sys/bus/pci/devices" in proc.stderr
    assert "drivers asked: opencl:" in proc.stderr and "--generation" in proc.stderr
    js = subprocess.run([sys.executable, "-m", "ipex_aot", "detect", "--json"], capture_output=True, text=True,
                        timeout=120)
    assert js.returncode == 1 and json.loads(js.stdout)["gpus"] == []
    helptext = subprocess.run([sys.executable, "-m", "ipex_aot", "detect", "--help"], capture_output=True,
                              text=True).stdout
    assert "1: no Intel GPU" in " ".join(helptext.split()) and "--json" in helptext
    readme = (REPO / "docs" / "reference" / "install.md").read_text(encoding="utf-8")
    section = readme[readme.index("## `ipex-aot detect"):readme.index("## `ipex-aot install")]
    assert "Exit codes" in section and "no Intel GPU" in section


def test_the_readme_states_exit_codes_for_every_command():
    from ipex_aot.cli import build_parser

    readme = (REPO / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    table = readme[readme.index("**Exit codes by command**"):readme.index("Environment: `OCLOC`")]
    listed = {name.strip("` ") for row in table.splitlines()[4:] if row.startswith("| `")
              for name in row.split("|")[1].split(",")}
    listed = {name.split()[0] for name in listed}
    parser = build_parser()
    commands = set(next(a for a in parser._actions if a.dest == "command").choices)
    assert commands <= listed, f"no exit codes in docs/reference/cli.md for: {sorted(commands - listed)}"


def test_setup_frames_every_long_step():
    # Stumble 8: pip and npm ran quietly for 20-25 s. Every installer line runs inside `step TITLE CMD…`,
    # whose frame is checked here by running the function itself from setup.sh.
    text = (REPO / "setup.sh").read_text()
    body = text[text.index("step() {"):]
    body = body[:body.index("\n}\n") + 3]
    commands = [line for line in text.replace("\\\n", " ").splitlines() if not line.lstrip().startswith("#")]
    long_steps = [line for line in commands
                  if any(tool in line for tool in ("pip install", "npm install", "ocloc fetch", "winlane.py provision"))]
    assert len(long_steps) >= 4
    for line in long_steps:
        assert "step \"" in line, line
    proc = subprocess.run(["bash", "-c", body + 'step "a test" sleep 1'], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "==> a test" and lines[1].startswith("<== a test: ok (") and lines[1].endswith(" s)")
