"""`ipex-aot ocloc fetch`: Debian sid's intel-ocloc through a private apt, for real (CI reaches Debian's mirror)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from libfixtures import MODERN_OCLOC_DEST, modern_ocloc

from ipex_aot import errors
from ipex_aot.ocloc import find_ocloc
from ipex_aot.settings import Settings


def _cli(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IPEX_AOT_CACHE=str(tmp / "cache"), HOME=str(tmp))
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], env=env, capture_output=True, text=True)


def _system_apt_state() -> dict[str, int]:
    """What a fetch must never touch: the system's apt lists and sources (names and mtimes)."""
    state = {}
    for d in ("/var/lib/apt/lists", "/etc/apt/sources.list.d", "/var/lib/dpkg"):
        for p in Path(d).iterdir() if Path(d).is_dir() else []:
            if p.is_file() and p.name != "lock":
                state[str(p)] = p.stat().st_mtime_ns
    return state


def test_fetch_again_reuses_the_cached_version_and_leaves_the_system_alone(tmp_path):
    wrapper = modern_ocloc()
    before = _system_apt_state()
    proc = _cli("ocloc", "fetch", "--dest", str(MODERN_OCLOC_DEST), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"OCLOC={wrapper}\n"
    assert "already in" in proc.stderr and "apt-get download" not in proc.stderr
    assert _system_apt_state() == before
    offline = _cli("ocloc", "fetch", "--offline", "--dest", str(MODERN_OCLOC_DEST), tmp=tmp_path)
    assert offline.returncode == 0 and offline.stdout == proc.stdout


def test_the_fetched_ocloc_runs_through_its_own_loader_and_knows_the_new_steppings(tmp_path):
    wrapper = modern_ocloc()
    text = wrapper.read_text()
    assert "ld-linux-x86-64.so.2' --library-path" in text and str(wrapper.parent / "root") in text
    oc = find_ocloc(Settings.from_env({"OCLOC": str(wrapper), "HOME": str(tmp_path)}))
    assert oc.found_by == "OCLOC" and oc.library is None  # a script: only the subprocess path fits
    system = find_ocloc(Settings.from_env({"HOME": str(tmp_path)}))
    assert tuple(map(int, oc.version.split(".")[:2])) > tuple(map(int, system.version.split(".")[:2]))
    assert "12.71.4" in oc.ids("mtl-h-b0") and "20.4.4" in oc.ids("lnl-b0")
    record = (wrapper.parent / "fetch.json").read_text()
    assert "intel-ocloc_" in record and "libigc2_" in record and "libc6_" in record


def test_a_keyring_that_does_not_sign_the_suite_is_refused(tmp_path):
    """apt checks InRelease against the keyring: Debian's removed-keys keyring cannot verify sid."""
    dest = tmp_path / "dest"
    proc = _cli("ocloc", "fetch", "--dest", str(dest), "--keyring",
                "/usr/share/keyrings/debian-archive-removed-keys.gpg", tmp=tmp_path)
    assert proc.returncode == errors.ToolchainError.exit_code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: apt-get update")
    assert proc.stdout == ""
    assert not list(dest.glob("intel-ocloc-*"))


def test_missing_keyring_and_offline_without_a_fetch_are_one_line_errors(tmp_path):
    for args in (["--keyring", str(tmp_path / "none.gpg")], ["--offline"]):
        proc = _cli("ocloc", "fetch", "--dest", str(tmp_path / "dest"), *args, tmp=tmp_path)
        assert proc.returncode == errors.ToolchainError.exit_code, args
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
