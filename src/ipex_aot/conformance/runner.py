"""Conformance orchestration: static half here, device half in fresh worker processes.

Per generation and device kind:

1. static half, everywhere: the generation's library must hold that
   generation natively (``scan.require_generation``); if not, the verdict is
   ``fail`` whatever the device.
2. the build installed: its wheel (``build.json`` ``wheel``) unpacked into a
   scratch folder with the generation's library at its install path; the
   worker puts that folder first on ``sys.path``. Nothing in the user's
   environment is touched.
3. device half, in a fresh process (``worker.py``):

   * ``xpu``: one identify run, then the full run only for the generation the
     device is; the SYCL trace is captured (``trace.py``) and any program built
     from SPIR-V fails the run, as does a first call above the limit. A device
     of another generation skips the folder ("device is 12.55.8, folder is
     12.60.7"), or fails it when the user named the generation (``explicit``):
     that is the classic wrong-stepping mistake.
   * ``cuda``/``cpu``: the GPU library of an IPEX build is XPU code and is
     not on the compute path, so the torch workloads run once per device kind
     (one fresh process) and their figures go into every generation's report;
     a package with a CPU path (the canary) is checked per generation, with
     that generation's build installed.
4. ``dist/<recipe>/conformance/<generation>-<device>.json`` per generation.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import ipex_aot
from ipex_aot import children, log, platforms
from ipex_aot.build import built_generations, recipe_dist
from ipex_aot.conformance import report as rep
from ipex_aot.conformance.identity import Lookup, database_lookup, xpu_generation
from ipex_aot.conformance.packages import PACKAGE_CHECKS
from ipex_aot.conformance.trace import TRACE_ENV, parse_trace
from ipex_aot.errors import ConformanceError, IpexAotError, UsageError
from ipex_aot.fsutil import sha256_file, write_json, write_text
from ipex_aot.generation import generation_order
from ipex_aot.scan import require_generation
from ipex_aot.settings import Settings

DEVICES = ("xpu", "cuda", "cpu")
#: A first call slower than this is treated as JIT compilation (seconds); the real JIT takes minutes.
FIRST_CALL_LIMIT_S = 30.0
_SRC = str(Path(ipex_aot.__file__).resolve().parent.parent)
_BOOT = ("import sys; sys.path.insert(0, {src!r}); from ipex_aot.conformance.worker import main; "
         "sys.exit(main(sys.argv[1:]))")


@dataclass(frozen=True)
class Options:
    #: The user named the generations: a device of another generation fails instead of skipping.
    explicit: bool = False
    first_call_limit_s: float = FIRST_CALL_LIMIT_S
    iterations: int = 10
    workloads: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    #: Interpreter whose torch (and IPEX) runs the device half; default: this one.
    python: str | None = None
    timeout_s: float = 900.0
    write: bool = True
    #: Test hooks: add a constant to one workload's device output; replay a recorded SYCL trace.
    perturb: Mapping[str, float] = field(default_factory=dict)
    trace_replay: Path | None = None
    #: Test hook: the torch device the XPU half's run computes on. Where no Intel GPU exists the tests
    #: use "cpu" with a recorded identity (``probe``) and a recorded trace (``trace_replay``), so the
    #: XPU verdict (trace, workloads, package) is reached through its own path.
    xpu_compute_device: str = "xpu"


#: (device, spec extras) -> the worker's result; replaced in tests by recorded device properties.
Probe = Callable[[str, Mapping[str, Any]], dict]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- worker processes


@dataclass
class WorkerRun:
    result: dict[str, Any]
    stdout: str
    stderr: str
    wall_s: float
    returncode: int | None


def spawn_worker(spec: Mapping[str, Any], workdir: Path, name: str, options: Options) -> WorkerRun:
    """Run the worker in a fresh process; its stdout (the runtime's trace) and stderr are kept in files."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    out_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(dict(spec)), encoding="utf-8")
    cmd = [options.python or sys.executable, "-c", _BOOT.format(src=_SRC), str(spec_path), str(out_path)]
    stdout_path, stderr_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    start = time.monotonic()
    code: int | None
    # The worker imports torch before anything shows: say what the wait is, so 20 s of silence is not a hang.
    log.info(f"{name}: a fresh Python runs the workloads (importing torch takes about 20 s the first time; "
             f"gives up after {options.timeout_s:g} s)")
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        try:
            code = children.run(cmd, stdout=out, stderr=err, timeout=options.timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = None
        except OSError as e:
            raise UsageError(f"cannot start the worker with {cmd[0]}: {e}; give an interpreter with torch via --python") from None
    wall = time.monotonic() - start
    log.info(f"{name}: worker finished in {wall:.1f} s")
    stdout = stdout_path.read_text(errors="replace")
    stderr = stderr_path.read_text(errors="replace")
    if code is None:
        result = {"error": f"the worker did not finish in {options.timeout_s:g} s (JIT compilation takes minutes; "
                           "a hung driver too)"}
    elif out_path.is_file():
        result = json.loads(out_path.read_text(encoding="utf-8"))
    else:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        result = {"error": f"the worker exited with code {code} without a result: {tail or 'no output'}"}
    return WorkerRun(result, stdout, stderr, wall, code)


def _spec(mode: str, device: str, options: Options, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": mode, "device": device, "iterations": options.iterations,
        "workloads": list(options.workloads) if options.workloads else None,
        "dtypes": list(options.dtypes) if options.dtypes else None,
        "perturb": dict(options.perturb),
        "trace_replay": str(options.trace_replay) if options.trace_replay else None,
        "env": dict(TRACE_ENV) if device == "xpu" else ({"CUDA_CACHE_DISABLE": "1"} if device == "cuda" else {}),
    }
    spec.update(extra)
    return spec


# --------------------------------------------------------------------------- the build installed


def install_overlay(root: Path, record: Mapping[str, Any], library: Path, dest: Path) -> dict[str, Any]:
    """Unpack the build's wheel into ``dest`` with the generation's library at its install path."""
    wheel_rel = record.get("wheel")
    install_path = record["artifact"]["install_path"]
    info: dict[str, Any] = {"method": "wheel overlay", "install_path": install_path, "dir": str(dest)}
    if not wheel_rel or not (root / wheel_rel).is_file():
        info.update(method="library only", note="build.json names no wheel present on disk; only the library is installed")
        wheel = None
    else:
        wheel = root / wheel_rel
        info["wheel"] = str(wheel)
    dest.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise ConformanceError(f"{wheel}: unsafe member {member.filename!r}; rebuild the wheel")
            zf.extractall(dest)
    target = dest.joinpath(*PurePosixPath(install_path).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(library.read_bytes())
    return info


# --------------------------------------------------------------------------- the run


def _static(library: Path, generation: str, settings: Settings) -> dict[str, Any]:
    try:
        result = require_generation(library, generation, settings=settings)
    except IpexAotError as e:
        return {"ok": False, "error": e.message, "library": str(library)}
    return {"ok": True, "library": str(library), "scan": result.to_json()}


def _base(record: Mapping[str, Any], generation: str, device: str, library: Path) -> dict[str, Any]:
    return {
        "schema": rep.SCHEMA, "recipe": record.get("recipe"), "release": record.get("release"),
        "generation": generation, "device": device, "verdict": "skipped", "reasons": [], "warnings": [],
        "library": {"path": str(library), "sha256": record["artifact"].get("sha256"), "size": record["artifact"].get("size")},
        "versions": {"ipex_aot": ipex_aot.__version__, "python": platform.python_version()},
        "host": socket.gethostname(), "started": _now(),
    }


def _worker_failure(result: Mapping[str, Any]) -> str | None:
    return result.get("error")


def _package_verdict(report: dict[str, Any], package: Mapping[str, Any] | None, failures: list[str]) -> None:
    if not package:
        return
    report["package"] = package
    if package.get("library_is_build") is False:
        failures.append(f"{package['name']} imported from {package.get('file')} does not load this build's library "
                        f"({package.get('library')} has another sha256): the build is not the one installed")
    check = package.get("check")
    if check and not check["pass"]:
        for name, c in check["checks"].items():
            if not c["pass"]:
                failures.append(f"{package['name']}.{name}: max abs error {c.get('max_abs_err', float('nan')):.3g} "
                                f"(worst at index {c.get('worst_index')})" if "error" not in c else f"{package['name']}.{name}: {c['error']}")


def _finish(report: dict[str, Any], failures: list[str], skips: list[str], started: float) -> dict[str, Any]:
    report["verdict"] = rep.verdict(failures, skips)
    report["reasons"] = failures if failures else skips
    report["duration_s"] = round(time.monotonic() - started, 3)
    report["finished"] = _now()
    return report


def _apply_workloads(report: dict[str, Any], run: Mapping[str, Any], options: Options, failures: list[str]) -> None:
    entries = run.get("workloads") or []
    report["workloads"] = entries
    report["dtypes"] = run.get("dtypes")
    report["startup"] = {"import_torch_s": run.get("import_torch_s"),
                         "time_to_first_inference_s": run.get("time_to_first_inference_s"),
                         "worker_total_s": run.get("total_s"), "first_call_limit_s": options.first_call_limit_s}
    report["versions"].update(run.get("versions") or {})
    report["versions"]["worker_python"] = run.get("python")
    failures += rep.workload_failures(entries)
    failures += rep.slow_first_calls(entries, options.first_call_limit_s)


def run_conformance(
    recipe_name: str,
    generations: Sequence[str] | None,
    device: str,
    settings: Settings,
    options: Options | None = None,
    *,
    probe: Probe | None = None,
    lookup: Lookup | None = None,
) -> list[dict[str, Any]]:
    """One report per generation on one device kind; written under dist/<recipe>/conformance/.

    ``generations``: None or empty for every finished build of the recipe.
    ``probe``: replaces the XPU identify run (tests feed recorded device properties).
    ``lookup``: PCI ID + revision -> generation (default: the device database).
    Never raises for a failed check: the verdicts say it; raises for unusable input (no build).
    """
    if device not in DEVICES:
        raise UsageError(f"--device {device!r} is not one of {', '.join(DEVICES)}")
    options = options or Options()
    root = recipe_dist(settings.dist_dir, recipe_name)
    records = built_generations(settings.dist_dir, recipe_name)
    wanted = list(generations or sorted(records, key=generation_order))
    if not wanted:
        raise ConformanceError(f"{root}: no finished build of {recipe_name}; run `ipex-aot build {recipe_name}` first")
    missing = [g for g in wanted if g not in records]
    if missing:
        raise ConformanceError(f"{root}: no finished build of generation {', '.join(missing)}; "
                               f"built: {', '.join(sorted(records, key=generation_order)) or 'none'}")
    out_dir = root / "conformance"
    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ipex-aot-conformance-") as tmp:
        session = _Session(root, device, options, Path(tmp), out_dir if options.write else None, probe,
                           lookup or database_lookup(settings))
        for generation in wanted:
            started = time.monotonic()
            record = records[generation]
            library = root / generation / record["artifact"]["name"]
            report = _base(record, generation, device, library)
            failures: list[str] = []
            skips: list[str] = []
            with log.step(f"conformance {generation} on {device}") as outcome:
                report["static"] = _static(library, generation, settings)
                if not report["static"]["ok"]:
                    failures.append(report["static"]["error"])
                else:
                    session.device_half(report, record, library, failures, skips)
                _finish(report, failures, skips, started)
                log.info(rep.summary_line(report))
                outcome.verdict = {"pass": "ok", "skipped": "skipped", "fail": "FAILED"}.get(report["verdict"], "ok")
            if options.write:
                write_json(out_dir / f"{generation}-{device}.json", report)
            reports.append(report)
    return reports


def _package_name(record: Mapping[str, Any]) -> str:
    return PurePosixPath(record["artifact"]["install_path"]).parts[0]


@dataclass
class _Session:
    """What every generation's device half shares in one conformance run: where and how it runs, and the
    worker runs made once (the torch workloads per cuda/cpu device kind, the XPU's identity)."""

    root: Path
    device: str
    options: Options
    work: Path
    logs: Path | None  # dist/<recipe>/conformance when reports are written
    probe: Probe | None
    lookup: Lookup
    _shared: WorkerRun | None = None
    _identity: Mapping[str, Any] | None = None

    def shared_workloads(self) -> WorkerRun:
        """cuda / cpu: the torch workloads once per device kind, shared by every generation's report."""
        if self._shared is None:
            self._shared = spawn_worker(_spec("run", self.device, self.options), self.work, f"workloads-{self.device}",
                                        self.options)
            if self.logs is not None:
                write_text(self.logs / f"{self.device}.log", self._shared.stderr)
        return self._shared

    def xpu_identity(self, package_spec: Mapping[str, Any]) -> Mapping[str, Any]:
        """The XPU's identity, asked once (``probe`` replaces the worker in tests)."""
        if self._identity is None:
            if self.probe is not None:
                self._identity = self.probe("xpu", package_spec)
            else:
                self._identity = spawn_worker(_spec("identify", "xpu", self.options, **package_spec), self.work,
                                              "identify-xpu", self.options).result
        return self._identity

    def device_half(self, report: dict[str, Any], record: Mapping[str, Any], library: Path, failures: list[str],
                    skips: list[str]) -> None:
        """Install the generation's build into an overlay and run it on the device; verdicts go into the lists."""
        generation = report["generation"]
        built_for, here = record.get("platform"), platforms.host_platform()
        if built_for and built_for != here:
            # A library of another platform cannot be loaded here (a Windows DLL on Linux); its static
            # half ran above, the device half belongs on a machine of its platform.
            skips.append(f"the build is for {built_for}, this machine is {here}: the device half runs on a "
                         f"{built_for} machine")
            return
        overlay = self.work / f"install-{generation}"
        package = _package_name(record)
        report["install"] = install_overlay(self.root, record, library, overlay)
        package_spec = {"overlay": [str(overlay)], "package": package,
                        "library_relpath": record["artifact"]["install_path"], "library_sha256": sha256_file(library)}
        if self.device == "xpu":
            self._xpu(report, failures, skips, package_spec)
            return
        run = self.shared_workloads().result
        if _worker_failure(run):
            failures.append(f"worker: {run['error']}")
            return
        report["identity"] = run["identity"]

        if not run["identity"].get("available"):
            skips.append(run["identity"]["reason"])
            # The package's own CPU path needs no torch (a Windows Python without torch still checks the canary's
            # DLL); a failure there fails the report, a pass leaves it skipped: the workloads did not run.
            if package in PACKAGE_CHECKS:
                self._package_check(report, generation, package, package_spec, failures)
            return
        report["workloads_run"] = (f"shared: one {self.device} process for every generation (an IPEX GPU library is "
                                   f"not on the {self.device} compute path)")
        _apply_workloads(report, run, self.options, failures)
        if package in PACKAGE_CHECKS:
            self._package_check(report, generation, package, package_spec, failures)
        else:
            report["package"] = {"name": package, "note": f"not loaded on {self.device}: its library is XPU code"}

    def _package_check(self, report: dict[str, Any], generation: str, package: str,
                       package_spec: Mapping[str, Any], failures: list[str]) -> None:
        """The package's own check (packages.PACKAGE_CHECKS) with this generation's build installed, in a fresh process."""
        pkg = spawn_worker(_spec("package", self.device, self.options, **package_spec), self.work,
                           f"package-{generation}", self.options)
        if _worker_failure(pkg.result):
            failures.append(f"{package}: {pkg.result['error']}")
        else:
            _package_verdict(report, pkg.result.get("package"), failures)

    def _xpu(self, report: dict[str, Any], failures: list[str], skips: list[str],
             package_spec: Mapping[str, Any]) -> None:
        generation = report["generation"]
        found = self.xpu_identity(package_spec)
        if _worker_failure(found):
            failures.append(f"identify: {found['error']}")
            return
        identity = dict(found.get("identity") or {})
        report["identity"] = identity
        if not identity.get("available"):
            skips.append(identity.get("reason", "no XPU device"))
            return
        ident = xpu_generation(identity.get("properties") or {}, identity.get("pci"), self.lookup)
        identity.update(generation=ident["generation"], identified_by=ident["source"], identity_detail=ident["detail"])
        device_gen = ident["generation"]
        if device_gen is None:
            failures.append(f"cannot tell the XPU's generation: {ident['detail']}")
            return
        if device_gen != generation:
            message = f"device is {device_gen}, folder is {generation}"
            if self.options.explicit:
                failures.append(f"wrong generation: {message} ({ident['detail']}); install the {device_gen} folder")
            else:
                skips.append(message)
            return
        spec = _spec("run", "xpu", self.options, **package_spec)
        spec["device"] = self.options.xpu_compute_device
        worker = spawn_worker(spec, self.work, f"run-{generation}-xpu", self.options)
        run, stdout = worker.result, worker.stdout
        if self.logs is not None:
            # The evidence behind the verdict: the runtime's trace, and the worker's own messages.
            write_text(self.logs / f"{generation}-xpu.trace.log", stdout)
            write_text(self.logs / f"{generation}-xpu.log", worker.stderr)
            report["trace_log"] = str(self.logs / f"{generation}-xpu.trace.log")
        if _worker_failure(run):
            failures.append(f"worker: {run['error']}")
            return
        if not (run.get("identity") or {}).get("available"):
            skips.append((run.get("identity") or {}).get("reason", "no XPU device"))
            return
        _trace_verdict(report, stdout, failures)
        _apply_workloads(report, run, self.options, failures)
        _package_verdict(report, run.get("package"), failures)


def _trace_verdict(report: dict[str, Any], stdout: str, failures: list[str]) -> None:
    summary = parse_trace(stdout)
    report["trace"] = summary.to_json()
    if summary.format is None:
        report["warnings"].append("the SYCL runtime printed no program trace (SYCL_UR_TRACE/SYCL_PI_TRACE ignored?); "
                                  "only the first-call time tells JIT apart")
    jit = summary.jit_programs
    if jit:
        sizes = ", ".join(f"{e.api} ({e.length} bytes)" if e.length else e.api for e in jit[:3])
        failures.append(f"{len(jit)} kernel program(s) built from SPIR-V at run time (JIT): {sizes}"
                        f"{' …' if len(jit) > 3 else ''}; the library lacks native code for this device")
