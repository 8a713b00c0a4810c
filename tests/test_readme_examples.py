"""Every command example in README.md and the docs site's pages (docs/**/*.md) is checked against the real tool (issue 12, "Done when").

Examples are the lines of ```sh blocks and the ``$ ``-prompted lines of ```console blocks that start
with ``ipex-aot``, ``.venv/bin/ipex-aot`` or ``nox``. New examples are picked up without editing this file:

* every ``ipex-aot …`` example parses with the real argument parser (a renamed option breaks the test),
  except synopsis lines that show alternatives (``[…]``, ``|``, ``…``, ``<…>``, UPPER-CASE placeholders);
* every ``nox -s SESSION`` names a session of the noxfile;
* the read-only ones (``devices``, ``devices lookup``, ``ocloc``, ``recipe validate|show``) are run, and
  exit with the code their comment states (``exit code 5``, ``exit 3``), else 0, with bookworm's ocloc or
  the modern one that ``setup.sh`` fetches (the README shows both).

The two README commands (``./setup.sh && .venv/bin/nox`` and ``… nox -s tests``) are what CI runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import libfixtures as L
import pytest

from ipex_aot.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN = ("devices lookup", "devices --json", "devices --ocloc-info", "ocloc", "recipe validate", "recipe show")


def examples() -> list[tuple[str, str, str]]:
    """(file:line, command, comment) of every example."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.finditer(r"```(sh|console)\n(.*?)```", text, re.S):
            start = text.count("\n", 0, block.start(2)) + 1
            for i, raw in enumerate(block.group(2).splitlines()):
                line = raw.strip()
                if block.group(1) == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                command, _, comment = line.partition("  #")
                command = command.strip().removeprefix(".venv/bin/")
                if re.match(r"(ipex-aot|nox)(\s|$)", command):
                    found.append((f"{doc.relative_to(REPO)}:{start + i}", command, comment.strip()))
    return found


EXAMPLES = examples()


def _synopsis(command: str) -> bool:
    return bool(re.search(r"[\[\]|…<>\\]|\b[A-Z][A-Z_]{2,}\b", command.replace("--", "")))


def test_examples_are_found():
    assert len(EXAMPLES) >= 40, EXAMPLES
    assert any(c.startswith("ipex-aot devices lookup") for _, c, _ in EXAMPLES)


@pytest.mark.parametrize("where,command,comment", [e for e in EXAMPLES if e[1].startswith("ipex-aot")
                                                   and not _synopsis(e[1])], ids=lambda v: str(v)[:60])
def test_every_ipex_aot_example_parses(where, command, comment):
    args = shlex.split(command)[1:]
    try:
        build_parser().parse_args(args)
    except SystemExit as e:
        assert e.code == 0, f"{where}: `{command}` does not parse"


def test_every_nox_example_names_a_session():
    listing = subprocess.run([sys.executable, "-m", "nox", "-f", str(REPO / "noxfile.py"), "-l", "--json"],
                             capture_output=True, text=True, cwd=REPO)
    sessions = {s["session"] for s in json.loads(listing.stdout)}
    listed = subprocess.run([sys.executable, "-m", "nox", "-f", str(REPO / "noxfile.py"), "-l"],
                            capture_output=True, text=True, cwd=REPO).stdout
    sessions |= {m.group(1) for m in re.finditer(r"^[*-] (\S+) ->", listed, re.M)}
    for where, command, _ in EXAMPLES:
        m = re.match(r"nox -s (\S+)", command)
        if m:
            assert m.group(1) in sessions, f"{where}: no nox session {m.group(1)!r}"


def _expected(comment: str) -> int:
    m = re.search(r"exit(?: code)? (\d+)", comment)
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = L.shared_cache(tmp_path_factory)
    return dict(os.environ, IPEX_AOT_CACHE=str(cache), IPEX_AOT_DIST=str(tmp_path_factory.mktemp("dist")))


@pytest.mark.slow
@pytest.mark.parametrize("where,command,comment", [e for e in EXAMPLES if e[1].startswith("ipex-aot")
                                                   and not _synopsis(e[1])
                                                   and any(e[1][9:] == r or e[1][9:].startswith(r + " ")
                                                           and r != "ocloc" for r in RUN)],
                         ids=lambda v: str(v)[:60])
def test_read_only_examples_run_as_written(where, command, comment, env):
    want = _expected(comment)
    got = []
    for ocloc in ("ocloc", str(L.modern_ocloc())):
        proc = subprocess.run([sys.executable, "-m", "ipex_aot", *shlex.split(command)[1:]], capture_output=True,
                              text=True, cwd=REPO, env=dict(env, OCLOC=ocloc), timeout=600)
        assert "Traceback" not in proc.stderr, f"{where}: {proc.stderr}"
        got.append(proc.returncode)
        if proc.returncode == want:
            return
    pytest.fail(f"{where}: `{command}` exited {got} (bookworm's ocloc, the fetched one); the README says {want}")
