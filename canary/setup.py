"""setuptools build of the canary: a plain package plus its GPU library.

The build reads what a real IPEX build reads: ``USE_AOT_DEVLIST`` (the device
list) and ``OCLOC``; ``CANARY_BUILD_DIR`` names the persistent build tree
(default ``build/`` here, as IPEX keeps its own ``build/``). All of
setuptools' own scratch goes there too, so the source folder stays clean.
"""

import os
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import canary_build  # noqa: E402

BUILD_DIR = Path(os.environ.get("CANARY_BUILD_DIR") or HERE / "build").resolve()
BUILD_DIR.mkdir(parents=True, exist_ok=True)


class BinaryDistribution(Distribution):
    """The wheel carries a native library, so it is platform-specific."""

    def has_ext_modules(self):
        return True


class BuildPyWithGpuLibrary(build_py):
    def run(self):
        super().run()
        destination = Path(self.build_lib) / "ipex_aot_canary" / "lib" / canary_build.library_name()
        canary_build.build_library(BUILD_DIR, os.environ.get("USE_AOT_DEVLIST", ""), destination)


setup(
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithGpuLibrary},
    options={
        "build": {"build_base": str(BUILD_DIR / "setuptools")},
        "egg_info": {"egg_base": str(BUILD_DIR)},
    },
)
