"""A fake Intel GPU for the driver path of ``detect``: an OpenCL ICD and a Level Zero loader written in C.

No Intel GPU and no Intel driver stack exist on the test machines, so these
are the one place a fake stands in (the real ICD loader, Debian's ocl-icd,
still does the loading). Reusable by any test (``detect``, the variant
provider plugin): import this module from a test or use the fixtures in
``tests/conftest.py``.

API
---
``build_fake_icd(dest) -> Path``
    ``gcc -shared`` of :data:`FAKE_ICD_C` into ``DEST/libfakeicd.so``: an
    OpenCL ICD (``cl_khr_icd``: ``clIcdGetPlatformIDsKHR`` and a dispatch table
    in every object) with one platform whose GPU devices come from the
    environment variable ``FAKE_GPUS`` at load time.
``build_fake_level_zero(dest) -> Path``
    ``DEST/libfakeze.so``: ``zeInit``/``zeDriverGet``/``zeDeviceGet``/
    ``zeDeviceGetProperties`` (with ``ze_device_ip_version_ext_t`` in
    ``pNext``) answering from the same ``FAKE_GPUS``. Loaded by path (it
    replaces the Level Zero loader, not a driver behind it).
``icd_env(icd, gpus, *, vendors_dir) -> dict``
    The environment that makes the ICD loader load only ICD: ``OCL_ICD_VENDORS``
    = VENDORS_DIR holding one ``.icd`` file that names ICD (so
    ``/etc/OpenCL/vendors`` is not read), ``OCL_ICD_FILENAMES`` = ICD (the
    Khronos loader's variable), ``FAKE_GPUS`` = GPUS. ``icd=None`` registers
    no ICD at all (VENDORS_DIR is emptied).
``gpu_spec(*gpus) -> str``
    ``FAKE_GPUS`` from ``(device_id, ip_version or None, pci_slot or None[, vendor])``
    tuples. ``ip_version=None`` is a driver without ``cl_intel_device_attribute_query``.

``FAKE_ICD_CRASH=1`` makes the ICD abort when the loader asks it for its platforms.

``FAKE_GPUS`` format: ``VENDOR/DEVICE/IP/SLOT`` entries joined by ``,``
(hex vendor and device, ``IP`` as ``12.71.4`` or ``-``, ``SLOT`` as
``0000:03:00.0`` or ``-``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

FAKE_ICD_C = r"""
/* A minimal OpenCL ICD: one platform, GPU devices from $FAKE_GPUS. The ICD loader calls
   clGetExtensionFunctionAddress("clIcdGetPlatformIDsKHR"), then every call on a platform or
   device goes through the dispatch table that is the first member of the object
   (cl_khr_icd: clGetPlatformIDs=0, clGetPlatformInfo=1, clGetDeviceIDs=2, clGetDeviceInfo=3). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t cl_int;
typedef uint32_t cl_uint;
typedef void *fn_t;
struct obj { fn_t *dispatch; int index; };

#define MAXDEV 8
static fn_t table[256];
static struct obj platform = { table, -1 };
static struct obj devices[MAXDEV];
static unsigned vendor[MAXDEV], device_id[MAXDEV], ipv[MAXDEV], has_ip[MAXDEV], has_slot[MAXDEV];
static unsigned slot[MAXDEV][4];
static int ndev = -1;

static void load(void) {
    if (ndev >= 0) return;
    ndev = 0;
    const char *env = getenv("FAKE_GPUS");
    if (!env) return;
    char buf[1024];
    strncpy(buf, env, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (char *tok = strtok(buf, ","); tok && ndev < MAXDEV; tok = strtok(NULL, ",")) {
        char ip[32] = "-", sl[32] = "-";
        unsigned a = 0, b = 0, c = 0;
        if (sscanf(tok, "%x/%x/%31[^/]/%31s", &vendor[ndev], &device_id[ndev], ip, sl) < 2) continue;
        has_ip[ndev] = sscanf(ip, "%u.%u.%u", &a, &b, &c) == 3;
        ipv[ndev] = (a << 22) | (b << 14) | c;   /* HardwareIpVersion: arch:10 release:8 reserved:8 revision:6 */
        has_slot[ndev] = sscanf(sl, "%x:%x:%x.%x", &slot[ndev][0], &slot[ndev][1], &slot[ndev][2], &slot[ndev][3]) == 4;
        devices[ndev].dispatch = table;
        devices[ndev].index = ndev;
        ndev++;
    }
}

