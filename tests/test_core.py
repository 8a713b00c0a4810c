"""The skeleton every step stands on: settings, atomic writes, the CLI's error contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipex_aot import errors
from ipex_aot.fsutil import atomic_output, read_json, sha256_file, write_json
from ipex_aot.settings import Settings


def test_settings_read_once_from_a_mapping(tmp_path):
    s = Settings.from_env({"OCLOC": "/x/ocloc", "IPEX_AOT_DIST": str(tmp_path), "MAX_JOBS": "3", "HOME": "/h"})
    assert s.ocloc == "/x/ocloc"
    assert s.dist_dir == tmp_path
    assert s.jobs == 3
    with pytest.raises(AttributeError):
        s.jobs = 4  # frozen: resolved once


@pytest.mark.parametrize("value", ["four", "0", "-2"])
def test_bad_max_jobs_is_a_usage_error(value):
    with pytest.raises(errors.UsageError, match="MAX_JOBS"):
        Settings.from_env({"MAX_JOBS": value})


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "lib.so"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as f:
        f.write(b"half-writ")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target], "the temporary file must be removed"


def test_atomic_output_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "x.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert read_json(target) == {"a": [1, 2], "b": 1}
    assert target.read_text().index('"a"') < target.read_text().index('"b"')  # sorted keys: deterministic
    assert len(sha256_file(target)) == 64


def test_exit_codes_differ_by_cause():
    # A cause defines its own code; a refinement of a cause (SignatureError is an ArchiveError) keeps its parent's.
    causes = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.IpexAotError)
              and "exit_code" in vars(cls)]
    codes = [cls.exit_code for cls in causes]
    assert len(codes) == len(set(codes)) and len(causes) >= 13
    assert errors.SignatureError.exit_code == errors.ArchiveError.exit_code == 9
    assert all(c != 0 for c in codes)


def _cli(*args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    r = _cli("--version", env_extra={"MAX_JOBS": "lots"})
    assert r.returncode == 0  # --version needs no settings
    r = _cli("devices", "--json", env_extra={"MAX_JOBS": "lots", "IPEX_AOT_CACHE": str(tmp_path)})
    assert r.returncode == errors.UsageError.exit_code
    assert r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("error: MAX_JOBS='lots'")
    assert "Traceback" not in r.stderr


def test_cli_without_command_prints_help_and_fails():
    r = _cli()
    assert r.returncode == 2
    assert "usage: ipex-aot" in r.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no Unix mode bits or umask: a new file takes its folder's ACL")
def test_atomic_output_files_get_normal_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_github_actions_gets_log_groups_and_annotations(tmp_path, capsys):
    """Under Actions the outermost step is a log group and errors/warnings are annotations; elsewhere plain."""
    import os

    from ipex_aot import log

    log.configure(github_actions=True)
    try:
        with log.step("outer"), log.step("inner"):
            log.warn("100% odd\nsecond line")
        with pytest.raises(RuntimeError), log.step("fails"):
            raise RuntimeError
    finally:
        log.configure(github_actions=False)
    lines = [ln.split(" (")[0].split(" after")[0] for ln in capsys.readouterr().err.splitlines()]
    assert lines == ["::group::outer", "==> outer", "==> inner", "::warning::100%25 odd%0Asecond line",
                     "<== inner: ok", "::endgroup::", "<== outer: ok",
                     "::group::fails", "==> fails", "::endgroup::", "<== fails: FAILED"]
    with log.step("plain"):
        pass
    assert "::" not in capsys.readouterr().err
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    cmd = [sys.executable, "-m", "ipex_aot", "recipe", "validate", str(tmp_path / "none.yaml")]
    on_actions = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, GITHUB_ACTIONS="true"))
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert on_actions.returncode == plain.returncode == errors.RecipeError.exit_code
    assert on_actions.stderr.startswith("::error::") and plain.stderr.startswith("error: ")
    assert on_actions.stderr.removeprefix("::error::") == plain.stderr.removeprefix("error: ")
