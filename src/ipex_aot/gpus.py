"""This machine's Intel GPUs and their exact generation: the driver first, then the PCI IDs.

From Xe-LPG (Meteor Lake) on, the GPU reports its own IP version (the GMD ID
register) and the driver builds for it: compute-runtime's
``CompilerProductHelperHw<…>::getProductConfigFromHwInfo`` returns
``hwInfo.ipVersion`` whenever the hardware gave one and only otherwise maps
PCI revisions (shared/source/helpers/compiler_product_helper_mtl_and_later.inl,
shared/source/xe_hpg_core/enable_compiler_product_helper_mtl.cpp in
https://github.com/intel/compute-runtime). The PCI device and revision IDs
cannot decide those products, so :func:`detect` asks, in order:

1. OpenCL: ``CL_DEVICE_IP_VERSION_INTEL`` (0x4250, extension
   ``cl_intel_device_attribute_query``) of every Intel GPU device, through the
   installed ICD loader (``libOpenCL.so.1`` / ``OpenCL.dll``) with ctypes;
2. Level Zero: ``ze_device_ip_version_ext_t`` chained to
   ``zeDeviceGetProperties`` (``libze_loader.so.1`` / ``ze_loader.dll``);
3. the PCI device and revision IDs (Linux sysfs, Windows PowerShell
   ``Win32_VideoController``) looked up in the device database.

Each GPU says which source answered (``source``). The drivers are asked in a
child process with a time limit, so a driver that crashes or hangs costs the
answer, not the command. The IP version is decoded as compute-runtime's
``HardwareIpVersion`` (architecture:10 release:8 reserved:8 revision:6), the
layout of the zebin product config (:meth:`ipex_aot.generation.Generation.from_ip_version`).
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ipex_aot import log
from ipex_aot.errors import DeviceError, IpexAotError
from ipex_aot.generation import Generation
from ipex_aot.ocloc import find_ocloc
from ipex_aot.settings import Settings

INTEL_VENDOR = "8086"
#: Format-List, not ConvertTo-Json: its output is what people paste into public issues, so the parser is tested
#: on real recordings (tests/data/install/README.md names them); no recording of the JSON form was found.
POWERSHELL_QUERY = "Get-CimInstance -ClassName Win32_VideoController | Format-List *"
#: One ``Name : value`` line of Format-List (the name padded with spaces to the longest one).
_LIST_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*) *:(?: (.*))?")
_PNP_RE = re.compile(r"VEN_([0-9A-Fa-f]{4})&DEV_([0-9A-Fa-f]{4})(?:&SUBSYS_[0-9A-Fa-f]+)?(?:&REV_([0-9A-Fa-f]{2}))?")

OPENCL_LIBRARIES = {"win32": ("OpenCL.dll",), "linux": ("libOpenCL.so.1", "libOpenCL.so")}
LEVEL_ZERO_LIBRARIES = {"win32": ("ze_loader.dll",), "linux": ("libze_loader.so.1", "libze_loader.so")}
#: Seconds the child process that asks the drivers may take.
DRIVER_TIMEOUT = 60.0

# OpenCL (CL/cl.h, cl_ext.h): only what detection reads.
CL_SUCCESS, CL_DEVICE_NOT_FOUND, CL_PLATFORM_NOT_FOUND_KHR = 0, -1, -1001
CL_DEVICE_TYPE_GPU = 1 << 2
CL_DEVICE_VENDOR_ID, CL_DEVICE_NAME, CL_DEVICE_EXTENSIONS = 0x1001, 0x102B, 0x1030
CL_DEVICE_PCI_BUS_INFO_KHR = 0x410F
CL_DEVICE_IP_VERSION_INTEL, CL_DEVICE_ID_INTEL = 0x4250, 0x4251
# Level Zero (ze_api.h).
ZE_RESULT_SUCCESS, ZE_INIT_FLAG_GPU_ONLY, ZE_DEVICE_TYPE_GPU = 0, 1, 1
ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES, ZE_STRUCTURE_TYPE_DEVICE_IP_VERSION_EXT = 0x3, 0x1000F

SOURCES = {"opencl": "OpenCL CL_DEVICE_IP_VERSION_INTEL", "level-zero": "Level Zero ze_device_ip_version_ext_t",
           "pci": "PCI device/revision ID and the device database"}


@dataclass(frozen=True)
class Gpu:
    slot: str  # PCI address (Linux), PNP device ID (Windows), or "opencl:N" when only a driver saw it
    pci_id: str  # device part, upper-case hex, e.g. "56A0"; "" when only a driver saw it without one
    revision: int | None
    name: str = ""
    generation: str | None = None
    candidates: tuple[str, ...] = ()
    rule: str = ""
    source: str = "pci"  # which source gave the generation: opencl | level-zero | pci
    ip_version: str | None = None  # what the driver reported, when one did

    def to_json(self) -> dict:
        return {"slot": self.slot, "pci_id": self.pci_id, "revision": self.revision, "name": self.name,
                "generation": self.generation, "candidates": list(self.candidates), "rule": self.rule,
                "source": self.source, "ip_version": self.ip_version}


@dataclass(frozen=True)
class DriverGpu:
    """One Intel GPU as a driver API reports it."""

    api: str  # "opencl" | "level-zero"
    device_id: int | None
    ip_version: str | None
    name: str = ""
    pci_slot: str | None = None  # "0000:03:00.0", where the driver tells it


@dataclass
class DriverReport:
    gpus: list[DriverGpu] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # api -> what it said (count, or why not)


# --- PCI: sysfs and PowerShell -------------------------------------------------------------

def _read_hex(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip(), 16)
    except (OSError, ValueError):
        return None


def gpus_from_sysfs(root: Path = Path("/sys")) -> list[Gpu]:
    """Intel display controllers (PCI class 0x03xxxx) under ROOT/bus/pci/devices."""
    found = []
    devices = root / "bus" / "pci" / "devices"
    try:
        entries = sorted(devices.iterdir())
    except OSError:
        return []
    for dev in entries:
        vendor, klass = _read_hex(dev / "vendor"), _read_hex(dev / "class")
        if vendor != int(INTEL_VENDOR, 16) or klass is None or klass >> 16 != 0x03:
            continue
        device = _read_hex(dev / "device")
        if device is None:
            continue
        found.append(Gpu(dev.name, f"{device:04X}", _read_hex(dev / "revision")))
    return found


def _format_list_records(text: str) -> list[dict[str, str]]:
    """The objects in PowerShell's ``Format-List`` output: blank lines part them, and a value longer than the
    console is wide goes on over lines that start with spaces (the PNP device ID too, on an 80-column console)."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line:
            if current:
                records.append(current)
            current, last = {}, ""
            continue
        if line[0].isspace() and last:
            current[last] += line.strip()
            continue
        m = _LIST_LINE.fullmatch(line)
        if not m:
            raise DeviceError(f"PowerShell's Win32_VideoController output is not Format-List 'Name : value' lines "
                              f"(line {number}: {line[:80]!r}); run the query by hand to see why")
        last = m.group(1)
        if last in current:  # the next object, with no blank line between (never seen, but not ours to merge)
            records.append(current)
            current = {}
        current[last] = (m.group(2) or "").strip()
    if current:
        records.append(current)
    return records


