"""The device half of conformance, run in a fresh process: ``worker SPEC.json RESULT.json``.

A fresh process because the first call's time (kernel loading, and JIT when
there is one) is only seen once per process. The SYCL runtime prints its
trace on this process's stdout, which the parent captures to a file, so the
result goes to RESULT.json and our own messages to stderr.

SPEC: {"mode": "identify"|"run"|"package", "device": "xpu"|"cuda"|"cpu",
"overlay": [dirs put first on sys.path: the build installed there],
"package": import name or null, "library_relpath", "library_sha256",
"workloads": [...], "dtypes": null|[...], "iterations": n, "perturb": {...},
"trace_replay": path or null}
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

T0 = time.perf_counter()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pci_functions() -> list[dict[str, Any]]:
    """Display-class PCI functions from /sys (Linux): vendor, device, revision."""
    found = []
    for dev in sorted(Path("/sys/bus/pci/devices").glob("*")) if Path("/sys/bus/pci/devices").is_dir() else []:
        try:
            if not (dev / "class").read_text(encoding="ascii").strip().startswith("0x03"):
                continue
            found.append({"slot": dev.name, **{k: (dev / k).read_text(encoding="ascii").strip() for k in ("vendor", "device", "revision")}})
        except OSError:
            continue
    return found


def identify(torch: Any, device: str) -> dict[str, Any]:
    """What the runtime says about the device, or {"available": False, "reason": ...}."""
    if device == "cpu":
        return {"available": True, "kind": "cpu", "name": _cpu_name(), "machine": platform.machine(),
                "threads": torch.get_num_threads(),
                "capability": _plain(getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)())}
    if device == "cuda":
        if not torch.cuda.is_available():
            return {"available": False, "reason": "no CUDA device (torch.cuda.is_available() is False)"}
        props = torch.cuda.get_device_properties(0)
        return {"available": True, "kind": "cuda", "name": props.name,
                "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count(),
                "total_memory": int(props.total_memory), "multiprocessors": props.multi_processor_count,
                "cuda": torch.version.cuda, "cudnn": _plain(torch.backends.cudnn.version())}
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        return {"available": False, "reason": "no XPU device (torch.xpu.is_available() is False)"}
    props = xpu.get_device_properties(0)
    recorded = {k: _plain(getattr(props, k)) for k in dir(props)
                if not k.startswith("_") and not callable(getattr(props, k, None))}
    return {"available": True, "kind": "xpu", "name": recorded.get("name", ""), "count": xpu.device_count(),
            "properties": recorded, "pci": _pci_functions()}


def _sync(torch: Any, device: str) -> Any:
    if device == "cuda":
        return torch.cuda.synchronize
    if device == "xpu":
        return torch.xpu.synchronize
    return lambda: None


def _supported_dtypes(torch: Any, device: str) -> list[str]:
    dtypes = ["float32"]
    if device == "cuda":
        dtypes.append("float16")
        if torch.cuda.is_bf16_supported():
            dtypes.append("bfloat16")
    elif device == "xpu":
        props = torch.xpu.get_device_properties(0)
        if getattr(props, "has_fp16", True):
            dtypes.append("float16")
        if getattr(torch.xpu, "is_bf16_supported", lambda: True)():
            dtypes.append("bfloat16")
    else:
        # torch's CPU kernels for LSTM/conv in float16 are slow or missing on older releases; bfloat16 is native.
        dtypes.append("bfloat16")
    return dtypes


def _package(spec: dict[str, Any], device: str) -> dict[str, Any]:
    """Import the built package from the overlay and prove its library is the build's."""
    name = spec["package"]
    start = time.perf_counter()
    module = importlib.import_module(name)
    info: dict[str, Any] = {"name": name, "import_s": time.perf_counter() - start,
                            "version": _plain(getattr(module, "__version__", None)),
                            "file": str(getattr(module, "__file__", ""))}
    relpath = spec.get("library_relpath")
    if relpath and module.__file__:
        library = Path(module.__file__).resolve().parent.joinpath(*Path(relpath).parts[1:])
        info["library"] = str(library)
        info["library_sha256"] = _sha256(library) if library.is_file() else None
        info["library_is_build"] = info["library_sha256"] == spec.get("library_sha256")
    from ipex_aot.conformance.packages import PACKAGE_CHECKS

    check = PACKAGE_CHECKS.get(name)
    if check is not None:
        info["check"] = check(module)
    return info


