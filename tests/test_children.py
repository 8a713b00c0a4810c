# ruff: noqa: F811 - fixtures imported from test_install and test_pack are parameters here
"""Killed steps leave no child running and no scratch behind; the next run sweeps what a kill -9 left (issue 12).

The build command here is a real Python process that starts a grandchild and sleeps, standing in for
``pip wheel`` and the build backend it starts; ipex-aot is signalled while both run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from libfixtures import site  # the release and settings fixtures are in conftest
from test_pack import cache, do_pack, libraries, make_dist  # noqa: F401 - fixtures

from ipex_aot import install, pack

REPO = Path(__file__).resolve().parents[1]
CHILD = ("import os, subprocess, sys, time, pathlib; "
         "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
         "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()) + ' ' + str(g.pid)); time.sleep(120)")


def _recipe(root: Path, pids: Path) -> Path:
    (root / "recipes").mkdir(parents=True)
    (root / "src").mkdir()
    text = (REPO / "recipes" / "canary.yaml").read_text()
    start = text.index("  command:")
    end = text.index("  reuse_tree:")
    text = text[:start] + f"  command: {json.dumps(['{python}', '-c', CHILD, str(pids)])}\n" + text[end:]
    text = text.replace("path: canary", "path: src")
    path = root / "recipes" / "slow.yaml"
    path.write_text(text)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: it holds no file and does no work.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _start_build(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    pids = tmp_path / "pids"
    recipe = _recipe(tmp_path / "repo", pids)
    dist = tmp_path / "dist"
    env = dict(os.environ, IPEX_AOT_DIST=str(dist))
    proc = subprocess.Popen([sys.executable, "-m", "ipex_aot", "build", str(recipe), "--generation", "12.0.0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (pids.is_file() and pids.read_text().strip().count(" ") == 1):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the build command never started"
        time.sleep(0.1)
    return proc, pids, dist


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_build_leaves_no_child_and_no_wheel_scratch(tmp_path, sig):
    proc, pids, dist = _start_build(tmp_path)
    child, grandchild = (int(x) for x in pids.read_text().split())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "terminated" in err, err
        assert _wait_gone([child, grandchild]) == []
        assert list((dist / "slow" / "wheels").glob(".*")) == [], "the wheel scratch is removed"
    else:
        # No handler runs on SIGKILL: the kernel ends the direct child (PDEATHSIG); the grandchild is ours to
        # clean up here, and the next build of the generation sweeps the scratch.
        assert _wait_gone([child]) == []
        os.kill(grandchild, signal.SIGKILL)
        assert list((dist / "slow" / "wheels").glob(".12.0.0.*"))


def test_a_killed_installs_work_folder_and_half_backup_are_swept(tmp_path, settings, release):
    archive, libs = release
    root, lib = site(tmp_path)
    stale = lib.parent / ".ipex-aot-killed"
    stale.mkdir()
    (stale / "libgpu.so").write_bytes(b"\0" * 4096)
    half = lib.with_name(lib.name + install.BACKUP_SUFFIX + ".part")
    half.write_bytes(b"half")
    install.install(archive, settings, ipex_dir=root, generation=next(iter(libs)), engine="py7zr")
    assert not stale.exists() and not half.exists()
    assert sorted(p.name for p in lib.parent.iterdir() if p.name.startswith(".ipex-aot-")) == []


def test_a_killed_packs_part_and_piece_files_are_swept(tmp_path):
    archive = tmp_path / "0.1.0-AOT.7z"
    left = [tmp_path / ".0.1.0-AOT.7z.abc123.part", tmp_path / ".0.1.0-AOT.7z.abc123.part.piece0",
            tmp_path / ".0.1.0-AOT.7z.abc123.part.piece3"]
    for p in left:
        p.write_bytes(b"x")
    (tmp_path / ".pack-xyz").mkdir()
    keep = [tmp_path / "0.1.0-AOT.7z.minisig", tmp_path / "other.7z"]
    for p in keep:
        p.write_bytes(b"y")
    gone = pack.sweep_stale(archive)
    assert sorted(gone) == sorted([*left, tmp_path / ".pack-xyz"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)


def test_pack_sweeps_a_killed_packs_files_before_it_writes(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries, gens=("12.0.0",))
    out = dist / "demo"
    stale = [out / ".0.1.0-AOT.7z.k1ll3d.part", out / ".0.1.0-AOT.7z.k1ll3d.part.piece1"]
    for p in stale:
        p.write_bytes(b"\0" * 1024)
    result = do_pack(dist, cache)
    assert result.archive.is_file() and not any(p.exists() for p in stale)
    assert [p.name for p in out.iterdir() if p.name.endswith((".part", ".piece1"))] == []