def parse_powershell(text: str) -> list[Gpu]:
    """Intel GPUs in the ``Format-List`` output of :data:`POWERSHELL_QUERY` (``DEV_xxxx``/``REV_xx`` of the PNP ID)."""
    found = []
    for item in _format_list_records(text):
        pnp = item.get("PNPDeviceID", "")
        m = _PNP_RE.search(pnp.upper())
        if not pnp.upper().startswith("PCI\\") or not m or m.group(1) != INTEL_VENDOR:
            continue
        found.append(Gpu(pnp, m.group(2).upper(), int(m.group(3), 16) if m.group(3) else None, item.get("Name", "")))
    return found


def gpus_from_powershell(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[Gpu]:
    exe = shutil.which("powershell") or shutil.which("pwsh")
    if not exe:
        raise DeviceError("PowerShell not found; give the generation with --generation")
    proc = run([exe, "-NoProfile", "-NonInteractive", "-Command", POWERSHELL_QUERY],
               # errors="replace": PowerShell writes the console's OEM code page, Python reads the ANSI one;
               # a name that differs must not cost the PCI IDs (ASCII in either).
               capture_output=True, text=True, errors="replace", timeout=60, check=False)
    if proc.returncode != 0:
        raise DeviceError(f"PowerShell Get-CimInstance Win32_VideoController failed: {proc.stderr.strip()[:200]}")
    return parse_powershell(proc.stdout)


def list_gpus(*, sysfs_root: Path | None = None, platform: str | None = None) -> list[Gpu]:
    """The Intel display controllers on the PCI bus (no driver asked)."""
    platform = platform or sys.platform
    if platform == "win32":
        return gpus_from_powershell()
    return gpus_from_sysfs(sysfs_root or Path("/sys"))


# --- drivers: OpenCL and Level Zero through ctypes ----------------------------------------

def _ip(value: int) -> str:
    return str(Generation.from_ip_version(value))


def _load(names: Sequence[str]) -> ctypes.CDLL | None:
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _libraries(table: Mapping[str, tuple[str, ...]], library: str | None) -> Sequence[str]:
    return (library,) if library else table.get("win32" if sys.platform == "win32" else "linux", ())


def _cl_info(lib: ctypes.CDLL, device: int | None, param: int) -> bytes | None:
    size = ctypes.c_size_t()
    if lib.clGetDeviceInfo(device, param, 0, None, ctypes.byref(size)) != CL_SUCCESS or not size.value:
        return None
    buf = ctypes.create_string_buffer(size.value)
    if lib.clGetDeviceInfo(device, param, size.value, buf, None) != CL_SUCCESS:
        return None
    return buf.raw[: size.value]


def opencl_gpus(library: str | None = None) -> tuple[list[DriverGpu], str]:
    """Intel GPU devices of every OpenCL platform; (devices, a note saying what the loader answered)."""
    lib = _load(_libraries(OPENCL_LIBRARIES, library))
    if lib is None:
        return [], "no OpenCL ICD loader (libOpenCL.so.1 / OpenCL.dll)"
    lib.clGetPlatformIDs.argtypes = [ctypes.c_uint32, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_uint32)]
    lib.clGetDeviceIDs.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.POINTER(ctypes.c_void_p),
                                   ctypes.POINTER(ctypes.c_uint32)]
    lib.clGetDeviceInfo.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_size_t)]
    for fn in (lib.clGetPlatformIDs, lib.clGetDeviceIDs, lib.clGetDeviceInfo):
        fn.restype = ctypes.c_int32
    n = ctypes.c_uint32()
    rc = lib.clGetPlatformIDs(0, None, ctypes.byref(n))
    if rc == CL_PLATFORM_NOT_FOUND_KHR or (rc == CL_SUCCESS and n.value == 0):
        return [], "no OpenCL platform (no ICD registered, or none has a device)"
    if rc != CL_SUCCESS:
        return [], f"clGetPlatformIDs failed ({rc})"
    platforms = (ctypes.c_void_p * n.value)()
    lib.clGetPlatformIDs(n.value, platforms, None)
    found: list[DriverGpu] = []
    for platform in platforms:
        count = ctypes.c_uint32()
        if lib.clGetDeviceIDs(platform, CL_DEVICE_TYPE_GPU, 0, None, ctypes.byref(count)) != CL_SUCCESS:
            continue  # CL_DEVICE_NOT_FOUND: a platform without GPUs
        devices = (ctypes.c_void_p * count.value)()
        lib.clGetDeviceIDs(platform, CL_DEVICE_TYPE_GPU, count.value, devices, None)
        for device in devices:
            vendor = _cl_info(lib, device, CL_DEVICE_VENDOR_ID)
            if not vendor or int.from_bytes(vendor[:4], "little") != int(INTEL_VENDOR, 16):
                continue
            extensions = (_cl_info(lib, device, CL_DEVICE_EXTENSIONS) or b"").rstrip(b"\0").decode(errors="replace").split()
            name = (_cl_info(lib, device, CL_DEVICE_NAME) or b"").rstrip(b"\0").decode(errors="replace")
            ip: str | None = None
            dev_id: int | None = None
            slot: str | None = None
            if "cl_intel_device_attribute_query" in extensions:
                raw = _cl_info(lib, device, CL_DEVICE_IP_VERSION_INTEL)
                ip = _ip(int.from_bytes(raw[:4], "little")) if raw and any(raw[:4]) else None
                raw = _cl_info(lib, device, CL_DEVICE_ID_INTEL)
                dev_id = int.from_bytes(raw[:4], "little") if raw else None
            if "cl_khr_pci_bus_info" in extensions:
                raw = _cl_info(lib, device, CL_DEVICE_PCI_BUS_INFO_KHR)
                if raw and len(raw) >= 16:
                    domain, bus, dev, func = (int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4))
                    slot = f"{domain:04x}:{bus:02x}:{dev:02x}.{func:x}"
            found.append(DriverGpu("opencl", dev_id, ip, name, slot))
    return found, f"{len(found)} Intel GPU device(s)"


