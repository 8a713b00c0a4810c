"""The device database: the real ocloc swept for real (full range once, sub-ranges for the rest)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from libfixtures import modern_ocloc

from ipex_aot import devices, errors
from ipex_aot.devices import (
    DeviceDatabase,
    architecture_name,
    build_database,
    display_name,
    load_database,
    normalize_pci_id,
    parse_markdown,
    pci_ids_file,
    read_pci_names,
    sweep,
)
from ipex_aot.generation import sort_generations
from ipex_aot.ocloc import find_ocloc
from ipex_aot.settings import Settings

#: Alder Lake-S, Alder Lake-N and the first Arc A-series IDs, plus 0x1234 (no GPU): a few seconds to sweep.
SMALL = range(0x4680, 0x46E0)
DG2 = range(0x56A0, 0x56A8)
#: Xe-HP SDV: its one generation has no product name, so "xe-hp" must be told apart as a release.
XE_HP = range(0x0201, 0x0203)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, IPEX_AOT_CACHE=str(tmp / "cache"), IPEX_AOT_DIST=str(tmp / "dist"))
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], env=env, capture_output=True, text=True)


#: Every device-database test runs with both: the ocloc on PATH (Debian bookworm's 22.43 in CI) and the
#: modern one setup.sh fetched from Debian sid (`ipex-aot ocloc fetch`), run through its own loader.
OCLOCS = ["path", "sid"]


def _ocloc_env(which: str) -> dict[str, str]:
    return {"OCLOC": str(modern_ocloc())} if which == "sid" else {}


@pytest.fixture(scope="session", params=OCLOCS, ids=lambda w: f"ocloc-{w}")
def full(request, tmp_path_factory):
    """`ipex-aot devices --write` over all 65536 IDs, once per ocloc; later CLI calls hit its cache."""
    tmp = tmp_path_factory.mktemp(f"devices-full-{request.param}")
    env = _env(tmp, **_ocloc_env(request.param))
    if request.param == "path":
        env.pop("OCLOC", None)
    proc = _cli("devices", "--write", env=env)
    assert proc.returncode == 0, proc.stderr
    out = tmp / "dist" / "devices"
    return {"env": env, "tmp": tmp, "json": json.loads((out / "devices.json").read_text()),
            "md": (out / "devices.md").read_text(), "which": request.param}


def _find(which: str):
    return find_ocloc(Settings.from_env({"HOME": os.environ.get("HOME", "/root"), **_ocloc_env(which)}))


@pytest.fixture(scope="module", params=OCLOCS, ids=lambda w: f"ocloc-{w}")
def ocloc(request):
    return _find(request.param)


@pytest.fixture(scope="module")
def path_ocloc():
    """The ocloc on PATH, for what only it has: a libocloc this process can load (in-process sweep)."""
    return _find("path")


@pytest.fixture(scope="module")
def small_db(ocloc):
    return build_database(ocloc, ids=[*SMALL, *DG2, *XE_HP, 0x1234], jobs=2)


@pytest.fixture(scope="module")
def small_db_in_process(path_ocloc):
    return build_database(path_ocloc, ids=[*SMALL, *DG2, *XE_HP, 0x1234], jobs=2, in_process=True)


def _row(data: dict, pci: str) -> dict:
    hits = [r for r in data["rows"] if pci in r["pci_ids"]]
    assert len(hits) == 1, f"{pci} in {len(hits)} rows"
    return hits[0]


# --- pure rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [("56a0", "56A0"), ("0x56A0", "56A0"), ("A0", "00A0"), (" 4680 ", "4680")])
def test_pci_ids_are_normalized(text, want):
    assert normalize_pci_id(text) == want


@pytest.mark.parametrize("text", ["", "0x", "56A0X", "12345", "-1", "gg"])
def test_malformed_pci_ids_are_device_errors(text):
    with pytest.raises(errors.DeviceError):
        normalize_pci_id(text)


#: A real `lspci -nn` line, from Intel's "Supported Hardware" page
#: (https://dgpu-docs.intel.com/overview/hardware-table.html, "Example output").
LSPCI_NN_INTEL_DOCS = "00:02.0 VGA compatible controller [0300]: Intel Corporation Device [8086:5927] (rev 06)"
#: A real plain `lspci -vvv` head line (no IDs), https://github.com/ProjectPhysX/OpenCL-Benchmark/pull/19
LSPCI_PLAIN_A770 = "03:00.0 VGA compatible controller: Intel Corporation DG2 [Arc A770] (rev 08) (prog-if 00 [VGA controller])"


@pytest.mark.parametrize("text,want", [
    ("56A0", ("56A0", None, None)), ("0x56a0", ("56A0", None, None)), ("8086:56a0", ("56A0", None, "8086")),
    ("56A0:08", ("56A0", 8, None)), ("56a0:8", ("56A0", 8, None)), ("8086:56a0:08", ("56A0", 8, "8086")),
    ("56A0:10", ("56A0", 16, None)),  # hex, as lspci prints (rev 10)
    (LSPCI_NN_INTEL_DOCS, ("5927", 6, "8086")),
    ("03:00.0 0300: 8086:56a0 (rev 08)", ("56A0", 8, "8086")),  # lspci -n
])
def test_the_forms_a_person_types_name_the_same_device(text, want):
    q = devices.parse_pci_query(text)
    assert (q.pci_id, q.revision, q.vendor) == want


@pytest.mark.parametrize("text", ["", "56A0:08:01:02", "8086:56a0:100", "zz:56a0", LSPCI_PLAIN_A770, "12345:1"])
def test_forms_that_name_no_device_are_one_device_error(text):
    with pytest.raises(errors.DeviceError):
        devices.parse_pci_query(text)


@pytest.mark.parametrize("name,want", [("xe-hpg", "Xe-HPG"), ("xe-hpc", "Xe-HPC"), ("xe-lpg", "Xe-LPG"),
                                       ("gen12lp", "Xe"), ("xe-lp", "Xe"), ("xe2", "Xe2"), ("xe3", "Xe3"),
                                       ("xe2-hpg", "Xe2-HPG"), ("xe-lpgplus", "Xe-LPG+"), ("gen9", "Gen9"),
                                       ("xe3p-lpg", "Xe3P-LPG"), ("xe3p", "Xe3P")])
def test_architecture_names_follow_one_formatting_rule(name, want):
    assert architecture_name(name) == want


def test_display_names_come_from_pci_ids():
    path = pci_ids_file()
    assert path is not None, "pci.ids is installed on the CI machine (Debian package pci.ids)"
    names = read_pci_names(path)
    assert len(names) > 500
    raw = names["46D0"]
    assert display_name(raw).startswith("Intel® ") and display_name(raw)[7:] in raw


# --- the full sweep through the CLI (the nox devices session's command) ----------------------

@pytest.mark.slow
def test_full_sweep_facts(full):
    data = full["json"]
    assert data["ocloc"]["version"]
    adls = _row(data, "4680")
    assert "adl-s" in adls["codenames"] and adls["generations"] == ["12.2.0"]
    assert adls["architecture"] == "Xe"
    dg2 = _row(data, "56A0")
    assert "12.55.8" in dg2["generations"] and "acm-g10" in dg2["codenames"]
    assert dg2["architecture"] == "Xe-HPG"
    assert dg2["generations"] == sort_generations(dg2["generations"])
    assert not any("1234" in r["pci_ids"] for r in data["rows"])
    all_ids = [p for r in data["rows"] for p in r["pci_ids"]]
    assert len(all_ids) == len(set(all_ids)) > 100
    assert all(len(p) == 4 and p == p.upper() for p in all_ids)


@pytest.mark.slow
def test_markdown_and_json_agree(full):
    md_rows = parse_markdown(full["md"])
    assert full["md"].splitlines()[0] == ("| PCI ID (Only the device part) | Codename | Architecture "
                                          "| Generation Code | Display Name |")
    assert len(md_rows) == len(full["json"]["rows"])
    for md, js in zip(md_rows, full["json"]["rows"], strict=True):
        for key in ("pci_ids", "codenames", "architecture", "generations", "names"):
            assert md[key] == js[key], key
    # Newer ocloc versions know more Alder Lake-N IDs (46D3, 46D4): the row starts the same.
    assert re.search(r"^\| `46D0` `46D1` `46D2`( `46D\w`)* \| Alder Lake-N \(`adl-n`\) \| Xe \| `12.4.0` \| "
                     r"`Intel® UHD Graphics`", full["md"], re.MULTILINE)


@pytest.mark.slow
def test_lookup_cli_exact_candidates_and_unknown(full):
    env = full["env"]
    exact = _cli("devices", "lookup", "56A0", "--revision", "8", env=env)
    assert exact.returncode == 0 and exact.stdout.strip() == "12.55.8"
    cands = _cli("devices", "lookup", "0x56a0", "--json", env=env)
    answer = json.loads(cands.stdout)
    assert answer["generation"] is None and "12.55.8" in answer["candidates"] and "revision" in answer["rule"]
    adls = _cli("devices", "lookup", "4680", env=env)
    assert adls.stdout.strip() == "12.2.0"
    for form in ("8086:56a0", "56A0:08", "0x56a0:8", "03:00.0 VGA compatible controller [0300]: Intel "
                 "Corporation DG2 [Arc A770] [8086:56a0] (rev 08)"):
        args = [form] if ":08" in form or "(rev" in form or ":8" in form else [form, "--revision", "8"]
        proc = _cli("devices", "lookup", *args, env=env)
        assert proc.returncode == 0 and proc.stdout.strip() == "12.55.8", (form, proc.stderr)
    for bad in (["1234"], ["zz"], ["56A0", "--revision", "x"], ["56A0", "--revision", "300"], ["10de:2684"],
                ["56A0:08", "--revision", "4"], [LSPCI_PLAIN_A770]):
        proc = _cli("devices", "lookup", *bad, env=env)
        assert proc.returncode == errors.DeviceError.exit_code, bad
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert proc.stdout == ""
    intel_other = _cli("devices", "lookup", "1234", env=env).stderr
    nvidia = _cli("devices", "lookup", "10de:2684", env=env).stderr
    assert "is an Intel device" in intel_other and "not a GPU" in intel_other and "newer ocloc" not in intel_other
    assert "not an Intel device" in nvidia and "NVIDIA" in nvidia and "newer ocloc" not in nvidia


def _ids(env: dict[str, str], name: str) -> list[str]:
    """`ocloc ids NAME` of the ocloc this table was swept with, run by hand."""
    out = subprocess.run([env.get("OCLOC") or "ocloc", "ids", name], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()[:1].isdigit()]


@pytest.mark.slow
def test_every_row_lists_every_stepping_ocloc_names_for_its_product(full):
    """A row holds each generation `ocloc ids` gives for any name of the same product (major.minor)."""
    data, env = full["json"], full["env"]
    for row in data["rows"]:
        products = {tuple(g.split(".")[:2]) for g in row["generations"]}
        for name in row["codenames"]:  # a deprecated name ocloc printed (xe_hp_sdv) is not in its list
            assert set(data["names"].get(name, [])) <= set(row["generations"]), (row["pci_ids"][0], name)
        named = {g for vs in data["names"].values() for g in vs if tuple(g.split(".")[:2]) in products}
        assert named <= set(row["generations"]), row["pci_ids"][0]
        assert row["told_apart_by"] == ("none" if len(row["generations"]) == 1 else row["told_apart_by"])
        assert row["rule"]
    dg2 = _row(data, "56A0")
    assert dg2["told_apart_by"] == "revision" and dg2["revisions"]["56A0"]["8"] == "12.55.8"
    assert "rev 8 → 12.55.8" in dg2["rule"]
    if full["which"] != "sid":
        return
    # The figures of the issue, with Debian sid's ocloc: steppings ocloc's PCI-ID mapping never reaches.
    for pci, want, acronyms in (("7D40", ["12.70.0", "12.70.4"], ["mtl-u-a0", "mtl-u-b0"]),
                                ("7D55", ["12.71.0", "12.71.4"], ["mtl-h-a0", "mtl-h-b0"]),
                                ("7D51", ["12.74.0", "12.74.4"], ["arl-h-a0", "arl-h-b0"]),
                                ("64A0", ["20.4.0", "20.4.1", "20.4.4"], ["lnl-a0", "lnl-a1", "lnl-b0"])):
        row = _row(data, pci)
        assert row["generations"] == want == sort_generations({g for a in acronyms for g in _ids(env, a)})
        assert row["told_apart_by"] == "ip_version" and "reports its IP version" in row["rule"]
        assert set(row["revisions"][pci].values()) == {want[0]}  # what -device 0xID -revision_id N gives
        md = next(r for r in parse_markdown(full["md"]) if pci in r["pci_ids"])
        assert md["generations"] == want
        line = next(ln for ln in full["md"].splitlines() if f"`{pci}`" in ln)
        assert "the GPU reports which: ipex-aot detect" in line
        proc = _cli("devices", "lookup", pci, "--revision", "4", env=env)
        assert proc.returncode == 0 and proc.stdout.split() == want, proc.stderr
        assert "cannot tell" in proc.stderr and "ipex-aot detect" in proc.stderr
        answer = json.loads(_cli("devices", "lookup", pci, "--json", env=env).stdout)
        assert answer["generation"] is None and answer["candidates"] == want
        assert answer["told_apart_by"] == "ip_version"


@pytest.mark.slow
def test_an_id_this_ocloc_does_not_know_suggests_a_newer_one(full):
    """E20B (Arc B580): unknown to bookworm's 22.43, which must say a newer ocloc may know it; sid's knows it."""
    env, data = full["env"], full["json"]
    proc = _cli("devices", "lookup", "E20B", env=env)
    if full["which"] == "sid":
        assert proc.returncode == 0 and "20.1.0" in proc.stdout.split(), proc.stderr
    else:
        assert proc.returncode == errors.DeviceError.exit_code
        assert "not known to ocloc" in proc.stderr and "ipex-aot ocloc fetch" in proc.stderr
    # An ID pci.ids names as an Intel GPU (its marketing name reads like the table's) that this ocloc lacks.
    rows = [DeviceDatabase.from_json(data).rows][0]
    known = {p for r in data["rows"] for p in r["pci_ids"]}
    gpu = next((pid for pid, name in read_pci_names(pci_ids_file()).items()
                if pid not in known and devices.looks_like_gpu(name, rows)), None)
    assert gpu is not None, "pci.ids lists Intel GPUs older or newer than this ocloc knows"
    proc = _cli("devices", "lookup", gpu, env=env)
    assert proc.returncode == errors.DeviceError.exit_code
    assert "is an Intel GPU not known to ocloc" in proc.stderr and "ipex-aot ocloc fetch" in proc.stderr


@pytest.mark.slow
def test_second_call_reads_the_cache(full):
    cache = list((full["tmp"] / "cache" / "devices").glob("devices-*.json"))
    assert len(cache) == 1
    before = cache[0].stat().st_mtime_ns
    proc = _cli("devices", "--json", env=full["env"])
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["rows"] == full["json"]["rows"]
    assert cache[0].stat().st_mtime_ns == before
    assert "device sweep" not in proc.stderr


# --- sub-ranges through the Python interface ---------------------------------------------------

def test_small_sweep_rows(small_db):
    assert small_db.lookup("4680").generation == "12.2.0"
    assert small_db.lookup("46D0").row.codenames == ("adl-n",)
    hit = small_db.lookup("56A0", 8)
    assert hit.generation == "12.55.8"
    assert "12.55.8" in small_db.lookup("56A0").candidates
    with pytest.raises(errors.DeviceError, match="1234"):
        small_db.lookup("1234")
    names = read_pci_names(pci_ids_file())
    assert devices.display_name(names["56A0"]) in hit.row.names


#: The families and releases each ocloc's `ocloc compile --help` lists after its products ("-device xe ;
#: will compile all targets matching the same family", "-device gen12lp ; ... the same release"), copied
#: from the help of the two oclocs the lane runs: bookworm's 22.43 (PATH) and Debian sid's 26.27.
HELP_GROUPS = {
    "22.43": {"gen11", "gen12lp", "gen8", "gen9", "xe", "xe-hp", "xe-hpc", "xe-hpg"},
    "26.27": {"xe", "xe2", "xe3", "xe3p", "gen12lp", "xe-hpc", "xe-hpc-vg", "xe-hpg", "xe-lp", "xe-lpg",
              "xe-lpgplus", "xe2-hpg", "xe2-lpg", "xe3-lpg", "xe3p-lpg", "xe3p-xpc"},
}


def test_products_and_groups_are_told_apart(small_db, ocloc):
    release = ".".join(ocloc.version.split(".")[:2])
    if release not in HELP_GROUPS:  # sid moved on: a fact of the lane, shown by -ra, not a pass
        pytest.skip(f"no recorded --help groups for ocloc {ocloc.version}; add them to HELP_GROUPS")
    assert set(small_db.groups) == HELP_GROUPS[release]
    assert not {"acm-g10", "adl-s", "adl-n", "tgllp", "pvc"} & set(small_db.groups)  # products, by the same help


def test_database_queries(small_db):
    assert small_db.resolve("12.55.8") == "12.55.8"
    assert small_db.resolve("acm-g10") == "12.55.8"
    assert small_db.resolve("4680") == "12.2.0"
    assert small_db.device_name("12.55.8") == "acm-g10"
    assert small_db.device_name("12.2.0") == "adl-s"
    assert "12.55.8" in small_db.family_generations("xe-hpg")
    assert [r.pci_ids[0] for r in small_db.rows_for("12.2.0")] == ["4680"]
    assert small_db.generations() == sort_generations(small_db.generations())
    for bad in ("xe-hpg", "56A0", "99.99.99", "nonsense"):
        with pytest.raises(errors.DeviceError):
            small_db.resolve(bad)
    restricted = parse_markdown(small_db.to_markdown(["12.2.0"]))
    assert [r["generations"] for r in restricted] == [["12.2.0"]]


def test_json_round_trip(small_db):
    again = DeviceDatabase.from_json(json.loads(json.dumps(small_db.to_json())))
    assert again.to_json() == small_db.to_json()
    assert again.lookup("56A0", 8).generation == "12.55.8"


def test_unknown_ids_are_no_rows_and_nothing_is_skipped(ocloc):
    result = sweep(ocloc, [0x0000, 0x1234, 0xFFFF], jobs=1)
    assert result.targets == {} and result.skipped == []


@pytest.mark.slow
def test_wrapper_script_gives_the_same_table_as_the_library(path_ocloc, small_db_in_process, tmp_path):
    ocloc, small_db = path_ocloc, small_db_in_process
    script = tmp_path / "ocloc-wrapper"
    script.write_text(f'#!/bin/bash\nexec {ocloc.path} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    wrapped = find_ocloc(Settings.from_env({"OCLOC": str(script), "HOME": str(tmp_path)}))
    assert wrapped.library is None
    db = build_database(wrapped, ids=[*SMALL, *DG2, *XE_HP, 0x1234], jobs=2)
    assert db.meta["in_process"] is False and small_db.meta["in_process"] is True
    assert [r.to_json() for r in db.rows] == [r.to_json() for r in small_db.rows]
    assert db.groups == small_db.groups and "xe-hp" in db.groups
    assert db.lookup("0201").row.architecture == "Xe-HP"


def test_a_corrupt_or_truncated_cache_is_rebuilt(ocloc, tmp_path):
    settings = Settings.from_env({"IPEX_AOT_CACHE": str(tmp_path), "HOME": str(tmp_path), "MAX_JOBS": "2"})
    ids = range(0x46D0, 0x46D3)
    first = load_database(settings, ocloc=ocloc, ids=ids)
    path = devices.cache_path(settings, ocloc, pci_ids_file(), ids)
    good = path.read_text()
    for broken in (good[: len(good) // 2], "not json at all", json.dumps({"schema": 999, "rows": []})):
        path.write_text(broken)
        again = load_database(settings, ocloc=ocloc, ids=ids)
        assert again.to_json()["rows"] == first.to_json()["rows"]
        assert json.loads(path.read_text())["rows"] == json.loads(good)["rows"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


@pytest.mark.slow
def test_an_id_that_crashes_or_hangs_ocloc_is_skipped_and_the_sweep_goes_on(ocloc, tmp_path):
    # The wrapper sees either one `-device 0xIIII` or an `ocloc multi` batch file in its cwd.
    script = tmp_path / "flaky-ocloc"
    script.write_text(
        "#!/bin/bash\n"
        'has() { [[ " $* " == *" $ID "* ]] || grep -qs -- "-device $ID\\$" ids.txt; }\n'
        'ID=0x4682; if has "$@"; then kill -SEGV $$; fi\n'
        'ID=0x4688; if has "$@"; then exec sleep 60; fi\n'
        f'exec {ocloc.path} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    flaky = find_ocloc(Settings.from_env({"OCLOC": str(script), "HOME": str(tmp_path)}))
    result = sweep(flaky, range(0x4680, 0x4690), jobs=2, timeout=2)
    assert "4682" in result.skipped and "4688" in result.skipped
    assert result.default["4680"] == "12.2.0" and "4682" not in result.targets


FLAKY_LIBOCLOC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
static void *real(const char *name) {
    static void *h;
    if (!h) h = dlopen(REAL_LIBOCLOC, RTLD_NOW);
    return dlsym(h, name);
}
typedef int (*invoke_t)(unsigned, const char **, uint32_t, const uint8_t **, const uint64_t *, const char **,
                        uint32_t, const uint8_t **, const uint64_t *, const char **,
                        uint32_t *, uint8_t ***, uint64_t **, char ***);
typedef int (*free_t)(uint32_t *, uint8_t ***, uint64_t **, char ***);
int oclocInvoke(unsigned n, const char **argv, uint32_t ns, const uint8_t **ds, const uint64_t *ls, const char **nsrc,
                uint32_t nh, const uint8_t **dh, const uint64_t *lh, const char **nhd,
                uint32_t *no, uint8_t ***dout, uint64_t **lout, char ***nout) {
    for (unsigned i = 0; i < n; i++) {
        if (!strcmp(argv[i], "0x4682")) *(volatile int *)0 = 1;   /* crash */
        if (!strcmp(argv[i], "0x4688")) sleep(60);                 /* hang */
    }
    for (uint32_t j = 0; j < ns; j++) {                            /* the same inside an `ocloc multi` list */
        if (memmem(ds[j], ls[j], "0x4682\n", 7)) *(volatile int *)0 = 1;
        if (memmem(ds[j], ls[j], "0x4688\n", 7)) sleep(60);
    }
    return ((invoke_t)real("oclocInvoke"))(n, argv, ns, ds, ls, nsrc, nh, dh, lh, nhd, no, dout, lout, nout);
}
int oclocFreeOutput(uint32_t *no, uint8_t ***d, uint64_t **l, char ***nm) {
    return ((free_t)real("oclocFreeOutput"))(no, d, l, nm);
}
"""


