"""Conformance reports: the verdict, the JSON file, the human summary and the release-notes matrix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ipex_aot.conformance.identity import describe
from ipex_aot.errors import ConformanceError
from ipex_aot.generation import generation_order
from ipex_aot.untrusted import loads_json

SCHEMA = 1
VERDICTS = ("pass", "fail", "skipped")


def verdict(failures: Sequence[str], skips: Sequence[str]) -> str:
    """A failure beats a skip: a library without its generation fails even where no device could test it."""
    if failures:
        return "fail"
    if skips:
        return "skipped"
    return "pass"


def workload_failures(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    out = []
    for e in entries:
        if e.get("pass"):
            continue
        label = f"{e['workload']}/{e['dtype']}"
        if e.get("error"):
            out.append(f"{label}: {e['error']}")
            continue
        tol = e["tolerance"]
        out.append(
            f"{label}: max abs error {e['max_abs_err']:.3g}, max rel error {e['max_rel_err']:.3g} beyond "
            f"atol {tol['atol']:g} + rtol {tol['rtol']:g}·|ref| (worst at index {tuple(e['worst_index'])}: "
            f"{e['worst_value']:.6g} vs {e['worst_reference']:.6g})"
        )
    return out


def slow_first_calls(entries: Iterable[Mapping[str, Any]], limit_s: float) -> list[str]:
    return [
        f"{e['workload']}/{e['dtype']}: first call took {e['first_call_s']:.1f} s (limit {limit_s:g} s): "
        "kernels were probably compiled at run time"
        for e in entries
        if e.get("first_call_s") is not None and e["first_call_s"] > limit_s
    ]


def summary_line(report: Mapping[str, Any]) -> str:
    head = f"{report['generation']} {report['device']}: {report['verdict'].upper()}"
    if report["verdict"] != "pass":
        return f"{head}: {'; '.join(report['reasons'])}"
    parts = []
    if report.get("identity"):
        parts.append(describe(report["identity"]))
    entries = report.get("workloads") or []
    if entries:
        worst = max(entries, key=lambda e: e.get("worst_ratio", 0.0))
        first = max(e.get("first_call_s") or 0.0 for e in entries)
        steady = sum(e.get("steady_s") or 0.0 for e in entries)
        parts.append(f"{len(entries)} workload runs within tolerance (closest: {worst['workload']}/{worst['dtype']} "
                     f"at {worst.get('worst_ratio', 0.0):.2f} of its tolerance)")
        parts.append(f"slowest first call {first * 1000:.0f} ms, steady-state sum {steady * 1000:.1f} ms")
    check = (report.get("package") or {}).get("check")
    if check:
        parts.append(f"{report['package']['name']} CPU path: {len(check['checks'])} checks passed")
    trace = report.get("trace")
    if trace and trace.get("format"):
        parts.append(f"{trace['programs_from_binary']} programs from native binaries, "
                     f"{trace['programs_from_il_or_source']} from SPIR-V")
    return f"{head}: " + "; ".join(parts)


def table(reports: Sequence[Mapping[str, Any]]) -> str:
    """Per-workload figures, for the terminal and the README."""
    lines = ["| workload | dtype | max abs err | max rel err | worst index | first call | steady state |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in reports:
        if e.get("error"):
            lines.append(f"| {e['workload']} | {e['dtype']} | error: {e['error']} | | | | |")
            continue
        lines.append(
            f"| {e['workload']} | {e['dtype']} | {e['max_abs_err']:.2e} | {e['max_rel_err']:.2e} | "
            f"{tuple(e['worst_index'])} | {e['first_call_s'] * 1000:.1f} ms | {e['steady_s'] * 1000:.2f} ms |"
        )
    return "\n".join(lines)


def conformance_markdown(reports: Sequence[Mapping[str, Any]]) -> str:
    """A generation × device matrix of verdicts, with the reasons below, for release notes."""

    if not reports:
        return "No conformance results.\n"
    generations = sorted({r["generation"] for r in reports}, key=generation_order)
    devices = sorted({r["device"] for r in reports})
    cells = {(r["generation"], r["device"]): r for r in reports}
    lines = ["| Generation | " + " | ".join(devices) + " |", "| --- |" + " --- |" * len(devices)]
    notes: list[str] = []
    for g in generations:
        row = []
        for d in devices:
            r = cells.get((g, d))
            if r is None:
                row.append("–")
                continue
            cell = r["verdict"]
            if r["verdict"] != "pass" and r.get("reasons"):
                notes.append(f"{g} on {d}: {'; '.join(r['reasons'])}")
                cell += f" [{len(notes)}]"
            row.append(cell)
        lines.append(f"| `{g}` | " + " | ".join(row) + " |")
    counts = {v: sum(1 for r in reports if r["verdict"] == v) for v in VERDICTS}
    lines += ["", f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped "
                  "(skipped: no device of that kind or generation on the machine; never counted as passed)."]
    if notes:
        lines += [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def manifest_entries(reports: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The manifest's ``conformance`` list: verdict and where the full report is, per generation × device."""
    return [
        {"generation": r["generation"], "device": r["device"], "verdict": r["verdict"],
         "report": f"conformance/{r['generation']}-{r['device']}.json", "reasons": list(r.get("reasons") or [])}
        for r in reports
    ]


def read_reports(folder: Path, generations: Iterable[str]) -> list[dict[str, Any]]:
    """The reports ``<generation>-<device>.json`` under FOLDER for GENERATIONS (a CI job made each elsewhere).

    Every generation needs at least one report: packing "with conformance" must not quietly drop one.
    """
    wanted = list(generations)
    reports: list[dict[str, Any]] = []
    for generation in wanted:
        found = sorted(folder.glob(f"{generation}-*.json"))
        if not found:
            raise ConformanceError(f"{folder}: no conformance report of {generation} ({generation}-DEVICE.json); "
                                   f"run `ipex-aot conformance RECIPE --generation {generation}` first")
        for path in found:
            try:
                report = loads_json(path.read_text(encoding="utf-8"))  # a CI artifact: bounded depth
            except (OSError, ValueError) as e:
                raise ConformanceError(f"{path}: not a readable conformance report ({e})") from None
            if not isinstance(report, dict) or report.get("generation") != generation \
                    or report.get("verdict") not in VERDICTS or not isinstance(report.get("device"), str):
                raise ConformanceError(f"{path}: not a conformance report of {generation} "
                                       "(generation, device and verdict are missing or wrong)")
            reports.append(report)
    return reports
