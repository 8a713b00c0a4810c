"""ipex-aot pack on real libraries (gcc-linked ELF with real ocloc images), reopened by py7zr and 7-Zip."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys

import libfixtures
import py7zr
import pytest

from ipex_aot import pack
from ipex_aot.errors import ArchiveError, BuildError, ScanError
from ipex_aot.settings import Settings

#: generation -> ocloc device name (checked against `ocloc ids` by the fixture)
TARGETS = {"12.0.0": "tgllp", "12.10.0": "dg1", "12.55.8": "acm-g10"}
#: A few PCI IDs per generation as Linux's i915 driver lists them (include/drm/intel/i915_pciids.h:
#: INTEL_TGL_IDS, INTEL_DG1_IDS, INTEL_DG2_G10_IDS): Tiger Lake GT2, DG1, Arc A770/A750.
KERNEL_PCI_IDS = {"12.0.0": ["9A40", "9A49"], "12.10.0": ["4905"], "12.55.8": ["56A0", "56A1"]}
# The lane's 7-Zip (tests/conftest.py fails the run without one): 7zz/7z on Linux, 7za.exe on Windows.
SEVEN = shutil.which("7zz") or shutil.which("7z") or shutil.which("7za")


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """One real library per generation: the same SPIR-V and host code, its own native image."""
    out = tmp_path_factory.mktemp("libs")
    spirv = libfixtures.ocloc_spirv()
    libs = {}
    for gen, device in TARGETS.items():
        ids = libfixtures.ocloc_ids(device)
        assert gen in ids, f"ocloc ids {device}: {ids}"
        libs[gen] = libfixtures.build_elf_library(out / gen / "libcanary-gpu.so", [libfixtures.ocloc_image(device)], spirv)
    return libs


def _record(gen, lib, **extra):
    data = lib.read_bytes()
    record = {
        "schema": 1, "recipe": "demo", "release": "0.1.0", "generation": gen, "devlist": TARGETS.get(gen, "x"),
        "devlist_variable": "USE_AOT_DEVLIST", "platform": "linux-x86_64",
        "artifact": {"name": lib.name, "install_path": "ipex_aot_canary/lib/libcanary-gpu.so",
                     "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        "toolchain": {"ocloc": "22.43.24595"}, "source": {"commit": "0123abc"},
        "finished": f"2026-11-22T08:0{len(gen) % 10}:00Z",
    }
    record.update(extra)
    return record


def make_dist(root, libraries, gens=tuple(TARGETS), swap=None):
    """dist/demo/<generation>/{libcanary-gpu.so,build.json}; ``swap`` puts another generation's library in a folder."""
    for gen in gens:
        folder = root / "demo" / gen
        folder.mkdir(parents=True)
        lib = folder / "libcanary-gpu.so"
        shutil.copy(libraries[(swap or {}).get(gen, gen)], lib)
        (folder / "build.json").write_text(json.dumps(_record(gen, lib)))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module, so scan's per-ocloc signatures are computed once."""
    return tmp_path_factory.mktemp("cache")


def settings_for(dist, cache, jobs=2):
    return Settings.from_env({"IPEX_AOT_DIST": str(dist), "MAX_JOBS": str(jobs), "IPEX_AOT_CACHE": str(cache)})


def do_pack(dist, cache, engine="auto", jobs=2, **kw):
    return pack.pack("recipes/demo.yaml", settings_for(dist, cache, jobs),
                     options=pack.PackOptions(engine=engine, jobs=jobs), **kw)


