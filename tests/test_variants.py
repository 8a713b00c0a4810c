"""Wheel variants of the canary for real: build two generations, `nox -s variants`, then read
every produced file back with variantlib's own command line (analyze-wheel, plugins list) and
with the scanner, and let variantlib's resolver pick a wheel while the fake OpenCL ICD
(tests/fakegpu.py, behind Debian's real ocl-icd loader) reports a GPU's IP version."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import fakegpu
import pytest
from libfixtures import cli_env, write_recipe

from ipex_aot.scan import scan_file

REPO = Path(__file__).resolve().parents[1]
GENERATIONS = ["12.0.0", "12.55.8", "12.60.7"]
LIB = "ipex_aot_canary/lib/libcanary-gpu.so"


def variantlib(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """variantlib's own command line (its console script's main), in this interpreter."""
    code = "import sys; from variantlib.commands.main import main; sys.argv[0] = 'variantlib'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def made(tmp_path_factory, cache_dir):  # noqa: F811 - the fixture imported above
    tmp = tmp_path_factory.mktemp("variants")
    recipe = write_recipe(tmp / "recipes", GENERATIONS)
    env = cli_env(tmp / "dist", cache_dir)
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "build", str(recipe)], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    # The nox session, as a maintainer runs it after the release.
    proc = subprocess.run([sys.executable, "-m", "nox", "-f", str(REPO / "noxfile.py"), "-s", "variants", "--",
                           str(recipe)], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = tmp / "dist" / "canary"
    return tmp, recipe, env, root, root / "variants"


def wheels_of(folder: Path) -> dict[str, Path]:
    """label -> variant wheel (the label is the file name's last part)."""
    return {p.stem.rsplit("-", 1)[1]: p for p in sorted(folder.glob("*.whl"))}


@pytest.mark.slow
def test_a_variant_wheel_per_generation_a_null_variant_and_the_index(made):
    *_, folder = made
    wheels = wheels_of(folder)
    assert sorted(wheels) == [*GENERATIONS, "null"]
    (index,) = folder.glob("*-variants.json")
    assert index.name == "ipex_aot_canary-0.1.0-variants.json"
    data = json.loads(index.read_text())
    assert data["default-priorities"]["namespace"] == ["intel_gpu"]
    assert data["providers"]["intel_gpu"] == {"requires": ["ipex-aot"],
                                              "plugin-api": "ipex_aot.variant_provider:IntelGpuPlugin"}
    assert data["variants"] == {**{g: {"intel_gpu": {"ip_version": [g]}} for g in GENERATIONS}, "null": {}}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".variants")]  # no staging left


@pytest.mark.slow
def test_variantlib_analyze_wheel_reads_each(made):
    *_, folder = made
    for label, wheel in wheels_of(folder).items():
        proc = variantlib("analyze-wheel", "-i", str(wheel))
        assert proc.returncode == 0, proc.stderr
        assert f"Variant: `{label}`" in proc.stdout
        if label == "null":
            assert "::" not in proc.stdout  # no property: the fallback
        else:
            assert f"intel_gpu :: ip_version :: {label}" in proc.stdout


@pytest.mark.slow
def test_each_variant_holds_its_generation_and_the_null_variant_only_spirv(made, tmp_path):
    *_, root, folder = made
    for label, wheel in wheels_of(folder).items():
        with zipfile.ZipFile(wheel) as zf:
            assert zf.testzip() is None
            lib = tmp_path / label / "lib.so"
            lib.parent.mkdir()
            lib.write_bytes(zf.read(LIB))
            record = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))).decode()
            assert ".dist-info/variant.json,sha256=" in record
        result = scan_file(lib)
        if label == "null":
            assert result.generations == [] and result.native_images == 0 and result.spirv_images >= 1
        else:
            assert result.generations == [label]
            # The variant is the generation's own build: the same library, byte for byte.
            assert lib.read_bytes() == (root / label / "libcanary-gpu.so").read_bytes()


@pytest.mark.slow
def test_variantlib_plugins_list_shows_the_intel_gpu_plugin():
    proc = variantlib("plugins", "list")
    assert proc.returncode == 0, proc.stderr
    assert "intel_gpu" in proc.stdout.split()
    assert "ipex_aot.variant_provider:IntelGpuPlugin" in proc.stderr  # variantlib logs where it loaded it from


