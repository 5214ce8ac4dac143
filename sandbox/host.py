"""The simulated Windows server that runs a VMware Identity Manager connector.

A `HostState` holds the facts the upgrade reads and changes (the same facts `preflight.ps1` gathers on a
real host) plus how the host behaves when acted on: what the connector installer does and how a reboot
goes. Scenarios are named starting points; tests and the `idm-upgrade sandbox` wiring pick one by name
and may adjust the returned state before serving it.

Durations here are simulated seconds; the WinRM server multiplies them by its `time_scale`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

GiB = 1024**3
MiB = 1024**2

CONNECTOR_PRODUCT = "VMware Identity Manager Connector"
CONNECTOR_SERVICE = "VMwareIDMConnector"
INSTALL_ROOT = r"C:\VMware\VMwareIdentityManager\Connector"
TARGET_VERSION = "19.03.0.1"
INSTALLER_FILE = f"VMware_Identity_Manager_Connector_{TARGET_VERSION}_Installer.exe"

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


@dataclass
class ServiceState:
    name: str = CONNECTOR_SERVICE
    state: ServiceStatus = "Running"
    start_mode: StartMode = "Auto"
    healthy: bool = True  # False: every start attempt fails and it stays Stopped

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


@dataclass
class RebootBehaviour:
    downtime_seconds: float = 30.0  # how long the host refuses connections
    never_returns: bool = False


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
class HostState:
    scenario: str
    computer_name: str = "IDM-CONN01"
    os_caption: str = "Microsoft Windows Server 2016 Standard"
    os_version: str = "10.0.14393"
    manufacturer: str = "VMware, Inc."
    model: str = "VMware7,1"
    connector: InstalledProduct | None = None
    other_products: list[InstalledProduct] = field(default_factory=list)
    service: ServiceState | None = field(default_factory=ServiceState)
    java_home: str | None = OLD_JRE_HOME  # the machine-level JAVA_HOME variable
    jres: dict[str, str] = field(default_factory=lambda: {OLD_JRE_HOME: OLD_JRE_VERSION})  # home -> version
    # The procedure: after a JRE upgrade "rebooting the server sets the JAVA_HOME variable to the latest
    # JRE". Until then the new home waits here.
    pending_java_home: str | None = None
    free_bytes: dict[str, int] = field(default_factory=lambda: {"C:": 40 * GiB})  # by drive letter
    pending: PendingReboot = field(default_factory=PendingReboot)
    boot_time: datetime = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)
    files: dict[str, FileEntry] = field(default_factory=dict)  # keyed by normalised path, see put_file
    installer: InstallerBehaviour = field(default_factory=InstallerBehaviour)
    reboot: RebootBehaviour = field(default_factory=RebootBehaviour)
    artifact: Artifact = field(default_factory=lambda: make_artifact())
    installs_run: int = 0
    boots: int = 0

    @property
    def virtual(self) -> bool:
        return self.manufacturer.startswith("VMware")

    @property
    def java_version(self) -> str | None:
        """java.exe's version under JAVA_HOME; None when JAVA_HOME is unset or points at nothing."""
        return self.jres.get(self.java_home) if self.java_home else None

    def products(self) -> list[InstalledProduct]:
        return ([self.connector] if self.connector else []) + self.other_products

    def put_file(self, path: str, data: bytes) -> FileEntry:
        entry = FileEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        self.files[_norm_path(path)] = entry
        return entry

    def file(self, path: str) -> FileEntry | None:
        return self.files.get(_norm_path(path))

    def run_installer(self) -> int:
        """Apply what the connector installer does on completion; returns its exit code.

        A failing installer (1603 and the like) rolls back, as Windows Installer does, so nothing changes.
        """
        self.installs_run += 1
        behaviour = self.installer
        if behaviour.exit_code not in INSTALL_SUCCESS_CODES:
            return behaviour.exit_code
        if self.connector is None:
            self.connector = InstalledProduct(CONNECTOR_PRODUCT, behaviour.installs_version)
        else:
            self.connector.version = behaviour.installs_version
        if behaviour.upgrades_jre:
            self.jres[behaviour.new_jre_home] = behaviour.new_jre_version
            self.pending_java_home = behaviour.new_jre_home
        if behaviour.exit_code == 3010:
            # Files in use are replaced at the next boot; that is how 3010 shows up in the registry.
            self.pending.file_rename_operations.append(rf"\??\{INSTALL_ROOT}\jre\bin\server\jvm.dll")
        if self.service is None:
            self.service = ServiceState()
        self.service.restart()
        return behaviour.exit_code

    def finish_boot(self, now: datetime | None = None) -> None:
        """The host comes back from a reboot: new boot time, pending work applied, services started."""
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        # LastBootUpTime is compared at one-second resolution; a new boot must never look like the old one.
        self.boot_time = max(now, self.boot_time + timedelta(seconds=1))
        self.boots += 1
        if self.pending.new_computer_name:
            self.computer_name = self.pending.new_computer_name
        self.pending = PendingReboot()
        if self.pending_java_home:
            self.java_home, self.pending_java_home = self.pending_java_home, None
        if self.service is not None:
            if self.service.start_mode == "Auto":
                self.service.restart()
            else:
                self.service.state = "Stopped"