static cl_int answer(const void *v, size_t n, size_t size, void *out, size_t *ret) {
    if (ret) *ret = n;
    if (out) { if (size < n) return -30; memcpy(out, v, n); }
    return 0;
}

static cl_int GetPlatformInfo(void *p, cl_uint name, size_t size, void *out, size_t *ret) {
    const char *s;
    switch (name) {
    case 0x0900: s = "FULL_PROFILE"; break;
    case 0x0901: s = "OpenCL 3.0 fake"; break;
    case 0x0902: s = "ipex-aot fake ICD"; break;
    case 0x0903: s = "ipex-aot tests"; break;
    case 0x0904: s = "cl_khr_icd"; break;
    case 0x0920: s = "FAKE"; break;
    default: return -30;
    }
    return answer(s, strlen(s) + 1, size, out, ret);
}

static cl_int GetDeviceIDs(void *p, uint64_t type, cl_uint n, void **out, cl_uint *count) {
    load();
    if (!(type & (1 << 2)) || ndev == 0) { if (count) *count = 0; return -1; /* CL_DEVICE_NOT_FOUND */ }
    if (count) *count = ndev;
    for (cl_uint i = 0; out && i < n && i < (cl_uint)ndev; i++) out[i] = &devices[i];
    return 0;
}

static cl_int GetDeviceInfo(void *d, cl_uint name, size_t size, void *out, size_t *ret) {
    int i = ((struct obj *)d)->index;
    char text[256];
    uint64_t type = 1 << 2;
    switch (name) {
    case 0x1000: return answer(&type, 8, size, out, ret);
    case 0x1001: return answer(&vendor[i], 4, size, out, ret);
    case 0x102B: snprintf(text, sizeof text, "Fake GPU %04x", device_id[i]); return answer(text, strlen(text) + 1, size, out, ret);
    case 0x1030:
        snprintf(text, sizeof text, "cl_khr_fp16%s%s", has_ip[i] ? " cl_intel_device_attribute_query" : "",
                 has_slot[i] ? " cl_khr_pci_bus_info" : "");
        return answer(text, strlen(text) + 1, size, out, ret);
    case 0x4250: if (!has_ip[i]) return -30; return answer(&ipv[i], 4, size, out, ret);
    case 0x4251: if (!has_ip[i]) return -30; return answer(&device_id[i], 4, size, out, ret);
    case 0x410F: if (!has_slot[i]) return -30; return answer(slot[i], 16, size, out, ret);
    default: return -30; /* CL_INVALID_VALUE */
    }
}

cl_int clIcdGetPlatformIDsKHR(cl_uint n, void **out, cl_uint *count) {
    if (getenv("FAKE_ICD_CRASH")) abort();   /* a driver that dies on load */
    table[1] = (fn_t)GetPlatformInfo;
    table[2] = (fn_t)GetDeviceIDs;
    table[3] = (fn_t)GetDeviceInfo;
    if (count) *count = 1;
    if (out && n) out[0] = &platform;
    return 0;
}

cl_int clGetPlatformInfo(void *p, cl_uint name, size_t size, void *out, size_t *ret) {
    return GetPlatformInfo(p, name, size, out, ret);
}