@pytest.mark.slow
def test_plugin_refuses_a_generation_ocloc_cannot_build(made, tmp_path):
    _, _, env, root, _ = made
    from ipex_aot.variants import variant_table

    (tmp_path / "pyproject.toml").write_text(variant_table())
    (plain,) = (root / "wheels" / GENERATIONS[0]).glob("*.whl")
    proc = variantlib("make-variant", "-f", str(plain), "-o", str(tmp_path), "--no-isolation",
                      "-p", "intel_gpu :: ip_version :: 99.99.9", env=env, cwd=tmp_path)
    assert proc.returncode != 0
    assert "invalid according to the plugins: intel_gpu :: ip_version :: 99.99.9" in proc.stderr
    assert not list(tmp_path.glob("*.whl"))


@pytest.mark.slow
def test_rerun_skips_the_jit_build_and_replaces_the_folder_whole(made):
    _, recipe, env, root, folder = made
    before = {p.name for p in folder.iterdir()}
    stale = root / ".variants.4242.deadbeef"  # what a killed run leaves
    (stale / ".work").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "variants", str(recipe), "--json"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "[jit] unchanged since the last build; skipped" in proc.stderr
    summary = json.loads(proc.stdout)
    assert [w["label"] for w in summary["wheels"]] == [*GENERATIONS, "null"]
    assert {p.name for p in folder.iterdir()} == before
    assert not stale.exists()


@pytest.mark.slow
def test_fallback_of_another_release_is_refused_and_nothing_changes(made, tmp_path):
    _, recipe, env, _, folder = made
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    other = tmp_path / "ipex_aot_canary-0.2.0-cp311-cp311-linux_x86_64.whl"
    other.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "variants", str(recipe), "--fallback", str(other)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: --fallback ") and "share one wheel name" in line
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_no_build_yet_is_one_line_and_exit_7(tmp_path, cache_dir):  # noqa: F811
    recipe = write_recipe(tmp_path / "recipes", GENERATIONS)
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "variants", str(recipe)],
                          env=cli_env(tmp_path / "dist", cache_dir), capture_output=True, text=True)
    assert proc.returncode == 7
    (line,) = proc.stderr.strip().splitlines()
    assert "no finished generation build; run `ipex-aot build canary` first" in line
    assert not (tmp_path / "dist" / "canary" / "variants").exists()


SELECT = """
import json, sys
from variantlib.api import get_variants_by_priority
from ipex_aot.variant_provider import machine_ip_versions
index = json.load(open(sys.argv[1]))
ranked = get_variants_by_priority(variants_json=index)
print(json.dumps({"detected": machine_ip_versions(), "ranked": [v.label for v in ranked]}))
"""


