"""The generation code: a GPU's IP version ``major.minor.revision``, such as ``12.55.8``.

An archive folder is named by it, a build targets it, a driver reports it.
This module is its one definition: how it is parsed, ordered, formatted and
decoded from the 32-bit ``HardwareIpVersion`` that zebin notes, OpenCL's
``CL_DEVICE_IP_VERSION_INTEL`` and Level Zero's ``ze_device_ip_version_ext_t``
all carry (compute-runtime's ``hw_ip_version.h``: architecture:10,
release:8, reserved:8, revision:6).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ipex_aot.errors import DeviceError

_CODE_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class Generation:
    """An IP version; orders numerically (``12.10.0`` after ``12.4.0``)."""

    major: int
    minor: int
    revision: int

    @classmethod
    def parse(cls, text: str) -> Generation:
        """``"12.55.8"`` → Generation; DeviceError naming the text if it is not a generation code."""
        m = _CODE_RE.match(str(text).strip())
        if not m:
            raise DeviceError(f"{text!r} is not a generation code; expected major.minor.revision such as 12.55.8")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    @classmethod
    def from_ip_version(cls, value: int) -> Generation:
        """Decode a ``HardwareIpVersion`` value (architecture:10 release:8 reserved:8 revision:6)."""
        return cls(value >> 22, (value >> 14) & 0xFF, value & 0x3F)

    @property
    def ip_version(self) -> int:
        """The 32-bit ``HardwareIpVersion`` value, as a driver reports it."""
        return (self.major << 22) | (self.minor << 14) | self.revision

    @property
    def product(self) -> tuple[int, int]:
        """``(major, minor)``: the product; the revision tells its steppings apart."""
        return self.major, self.minor

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}"


def is_generation(text: str) -> bool:
    """Whether ``text`` is written as a generation code (``12.55.8``), not whether any GPU has it."""
    return bool(_CODE_RE.match(str(text).strip()))


def generation_order(text: str) -> tuple[int, Generation | str]:
    """Sort key for names that should be generation codes: codes numerically, anything else after them."""
    return (0, Generation.parse(text)) if is_generation(text) else (1, str(text))


def sort_generations(codes: Iterable[str]) -> list[str]:
    """Codes in numeric order (``12.4.0`` before ``12.10.0``); anything else after them."""
    return sorted(codes, key=generation_order)
