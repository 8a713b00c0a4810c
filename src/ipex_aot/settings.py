"""The one place that reads the environment.

Every option that may come from the environment is resolved here, once, into
a frozen :class:`Settings`; the rest of the package takes a ``Settings`` (or
the values in it) as an argument and never calls ``os.environ`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ipex_aot.errors import UsageError


@dataclass(frozen=True)
class Settings:
    #: Explicit ocloc executable (``OCLOC``), a wrapper script included.
    ocloc: str | None
    #: Root of all outputs (``IPEX_AOT_DIST``, default ``./dist``).
    dist_dir: Path
    #: Cache for the device database and source checkouts (``IPEX_AOT_CACHE``).
    cache_dir: Path
    #: Parallel jobs for sweeps, builds and packing (``MAX_JOBS``, default: all cores).
    jobs: int
    #: Explicit 7-Zip command line (``IPEX_AOT_7Z``); otherwise 7zz/7z on PATH is used when present.
    sevenzip: str | None
    #: oneAPI root (``ONEAPI_ROOT``), if the user has one.
    oneapi_root: Path | None
    #: True under GitHub Actions (``GITHUB_ACTIONS``).
    github_actions: bool
    #: File that GitHub Actions reads step outputs from (``GITHUB_OUTPUT``).
    github_output: Path | None
    #: The signing key's text, as a CI secret holds it (``IPEX_AOT_SIGN_KEY``).
    sign_key: str | None = None
    #: The signing key's file (``IPEX_AOT_SIGN_KEY_FILE``), when not given as text.
    sign_key_file: Path | None = None
    #: Password of an encrypted signing key (``IPEX_AOT_SIGN_PASSWORD``); asked on a terminal otherwise.
    sign_password: str | None = None
    #: Public key that archives must be signed with (``IPEX_AOT_TRUST_KEY``): its base64 line or a .pub file.
    trust_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        jobs_text = env.get("MAX_JOBS", "").strip()
        if jobs_text:
            try:
                jobs = int(jobs_text)
            except ValueError:
                raise UsageError(f"MAX_JOBS={jobs_text!r} is not a whole number; set it to e.g. MAX_JOBS=4") from None
            if jobs < 1:
                raise UsageError(f"MAX_JOBS={jobs} must be at least 1")
        else:
            jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cache_default = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ipex-aot"
        return cls(
            ocloc=env.get("OCLOC") or None,
            dist_dir=Path(env.get("IPEX_AOT_DIST") or "dist"),
            cache_dir=Path(env.get("IPEX_AOT_CACHE") or cache_default),
            jobs=jobs,
            sevenzip=env.get("IPEX_AOT_7Z") or None,
            oneapi_root=Path(env["ONEAPI_ROOT"]) if env.get("ONEAPI_ROOT") else None,
            github_actions=env.get("GITHUB_ACTIONS") == "true",
            github_output=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
            sign_key=env.get("IPEX_AOT_SIGN_KEY") or None,
            sign_key_file=Path(env["IPEX_AOT_SIGN_KEY_FILE"]) if env.get("IPEX_AOT_SIGN_KEY_FILE") else None,
            # An empty password is a password (minisign accepts one); only an unset variable means "ask".
            sign_password=env.get("IPEX_AOT_SIGN_PASSWORD"),
            trust_key=env.get("IPEX_AOT_TRUST_KEY") or None,
        )


def child_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a child process (git, ocloc, a build, cibuildwheel) starts with.

    The caller's environment (PATH, TEMP, proxies, credential helpers) is
    passed through, not read: no option comes from it. ``base`` replaces the
    caller's (an activated oneAPI environment, say); ``extra`` is laid on top.
    """
    env = dict(os.environ if base is None else base)
    env.update(extra or {})
    return env
