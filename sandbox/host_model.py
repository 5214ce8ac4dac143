"""The parts of a simulated host: constants, the small records `HostState` is made of, the artifact.

`sandbox.host` re-exports all of it; import from there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

GiB = 1024**3
MiB = 1024**2

CONNECTOR_PRODUCT = "VMware Identity Manager Connector"
CONNECTOR_SERVICE = "VMwareIDMConnector"
INSTALL_ROOT = r"C:\VMware\VMwareIdentityManager\Connector"
TARGET_VERSION = "19.03.0.1"
INSTALLER_FILE = f"VMware_Identity_Manager_Connector_{TARGET_VERSION}_Installer.exe"
CONNECTOR_LOG = INSTALL_ROOT + r"\opt\vmware\horizon\workspace\logs\connector.log"

# Installer exit codes that leave the product installed (Windows Installer conventions, field notes §1).
INSTALL_SUCCESS_CODES = frozenset({0, 3010, 1641})

# JRE homes and the FileVersion their java.exe reports (Oracle numbers 8uNNN bMM as 8.0.NNN0.MM).
OLD_JRE_HOME = r"C:\Program Files\Java\jre1.8.0_202"
OLD_JRE_VERSION = "8.0.2020.8"
NEW_JRE_HOME = r"C:\Program Files\Java\jre1.8.0_251"
NEW_JRE_VERSION = "8.0.2510.8"

StartMode = Literal["Auto", "Manual", "Disabled"]  # Win32_Service.StartMode spells them this way
ServiceStatus = Literal["Running", "Stopped", "Start Pending", "Stop Pending"]


@dataclass
class InstalledProduct:
    """One Programs & Features entry (an Uninstall registry key)."""

    display_name: str
    version: str
    wow64: bool = False  # listed under the WOW6432Node view (a 32-bit installer) rather than the native one
    system_component: bool = False  # SystemComponent = 1: a part Programs & Features hides


@dataclass
class ServiceState:
    name: str = CONNECTOR_SERVICE
    display_name: str = "VMware IDM Connector"
    state: ServiceStatus = "Running"
    start_mode: StartMode = "Auto"
    healthy: bool = True  # False: every start attempt fails and it stays Stopped
    # How long one start stays Start Pending before it is Running (or failed), simulated seconds; 0: at once.
    start_seconds: float = 0.0
    start_name: str = r"CORP\svc-idm-connector"  # Win32_Service.StartName: IWA needs a domain account

    def restart(self) -> None:
        """What the installer and a boot do to it: start it unless it is disabled or broken."""
        self.state = "Running" if self.healthy and self.start_mode != "Disabled" else "Stopped"


@dataclass
class PendingReboot:
    """The four places Windows records that a reboot is due (field notes §4), each kept separately."""

    component_based_servicing: bool = False  # key ...\Component Based Servicing\RebootPending
    windows_update: bool = False  # key ...\WindowsUpdate\Auto Update\RebootRequired
    file_rename_operations: list[str] = field(default_factory=list)  # value PendingFileRenameOperations
    new_computer_name: str | None = None  # ComputerName set, ActiveComputerName still the old one

    def reasons(self) -> list[str]:
        """The reason tokens preflight.ps1 reports, in the order it checks them."""
        found = {
            "ComponentBasedServicing": self.component_based_servicing,
            "WindowsUpdate": self.windows_update,
            "PendingFileRenameOperations": bool(self.file_rename_operations),
            "ComputerRename": self.new_computer_name is not None,
        }
        return [reason for reason, pending in found.items() if pending]


@dataclass
class InstallerBehaviour:
    duration_seconds: float = 45.0
    exit_code: int = 0
    installs_version: str = TARGET_VERSION
    upgrades_jre: bool = True
    new_jre_home: str = NEW_JRE_HOME
    new_jre_version: str = NEW_JRE_VERSION
    # The first N starts find another installation holding the Windows Installer mutex and exit 1618.
    busy_first_starts: int = 0
    busy_duration_seconds: float = 3.0
    create_return_value: int = 0  # Win32_Process.Create's ReturnValue (e.g. 2 access denied, 8 out of memory)
    reboot_after_1641_seconds: float = 5.0  # with exit_code 1641: the installer restarts the host itself
    # Start-Process in the wrapper fails with this message (the installer never runs); None: it launches.
    launch_error: str | None = None
    # What setup.exe itself returns when it differs from the MSI's status in the log; None: the same.
    setup_exit_code: int | None = None
    # A successful install leaves the connector service running as this account (e.g. LocalSystem).
    resets_service_account_to: str | None = None
    # As it ends, the installer writes this many lines of long_log_line_chars characters each to its log (a
    # custom action dumping its environment: the reported run had six 1 MB lines in the log's tail).
    long_log_lines: int = 0
    long_log_line_chars: int = 1_000_000


@dataclass
class RebootBehaviour:
    downtime_seconds: float = 30.0  # how long the host refuses connections
    never_returns: bool = False
    # Exit codes the next `shutdown.exe /r` calls return, consumed in order (5 access denied, 1190 already
    # scheduled, 1115 in progress); when empty: 1190 if a shutdown is already scheduled, else 0.
    shutdown_exit_codes: list[int] = field(default_factory=list)


# `shutdown /d` reason codes and the title event 1074 shows for them; without /d Windows logs the restart
# as "Other (Unplanned)", which a change board reads as an outage (field notes section 8).
SHUTDOWN_REASONS = {
    "p:4:1": "Application: Maintenance (Planned)",
    "p:4:2": "Application: Installation (Planned)",
    "p:2:4": "Operating System: Reconfiguration (Planned)",
}
UNPLANNED_REASON = "Other (Unplanned)"


@dataclass(frozen=True)
class ShutdownCall:
    """One `shutdown.exe /r ...` as the host got it, and how its event log (event 1074) records it."""

    args: tuple[str, ...]

    @property
    def reason_code(self) -> str | None:
        args = [a.lower() for a in self.args]
        return args[args.index("/d") + 1] if "/d" in args[:-1] else None

    @property
    def logged_as(self) -> str:
        code = self.reason_code
        if code is None:
            return UNPLANNED_REASON
        return SHUTDOWN_REASONS.get(code, f"Reason code {code}")


@dataclass
class Artifact:
    """The installer the host's artifact URL serves, and the SHA-256 the operator was told to expect."""

    file_name: str
    payload: bytes
    advertised_sha256: str

    @property
    def served_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass
