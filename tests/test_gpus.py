"""detect: the driver first (a fake OpenCL ICD behind Debian's real ocl-icd loader), then the PCI IDs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from libfixtures import ocloc_ids

from ipex_aot import gpus
from ipex_aot.errors import DeviceError
from ipex_aot.generation import Generation
from ipex_aot.settings import Settings


def fake_sysfs(tmp_path: Path, devices: dict[str, tuple[str, str, str, str]]) -> Path:
    for slot, (vendor, device, klass, rev) in devices.items():
        d = tmp_path / "sys" / "bus" / "pci" / "devices" / slot
        d.mkdir(parents=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", klass), ("revision", rev)):
            (d / name).write_text(value + "\n")
    return tmp_path / "sys"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A real device database for the IDs these tests put on the bus, swept with the ocloc on PATH."""
    from ipex_aot import devices
    from ipex_aot.ocloc import find_ocloc

    return devices.build_database(find_ocloc(Settings.from_env({"HOME": os.environ.get("HOME", "/root")})),
                                  ids=[0x56A0], jobs=2)


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"IPEX_AOT_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)})


def _cli(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IPEX_AOT_CACHE=str(tmp / "cache"))
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], env=env, capture_output=True, text=True)


def test_ip_versions_decode_as_compute_runtime_encodes_them():
    # AOT::MTL_H_B0 = 0x0311c004 (12.71.4) and DG2_G10_C0 = 0x030dc008 (12.55.8), shared/source/helpers/
    # product_config.h (neo_aot_platforms.h in newer trees) of https://github.com/intel/compute-runtime
    assert str(Generation.from_ip_version(0x0311C004)) == "12.71.4"
    assert str(Generation.from_ip_version(0x030DC008)) == "12.55.8"


def test_the_driver_answers_first_and_names_itself(fake_gpus, tmp_path):
    """A Meteor Lake iGPU whose driver reports 12.71.4, where PCI ID 7D55 + revision cannot tell A0 from B0."""
    fake_gpus((0x7D55, "12.71.4", "0000:00:02.0"))
    root = fake_sysfs(tmp_path, {"0000:00:02.0": ("0x8086", "0x7d55", "0x030000", "0x08")})
    found = gpus.detect_gpus(_settings(tmp_path), sysfs_root=root)
    assert [(g.slot, g.pci_id, g.revision, g.generation, g.source) for g in found.gpus] == [
        ("0000:00:02.0", "7D55", 8, "12.71.4", "opencl")]
    assert "CL_DEVICE_IP_VERSION_INTEL" in found.gpus[0].rule and found.gpus[0].name == "Fake GPU 7d55"
    assert found.drivers["opencl"] == "1 Intel GPU device(s)"
    assert found.to_json()["database"] == "not needed"  # no ocloc sweep when the driver answered


def test_a_gpu_whose_driver_cannot_tell_falls_back_to_pci_and_the_database(fake_gpus, tmp_path, db):
    """An iGPU with the IP version, an Arc A770 whose (old) driver lacks cl_intel_device_attribute_query."""
    fake_gpus((0x7D55, "12.71.4", None), (0x56A0, None, "0000:03:00.0"), (0x2684, "1.2.3", None, 0x10DE))
    root = fake_sysfs(tmp_path, {"0000:00:02.0": ("0x8086", "0x7d55", "0x030000", "0x08"),
                                 "0000:03:00.0": ("0x8086", "0x56a0", "0x030000", "0x08")})
    found = gpus.detect_gpus(_settings(tmp_path), sysfs_root=root, db=db)
    by_slot = {g.slot: g for g in found.gpus}
    assert len(found.gpus) == 2  # the NVIDIA device of the same ICD is not an Intel GPU
    assert (by_slot["0000:00:02.0"].generation, by_slot["0000:00:02.0"].source) == ("12.71.4", "opencl")
    a770 = by_slot["0000:03:00.0"]
    assert (a770.generation, a770.source, a770.ip_version) == (ocloc_ids("acm-g10")[0], "pci", None)
    assert found.to_json()["database"] == "used"


