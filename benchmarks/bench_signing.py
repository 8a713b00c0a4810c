"""What a pinned key costs before install: the signature check against hashing the archive alone.

    .venv/bin/python benchmarks/bench_signing.py [--size-mb 320] [--repeat 3]

A file of random bytes the size of an established release (about 320 MB) is
written to a temporary folder and read warm (page cache) by every variant:

* sha256 alone (what the manifest check costs for one library of that size);
* BLAKE2b-512 alone (hashlib's), what a prehashed signature covers;
* BLAKE2b-512 + sha256 in one read, sha256 in a second thread (signing.file_digests);
* check_archive under a pinned key (BLAKE2b + two Ed25519 verifications), and with --sha256 too;
* sign_file (digests + two Ed25519 signatures);
* Debian's ``minisign -V`` on the same file, for comparison with the reference tool.

Each figure is the best of --repeat runs; ratios are to sha256 alone, all measured in this
one run. The load average is printed before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ipex_aot import signing  # noqa: E402
from ipex_aot.fsutil import sha256_file  # noqa: E402


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=320)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-signing-") as tmp:
        path = Path(tmp) / "release-AOT.7z"
        with open(path, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1 << 20))
        key = signing.SecretKey.generate()
        sig = signing.sign_file(path, key)
        signing.write_signature(path.with_name(path.name + ".minisig"), sig)
        trust = signing.Trust(key.public_key())
        both = signing.Trust(key.public_key(), sha256_file(path))  # also warms the page cache
        rows: list[tuple[str, float]] = [
            ("sha256 alone", best(lambda: sha256_file(path), args.repeat)),
            ("BLAKE2b-512 alone", best(lambda: signing.file_digests(path, sha256=False), args.repeat)),
            ("BLAKE2b-512 + sha256, one read", best(lambda: signing.file_digests(path), args.repeat)),
            ("check_archive, pinned key", best(lambda: signing.check_archive(path, trust), args.repeat)),
            ("check_archive, key + --sha256", best(lambda: signing.check_archive(path, both), args.repeat)),
            ("sign_file", best(lambda: signing.sign_file(path, key), args.repeat)),
        ]
        minisign = shutil.which("minisign")
        if minisign:
            cmd = [minisign, "-Vq", "-m", str(path), "-P", key.public_key().to_base64()]
            rows.append(("minisign -V (Debian)", best(lambda: subprocess.run(cmd, check=True), args.repeat)))
        base = rows[0][1]
        print(f"{args.size_mb} MB, best of {args.repeat}, warm cache")
        print(f"{'variant':<34} {'seconds':>8} {'MB/s':>8} {'x sha256':>9}")
        for name, seconds in rows:
            print(f"{name:<34} {seconds:8.3f} {args.size_mb / seconds:8.0f} {seconds / base:9.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