def run(spec: dict[str, Any]) -> dict[str, Any]:
    device = spec["device"]
    result: dict[str, Any] = {"mode": spec["mode"], "device": device, "python": platform.python_version(),
                              "platform": platform.platform(), "pid": os.getpid()}
    # Before torch loads the runtime: the trace switches and caches off (xpu), the CUDA JIT cache off (cuda).
    os.environ.update(spec.get("env") or {})
    for path in reversed(spec.get("overlay") or []):
        sys.path.insert(0, path)
    if spec.get("trace_replay"):
        # Test hook: print a recorded runtime trace where the real runtime would print its own.
        sys.stdout.write(Path(spec["trace_replay"]).read_text(encoding="utf-8"))
        sys.stdout.flush()
    if spec["mode"] == "package":
        result["package"] = _package(spec, device)
        result["total_s"] = time.perf_counter() - T0
        return result
    warnings.filterwarnings("ignore")  # torch without numpy warns on import; nothing we act on
    start = time.perf_counter()
    try:
        import torch
    except ImportError as e:
        # No torch, no device half: reported as skipped (never as passed), with what to do.
        result["identity"] = {"available": False, "reason": f"torch is not importable in {sys.executable} ({e}); "
                                                            "install torch there or pass --python"}
        return result

    result["import_torch_s"] = time.perf_counter() - start
    result["versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                          "xpu": _plain(getattr(torch.version, "xpu", None))}
    package_error = None
    if device == "xpu" and spec.get("package"):
        # IPEX registers torch.xpu (2.1.x) or its kernels (newer) on import, so it comes before identify.
        try:
            result["package"] = _package(spec, device)
        except Exception as e:  # judged below: without an XPU it only explains the skip
            package_error = f"{spec['package']} does not import: {type(e).__name__}: {e}"
    result["identity"] = identify(torch, device)
    if not result["identity"].get("available"):
        if package_error:
            result["identity"]["reason"] += f"; {package_error}"
        result["total_s"] = time.perf_counter() - T0
        return result
    if package_error:
        raise RuntimeError(package_error)
    if spec["mode"] == "identify":
        result["total_s"] = time.perf_counter() - T0
        return result
    if device == "cuda":
        # fp32 means fp32: TF32 would need float16-like tolerances.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    mha = getattr(torch.backends, "mha", None)
    if mha is not None and hasattr(mha, "set_fastpath_enabled"):
        # The fused TransformerEncoderLayer path is not the computation the float64 reference does (on an H100 it
        # is 1.5e-4 off in float32 where the composed ops are 3e-7 off); test the ops every device has.
        mha.set_fastpath_enabled(False)
    from ipex_aot.conformance.workloads import WORKLOADS, run_workload

    dtypes = spec.get("dtypes") or _supported_dtypes(torch, device)
    result["dtypes"] = dtypes
    entries = []
    first_inference = None
    for name in spec.get("workloads") or list(WORKLOADS):
        entries += run_workload(WORKLOADS[name], device, dtypes, iterations=int(spec.get("iterations", 10)),
                                sync=_sync(torch, device), perturb=float((spec.get("perturb") or {}).get(name, 0.0)))
        if first_inference is None:
            first_inference = time.perf_counter() - T0
    result["workloads"] = entries
    result["time_to_first_inference_s"] = first_inference
    if spec.get("package") and "package" not in result:
        result["package"] = _package(spec, device)
    result["total_s"] = time.perf_counter() - T0
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    try:
        result = run(spec)
    except BaseException as e:  # the parent reports it; a traceback here is the useful part
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    tmp = out_path.with_suffix(".part")
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
