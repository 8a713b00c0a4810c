"""The wheel-variant provider plugin for Intel GPUs: namespace ``intel_gpu``.

variantlib and variant-aware installers (PEP 817) find it through the
``variant_plugins`` entry point ``intel_gpu`` (pyproject.toml), or through
the ``plugin-api`` that every variant wheel of this project names
(``ipex_aot.variant_provider:IntelGpuPlugin``). They run it in a separate
Python process and ask:

- ``get_supported_configs()``: this machine's Intel GPU generations, most
  preferred first, as values of ``intel_gpu :: ip_version``. A variant wheel
  whose ``ip_version`` is among them is installable; the installer takes the
  first match and, with no match (no Intel GPU, a generation the release
  does not have), the null variant: the JIT-only wheel.
- ``get_all_configs()``: every generation the local ocloc can build
  (``DeviceDatabase.known_generations``), used when a variant wheel is made to
  check that its ``ip_version`` is one.

Only the exact generation counts: native code of one IP version does not run
on another (12.55.8 code on a 12.55.1 GPU is no better than JIT), so no
"nearby" generation is offered; the JIT fallback is variantlib's null variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMESPACE = "intel_gpu"
FEATURE = "ip_version"
#: What a variant wheel's ``plugin-api`` names: this module, its class below.
PLUGIN_API = "ipex_aot.variant_provider:IntelGpuPlugin"


@dataclass(frozen=True)
class FeatureConfig:
    """variantlib's ``VariantFeatureConfigType`` protocol (name, values, multi_value)."""

    name: str
    values: list[str]
    multi_value: bool = False  # one generation per wheel


def machine_ip_versions() -> list[str]:
    """The generation codes of this machine's Intel GPUs, in detection order, without repeats.

    Detection is ``ipex-aot detect``'s (:mod:`ipex_aot.gpus`): the driver's own
    answer first (OpenCL ``CL_DEVICE_IP_VERSION_INTEL``, then Level Zero's IP
    version, asked in a child process so a broken driver cannot take the
    installer down), then the PCI ID and revision through the device database
    where there is an ocloc. A GPU whose generation stays ambiguous is left
    out: a guess could install native code that does not run, while the JIT
    fallback always runs. Any failure of detection means "no GPU" for the
    same reason.
    """
    from ipex_aot.errors import IpexAotError
    from ipex_aot.gpus import detect
    from ipex_aot.settings import Settings

    try:
        gpus, _ = detect(Settings.from_env())
    except (IpexAotError, OSError):
        return []
    # Discrete before integrated: with an iGPU beside an Arc card the app computes on the card, so
    # its generation is the one to install first (sorted() is stable: detection order otherwise).
    ordered = sorted(gpus, key=lambda g: is_integrated_slot(g.slot))
    return list(dict.fromkeys(g.generation for g in ordered if g.generation))


def is_integrated_slot(slot: str) -> bool:
    """True for PCI address 00:02.0 (any domain): where Intel client platforms put the integrated GPU
    (the IGD is device 2 on bus 0); a discrete card is on a bus of its own. False when the slot is
    not a PCI address (a Windows PNP ID): then detection order stands."""
    return re.fullmatch(r"(?:[0-9A-Fa-f]{4}:)?00:02\.0", slot) is not None


def known_generations() -> list[str]:
    """Every generation the local ocloc can build; the machine's own when there is no ocloc."""
    from ipex_aot.devices import load_database
    from ipex_aot.errors import IpexAotError
    from ipex_aot.settings import Settings

    try:
        return load_database(Settings.from_env()).known_generations()
    except IpexAotError:
        return machine_ip_versions()


class IntelGpuPlugin:
    """variantlib's ``PluginType`` protocol, as class methods (no state)."""

    namespace = NAMESPACE
    #: False: what is supported depends on the machine, so installers must run the plugin.
    all_properties_compatible = False

    @classmethod
    def get_all_configs(cls) -> list[FeatureConfig]:
        generations = known_generations()
        if not generations:
            raise RuntimeError("intel_gpu: no ocloc to list the generations it can build, and no Intel GPU here; "
                               "install ocloc (Debian: intel-opencl-icd) or set OCLOC")
        return [FeatureConfig(FEATURE, generations)]

    @classmethod
    def get_supported_configs(cls) -> list[FeatureConfig]:
        versions = machine_ip_versions()
        return [FeatureConfig(FEATURE, versions)] if versions else []
