"""Nox sessions: thin wrappers over the ``ipex-aot`` command line.

Every session runs in the environment nox itself was installed in (the
project's ``.venv`` made by ``setup.sh``), so nothing is reinstalled per
session; each one parses ``session.posargs`` and calls the package. All logic
lives in ``src/ipex_aot`` where tests can import it. The noxfile never imports
the package, so any nox (one installed with pipx, say) can list the sessions,
and the list is the same on every machine.

    nox                                  # the canary release, end to end
    nox -s tests                         # the test suite
    nox -s devices                       # device database into dist/devices/
    nox -s build -- RECIPE --generation 12.55.8
    nox -s release -- RECIPE
    nox -l --json                        # what CI builds its matrix from
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["release"]

CANARY = "recipes/canary.yaml"


def _ipex_aot(session: nox.Session, *args: str) -> None:
    # stderr=None: the command's messages go to nox's stderr, not into its stdout (nox merges them by
    # default), so `nox -s matrix -- RECIPE > matrix.json` and `--json` outputs stay pure JSON.
    session.run(sys.executable, "-m", "ipex_aot", *args, external=True, stderr=None)


def _recipe_args(session: nox.Session) -> list[str]:
    """posargs, with the canary recipe when none is named."""
    args = list(session.posargs)
    if not args or args[0].startswith("-"):
        args.insert(0, CANARY)
    return args


@nox.session
def tests(session: nox.Session) -> None:
    """Run ruff, mypy and the test suite (the real ocloc, 7z, py7zr, git and torch on the CPU), then the Windows lane.

    The device-database tests run twice: with the ocloc on PATH (Debian bookworm's 22.43) and with
    the modern one setup.sh fetched from Debian sid into .venv/ocloc; either missing fails them.
    """
    session.run(sys.executable, "-m", "ruff", "check", ".", external=True)
    session.run(sys.executable, "-m", "mypy", external=True)
    session.run(sys.executable, "-m", "pytest", *session.posargs, external=True)
    if not session.posargs:  # a narrowed run (-- tests/test_x.py) is about Linux only
        session.notify("tests-windows")


@nox.session(name="tests-windows")
def tests_windows(session: nox.Session) -> None:
    """The Windows lane: pytest under CPython 3.11 for Windows, run by Wine (setup.sh provisions both)."""
    session.run(sys.executable, "tools/winlane.py", "test", *session.posargs, external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site with mkdocs-material into dist/site (--strict: a broken link or page fails)."""
    session.run(sys.executable, "-m", "mkdocs", "build", "--strict", *session.posargs, external=True,
                env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def devices(session: nox.Session) -> None:
    """Sweep ocloc over every PCI ID; write dist/devices/devices.json and devices.md."""
    _ipex_aot(session, "devices", "--write", *session.posargs)


@nox.session
def preflight(session: nox.Session) -> None:
    """Check the recipe's toolchain (oneAPI, compiler, ocloc, torch) before hours of work."""
    _ipex_aot(session, "preflight", *_recipe_args(session))


@nox.session
def build(session: nox.Session) -> None:
    """Build a recipe's generations: -- RECIPE [--generation X | --device ACRONYM | --pci ID] [--keep-going]."""
    _ipex_aot(session, "build", *_recipe_args(session))


@nox.session
def pack(session: nox.Session) -> None:
    """Pack a recipe's built generations into one deterministic .7z with manifest.json and SUPPORT.md."""
    _ipex_aot(session, "pack", *_recipe_args(session))


@nox.session
def verify(session: nox.Session) -> None:
    """Every built folder dist/<recipe>/<generation>/ (or, given ARCHIVE.7z, every folder of it) holds its own generation."""
    _ipex_aot(session, "verify", *_recipe_args(session))


@nox.session
def conformance(session: nox.Session) -> None:
    """Per-generation inference conformance: -- RECIPE [--generation X] [--device xpu|cuda|cpu]."""
    _ipex_aot(session, "conformance", *_recipe_args(session))


@nox.session
def matrix(session: nox.Session) -> None:
    """Print the GitHub Actions matrix of a recipe (one entry per generation)."""
    _ipex_aot(session, "matrix", *_recipe_args(session))


@nox.session
def workflow(session: nox.Session) -> None:
    """Run .github/workflows/aot-release.yml through nektos/act here: -- [RECIPE] [--platform P] (release recorded)."""
    session.run(sys.executable, str(Path(__file__).parent / "tools" / "act" / "workflow.py"), *session.posargs,
                external=True, stderr=None)


@nox.session
def variants(session: nox.Session) -> None:
    """Wheel variants of a recipe's built generations + the JIT-only fallback and the index: -- RECIPE [--fallback WHEEL]."""
    _ipex_aot(session, "variants", *_recipe_args(session))


@nox.session
def release(session: nox.Session) -> None:
    """preflight → build → verify folders → conformance → pack → verify archive → release notes (default: the canary)."""
    _ipex_aot(session, "release", *_recipe_args(session))
