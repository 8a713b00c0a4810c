"""One exception family for every failure a user can act on.

Each class carries its own exit code so that scripts and CI can tell causes
apart; the CLI prints ``error: <message>`` on one line and exits with it.
Programming errors are not in this family and keep their tracebacks.
"""

from __future__ import annotations


class IpexAotError(Exception):
    """Base of all user-facing failures."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(IpexAotError):
    """Bad command-line arguments or an impossible combination of options."""

    exit_code = 2


class RecipeError(IpexAotError):
    """A recipe file that does not parse or does not match the schema."""

    exit_code = 3


class ToolchainError(IpexAotError):
    """A required tool (ocloc, oneAPI, a compiler, torch) is missing or unusable."""

    exit_code = 4


class DeviceError(IpexAotError):
    """An unknown, malformed or ambiguous PCI ID, acronym or generation code."""

    exit_code = 5


class SourceError(IpexAotError):
    """Fetching the source or applying a patch failed."""

    exit_code = 6


class BuildError(IpexAotError):
    """One or more generation builds failed."""

    exit_code = 7


class ScanError(IpexAotError):
    """A library that cannot be read, or that does not hold what it must."""

    exit_code = 8


class ArchiveError(IpexAotError):
    """A corrupt, unsafe or inconsistent archive."""

    exit_code = 9


class SignatureError(ArchiveError):
    """A missing, malformed or foreign signature, or a digest that is not the pinned one (exit 9 like any
    archive that must not be used)."""


class InstallError(IpexAotError):
    """Installing or rolling back a library failed; the old library is kept."""

    exit_code = 10


class ConformanceError(IpexAotError):
    """A conformance check failed (wrong numbers, wrong device, JIT seen)."""

    exit_code = 11


class VariantError(IpexAotError):
    """Making wheel variants or their index failed (variantlib refused a wheel or a property)."""

    exit_code = 12


class DownloadError(IpexAotError):
    """A download that failed, was cut short or was larger than allowed; a cut one resumes on the next run."""

    exit_code = 13