def test_pack_writes_folders_manifest_and_support(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries)
    result = do_pack(dist, cache)
    archive = dist / "demo" / "0.1.0-AOT.7z"
    assert result.archive == archive and archive.stat().st_size == result.size
    manifest = json.loads((dist / "demo" / "manifest.json").read_text())
    assert list(manifest["folders"]) == ["12.0.0", "12.10.0", "12.55.8"]  # numeric order, not text order
    assert manifest["release"] == "0.1.0" and manifest["recipe"] == "demo"
    assert manifest["artifact_install_path"] == "ipex_aot_canary/lib/libcanary-gpu.so"
    for gen, entry in manifest["folders"].items():
        lib = dist / "demo" / gen / "libcanary-gpu.so"
        assert entry["file"] == f"{gen}/libcanary-gpu.so"
        assert entry["sha256"] == hashlib.sha256(lib.read_bytes()).hexdigest()
        assert entry["size"] == lib.stat().st_size
        assert entry["build"] == {"devlist": TARGETS[gen], "source_commit": "0123abc", "finished": _record(gen, lib)["finished"]}
    with py7zr.SevenZipFile(archive) as z:
        listing = {i.filename: i for i in z.list()}
        assert {n for n, i in listing.items() if i.is_directory} == set(TARGETS)
        assert {n for n, i in listing.items() if not i.is_directory} == {
            "manifest.json", "SUPPORT.md", *(f"{g}/libcanary-gpu.so" for g in TARGETS)}
        z.extract(tmp_path / "x", targets=["manifest.json", "SUPPORT.md"])
    assert (tmp_path / "x" / "manifest.json").read_bytes() == (dist / "demo" / "manifest.json").read_bytes()
    support = (tmp_path / "x" / "SUPPORT.md").read_text()
    assert support == (dist / "demo" / "SUPPORT.md").read_text()
    assert all(f"`{g}`" in support for g in TARGETS)


def test_7zip_tests_and_extracts_one_folder(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries)
    archive = do_pack(dist, cache).archive
    subprocess.run([SEVEN, "t", str(archive)], check=True, capture_output=True)
    subprocess.run([SEVEN, "x", "-y", f"-o{tmp_path / 'x'}", str(archive), "12.10.0/*"], check=True, capture_output=True)
    got = tmp_path / "x" / "12.10.0" / "libcanary-gpu.so"
    assert got.read_bytes() == (dist / "demo" / "12.10.0" / "libcanary-gpu.so").read_bytes()
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["12.10.0"]


@pytest.mark.parametrize("engine", [
    pytest.param("parallel", marks=pytest.mark.skipif(
        sys.platform == "win32", reason="Windows has no liblzma DLL to load (CPython for Windows links liblzma "
        "into _lzma.pyd), so the parallel engine is Linux's; auto picks 7zz there")),
    "python"])
def test_same_inputs_give_the_same_bytes(tmp_path, libraries, cache, engine):
    dist = make_dist(tmp_path / "dist", libraries)
    first = do_pack(dist, cache, engine).archive.read_bytes()
    os.utime(dist / "demo" / "12.0.0" / "libcanary-gpu.so", (1, 1))  # file times must not leak in
    second = do_pack(dist, cache, engine).archive.read_bytes()
    assert first == second
    other = make_dist(tmp_path / "dist2", libraries)
    assert do_pack(other, cache, engine).archive.read_bytes() == first  # nor the folder it was built in
    assert do_pack(other, cache, engine, jobs=1).archive.read_bytes() == first  # nor the number of cores


def test_7zz_engine_gives_the_same_files(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries)
    result = do_pack(dist, cache, "7zz")
    with py7zr.SevenZipFile(result.archive) as z:
        files = {i.filename for i in z.list() if not i.is_directory}
    assert files == {"manifest.json", "SUPPORT.md", *(f"{g}/libcanary-gpu.so" for g in TARGETS)}


def test_refuses_a_folder_without_its_own_generation(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries, swap={"12.55.8": "12.0.0"})
    with pytest.raises(ScanError, match=r"12\.55\.8.*does not hold generation 12\.55\.8"):
        do_pack(dist, cache)
    assert not list((dist / "demo").glob("*.7z*")) and not (dist / "demo" / "manifest.json").exists()


def test_a_failed_pack_keeps_the_previous_archive(tmp_path, libraries, cache, monkeypatch):
    dist = make_dist(tmp_path / "dist", libraries)
    archive = do_pack(dist, cache).archive
    before = archive.read_bytes()
    manifest_before = (dist / "demo" / "manifest.json").read_bytes()
    entries_before = sorted(p.name for p in (dist / "demo").iterdir())
    # 1. the read-back check fails (as it would on a bad disk): nothing is replaced, no temporary file stays
    real_verify = pack.verify_archive

    def failing_verify(path, manifest, small):
        real_verify(path, manifest, small)
        raise ArchiveError(f"{path}: simulated read-back failure")

    monkeypatch.setattr(pack, "verify_archive", failing_verify)
    (dist / "demo" / "12.10.0" / "build.json").write_text(
        json.dumps(_record("12.10.0", dist / "demo" / "12.10.0" / "libcanary-gpu.so", devlist="dg1,x")))
    with pytest.raises(ArchiveError, match="simulated"):
        do_pack(dist, cache)
    monkeypatch.undo()
    assert archive.read_bytes() == before
    assert (dist / "demo" / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in (dist / "demo").iterdir()) == entries_before
    # 2. a library changed after its build: refused before anything is written
    lib = dist / "demo" / "12.0.0" / "libcanary-gpu.so"
    data = bytearray(lib.read_bytes())
    data[-1] ^= 1
    lib.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="changed since it was built"):
        do_pack(dist, cache)
    assert archive.read_bytes() == before