class _ZeDeviceProperties(ctypes.Structure):
    _fields_ = [("stype", ctypes.c_uint32), ("pNext", ctypes.c_void_p), ("type", ctypes.c_uint32),
                ("vendorId", ctypes.c_uint32), ("deviceId", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("subdeviceId", ctypes.c_uint32), ("coreClockRate", ctypes.c_uint32),
                ("maxMemAllocSize", ctypes.c_uint64), ("maxHardwareContexts", ctypes.c_uint32),
                ("maxCommandQueuePriority", ctypes.c_uint32), ("numThreadsPerEU", ctypes.c_uint32),
                ("physicalEUSimdWidth", ctypes.c_uint32), ("numEUsPerSubslice", ctypes.c_uint32),
                ("numSubslicesPerSlice", ctypes.c_uint32), ("numSlices", ctypes.c_uint32),
                ("timerResolution", ctypes.c_uint64), ("timestampValidBits", ctypes.c_uint32),
                ("kernelTimestampValidBits", ctypes.c_uint32), ("uuid", ctypes.c_uint8 * 16),
                ("name", ctypes.c_char * 256)]


class _ZeIpVersion(ctypes.Structure):
    _fields_ = [("stype", ctypes.c_uint32), ("pNext", ctypes.c_void_p), ("ipVersion", ctypes.c_uint32)]


def level_zero_gpus(library: str | None = None) -> tuple[list[DriverGpu], str]:
    """Intel GPU devices of every Level Zero driver; (devices, a note saying what the loader answered)."""
    lib = _load(_libraries(LEVEL_ZERO_LIBRARIES, library))
    if lib is None:
        return [], "no Level Zero loader (libze_loader.so.1 / ze_loader.dll)"
    for fn in (lib.zeInit, lib.zeDriverGet, lib.zeDeviceGet, lib.zeDeviceGetProperties):
        fn.restype = ctypes.c_uint32
    lib.zeInit.argtypes = [ctypes.c_uint32]
    lib.zeDriverGet.argtypes = [ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_void_p)]
    lib.zeDeviceGet.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_void_p)]
    lib.zeDeviceGetProperties.argtypes = [ctypes.c_void_p, ctypes.POINTER(_ZeDeviceProperties)]
    rc = lib.zeInit(ZE_INIT_FLAG_GPU_ONLY)
    if rc != ZE_RESULT_SUCCESS:
        return [], f"zeInit found no GPU driver (0x{rc:x})"
    n = ctypes.c_uint32()
    if lib.zeDriverGet(ctypes.byref(n), None) != ZE_RESULT_SUCCESS or not n.value:
        return [], "no Level Zero driver"
    drivers = (ctypes.c_void_p * n.value)()
    lib.zeDriverGet(ctypes.byref(n), drivers)
    found: list[DriverGpu] = []
    for driver in drivers:
        count = ctypes.c_uint32()
        if lib.zeDeviceGet(driver, ctypes.byref(count), None) != ZE_RESULT_SUCCESS or not count.value:
            continue
        devices = (ctypes.c_void_p * count.value)()
        lib.zeDeviceGet(driver, ctypes.byref(count), devices)
        for device in devices:
            ipv = _ZeIpVersion(ZE_STRUCTURE_TYPE_DEVICE_IP_VERSION_EXT, None, 0)
            props = _ZeDeviceProperties(stype=ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES,
                                        pNext=ctypes.cast(ctypes.pointer(ipv), ctypes.c_void_p))
            if lib.zeDeviceGetProperties(device, ctypes.byref(props)) != ZE_RESULT_SUCCESS:
                continue
            if props.type != ZE_DEVICE_TYPE_GPU or props.vendorId != int(INTEL_VENDOR, 16):
                continue
            found.append(DriverGpu("level-zero", props.deviceId, _ip(ipv.ipVersion) if ipv.ipVersion else None,
                                   props.name.decode(errors="replace")))
    return found, f"{len(found)} Intel GPU device(s)"


