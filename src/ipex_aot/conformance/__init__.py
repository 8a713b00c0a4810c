"""Per-device inference conformance: ``ipex-aot conformance RECIPE [--generation X] [--device xpu|cuda|cpu]``.

The package is split by concern: ``runner`` (orchestration, the static half,
the build installed into a scratch folder), ``worker`` (the device half, run
in a fresh process), ``workloads`` (the torch.nn reference models and
tolerances), ``packages`` (a package's own CPU path: the canary),
``trace`` (SYCL PI/UR program-build traces), ``identity`` (a device's
generation code) and ``report`` (verdicts, summaries, the Markdown matrix).
This module stays light: the CLI imports it at start, torch is imported only
in the worker.
"""

from __future__ import annotations

import argparse
import json

from ipex_aot import log
from ipex_aot.conformance.report import conformance_markdown, summary_line
from ipex_aot.conformance.runner import DEVICES, FIRST_CALL_LIMIT_S, Options, run_conformance
from ipex_aot.errors import ConformanceError
from ipex_aot.recipe import recipe_name
from ipex_aot.settings import Settings

__all__ = ["DEVICES", "Options", "conformance_markdown", "register", "run_conformance"]


def _cmd_conformance(args: argparse.Namespace, settings: Settings) -> int:
    options = Options(
        explicit=bool(args.generation),
        first_call_limit_s=args.first_call_limit,
        iterations=args.iterations,
        python=args.python,
        timeout_s=args.timeout,
    )
    reports = run_conformance(recipe_name(args.recipe), args.generation or None, args.device, settings, options)
    if args.json:
        print(json.dumps(reports, indent=2, sort_keys=True))
    if args.markdown:
        print(conformance_markdown(reports), end="")
    log.info("conformance summary:")
    for r in reports:
        log.info("  " + summary_line(r))
    failed = [f"{r['generation']}/{r['device']}" for r in reports if r["verdict"] == "fail"]
    skipped = [f"{r['generation']}/{r['device']}" for r in reports if r["verdict"] == "skipped"]
    if failed:
        first = next(r for r in reports if r["verdict"] == "fail")
        raise ConformanceError(f"conformance failed for {', '.join(failed)}: {first['reasons'][0]} "
                               f"(reports in {settings.dist_dir / recipe_name(args.recipe) / 'conformance'})")
    if skipped and args.require_device:
        raise ConformanceError(f"conformance skipped for {', '.join(skipped)} and --require-device was given: "
                               f"{reports[0]['reasons'][0] if reports[0]['reasons'] else ''}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "conformance",
        help="prove a build holds its generation and computes right on a device (skipped where none is present)",
        description="Scan each built generation's library, then run reference workloads on the device in a fresh "
                    "process with the build installed. Exit 0: every report passed or was skipped (the verdict says "
                    "which); 11: a check failed.",
    )
    p.add_argument("recipe", help="recipe file or name, e.g. recipes/canary.yaml")
    p.add_argument("--generation", action="append", metavar="X",
                   help="a generation code to test (repeatable; default: every finished build). A named generation "
                        "fails on an XPU of another generation instead of being skipped")
    p.add_argument("--device", choices=DEVICES, default="xpu", help="device kind (default: xpu)")
    p.add_argument("--json", action="store_true", help="print the reports (a JSON list) on stdout")
    p.add_argument("--markdown", action="store_true", help="print the generation × device × verdict matrix on stdout")
    p.add_argument("--require-device", action="store_true", help="a skipped report (no such device here) fails")
    p.add_argument("--first-call-limit", type=float, default=FIRST_CALL_LIMIT_S, metavar="S",
                   help=f"a first call slower than this counts as JIT compilation (default {FIRST_CALL_LIMIT_S:g} s)")
    p.add_argument("--iterations", type=int, default=10, metavar="N", help="steady-state iterations (default 10)")
    p.add_argument("--python", metavar="EXE", help="interpreter whose torch/IPEX runs the device half (default: this one)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S", help="limit for one worker process (default 900 s)")
    p.set_defaults(func=_cmd_conformance)
