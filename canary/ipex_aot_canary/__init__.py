"""The canary: a package whose GPU library holds AOT-compiled OpenCL kernels.

``images()`` returns the device images embedded in the library (found through
its ``.tgtimg`` table, as a SYCL runtime would); ``vadd``/``saxpy``/``total``
are the CPU versions of the kernels, a reference for conformance checks.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

__all__ = ["library_path", "devlist", "images", "vadd", "saxpy", "total"]

_LIB_NAME = "canary-gpu.dll" if sys.platform == "win32" else "libcanary-gpu.so"


def library_path() -> Path:
    return Path(__file__).resolve().parent / "lib" / _LIB_NAME


@cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    lib.canary_image_count.restype = ctypes.c_uint64
    lib.canary_image.restype = ctypes.c_void_p
    lib.canary_image.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_int)]
    lib.canary_devlist.restype = ctypes.c_char_p
    lib.canary_sum.restype = ctypes.c_float
    lib.canary_sum.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
    lib.canary_saxpy.argtypes = [ctypes.c_float, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
    return lib


def devlist() -> str:
    """The device list the library was built for (USE_AOT_DEVLIST)."""
    return _lib().canary_devlist().decode()


def images() -> list[tuple[str, bytes]]:
    """(kind, bytes) for each embedded image; kind is "native" or "spirv"."""
    lib = _lib()
    out = []
    for i in range(lib.canary_image_count()):
        size = ctypes.c_uint64()
        kind = ctypes.c_int()
        address = lib.canary_image(i, ctypes.byref(size), ctypes.byref(kind))
        out.append(("native" if kind.value == 0 else "spirv", ctypes.string_at(address, size.value)))
    return out


def _floats(values: Sequence[float]) -> ctypes.Array[ctypes.c_float]:
    return (ctypes.c_float * len(values))(*values)


def vadd(a: Sequence[float], b: Sequence[float]) -> list[float]:
    if len(a) != len(b):
        raise ValueError("vadd needs two sequences of the same length")
    out = _floats([0.0] * len(a))
    _lib().canary_vadd(_floats(a), _floats(b), out, ctypes.c_size_t(len(a)))
    return list(out)


def saxpy(alpha: float, x: Sequence[float], y: Sequence[float]) -> list[float]:
    if len(x) != len(y):
        raise ValueError("saxpy needs two sequences of the same length")
    out = _floats(y)
    _lib().canary_saxpy(alpha, _floats(x), out, len(x))
    return list(out)


def total(x: Sequence[float]) -> float:
    return float(_lib().canary_sum(_floats(x), len(x)))
