"""The ``ipex-aot`` command line.

Each pipeline module owns its subcommands: it defines
``register(subparsers)``, which adds its parsers and sets ``func`` to a
callable ``func(args, settings) -> int``. This file only wires them up,
resolves :class:`~ipex_aot.settings.Settings` once, and turns the
:class:`~ipex_aot.errors.IpexAotError` family into one-line messages and
exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ipex_aot import __version__, children, log, platforms
from ipex_aot.errors import IpexAotError
from ipex_aot.settings import Settings

# In pipeline order: recipe → source → build → pack → scan/verify → install/conformance.
COMMAND_MODULES = (
    "ipex_aot.ocloc_fetch",
    "ipex_aot.devices",
    "ipex_aot.recipe",
    "ipex_aot.toolchain",
    "ipex_aot.source",
    "ipex_aot.build",
    "ipex_aot.pack",
    "ipex_aot.scan",
    "ipex_aot.gpus",
    "ipex_aot.install",
    "ipex_aot.conformance",
    "ipex_aot.release",
    "ipex_aot.signing",
    "ipex_aot.variants",
    "ipex_aot.matrix",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipex-aot",
        description="Per-generation AOT builds of Intel Extension for PyTorch from one YAML recipe.",
    )
    parser.add_argument("--version", action="version", version=f"ipex-aot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A path or GPU name the stream's code page lacks must not kill the command (Windows pipes: cp1252).
        platforms.host().configure_console(stream)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    children.terminate_like_interrupt()
    try:
        settings = Settings.from_env()
        log.configure(github_actions=settings.github_actions)
        return int(args.func(args, settings) or 0)
    except IpexAotError as e:
        log.error(e.message)
        return e.exit_code
    except children.Terminated:
        print("error: terminated (SIGTERM); child processes were stopped, finished outputs are kept, rerun to resume",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