def test_read_back_catches_a_corrupt_archive(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries)
    result = do_pack(dist, cache)
    small = {"manifest.json": (dist / "demo" / "manifest.json").read_bytes(),
             "SUPPORT.md": (dist / "demo" / "SUPPORT.md").read_bytes()}
    data = bytearray(result.archive.read_bytes())
    data[len(data) // 2] ^= 0x55  # inside the libraries' packed stream
    bad = tmp_path / "bad.7z"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArchiveError):
        pack.verify_archive(bad, result.manifest, small)
    wrong = json.loads(json.dumps(result.manifest))
    wrong["folders"]["12.0.0"]["sha256"] = "0" * 64
    with pytest.raises(ArchiveError, match="12.0.0/libcanary-gpu.so"):
        pack.verify_archive(result.archive, wrong, small)


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"generation": "12.0.0", "release": "0.1.0"}', "'artifact'"),
    ('{"generation": "12.9.9", "release": "0.1.0", "artifact": {"name": "libcanary-gpu.so"}}', "'generation'"),
    ('{"generation": "12.0.0", "release": "0.1.0", "artifact": {"name": "../../evil.so"}}', "not a plain file name"),
    ('{"generation": "12.0.0", "release": "0.1.0", "artifact": {"name": "gone.so"}}', "gone.so is missing"),
])
def test_bad_build_json_is_one_line_error(tmp_path, libraries, cache, content, message):
    dist = make_dist(tmp_path / "dist", libraries)
    (dist / "demo" / "12.0.0" / "build.json").write_text(content)
    env = dict(os.environ, IPEX_AOT_DIST=str(dist), IPEX_AOT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "pack", "demo"], env=env, capture_output=True, text=True)
    assert proc.returncode == BuildError.exit_code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and os.path.join("12.0.0", "build.json") in lines[-1] and message in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not list((dist / "demo").glob("*.7z*"))


def test_conformance_results_go_into_the_archive_manifest(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries)
    results = [{"generation": g, "device": "cpu", "verdict": "pass", "report": f"conformance/{g}-cpu.json"}
               for g in TARGETS]
    result = do_pack(dist, cache, conformance=results)
    with py7zr.SevenZipFile(result.archive) as z:
        z.extract(tmp_path / "x", targets=["manifest.json"])
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["conformance"] == results


def test_no_build_is_a_clear_error(tmp_path):
    with pytest.raises(BuildError, match="no built generation"):
        pack.pack("demo", settings_for(tmp_path, tmp_path / "cache"))


@pytest.mark.slow
def test_cli_fills_pci_ids_and_support_table_from_the_device_database(tmp_path, libraries, cache):
    dist = make_dist(tmp_path / "dist", libraries)
    env = dict(os.environ, IPEX_AOT_DIST=str(dist), IPEX_AOT_CACHE=str(cache), MAX_JOBS="2")
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", "pack", "recipes/demo.yaml", "--json"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["generations"] == list(TARGETS) and summary["archive"].endswith("demo/0.1.0-AOT.7z")
    manifest = json.loads((dist / "demo" / "manifest.json").read_text())
    support = (dist / "demo" / "SUPPORT.md").read_text().splitlines()
    for gen, entry in manifest["folders"].items():
        # PCI IDs from Linux's i915 driver (include/drm/intel/i915_pciids.h: INTEL_TGL_IDS, INTEL_DG1_IDS,
        # INTEL_DG2_G10_IDS), not from our device database.
        assert set(KERNEL_PCI_IDS[gen]) <= set(entry["pci_ids"]), (gen, entry["pci_ids"])
        assert entry["pci_ids"] == sorted(entry["pci_ids"]) and len(set(entry["pci_ids"])) == len(entry["pci_ids"])
        # Every name ocloc itself maps to exactly this generation (`ocloc ids NAME`) is listed, and only those.
        assert entry["codenames"] == sorted(libfixtures.ocloc_names_by_generation()[gen]), (gen, entry["codenames"])
        assert TARGETS[gen] in entry["codenames"]  # the ocloc name the library was built for
        rows = [line for line in support if f"`{gen}`" in line]
        assert rows and all(any(f"`{pid}`" in line for line in rows) for pid in KERNEL_PCI_IDS[gen]), rows
    for a, b in itertools.combinations(manifest["folders"].values(), 2):
        assert not set(a["pci_ids"]) & set(b["pci_ids"])  # one PCI ID (without revision) is in one folder here


