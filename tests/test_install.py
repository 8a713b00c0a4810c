"""detect / install / install --rollback on real archives (py7zr, 7zz) and real libraries (tests/libfixtures.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import py7zr
import pytest

from ipex_aot import archive as archive_mod
from ipex_aot import gpus as gpus_mod
from ipex_aot import install
from ipex_aot.errors import ArchiveError, DeviceError, InstallError
from ipex_aot.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
import libfixtures as L  # noqa: E402
from libfixtures import make_archive, site  # noqa: E402

DATA = Path(__file__).parent / "data" / "install"
ids = L.ocloc_ids


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".ipex-aot-") or p.suffix == ".part")


# --- detect ---------------------------------------------------------------------------------

def fake_sysfs(tmp_path: Path, devices: dict[str, tuple[str, str, str, str]]) -> Path:
    for slot, (vendor, device, klass, rev) in devices.items():
        d = tmp_path / "sys" / "bus" / "pci" / "devices" / slot
        d.mkdir(parents=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", klass), ("revision", rev)):
            (d / name).write_text(value + "\n")
    return tmp_path / "sys"


def test_sysfs_lists_intel_display_controllers_only(tmp_path, settings, db):
    root = fake_sysfs(tmp_path, {"0000:03:00.0": ("0x8086", "0x56a0", "0x030000", "0x08"),
                                 "0000:00:02.0": ("0x8086", "0x0bd5", "0x038000", "0x2f"),
                                 "0000:00:00.0": ("0x8086", "0x4660", "0x060000", "0x02"),  # host bridge
                                 "0000:01:00.0": ("0x10de", "0x2504", "0x030000", "0xa1")})
    gpus, note = install.detect(settings, sysfs_root=root, db=db)
    assert note is None
    assert [(g.slot, g.pci_id, g.revision) for g in gpus] == [("0000:00:02.0", "0BD5", 0x2F), ("0000:03:00.0", "56A0", 8)]
    a770 = gpus[1]
    assert a770.generation == db.lookup("56A0", 8).generation == ids("acm-g10")[0]


def test_detect_without_a_cached_database_sweeps_just_the_present_ids(tmp_path, settings):
    root = fake_sysfs(tmp_path, {"0000:03:00.0": ("0x8086", "0x56a0", "0x030000", "0x08")})
    gpus, note = install.detect(settings, sysfs_root=root)
    assert note is None and [g.generation for g in gpus] == ids("acm-g10")[-1:]
    no_ocloc = Settings.from_env({"OCLOC": str(tmp_path / "none"), "IPEX_AOT_CACHE": str(tmp_path / "c")})
    gpus, note = install.detect(no_ocloc, sysfs_root=root)
    assert note and [g.pci_id for g in gpus] == ["56A0"] and gpus[0].generation is None


def _fake_powershell(folder: Path, sample: Path | None) -> None:
    """A `powershell` on PATH that prints SAMPLE when asked the query detect runs (else says Access denied):
    a shell script on Linux, a batch file on Windows (found through PATHEXT, run by cmd)."""
    folder.mkdir(exist_ok=True)
    if os.name == "nt":
        body = f'@type "{sample}"\r\n' if sample else "@echo Get-CimInstance : Access denied 1>&2\r\n@exit /b 1\r\n"
        (folder / "powershell.bat").write_text("@echo off\r\n" + body, encoding="ascii")
        return
    fake = folder / "powershell"
    if sample:
        fake.write_text(f"#!/bin/sh\ncase \"$*\" in *Win32_VideoController*Format-List*) "
                        f"{shutil.which('cat')} '{sample}';; *) exit 3;; esac\n")
    else:
        fake.write_text("#!/bin/sh\necho 'Get-CimInstance : Access denied' >&2\nexit 1\n")
    fake.chmod(0o755)


def test_windows_path_runs_powershell_and_reads_its_list(tmp_path, monkeypatch):
    """The real command path (which, run, parse) with a `powershell` that prints a recorded sample
    (data/install/README.md says where each was recorded)."""
    bin_dir = tmp_path / "bin"
    _fake_powershell(bin_dir, DATA / "win32-videocontroller-iris-plus.txt")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert [(g.pci_id, g.revision, g.name) for g in install.list_gpus(platform="win32")] == [
        ("8A52", 7, "Intel(R) Iris(R) Plus Graphics")]
    for f in bin_dir.iterdir():
        f.unlink()
    _fake_powershell(bin_dir, None)
    with pytest.raises(DeviceError, match="Access denied"):
        install.list_gpus(platform="win32")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DeviceError, match="PowerShell not found"):
        install.list_gpus(platform="win32")


def test_detect_real_sysfs_matches_a_shell_read_of_it():
    """This machine's own sysfs, read a second way (bash and cat, not the code under test): the same
    Intel display controllers (vendor 0x8086, class 0x03xxxx), in the same order, or none on both sides."""
    script = ('for d in /sys/bus/pci/devices/*; do [ -r "$d/class" ] || continue; '
              'v=$(cat "$d/vendor"); c=$(cat "$d/class"); '
              '[ "$v" = 0x8086 ] && [ "${c:0:4}" = 0x03 ] && echo "${d##*/} $(cat "$d/device") $(cat "$d/revision")"; '
              'done; true')
    lines = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    expected = [(lines[i], lines[i + 1][2:].upper(), int(lines[i + 2], 16)) for i in range(0, len(lines), 3)]
    assert [(g.slot, g.pci_id, g.revision) for g in install.gpus_from_sysfs()] == expected


def test_powershell_recordings_parse():
    """Real Format-List recordings (data/install/README.md): the PCI device and revision from the PNP device
    ID, every adapter of a listing, a value wrapped over lines, and no GPU made up from a non-Intel adapter."""
    uhd = (DATA / "win32-videocontroller-uhd.txt").read_text(encoding="utf-8")
    iris = (DATA / "win32-videocontroller-iris-plus.txt").read_text(encoding="utf-8")
    remote = (DATA / "win32-videocontroller-remote-display.txt").read_text(encoding="utf-8")
    assert [(g.slot, g.pci_id, g.revision, g.name) for g in install.parse_powershell(uhd)] == [
        ("PCI\\VEN_8086&DEV_9BC4&SUBSYS_170D1043&REV_05\\3&11583659&0&10", "9BC4", 5, "Intel(R) UHD Graphics")]
    # Two adapters in one listing (a blank line between them), each reported, in order.
    assert [(g.pci_id, g.revision) for g in install.parse_powershell(remote + "\n" + iris + "\n" + uhd)] == [
        ("8A52", 7), ("9BC4", 5)]
    assert install.parse_powershell(remote) == []
    assert install.parse_powershell("") == []  # no adapter at all
    # Format-List goes on over lines that start with spaces; the value is joined back, whole.
    wrapped = gpus_mod._format_list_records(iris)[0]["InstalledDisplayDrivers"]
    assert wrapped.count("iigd_dch.inf_amd64_fdbe15db86939fb5") == 4 and " " not in wrapped
    with pytest.raises(DeviceError, match="not Format-List"):
        install.parse_powershell("Get-CimInstance : Access denied")


# --- install --------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["py7zr", "7z"])
def test_install_extracts_one_folder_and_rolls_back(tmp_path, settings, release, engine, monkeypatch):
    if engine == "7z":
        assert archive_mod.sevenzip_command(settings), "the lane's 7-Zip is missing (tests/conftest.py checks it)"
    archive, libs = release
    root, lib = site(tmp_path)
    original = lib.read_bytes()
    pvc = ids("pvc")[0]
    extracted: list[str] = []
    real = install.extract_member
    monkeypatch.setattr(install, "extract_member",
                        lambda a, m, d, s, **k: extracted.append(m) or real(a, m, d, s, **k))
    record = install.install(archive, settings, ipex_dir=root, generation=pvc, engine=engine)
    assert extracted == [f"{pvc}/libgpu.so"]  # only that folder's file left the archive
    assert lib.read_bytes() == libs[pvc].read_bytes()
    assert sorted(p.name for p in lib.parent.iterdir()) == ["libgpu.so", "libgpu.so.ipex-aot-backup",
                                                           "libgpu.so.ipex-aot.json"]
    assert record["installed"]["generation"] == pvc
    # Installing again keeps the backup of the original, not of our own library.
    install.install(archive, settings, ipex_dir=root, generation=ids("acm-g10")[0], engine=engine)
    assert install.rollback(root, None, settings) == lib
    assert lib.read_bytes() == original
    assert sorted(p.name for p in lib.parent.iterdir()) == ["libgpu.so"]
    with pytest.raises(InstallError, match="nothing to roll back"):
        install.rollback(root, None, settings)


def test_install_picks_the_detected_generation(tmp_path, settings, release, db):
    archive, libs = release
    root, lib = site(tmp_path)
    sysfs = fake_sysfs(tmp_path, {"0000:03:00.0": ("0x8086", "0x56a0", "0x030000", "0x08")})
    install.install(archive, settings, ipex_dir=root / "ipex_aot_fixture", sysfs_root=sysfs, db=db)
    assert lib.read_bytes() == libs[ids("acm-g10")[0]].read_bytes()


def test_install_refuses_an_unknown_stepping_without_a_guess(tmp_path, settings, release, db):
    archive, _ = release
    root, lib = site(tmp_path)
    sysfs = fake_sysfs(tmp_path, {"0000:03:00.0": ("0x8086", "0x56a0", "0x030000", "0x02")})
    before = lib.read_bytes()
    with pytest.raises(InstallError, match="--generation"):
        install.install(archive, settings, ipex_dir=root, sysfs_root=sysfs, db=db)
    assert lib.read_bytes() == before and leftovers(lib.parent) == []


def test_hash_mismatch_leaves_the_old_library(tmp_path, settings, release):
    _, libs = release
    pvc = ids("pvc")[0]
    bad = make_archive(tmp_path / "bad.7z", libs, hashes={pvc: "0" * 64})
    root, lib = site(tmp_path)
    with pytest.raises(ArchiveError, match="sha256"):
        install.install(bad, settings, ipex_dir=root, generation=pvc)
    assert lib.read_bytes() == b"the JIT-only library\n"
    assert sorted(p.name for p in lib.parent.iterdir()) == ["libgpu.so"]


def test_folder_holding_the_wrong_generation_is_refused(tmp_path, settings, release):
    _, libs = release
    g10, pvc = ids("acm-g10")[0], ids("pvc")[0]
    wrong = make_archive(tmp_path / "wrong.7z", {g10: libs[pvc]})
    root, lib = site(tmp_path)
    with pytest.raises(ArchiveError, match=f"not {g10}"):
        install.install(wrong, settings, ipex_dir=root, generation=g10)
    assert lib.read_bytes() == b"the JIT-only library\n"


def seven_zip(tmp_path: Path, name: str, files: list[str], *flags: str, cwd: Path) -> Path:
    # 7-Zip, not py7zr, which refuses to write unsafe entries; tests/conftest.py makes each lane have one.
    exe = shutil.which("7zz") or shutil.which("7z") or shutil.which("7za")
    assert exe, "the lane's 7-Zip is missing"
    out = tmp_path / name
    subprocess.run([exe, "a", *flags, "-bso0", "-bsp0", str(out), *files], cwd=cwd, check=True)
    return out


def test_dotdot_and_absolute_entries_are_refused_before_anything(tmp_path, settings, release):
    archive, _ = release
    work = tmp_path / "w" / "sub"
    work.mkdir(parents=True)
    (tmp_path / "w" / "evil.so").write_bytes(b"x")
    for name, files in (("dots.7z", ["../evil.so"]), ("abs.7z", [str(tmp_path / "w" / "evil.so")])):
        bad = tmp_path / name
        shutil.copy(archive, bad)
        seven_zip(tmp_path, name, files, "-spf", cwd=work)
        root, lib = site(tmp_path / name.split(".")[0])
        with pytest.raises(ArchiveError, match="absolute path|'..' component"):
            install.install(bad, settings, ipex_dir=root, generation=ids("pvc")[0])
        assert lib.read_bytes() == b"the JIT-only library\n" and leftovers(lib.parent) == []


@pytest.mark.parametrize("writer", ["py7zr", "7zz"])
def test_link_entries_are_refused(tmp_path, settings, release, writer):
    archive, libs = release
    work = tmp_path / "w"
    work.mkdir()
    os.symlink("/etc/passwd", work / "link")
    bad = tmp_path / "link.7z"
    if writer == "py7zr":
        with py7zr.SevenZipFile(bad, "w") as z:
            z.write(work / "link", "link")  # first: py7zr looks up link targets among earlier entries
            with py7zr.SevenZipFile(archive) as src:
                names = src.getnames()
            for name in names:
                if name.endswith(".so"):
                    z.write(libs[name.split("/")[0]], name)
            z.writestr(b'{"folders": {}}', "manifest.json")
    else:
        shutil.copy(archive, bad)
        seven_zip(tmp_path, "link.7z", ["link"], "-snl", cwd=work)
    root, lib = site(tmp_path)
    with pytest.raises(ArchiveError, match="link"):
        install.install(bad, settings, ipex_dir=root, generation=ids("pvc")[0])
    assert lib.read_bytes() == b"the JIT-only library\n"


def test_interrupted_swap_keeps_the_old_library(tmp_path, settings, release, monkeypatch):
    archive, _ = release
    root, lib = site(tmp_path)
    real_replace = os.replace

    def crash(src, dst, *a, **k):
        if Path(dst) == lib:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(install.os, "replace", crash)
    with pytest.raises(InstallError, match="No space left on device"):
        install.install(archive, settings, ipex_dir=root, generation=ids("pvc")[0])
    assert lib.read_bytes() == b"the JIT-only library\n"
    assert leftovers(lib.parent) == []  # the temporary folder is gone


def test_killed_install_keeps_the_old_library(tmp_path, settings, release):
    """A real process killed at the swap: the library is the old one or the new one, never a mix."""
    archive, libs = release
    root, lib = site(tmp_path)
    pvc = ids("pvc")[0]
    code = ("import os, sys; from pathlib import Path; from ipex_aot import install; from ipex_aot.settings import Settings\n"
            "real = os.replace\n"
            "def die(s, d, *a, **k):\n"
            "    if Path(d).name == 'libgpu.so': os._exit(9)\n"
            "    return real(s, d, *a, **k)\n"
            "install.os.replace = die\n"
            f"install.install(Path({str(archive)!r}), Settings.from_env(), ipex_dir=Path({str(root)!r}), generation={pvc!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "IPEX_AOT_CACHE": str(settings.cache_dir)})
    assert proc.returncode == 9, proc.stderr
    assert lib.read_bytes() == b"the JIT-only library\n"
    # A new install after the crash works and still backs up the original.
    install.install(archive, settings, ipex_dir=root, generation=pvc)
    install.rollback(root, None, settings)
    assert lib.read_bytes() == b"the JIT-only library\n"


def test_missing_install_and_missing_folder(tmp_path, settings, release):
    archive, _ = release
    with pytest.raises(InstallError, match="installed there"):
        install.install(archive, settings, ipex_dir=tmp_path, generation=ids("pvc")[0])
    root, _ = site(tmp_path)
    with pytest.raises(InstallError, match="has no folder 1.2.3"):
        install.install(archive, settings, ipex_dir=root, generation="1.2.3")
    (tmp_path / "junk.7z").write_bytes(b"not an archive")
    with pytest.raises(ArchiveError, match="not a readable 7z"):
        install.install(tmp_path / "junk.7z", settings, ipex_dir=root, generation="1.2.3")


def test_cli_install_and_rollback(tmp_path, settings, release):
    archive, libs = release
    root, lib = site(tmp_path)
    env = {**os.environ, "IPEX_AOT_CACHE": str(settings.cache_dir)}
    pvc = ids("pvc")[0]
    run = [sys.executable, "-m", "ipex_aot", "install"]
    proc = subprocess.run([*run, str(archive), "--ipex-dir", str(root), "--generation", pvc],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert lib.read_bytes() == libs[pvc].read_bytes()
    proc = subprocess.run([*run, "--rollback", "--ipex-dir", str(root)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert lib.read_bytes() == b"the JIT-only library\n"
    proc = subprocess.run([*run, str(archive), "--ipex-dir", str(root), "--generation", "9.9.9"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == InstallError.exit_code
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "9.9.9" in errors[0] and "Traceback" not in proc.stderr