def select(index: Path, env: dict) -> dict:
    """What variantlib's resolver ranks for this machine: the plugin runs in its own process, as an installer runs it."""
    proc = subprocess.run([sys.executable, "-c", SELECT, str(index)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_selection_without_any_opencl_driver_is_the_jit_fallback(made, tmp_path):
    _, _, env, _, folder = made
    (index,) = folder.glob("*-variants.json")
    no_driver = fakegpu.icd_env(None, "", vendors_dir=tmp_path / "vendors", base=env)
    assert select(index, no_driver) == {"detected": [], "ranked": ["null"]}


@pytest.mark.slow
def test_uv_installs_the_variants_and_takes_the_null_variant_without_running_plugins(made, tmp_path):
    """uv 0.13.8's wheel-variants preview (PyPI's only variant-aware installer) reads the index and the
    variant wheels but runs no third-party provider plugin, so it must fall back to the JIT-only build."""
    _, _, env, _, folder = made
    uv_env = dict(env, UV_CACHE_DIR=str(tmp_path / "uv-cache"), UV_NO_CONFIG="1")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "uv", "venv", "-q", "-p", sys.executable, str(venv)], env=uv_env, check=True)
    proc = subprocess.run([sys.executable, "-m", "uv", "pip", "install", "-v", "--python", str(venv / "bin" / "python"),
                           "--preview-features", "wheel-variants", "--no-index", "--find-links", str(folder),
                           "ipex_aot_canary"], env=uv_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Skipping unsupported wheel variant provider `ipex_aot.variant_provider:IntelGpuPlugin`" in proc.stderr
    selecting = [ln for ln in proc.stderr.splitlines() if "Selecting: ipex-aot-canary" in ln]
    assert selecting and all(ln.endswith("-null.whl)") for ln in selecting), selecting
    (dist_info,) = (venv / "lib").glob("python3.*/site-packages/ipex_aot_canary-0.1.0.dist-info")
    assert json.loads((dist_info / "variant.json").read_text())["variants"] == {"null": {}}
    result = scan_file(dist_info.parent / LIB)
    assert result.native_images == 0 and result.spirv_images >= 1  # JIT-only, the safe answer


#: (PCI device ID, IP version the driver reports, PCI slot) of the fake OpenCL ICD (tests/fakegpu.py).
ARC_A770 = (0x56A0, "12.55.8", "0000:03:00.0")
MAX_1550 = (0x0BD5, "12.60.7", "0000:3a:00.0")
IRIS_XE = (0x9A49, "12.0.0", "0000:00:02.0")  # Tiger Lake's integrated GPU, at the IGD's address
METEOR_LAKE = (0x7D55, "12.70.4", "0000:00:02.0")  # a generation this release does not hold


def with_fake_driver(env: dict, fake_icd: Path, vendors: Path, *gpus: tuple) -> dict:
    return fakegpu.icd_env(fake_icd, fakegpu.gpu_spec(*gpus), vendors_dir=vendors, base=env)


@pytest.mark.slow
@pytest.mark.parametrize(("gpus", "detected", "ranked"), [
    ((ARC_A770,), ["12.55.8"], ["12.55.8", "null"]),
    ((MAX_1550,), ["12.60.7"], ["12.60.7", "null"]),
    ((), [], ["null"]),
    ((METEOR_LAKE,), ["12.70.4"], ["null"]),  # a generation the release lacks: the JIT fallback
    ((IRIS_XE,), ["12.0.0"], ["12.0.0", "null"]),
    # An iGPU beside an Arc card, the iGPU enumerated first: the card's build first, the iGPU's next.
    ((IRIS_XE, ARC_A770), ["12.55.8", "12.0.0"], ["12.55.8", "12.0.0", "null"]),
], ids=["arc-a770", "max-1550", "no-gpu", "other-generation", "igpu-only", "igpu-and-dgpu"])
def test_variantlib_selects_the_wheel_of_the_gpu_the_driver_reports(made, fake_icd, tmp_path, gpus, detected, ranked):
    _, _, env, _, folder = made
    (index,) = folder.glob("*-variants.json")
    result = select(index, with_fake_driver(env, fake_icd, tmp_path / "vendors", *gpus))
    assert result == {"detected": detected, "ranked": ranked}


@pytest.mark.slow
def test_plugins_get_configs_reports_the_driver_ip_version(made, fake_icd, tmp_path):
    _, _, env, _, _ = made
    proc = variantlib("plugins", "get-configs", "--supported",
                      env=with_fake_driver(env, fake_icd, tmp_path / "vendors", ARC_A770))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"intel_gpu": [{"name": "ip_version", "values": ["12.55.8"],
                                                      "multi_value": False}]}


@pytest.mark.slow
def test_a_wheel_variantlib_cannot_read_is_exit_12_and_the_old_folder_stays(made, tmp_path):
    tmp, recipe, env, root, _ = made
    dist = tmp_path / "dist"
    shutil.copytree(root, dist / "canary", ignore=shutil.ignore_patterns("build-tree"))
    before = {p.name: p.read_bytes() for p in (dist / "canary" / "variants").iterdir()}
    (broken,) = (dist / "canary" / "wheels" / GENERATIONS[1]).glob("*.whl")
    broken.write_bytes(b"not a zip file")
    (jit,) = (dist / "canary" / "wheels" / "jit").glob("*.whl")
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "variants", str(recipe), "--fallback", str(jit)],
                          env=dict(env, IPEX_AOT_DIST=str(dist)), capture_output=True, text=True)
    assert proc.returncode == 12, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [errors[0]] and f"make-variant for {GENERATIONS[1]} failed" in errors[0]
    assert {p.name: p.read_bytes() for p in (dist / "canary" / "variants").iterdir()} == before
    assert not list((dist / "canary").glob(".variants.*"))


def test_a_generation_not_built_is_one_line_and_exit_7(made):
    _, recipe, env, _, _ = made
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "variants", str(recipe), "--generation", "12.10.0"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 7
    (line,) = proc.stderr.strip().splitlines()
    assert "no finished build of 12.10.0; run `ipex-aot build canary --generation 12.10.0` first" in line


@pytest.mark.parametrize(("slot", "integrated"), [
    ("0000:00:02.0", True), ("00:02.0", True), ("0000:03:00.0", False), ("0000:00:02.1", False),
    ("PCI\\VEN_8086&DEV_56A0&SUBSYS_10208086&REV_08\\6&1A2B3C4D&0&00080008", False), ("opencl:0", False),
])
def test_integrated_gpu_is_told_by_its_pci_address(slot, integrated):
    from ipex_aot.variant_provider import is_integrated_slot

    assert is_integrated_slot(slot) is integrated