def _norm_path(path: str) -> str:
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


def _vmware_tools() -> InstalledProduct:
    return InstalledProduct("VMware Tools", "11.3.5.18557794")


def _default() -> HostState:
    return HostState(
        scenario="default",
        connector=InstalledProduct(CONNECTOR_PRODUCT, "19.03.0.0"),
        other_products=[_vmware_tools()],
    )


def _physical() -> HostState:
    state = _default()
    state.manufacturer, state.model = "Dell Inc.", "PowerEdge R640"
    state.other_products = [InstalledProduct("Dell OpenManage Server Administrator", "9.5.0", wow64=True)]
    return state


def _already_current() -> HostState:
    state = _default()
    state.connector = InstalledProduct(CONNECTOR_PRODUCT, TARGET_VERSION)
    state.java_home = NEW_JRE_HOME
    state.jres[NEW_JRE_HOME] = NEW_JRE_VERSION
    state.installer.upgrades_jre = False
    return state


def _install_fails_1603() -> HostState:
    state = _default()
    state.installer.exit_code = 1603
    state.installer.upgrades_jre = False
    return state


def _service_wont_start() -> HostState:
    state = _default()
    state.service = ServiceState(state="Stopped", healthy=False)
    return state


def _reboot_never_returns() -> HostState:
    state = _default()
    state.reboot.never_returns = True
    return state


def _pending_reboot() -> HostState:
    state = _default()
    state.pending = PendingReboot(
        windows_update=True,
        file_rename_operations=[r"\??\C:\Windows\Temp\wuinstall.tmp", ""],
    )
    return state


def _low_disk() -> HostState:
    state = _default()
    state.free_bytes["C:"] = 800 * MiB
    return state


def _hash_mismatch() -> HostState:
    state = _default()
    state.artifact = make_artifact(corrupt=True)
    return state


_SCENARIOS: dict[str, Callable[[], HostState]] = {
    "default": _default,
    "physical": _physical,
    "already-current": _already_current,
    "install-fails-1603": _install_fails_1603,
    "service-wont-start": _service_wont_start,
    "reboot-never-returns": _reboot_never_returns,
    "pending-reboot": _pending_reboot,
    "low-disk": _low_disk,
    "hash-mismatch": _hash_mismatch,
}

SCENARIOS: tuple[str, ...] = tuple(_SCENARIOS)


def scenario(name: str) -> HostState:
    """A fresh state for the named scenario; every call returns an independent copy."""
    try:
        build = _SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}") from None
    state = build()
    state.scenario = name
    return copy.deepcopy(state)