def _probe_here() -> DriverReport:
    report = DriverReport()
    for api, probe in (("opencl", opencl_gpus), ("level-zero", level_zero_gpus)):
        try:
            gpus, note = probe()
        except (OSError, AttributeError, ValueError) as e:  # a loader without the entry points, a broken driver
            gpus, note = [], f"failed: {e}"
        report.gpus += gpus
        report.notes[api] = note
    return report


def driver_gpus(timeout: float = DRIVER_TIMEOUT) -> DriverReport:
    """Ask OpenCL and Level Zero in a child process (a crashing or hanging driver cannot take us down)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "ipex_aot.gpus"], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return DriverReport(notes={"drivers": f"asking the GPU drivers hung for {timeout:.0f} s"})
    m = re.search(r"^IPEX_AOT_DRIVERS=(.*)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not m:
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        return DriverReport(notes={"drivers": f"asking the GPU drivers crashed ({why})"})
    data = json.loads(m.group(1))
    return DriverReport([DriverGpu(**g) for g in data["gpus"]], dict(data["notes"]))


# --- putting it together -------------------------------------------------------------------

def _merge(pci: list[Gpu], report: DriverReport) -> list[Gpu]:
    """PCI GPUs with the IP version a driver reported for them, plus GPUs only a driver saw.

    A driver device belongs to a PCI GPU by PCI address when the driver tells it,
    else by device ID when that ID is on the bus once.
    """
    out: list[Gpu] = []
    used: set[int] = set()
    reported = [(n, d) for n, d in enumerate(report.gpus) if d.ip_version]
    for gpu in pci:
        match = [n for n, d in reported if d.pci_slot and d.pci_slot.lower() == gpu.slot.lower()]
        if not match and sum(g.pci_id == gpu.pci_id for g in pci) == 1:
            match = [n for n, d in reported if not d.pci_slot and d.device_id is not None
                     and f"{d.device_id:04X}" == gpu.pci_id]
        # OpenCL first, then Level Zero: the order the drivers were asked in.
        hit = next((n for n in match if n not in used), None)
        if hit is None:
            out.append(gpu)
            continue
        used.update(n for n in match if report.gpus[n].ip_version == report.gpus[hit].ip_version)
        d = report.gpus[hit]
        out.append(replace(gpu, name=gpu.name or d.name, generation=d.ip_version, candidates=(str(d.ip_version),),
                           rule=f"reported by the driver ({SOURCES[d.api]})", source=d.api, ip_version=d.ip_version))
    seen: set[tuple[str, str]] = set()
    on_bus = {g.pci_id for g in pci}
    for n, d in reported:
        if n in used:
            continue
        key = (f"{d.device_id:04X}" if d.device_id is not None else "", str(d.ip_version))
        # The same GPU through both APIs, or one of several same-ID GPUs that cannot be told apart.
        if key in seen or key[0] in on_bus:
            continue
        seen.add(key)
        out.append(Gpu(d.pci_slot or f"{d.api}:{len(seen) - 1}", key[0], None, d.name, d.ip_version,
                       (str(d.ip_version),), f"reported by the driver ({SOURCES[d.api]})", d.api, d.ip_version))
    return out


def identify(gpus: Sequence[Gpu], db: Any) -> list[Gpu]:
    """GPUs the drivers did not answer for get their generation from the device database (``lookup``)."""
    out = []
    for gpu in gpus:
        if gpu.source != "pci" or not gpu.pci_id:
            out.append(gpu)
            continue
        try:
            hit = db.lookup(gpu.pci_id, gpu.revision)
        except DeviceError as e:
            out.append(replace(gpu, generation=None, candidates=(), rule=e.message))
            continue
        name = gpu.name or ", ".join(getattr(hit.row, "names", ())) or ""
        out.append(replace(gpu, name=name, generation=hit.generation, candidates=tuple(hit.candidates),
                           rule=hit.rule))
    return out


@dataclass
class Detection:
    gpus: list[Gpu]
    drivers: dict[str, str]  # api -> what it answered
    database_note: str | None = None  # why the device database was not used, when it was needed and failed

    def to_json(self) -> dict:
        return {"gpus": [g.to_json() for g in self.gpus], "drivers": self.drivers,
                "database": (self.database_note or "used") if any(g.source == "pci" for g in self.gpus) else "not needed"}


def detect_gpus(settings: Settings, *, sysfs_root: Path | None = None, platform: str | None = None, db: Any = None,
                drivers: DriverReport | bool = True) -> Detection:
    """Every Intel GPU with its exact generation: drivers first, then the device database.

    ``drivers``: True asks the installed OpenCL/Level Zero loaders, False skips them
    (tests of the PCI path), or a :class:`DriverReport` already made.
    """
    report = drivers if isinstance(drivers, DriverReport) else (driver_gpus() if drivers else
                                                                DriverReport(notes={"drivers": "not asked"}))
    gpus = _merge(list_gpus(sysfs_root=sysfs_root, platform=platform), report)
    note = None
    if any(g.source == "pci" and g.pci_id for g in gpus):
        if db is None:
            try:
                db = _database_for([g for g in gpus if g.source == "pci"], settings)
            except IpexAotError as e:
                note = e.message
        if db is not None:
            gpus = identify(gpus, db)
    return Detection(gpus, dict(report.notes), note)


def detect(settings: Settings, *, sysfs_root: Path | None = None, platform: str | None = None,
           db: Any = None, drivers: DriverReport | bool = True) -> tuple[list[Gpu], str | None]:
    """(GPUs with generations, why the database was not used or None): :func:`detect_gpus` for ``install``."""
    found = detect_gpus(settings, sysfs_root=sysfs_root, platform=platform, db=db, drivers=drivers)
    return found.gpus, found.database_note


def _database_for(gpus: Sequence[Gpu], settings: Settings) -> Any:
    """The cached full database when there is one; else a sweep of just these PCI IDs (seconds, not minutes)."""
    from ipex_aot import devices

    ocloc = find_ocloc(settings)
    pci_path = devices.pci_ids_file()
    if devices.cache_path(settings, ocloc, pci_path).is_file():
        return devices.load_database(settings, ocloc=ocloc)
    return devices.build_database(ocloc, ids=sorted({int(g.pci_id, 16) for g in gpus}), jobs=settings.jobs,
                                  pci_path=pci_path)


# --- command line --------------------------------------------------------------------------

def _pci_where() -> str:
    """Where the PCI listing comes from on this host, in words a user can check by hand."""
    if sys.platform == "win32":
        return "PowerShell's Get-CimInstance Win32_VideoController"
    return "/sys/bus/pci/devices"


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    d = sub.add_parser("detect", help="this machine's Intel GPUs and their exact generations (driver first)",
                       description="Ask the GPU drivers (OpenCL, Level Zero) for each Intel GPU's IP version, "
                                   "then the device database for the PCI device and revision IDs. Exit 0: every "
                                   "GPU has an exact generation; 1: no Intel GPU; 5: a GPU whose generation "
                                   "cannot be decided (its candidates and the rule are printed). --json "
                                   "prints the same answer as JSON with the same exit code (no GPU: "
                                   "\"gpus\": [] and exit 1).")
    d.add_argument("--json", action="store_true", help="print JSON on stdout")
    d.set_defaults(func=_cmd_detect)


def _cmd_detect(args, settings: Settings) -> int:  # noqa: ANN001

    found = detect_gpus(settings)
    drivers = "; ".join(f"{api}: {note}" for api, note in found.drivers.items())
    log.info(f"drivers asked: {drivers}")
    if found.database_note:
        log.warn(f"device database not available ({found.database_note}); generations from PCI IDs not shown")
    undecided = [g for g in found.gpus if not g.generation]
    code = 1 if not found.gpus else (DeviceError.exit_code if undecided else 0)
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
        return code
    if not found.gpus:
        log.info(f"no Intel GPU found: the drivers listed none, and {_pci_where()} shows no Intel display "
                 "controller (vendor 8086, class 03xxxx). With an Intel GPU here, install its graphics driver "
                 "(Windows: 31.0.101.4953 or newer; Linux: intel-opencl-icd or Intel's compute runtime) and run "
                 "detect again; to install without detection, give the folder: ipex-aot install ARCHIVE.7z "
                 "--generation 12.55.8 (exit code 1)")
        return code
    for g in found.gpus:
        rev = f"rev {g.revision:02X}" if g.revision is not None else "rev ?"
        gen = g.generation or (f"one of {', '.join(g.candidates)}" if g.candidates else "unknown")
        print(f"{g.slot}  {g.pci_id or '????'} {rev}  generation {gen}  [{g.source}]  {g.name}".rstrip())
        if g.rule:
            print(f"    {g.rule}")
    return code


if __name__ == "__main__":
    # The child process of driver_gpus(): one JSON line, so that a driver's own prints cannot confuse the parent.
    _report = _probe_here()
    sys.stdout.write("\nIPEX_AOT_DRIVERS=" + json.dumps({"gpus": [asdict(g) for g in _report.gpus],
                                                         "notes": _report.notes}) + "\n")