void *clGetExtensionFunctionAddress(const char *name) {
    if (!strcmp(name, "clIcdGetPlatformIDsKHR")) return (void *)clIcdGetPlatformIDsKHR;
    return NULL;
}
"""

FAKE_LEVEL_ZERO_C = r"""
/* zeInit/zeDriverGet/zeDeviceGet/zeDeviceGetProperties answering from $FAKE_GPUS (ze_api.h layouts). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint32_t stype; void *pNext; uint32_t ipVersion; } ip_ext_t;
typedef struct {
    uint32_t stype; void *pNext; uint32_t type, vendorId, deviceId, flags, subdeviceId, coreClockRate;
    uint64_t maxMemAllocSize; uint32_t maxHardwareContexts, maxCommandQueuePriority, numThreadsPerEU,
    physicalEUSimdWidth, numEUsPerSubslice, numSubslicesPerSlice, numSlices; uint64_t timerResolution;
    uint32_t timestampValidBits, kernelTimestampValidBits; uint8_t uuid[16]; char name[256];
} props_t;

static int ndev = -1;
static unsigned vendor[8], device_id[8], ipv[8];
static int idx[8];
static int driver;

uint32_t zeInit(uint32_t flags) {
    ndev = 0;
    const char *env = getenv("FAKE_GPUS");
    if (!env) return 0;
    char buf[1024];
    strncpy(buf, env, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (char *tok = strtok(buf, ","); tok && ndev < 8; tok = strtok(NULL, ",")) {
        char ip[32] = "-";
        unsigned a = 0, b = 0, c = 0;
        if (sscanf(tok, "%x/%x/%31[^/]", &vendor[ndev], &device_id[ndev], ip) < 2) continue;
        ipv[ndev] = sscanf(ip, "%u.%u.%u", &a, &b, &c) == 3 ? (a << 22) | (b << 14) | c : 0;
        idx[ndev] = ndev;
        ndev++;
    }
    return 0;
}

uint32_t zeDriverGet(uint32_t *count, void **drivers) {
    if (ndev < 0) return 0x78000001; /* ZE_RESULT_ERROR_UNINITIALIZED */
    if (drivers && *count) drivers[0] = &driver;
    *count = 1;
    return 0;
}

uint32_t zeDeviceGet(void *drv, uint32_t *count, void **devices) {
    if (devices) for (uint32_t i = 0; i < *count && i < (uint32_t)ndev; i++) devices[i] = &idx[i];
    *count = ndev;
    return 0;
}

uint32_t zeDeviceGetProperties(void *dev, props_t *p) {
    int i = *(int *)dev;
    p->type = 1; p->vendorId = vendor[i]; p->deviceId = device_id[i];
    snprintf(p->name, sizeof p->name, "Fake GPU %04x", device_id[i]);
    for (ip_ext_t *e = p->pNext; e; e = e->pNext)
        if (e->stype == 0x1000F) e->ipVersion = ipv[i];
    return 0;
}
"""


def _build(source: str, dest: Path, name: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    src = dest / f"{name}.c"
    src.write_text(source)
    lib = dest / f"lib{name}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-o", str(lib), str(src)], check=True,
                   capture_output=True, text=True)
    return lib


def build_fake_icd(dest: Path) -> Path:
    return _build(FAKE_ICD_C, Path(dest), "fakeicd")


def build_fake_level_zero(dest: Path) -> Path:
    return _build(FAKE_LEVEL_ZERO_C, Path(dest), "fakeze")


def gpu_spec(*gpus: tuple) -> str:
    parts = []
    for gpu in gpus:
        device, ip, slot = gpu[:3]
        vendor = gpu[3] if len(gpu) > 3 else 0x8086
        parts.append(f"{vendor:x}/{device:x}/{ip or '-'}/{slot or '-'}")
    return ",".join(parts)


def icd_env(icd: Path | None, gpus: str, *, vendors_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    vendors_dir.mkdir(parents=True, exist_ok=True)
    for old in vendors_dir.glob("*.icd"):
        old.unlink()
    # Debian's ocl-icd 2.3.1 reads OCL_ICD_VENDORS (a folder of .icd files naming libraries) but not
    # OCL_ICD_FILENAMES; the Khronos loader reads both. An empty folder keeps /etc/OpenCL/vendors out.
    env["OCL_ICD_VENDORS"] = str(vendors_dir)
    env["FAKE_GPUS"] = gpus
    env.pop("OCL_ICD_FILENAMES", None)
    if icd is not None:
        (vendors_dir / "ipex-aot-fake.icd").write_text(f"{icd}\n")
        env["OCL_ICD_FILENAMES"] = str(icd)
    return env
