"""Build benchmarks on the canary: full release, one rebuild, no-op rerun, reuse vs clean.

    .venv/bin/python benchmarks/bench_build.py [--generations N] [--skip-release]

Everything runs through the real CLI (``python -m ipex_aot``) in a temporary
dist folder, with the device database cached in a temporary cache folder that
the first step fills (or IPEX_AOT_CACHE when set, to reuse a warm one).
Figures are measured in this one run; the machine's load average is printed
before and after, since it may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CANARY = REPO / "recipes" / "canary.yaml"


def run(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ipex_aot", *args], env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): ipex-aot {' '.join(args)}\n{proc.stderr[-3000:]}")
    return elapsed, proc


def env_for(dist: Path, cache: Path) -> dict[str, str]:
    return dict(os.environ, IPEX_AOT_DIST=str(dist), IPEX_AOT_CACHE=str(cache))


def subset_recipe(folder: Path, generations: list[str]) -> Path:
    """The canary recipe restricted to ``generations`` (same name, so same dist layout)."""
    data = yaml.safe_load(CANARY.read_text())
    devices = data["targets"].get("devices") or {}
    data["targets"] = {"generations": generations, "devices": {g: d for g, d in devices.items() if g in generations}}
    data["source"]["path"] = str(REPO / "canary")
    path = folder / "canary.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=6, help="N for reuse vs clean (default 6)")
    parser.add_argument("--skip-release", action="store_true", help="skip the full release (the slowest part)")
    opts = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared with other work)")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp_text:
        tmp = Path(tmp_text)
        cache = Path(os.environ["IPEX_AOT_CACHE"]) if os.environ.get("IPEX_AOT_CACHE") else tmp / "cache"
        dist = tmp / "dist"
        env = env_for(dist, cache)

        seconds, shown = run(["recipe", "show", str(CANARY), "--json"], env)
        generations = [t["generation"] for t in json.loads(shown.stdout)["targets"]]
        print(f"canary targets: {len(generations)} generations ({generations[0]} … {generations[-1]}); "
              f"device database {'swept' if 'device sweep' in shown.stderr else 'from cache'} in {seconds:.1f} s")

        if not opts.skip_release:
            seconds, proc = run(["release", str(CANARY)], env)
            print(f"full canary release (build {len(generations)} generations + verify + conformance + pack): "
                  f"{seconds:.1f} s (goal < 300 s)")
            steps = re.findall(r"^<== (preflight \S+|build \S+: \d+ generation\(s\)|verify folders|conformance|pack|"
                               r"verify archive)(?::[^\n]*)?: ok \(([\d.]+) s\)$", proc.stderr, re.MULTILINE)
            print("  steps: " + ", ".join(f"{name.split()[0]} {float(t):.1f} s" for name, t in steps))
        else:
            seconds, _ = run(["build", str(CANARY)], env)
            print(f"build of all {len(generations)} generations (reused tree): {seconds:.1f} s")

        one = "12.55.8" if "12.55.8" in generations else generations[0]
        seconds, _ = run(["build", str(CANARY), "--generation", one, "--force"], env)
        print(f"one generation rebuilt ({one}, warm tree): {seconds:.1f} s (goal < 30 s)")
        seconds, _ = run(["build", str(CANARY), "--generation", one, "--force", "--clean"], env)
        print(f"one generation rebuilt ({one}, clean tree): {seconds:.1f} s (goal < 30 s)")

        seconds, proc = run(["build", str(CANARY)], env)
        skipped = proc.stderr.count("unchanged since the last build")
        print(f"rerun with nothing changed: {seconds:.1f} s, {skipped}/{len(generations)} skipped (goal < 5 s)")

        n = min(opts.generations, len(generations))
        chosen = generations[:: max(1, len(generations) // n)][:n]
        recipe = subset_recipe(tmp, chosen)
        reuse_s, proc = run(["build", str(recipe)], env_for(tmp / "dist-reuse", cache))
        clean_s, _ = run(["build", str(recipe), "--clean"], env_for(tmp / "dist-clean", cache))
        records = [json.loads(p.read_text()) for p in sorted((tmp / "dist-reuse" / "canary").glob("*/build.json"))]
        first = max(records, key=lambda r: r["tree"]["objects_recompiled"])
        others = [r["duration_s"] for r in records if r is not first]
        print(f"{n} generations {chosen}: reused tree {reuse_s:.1f} s, clean tree per generation {clean_s:.1f} s, "
              f"ratio clean/reuse {clean_s / reuse_s:.2f}")
        print(f"  reused tree = one compile + {n} links: first generation {first['duration_s']:.2f} s "
              f"({first['tree']['objects_recompiled']} objects compiled), then "
              f"{sum(others) / max(1, len(others)):.2f} s per generation "
              f"({sum(r['tree']['objects_reused'] for r in records)} object reuses in all)")
        # The canary's own log lines split each build into its parts.
        logs = [(tmp / "dist-reuse" / "canary" / r["log"]).read_text() for r in records]
        once = sum(float(t) for text in logs for t in re.findall(r"canary: (?:spirv|host) \S+: compiled \(([\d.]+) s\)", text))
        per = [sum(float(t) for t in re.findall(r"canary: (?:device \S+ \[[^]]*\]: compiled|link \S+ \[[^]]*\]: linked) \(([\d.]+) s\)", text))
               for text in logs]
        print(f"  compile-once part (SPIR-V + host objects) {once:.2f} s in all; per generation: ocloc device step + "
              f"link {sum(per) / len(per):.2f} s; the rest of each build is pip/setuptools "
              f"({(sum(r['duration_s'] for r in records) - once - sum(per)) / len(records):.2f} s on average)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