def test_without_an_icd_it_falls_back_and_says_so(fake_gpus, tmp_path, db):
    fake_gpus(icd=False)
    root = fake_sysfs(tmp_path, {"0000:03:00.0": ("0x8086", "0x56a0", "0x030000", "0x08")})
    found = gpus.detect_gpus(_settings(tmp_path), sysfs_root=root, db=db)
    assert [(g.generation, g.source) for g in found.gpus] == [(ocloc_ids("acm-g10")[0], "pci")]
    assert found.drivers["opencl"].startswith("no OpenCL platform")
    assert "level-zero" in found.drivers


def test_detect_cli_json_gives_the_icd_ip_version_and_its_source(fake_gpus, tmp_path):
    fake_gpus((0x64A0, "20.4.4", "0000:00:02.0"))
    proc = _cli("detect", "--json", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(g["pci_id"], g["generation"], g["ip_version"], g["source"], g["slot"]) for g in data["gpus"]] == [
        ("64A0", "20.4.4", "20.4.4", "opencl", "0000:00:02.0")]
    assert data["drivers"]["opencl"] == "1 Intel GPU device(s)"
    text = _cli("detect", tmp=tmp_path)
    assert text.returncode == 0 and "generation 20.4.4  [opencl]" in text.stdout
    assert "drivers asked: opencl: 1 Intel GPU device(s)" in text.stderr


@pytest.mark.parametrize("icd", [True, False])
def test_detect_cli_with_no_gpu_exits_1_and_names_what_it_asked(fake_gpus, tmp_path, icd):
    fake_gpus(icd=icd)  # an ICD with no device, or no ICD at all; this machine has no Intel GPU on its bus
    if any(gpus.gpus_from_sysfs()):
        pytest.fail("this test machine has an Intel GPU on its PCI bus; the test expects none (CI has none)")
    proc = _cli("detect", "--json", tmp=tmp_path)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["gpus"] == [] and data["drivers"]["opencl"].startswith("0 Intel" if icd else "no OpenCL platform")


def test_a_driver_that_crashes_costs_its_answer_not_the_command(fake_gpus, tmp_path, monkeypatch, db):
    fake_gpus((0x56A0, "12.55.8", None))
    monkeypatch.setenv("FAKE_ICD_CRASH", "1")
    report = gpus.driver_gpus()
    assert report.gpus == [] and "crashed" in report.notes["drivers"]
    root = fake_sysfs(tmp_path, {"0000:03:00.0": ("0x8086", "0x56a0", "0x030000", "0x08")})
    found = gpus.detect_gpus(_settings(tmp_path), sysfs_root=root, db=db, drivers=report)
    assert [(g.generation, g.source) for g in found.gpus] == [(ocloc_ids("acm-g10")[0], "pci")]


def test_level_zero_reports_the_ip_version_extension(fake_level_zero, monkeypatch):
    monkeypatch.setenv("FAKE_GPUS", "8086/e20b/20.1.0/-,10de/2684/1.2.3/-")
    found, note = gpus.level_zero_gpus(str(fake_level_zero))
    assert [(d.api, d.device_id, d.ip_version) for d in found] == [("level-zero", 0xE20B, "20.1.0")]
    assert note == "1 Intel GPU device(s)"
    assert gpus.level_zero_gpus(str(fake_level_zero.parent / "missing.so"))[1].startswith("no Level Zero loader")


def test_driver_devices_match_pci_gpus_by_slot_else_by_a_unique_device_id():
    pci = [gpus.Gpu("0000:00:02.0", "7D55", 8), gpus.Gpu("0000:03:00.0", "56A0", 8), gpus.Gpu("0000:04:00.0", "56A0", 8)]
    report = gpus.DriverReport([gpus.DriverGpu("level-zero", 0x7D55, "12.71.4"),
                                gpus.DriverGpu("opencl", 0x56A0, "12.55.8", pci_slot="0000:04:00.0"),
                                gpus.DriverGpu("opencl", 0x56A0, "12.55.8")])  # no slot, ID on the bus twice
    merged = gpus._merge(pci, report)
    assert [(g.slot, g.generation, g.source) for g in merged] == [
        ("0000:00:02.0", "12.71.4", "level-zero"), ("0000:03:00.0", None, "pci"),
        ("0000:04:00.0", "12.55.8", "opencl")]


def test_powershell_errors_stay_device_errors():
    with pytest.raises(DeviceError, match="not Format-List"):
        gpus.parse_powershell("Get-CimInstance : Access denied")
