"""What install_status's answers mean: which exit code counts, and whether the service account changed.

The exit code the wrapper records is setup.exe's. With InstallShield's `/w` that is the MSI's result; without
it (or with a setup.exe that maps codes) it may not be, so the verbose log's "Installation success or error
status: N" line, the MSI's own word, is read as well and wins when they disagree (field notes §8).
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.facts import InstallStatus


@dataclass(frozen=True)
class ExitCode:
    code: int | None  # the code to act on
    note: str = ""  # why it is not simply the wrapper's, in words for the thread ("" when it is)


def exit_code(status: InstallStatus) -> ExitCode:
    """The MSI's status from its log when it has one, else setup.exe's exit code."""
    setup, msi = status.exit_code, status.msi_status
    if msi is None or msi == setup:
        return ExitCode(setup)
    if setup is None:
        return ExitCode(msi, f"the wrapper recorded no exit code; the installer log's status is {msi}")
    return ExitCode(
        msi,
        f'setup.exe returned {setup} but the installer log says "Installation success or error status: {msi}"; '
        f"the log's status is what Windows Installer did, so {msi} counts",
    )


def account_changed(before: str | None, after: str | None) -> bool:
    """The service's logon account differs (case-insensitively, as Windows compares account names)."""
    return bool(before) and (after or "").casefold() != (before or "").casefold()
