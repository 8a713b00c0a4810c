"""Checks of a built package's own code path that run without its GPU (no torch needed).

The canary is this repository's stand-in for IPEX: its library's CPU
functions (``vadd``, ``saxpy``, ``total``) are the part of a canary build that
a CPU conformance run can exercise for real, per generation, in a process
that does not import torch (so one check per generation costs milliseconds).
IPEX has no such path: its GPU library is only loaded on an XPU.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SEED = 20261122
ATOL, RTOL = 1e-4, 1e-3  # float32 tolerances, as for the torch workloads


def _f32(values: Sequence[float]) -> list[float]:
    """Values rounded to float32, as the library will see them."""
    return list(struct.unpack(f"{len(values)}f", struct.pack(f"{len(values)}f", *values)))


def compare_lists(result: Sequence[float], reference: Sequence[float], atol: float, rtol: float) -> dict[str, Any]:
    """The same figures as workloads.compare, for flat lists."""
    if len(result) != len(reference):
        return {"pass": False, "error": f"{len(result)} values, the reference has {len(reference)}"}
    worst, worst_ratio, max_abs, max_rel, finite = 0, -1.0, 0.0, 0.0, True
    for i, (r, ref) in enumerate(zip(result, reference, strict=True)):
        if not math.isfinite(r):
            finite, diff = False, math.inf
        else:
            diff = abs(r - ref)
        ratio = diff / (atol + rtol * abs(ref))
        max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / max(abs(ref), 1e-12))
        if ratio > worst_ratio:
            worst, worst_ratio = i, ratio
    return {"pass": finite and worst_ratio <= 1.0, "finite": finite, "max_abs_err": max_abs, "max_rel_err": max_rel,
            "worst_index": [worst], "worst_value": float(result[worst]) if result else None,
            "worst_reference": float(reference[worst]) if reference else None, "worst_ratio": worst_ratio,
            "elements": len(result)}


def canary_check(module: Any, size: int = 4099) -> dict[str, Any]:
    """vadd, saxpy and total of the canary's library against float64 references."""
    rng = random.Random(SEED)
    a = _f32([rng.gauss(0.0, 1.0) for _ in range(size)])
    b = _f32([rng.gauss(0.0, 1.0) for _ in range(size)])
    alpha = 0.75
    checks = {
        "vadd": compare_lists(module.vadd(a, b), [x + y for x, y in zip(a, b, strict=True)], ATOL, RTOL),
        "saxpy": compare_lists(module.saxpy(alpha, a, b), [alpha * x + y for x, y in zip(a, b, strict=True)], ATOL, RTOL),
        # A float32 sum of n values drifts like sqrt(n) ulps of the running sum, so its atol grows with n.
        "total": compare_lists([module.total(a)], [math.fsum(a)], ATOL * math.sqrt(size), RTOL),
    }
    return {"pass": all(c["pass"] for c in checks.values()), "checks": checks}


PACKAGE_CHECKS: Mapping[str, Callable[[Any], dict[str, Any]]] = {"ipex_aot_canary": canary_check}
