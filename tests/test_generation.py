"""The generation code value type: parse, order, format, and the driver's 32-bit encoding."""

from __future__ import annotations

import pytest

from ipex_aot.errors import DeviceError
from ipex_aot.generation import Generation, generation_order, is_generation, sort_generations

# AOT::PRODUCT_CONFIG values from intel/compute-runtime (shared/source/helpers/product_config.h;
# the enum's own comments give the IP version), written down here, not computed by the code under test.
COMPUTE_RUNTIME_PRODUCT_CONFIG = {
    0x03000000: "12.0.0",  # TGL
    0x03028000: "12.10.0",  # DG1
    0x030C8004: "12.50.4",  # XEHP_SDV
    0x030DC008: "12.55.8",  # DG2_G10_C0
    0x030E0005: "12.56.5",  # DG2_G11_B1
    0x030F0007: "12.60.7",  # PVC_XT_C0
    0x03118004: "12.70.4",  # MTL_U_B0
}


def test_codes_sort_numerically_not_as_text():
    gens = ["12.55.8", "9.0.9", "12.10.0", "12.4.0", "12.55.10"]
    assert sort_generations(gens) == ["9.0.9", "12.4.0", "12.10.0", "12.55.8", "12.55.10"]
    assert Generation.parse("12.4.0") < Generation.parse("12.10.0")


def test_anything_not_a_code_sorts_after_the_codes():
    assert sort_generations(["zz", "12.55.8", "12.55.08x", "12.4.0"]) == ["12.4.0", "12.55.8", "12.55.08x", "zz"]
    assert generation_order("12.55.8") < generation_order("acm-g10")


@pytest.mark.parametrize("bad", ["12.55", "a.b.c", "12.55.8.1", "", "12.55.8 rev"])
def test_malformed_codes_are_refused_with_the_text(bad):
    assert not is_generation(bad)
    with pytest.raises(DeviceError, match="not a generation code"):
        Generation.parse(bad)


def test_format_round_trips():
    assert str(Generation.parse(" 12.55.8 ")) == "12.55.8"
    assert Generation.parse("12.55.8").product == (12, 55)


@pytest.mark.parametrize("value,code", sorted(COMPUTE_RUNTIME_PRODUCT_CONFIG.items()))
def test_hardware_ip_version_matches_compute_runtime(value, code):
    assert str(Generation.from_ip_version(value)) == code
    assert Generation.parse(code).ip_version == value