def test_only_the_given_generations_are_packed(tmp_path, libraries, cache):
    """A release packs its targets; a stale folder of an earlier target list stays out."""
    dist = make_dist(tmp_path / "dist", libraries)
    result = do_pack(dist, cache, generations=["12.55.8", "12.0.0"])
    assert list(result.manifest["folders"]) == ["12.0.0", "12.55.8"]
    with py7zr.SevenZipFile(result.archive) as z:
        assert not any(n.startswith("12.10.0") for n in z.getnames())
    with pytest.raises(BuildError, match=r"no finished build of 12\.60\.7"):
        do_pack(dist, cache, generations=["12.55.8", "12.60.7"])


def test_signed_pack_is_checked_by_minisign_and_an_unsigned_repack_drops_the_stale_signature(tmp_path, libraries, cache):
    from ipex_aot import signing

    dist = make_dist(tmp_path / "dist", libraries, gens=("12.0.0",))
    key = signing.SecretKey.generate()
    result = do_pack(dist, cache, sign_key=key)
    sig = result.archive.with_name(result.archive.name + ".minisig")
    assert result.signature == sig and sig.is_file()
    public = key.public_key().to_base64()
    proc = subprocess.run(["minisign", "-V", "-H", "-m", str(result.archive), "-P", public],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"file:{result.archive.name}\thashed\trelease:0.1.0\trecipe:demo" in proc.stdout
    with py7zr.SevenZipFile(result.archive) as z:
        z.extract(tmp_path / "x", targets=["SUPPORT.md"])
    support = (tmp_path / "x" / "SUPPORT.md").read_text()
    assert public in support and f"minisign -Vm {result.archive.name} -P {public}" in support
    again = do_pack(dist, cache)
    assert again.signature is None and not sig.exists()
DEMO_RECIPE = """package: ipex_aot_canary
version: {version}
source:
  path: canary
patches:
  none: "a test recipe"
toolchain:
  compiler: gcc
  python: ["3.11"]
  platforms: [{platforms}]
devlist_variable: USE_AOT_DEVLIST
build:
  artifact:
    linux-x86_64: ipex_aot_canary/lib/libcanary-gpu.so
    windows-x86_64: ipex_aot_canary/bin/canary-gpu.dll
targets:
  generations: ["12.0.0", "12.10.0", "12.55.8"]
release:
  archive: "{archive}"
"""


def write_demo_recipe(root, version="0.1.0", platforms="linux-x86_64, windows-x86_64",
                      archive="demo-{release}-{platform}.7z"):
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    path = root / "recipes" / "demo.yaml"
    path.write_text(DEMO_RECIPE.format(version=version, platforms=platforms, archive=archive))
    return path


def run_pack_cli(args, dist, cache, cwd):
    env = dict(os.environ, IPEX_AOT_DIST=str(dist), IPEX_AOT_CACHE=str(cache), MAX_JOBS="2")
    return subprocess.run([sys.executable, "-m", "ipex_aot", "pack", *args], env=env, capture_output=True,
                          text=True, cwd=cwd)


def test_cli_names_the_archive_from_the_recipes_template(tmp_path, libraries, cache):
    """The recipe's release.archive, with the builds' platform, names the archive (what `matrix` publishes)."""
    from ipex_aot.recipe import load_recipe

    recipe = write_demo_recipe(tmp_path)
    dist = make_dist(tmp_path / "dist", libraries)
    proc = run_pack_cli([str(recipe), "--json"], dist, cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    archive = dist / "demo" / "demo-0.1.0-linux-x86_64.7z"
    assert json.loads(proc.stdout)["archive"] == str(archive) and archive.is_file()
    assert load_recipe(recipe).release_assets("linux-x86_64")["archive"] == archive.name
    assert not list((dist / "demo").glob("0.1.0-AOT.7z"))


def test_folders_of_another_release_or_platform_are_refused(tmp_path, libraries, cache):
    recipe = write_demo_recipe(tmp_path, version="0.2.0")
    dist = make_dist(tmp_path / "dist", libraries)
    proc = run_pack_cli([str(recipe)], dist, cache, tmp_path)
    assert proc.returncode == BuildError.exit_code
    assert "built for release 0.1.0, the recipe now says 0.2.0" in proc.stderr.splitlines()[-1]
    # One archive holds one platform: a Windows folder among Linux ones is an error, not a mixed archive.
    record = json.loads((dist / "demo" / "12.10.0" / "build.json").read_text())
    (dist / "demo" / "12.10.0" / "build.json").write_text(json.dumps({**record, "platform": "windows-x86_64"}))
    with pytest.raises(BuildError, match="several platforms"):
        do_pack(dist, cache)
    assert not list((dist / "demo").glob("*.7z"))


def test_cli_conformance_reports_go_into_the_manifest(tmp_path, libraries, cache):
    """--conformance: the reports a CI job made from the folders, one per generation at least, in the manifest."""
    dist = make_dist(tmp_path / "dist", libraries)
    folder = dist / "demo" / "conformance"
    folder.mkdir()
    for gen in list(TARGETS)[:2]:
        (folder / f"{gen}-cpu.json").write_text(json.dumps(
            {"generation": gen, "device": "cpu", "verdict": "pass", "reasons": []}))
    proc = run_pack_cli(["demo", "--conformance"], dist, cache, tmp_path)
    assert proc.returncode == 11 and "no conformance report of 12.55.8" in proc.stderr.splitlines()[-1]
    (folder / "12.55.8-cpu.json").write_text(json.dumps(
        {"generation": "12.55.8", "device": "cpu", "verdict": "fail", "reasons": ["saxpy off"]}))
    proc = run_pack_cli(["demo", "--conformance"], dist, cache, tmp_path)
    assert proc.returncode == 11 and "12.55.8/cpu" in proc.stderr.splitlines()[-1]
    assert not list((dist / "demo").glob("*.7z"))
    (folder / "12.55.8-cpu.json").write_text(json.dumps(
        {"generation": "12.55.8", "device": "cpu", "verdict": "pass", "reasons": []}))
    proc = run_pack_cli(["demo", "--conformance"], dist, cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((dist / "demo" / "manifest.json").read_text())
    assert [(c["generation"], c["device"], c["verdict"]) for c in manifest["conformance"]] == [
        (g, "cpu", "pass") for g in TARGETS]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no liblzma DLL to load (CPython for Windows links "
                    "liblzma into _lzma.pyd), so the parallel engine is Linux's")
def test_python_engine_writes_the_parallel_engines_bytes_for_one_piece(tmp_path, libraries, cache):
    """Python's lzma module and liblzma through ctypes are one encoder: one piece, the same archive byte for byte.

    (With ``literals="fixed"``: Python's lzma cannot change lc/lp/pb inside a stream.)

    The python engine writes no header through py7zr (whose only public way to set an entry's time is the
    file's own), so the py7zr private API is gone from pack; py7zr still reads every archive back.
    """
    dist = make_dist(tmp_path / "dist", libraries)
    settings = settings_for(dist, cache, 1)
    one_piece = pack.pack("recipes/demo.yaml", settings,
                          options=pack.PackOptions(engine="parallel", jobs=1, pieces=1,
                                                          literals="fixed")).archive.read_bytes()
    python = pack.pack("recipes/demo.yaml", settings, options=pack.PackOptions(engine="python", jobs=1)).archive
    assert python.read_bytes() == one_piece
    alias = pack.pack("recipes/demo.yaml", settings, options=pack.PackOptions(engine="py7zr", jobs=1))
    assert alias.engine == "python" and alias.archive.read_bytes() == one_piece