class InstallerRun:
    """One start of the connector installer (the detached wrapper process and what it will do)."""

    pid: int
    exit_code: int  # what it will exit with (decided at start: 1618 when the installer mutex is taken)
    duration_seconds: float
    log: str
    exit_file: str
    holds_msi_mutex: bool
    service_before: ServiceStatus | None
    installer: str = ""  # the file the wrapper's Start-Process runs ...
    arguments: str = ""  # ... and its argument line, as the wrapper received them


def norm_path(path: str) -> str:
    # Windows paths are case-insensitive and accept either slash.
    return path.replace("/", "\\").casefold()


def fake_installer_payload(file_name: str = INSTALLER_FILE, size: int = 64 * 1024) -> bytes:
    """Deterministic stand-in bytes for the installer .exe (an MZ header, then a hash-chain filler)."""
    out = bytearray(b"MZ\x90\x00")
    block = file_name.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def make_artifact(*, corrupt: bool = False) -> Artifact:
    genuine = fake_installer_payload()
    # A corrupted download: same length, a damaged block in the middle, the genuine checksum advertised.
    payload = genuine[:4096] + bytes(512) + genuine[4608:] if corrupt else genuine
    return Artifact(INSTALLER_FILE, payload, hashlib.sha256(genuine).hexdigest())