@pytest.mark.slow
def test_a_crash_or_hang_inside_libocloc_kills_a_worker_not_the_sweep(path_ocloc, tmp_path):
    """A real shared library in front of libocloc that segfaults on one ID and hangs on another."""
    import dataclasses

    ocloc = path_ocloc

    src = tmp_path / "flaky.c"
    src.write_text(FLAKY_LIBOCLOC)
    lib = tmp_path / "libflaky.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f'-DREAL_LIBOCLOC="{ocloc.library}"', "-o", str(lib),
                    str(src), "-ldl"], check=True)
    flaky = dataclasses.replace(ocloc, library=str(lib))
    result = sweep(flaky, range(0x4680, 0x4690), jobs=2, in_process=True, timeout=2)
    assert result.in_process
    assert "4682" in result.skipped and "4688" in result.skipped
    assert result.default["4680"] == "12.2.0" and "4682" not in result.targets


@pytest.mark.parametrize("which,in_process", [("path", True), ("path", False), ("sid", False)])
def test_matching_ids_with_the_real_kernel_agrees_with_the_empty_source(which, in_process):
    """The fallback for an ocloc that reads the source before it matches the device."""
    runner = devices.make_runner(_find(which), 2, in_process=in_process)
    try:
        ids = [0x1234, 0x4680, 0x46D0, 0x56A0]
        empty = runner.detect(ids)
        assert empty[0x1234] is None and all(empty[i] for i in ids[1:])
        assert runner.detect(ids, ("k.cl", devices.KERNEL)) == empty
    finally:
        runner.close()
