"""Who the device is: an XPU's generation code, a CUDA GPU's name and compute capability, the CPU.

The worker only records what the runtime says (``device_properties``: every
plain attribute of ``torch.xpu.get_device_properties``, plus the PCI
functions under /sys on Linux); the generation is worked out here, in the
parent, so that recorded properties from a real Intel GPU can be fed to the
same code in tests. Two sources, the first that answers wins:

1. ``architecture`` (torch >= 2.7 on XPU): the value of SYCL's
   ``ext::oneapi::experimental::architecture`` enum, which for Intel GPUs is
   the IP version ``arch << 22 | release << 14 | revision`` (DPC++ 2024/2025;
   newer compilers shift it 8 bits left in a 64-bit value, told apart by size).
2. ``device_id`` (the PCI device ID; torch >= 2.6, and what IPEX 2.1 exposes
   where its runtime has it) with the PCI revision from /sys, looked up in the
   device database (``ipex_aot.devices``), whose ocloc sweep maps PCI ID and
   revision to a generation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ipex_aot.devices import load_database
from ipex_aot.errors import DeviceError

IP_MASK_ARCH, IP_MASK_RELEASE, IP_MASK_REVISION = 0x3FF, 0xFF, 0x3F


def decode_architecture(value: int) -> str | None:
    """The generation code an ``architecture`` enum value stands for, or None for non-Intel-GPU values."""
    if value <= 0:
        return None
    if value > 0xFFFFFFFF:  # the 64-bit encoding of newer compilers
        if value & 0xFF or value >> 40:
            return None
        value >>= 8
    arch, release, revision = value >> 22 & IP_MASK_ARCH, value >> 14 & IP_MASK_RELEASE, value & IP_MASK_REVISION
    if value >> 32 or arch < 9:  # Intel GPU IP versions start at Gen9; anything else is another vendor's range
        return None
    return f"{arch}.{release}.{revision}"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


Lookup = Callable[[str, "int | None"], "str | None"]


def xpu_generation(props: Mapping[str, Any], pci: list[Mapping[str, Any]] | None = None,
                   lookup: Lookup | None = None) -> dict[str, Any]:
    """{generation, source, detail} from recorded XPU device properties (generation None when unknown)."""
    arch = _int(props.get("architecture"))
    if arch is not None:
        generation = decode_architecture(arch)
        if generation:
            return {"generation": generation, "source": "architecture",
                    "detail": f"SYCL architecture {arch:#x} = IP version {generation}"}
    device_id = _int(props.get("device_id"))
    if device_id is not None:
        pci_id = f"{device_id:04X}"
        revision = None
        for fn in pci or []:
            if _int(fn.get("device")) == device_id:
                revision = _int(fn.get("revision"))
                break
        if lookup is None:
            return {"generation": None, "source": "device_id",
                    "detail": f"PCI ID {pci_id} rev {revision}: no device database to look it up in"}
        try:
            generation = lookup(pci_id, revision)
        except DeviceError as e:
            return {"generation": None, "source": "device_id", "detail": e.message}
        rev = f" rev {revision:#04x}" if revision is not None else " (revision unknown)"
        return {"generation": generation, "source": "device_id",
                "detail": f"PCI ID {pci_id}{rev} → {generation or 'ambiguous'} (device database)"}
    return {"generation": None, "source": None,
            "detail": "the runtime reports neither `architecture` nor `device_id`; update torch/IPEX or run on Linux"}


def database_lookup(settings: Any) -> Lookup:
    """A lookup through the device database (loaded on first use: it may sweep ocloc once)."""
    cache: dict[str, Any] = {}

    def lookup(pci_id: str, revision: int | None) -> str | None:
        if "db" not in cache:
            cache["db"] = load_database(settings)
        return cache["db"].lookup(pci_id, revision).generation

    return lookup


def describe(identity: Mapping[str, Any]) -> str:
    """One line for the human summary."""
    kind = identity.get("kind")
    if kind == "xpu":
        return f"{identity.get('name', '?')} (generation {identity.get('generation') or 'unknown'})"
    if kind == "cuda":
        return f"{identity.get('name', '?')} (compute capability {identity.get('capability', '?')})"
    return str(identity.get("name") or identity.get("processor") or "CPU")
