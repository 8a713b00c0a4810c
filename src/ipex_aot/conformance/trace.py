"""Read the SYCL runtime's call trace and tell which kernel programs were JIT-compiled.

Two formats exist, one per runtime generation:

* PI (DPC++ up to 2024.x, the runtime of IPEX 2.1), ``SYCL_PI_TRACE=2``: a call
  spans several lines, arguments untyped, the result and out-parameters after::

      ---> piProgramCreate(
              <unknown> : 0x55d0c8a2b0e0
              <unknown> : 0x7f3a4c000010
              <unknown> : 123456
              <unknown> : 0x7ffd9e3c1a08
      ) --->  pi_result : PI_SUCCESS
              [out]<unknown> ** : 0x7ffd9e3c1a08[ 0x55d0c8f1e2a0 ]

* UR (DPC++ 2025.x, Unified Runtime), ``SYCL_UR_TRACE=2``: one line per call
  with named arguments, out-parameters' values in parentheses::

      ---> urProgramCreateWithIL(.hContext = 0x1, .pIL = 0x2, .length = 1024,
           .pProperties = 0x3, .phProgram = 0x4 (0x5)) -> UR_RESULT_SUCCESS;

A program created from IL (``piProgramCreate``, ``urProgramCreateWithIL``) or
from OpenCL C source is compiled by the driver at run time: that is the JIT an
AOT build exists to avoid. A program created from a binary
(``piProgramCreateWithBinary``, ``urProgramCreateWithBinary``) is native code
(or a cached JIT result, which is why the worker switches the persistent
caches off).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: API name -> what it does to a program: created from "il", "binary" or "source"; or "build"/"compile"/"link".
PROGRAM_CALLS = {
    "piProgramCreate": "il",
    "piclProgramCreateWithSource": "source",
    "piProgramCreateWithBinary": "binary",
    "piProgramBuild": "build",
    "piProgramCompile": "compile",
    "piProgramLink": "link",
    "urProgramCreateWithIL": "il",
    "urProgramCreateWithBinary": "binary",
    "urProgramBuild": "build",
    "urProgramBuildExp": "build",
    "urProgramCompile": "compile",
    "urProgramCompileExp": "compile",
    "urProgramLink": "link",
    "urProgramLinkExp": "link",
}
CREATES = {"il", "binary", "source"}
JIT_KINDS = {"il", "source"}

_PI_START = re.compile(r"^\s*--->\s+(pi\w+)\(\s*$")
_PI_END = re.compile(r"^\s*\)?\s*--->\s*pi_result\s*:\s*(\w+)")
_PI_OUT = re.compile(r"^\s*\[out\].*\[\s*(0x[0-9a-fA-F]+|\d+)\s*\]")
_PI_ARG = re.compile(r"^\s*<[^>]*>\s*:\s*(\S+)|^\s*\w[\w ]*\*?\s*:\s*(\S+)")
_UR_CALL = re.compile(r"^\s*(?:--->|<---)\s+(ur\w+)\((.*)\)\s*->\s*(\w+);?\s*$")
_UR_ARG = re.compile(r"\.(\w+)\s*=\s*([^,()]+?)(?:\s*\(([^()]*)\))?\s*(?:,|$)")


@dataclass
class ProgramEvent:
    api: str
    kind: str                      # il | binary | source | build | compile | link
    result: str
    program: str | None = None     # handle created, or built
    length: int | None = None      # size of the IL/binary where the trace shows it
    line: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"api": self.api, "kind": self.kind, "result": self.result, "program": self.program,
                "length": self.length, "line": self.line}


@dataclass
class TraceSummary:
    format: str | None                         # "pi" | "ur" | None (no program calls seen)
    events: list[ProgramEvent] = field(default_factory=list)
    calls: int = 0                             # every traced call, program-related or not

    def _ok(self, kinds: set[str]) -> list[ProgramEvent]:
        return [e for e in self.events if e.kind in kinds and e.result.endswith("SUCCESS")]

    @property
    def jit_programs(self) -> list[ProgramEvent]:
        """Programs created from SPIR-V IL or source: each will be compiled by the driver (JIT)."""
        return self._ok(JIT_KINDS)

    @property
    def binary_programs(self) -> list[ProgramEvent]:
        return self._ok({"binary"})

    @property
    def jit_builds(self) -> list[ProgramEvent]:
        """Builds/compiles of programs that were created from IL or source."""
        jit = {e.program for e in self.jit_programs if e.program}
        return [e for e in self._ok({"build", "compile"}) if e.program in jit]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "calls": self.calls,
            "programs_from_il_or_source": len(self.jit_programs),
            "programs_from_binary": len(self.binary_programs),
            "program_builds": len(self._ok({"build", "compile"})),
            "jit_builds": len(self.jit_builds),
            "jit_events": [e.to_json() for e in self.jit_programs + self.jit_builds][:20],
        }


def parse_trace(text: str | Iterable[str]) -> TraceSummary:
    """Both formats, mixed with any other output (the program's own prints, warnings)."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    summary = TraceSummary(format=None)
    i = 0
    while i < len(lines):
        line = lines[i]
        ur = _UR_CALL.match(line)
        if ur:
            summary.calls += 1
            summary.format = summary.format or "ur"
            api, args, result = ur.groups()
            if api in PROGRAM_CALLS:
                summary.events.append(_ur_event(api, args, result, i + 1))
            i += 1
            continue
        pi = _PI_START.match(line)
        if pi:
            summary.calls += 1
            summary.format = summary.format or "pi"
            i = _pi_call(pi.group(1), lines, i, summary)
            continue
        i += 1
    return summary


def _ur_event(api: str, args: str, result: str, line: int) -> ProgramEvent:
    values: dict[str, tuple[str, str | None]] = {}
    for m in _UR_ARG.finditer(args):
        values[m.group(1)] = (m.group(2).strip(), m.group(3).strip() if m.group(3) else None)
    kind = PROGRAM_CALLS[api]
    # A create call: .phProgram = <address of the out variable> (<the new handle>); the others name hProgram.
    program = values.get("phProgram", ("", None))[1] if kind in CREATES else values.get("hProgram", (None, None))[0]
    length = values.get("length", (None, None))[0]
    if length is None and "pLengths" in values:
        length = values["pLengths"][1]
    return ProgramEvent(api, kind, result, program, _int(length), line)


def _pi_call(api: str, lines: list[str], start: int, summary: TraceSummary) -> int:
    """Parse one multi-line PI call starting at ``lines[start]``; return the index after it."""
    args: list[str] = []
    result = "UNKNOWN"
    out: str | None = None
    i = start + 1
    while i < len(lines):
        end = _PI_END.match(lines[i])
        if end:
            result = end.group(1)
            i += 1
            while i < len(lines) and lines[i].lstrip().startswith("[out]"):
                m = _PI_OUT.match(lines[i])
                if m and out is None:
                    out = m.group(1)
                i += 1
            break
        if _PI_START.match(lines[i]):
            break  # a truncated call: the next one starts
        m = _PI_ARG.match(lines[i])
        if m:
            args.append(m.group(1) or m.group(2))
        i += 1
    if api in PROGRAM_CALLS:
        kind = PROGRAM_CALLS[api]
        if kind in CREATES:
            program = out
            # piProgramCreate(context, il, length, *program)
            length = _int(args[2]) if kind == "il" and len(args) > 2 else None
        else:
            program = args[0] if args else None
            length = None
        summary.events.append(ProgramEvent(api, kind, result, program, length, start + 1))
    return i


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


#: Environment for the worker: both runtimes' trace switches (each ignores the other's), and the
#: persistent caches off so that a cached JIT result cannot pass for native code.
TRACE_ENV = {
    "SYCL_PI_TRACE": "2",
    "SYCL_UR_TRACE": "2",
    "SYCL_CACHE_PERSISTENT": "0",
    "NEO_CACHE_PERSISTENT": "0",
}
