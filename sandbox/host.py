"""The simulated Windows server that runs a VMware Identity Manager connector.

A `HostState` holds the facts the upgrade reads and changes (the same facts `preflight.ps1` gathers on a
real host) plus how the host behaves when acted on: what the connector installer does and how a reboot
goes. Scenarios are named starting points; tests and the `idm-upgrade sandbox` wiring pick one by name
and may adjust the returned state before serving it.

Durations here are simulated seconds; the WinRM server multiplies them by its `time_scale`.

The host keeps its own clock (`now()`, real time plus `clock_offset`, which time sync may step), and
LastBootUpTime moves with it as it does on Windows. A service start may take a while (`Start Pending`):
after a boot for `service_start_pending_after_boot_seconds`, after a start for the service's
`start_seconds`; the server times it (see `service_start_timer`). `shutdown_calls` keeps the arguments
of every `shutdown.exe /r`, so a test can see how event 1074 logs the restart.

Files are a flat map of normalised paths (`files`, with size and SHA-256), and text files (logs, the
install state file, reboot markers) also keep their lines in `text_files`. Processes started outside a
WinRM shell (the detached installer) are listed by pid in `processes` until they exit or a reboot kills
them. The counters (`downloads`, `installs_started`, `installs_run`, `installs_killed`,
`reboots_requested`, `boots`) let a test prove nothing was done twice.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sandbox import logs
from sandbox.host_model import (
    CONNECTOR_LOG,
    CONNECTOR_PRODUCT,
    CONNECTOR_SERVICE,
    INSTALL_ROOT,
    INSTALL_SUCCESS_CODES,
    INSTALLER_FILE,
    NEW_JRE_HOME,
    NEW_JRE_VERSION,
    OLD_JRE_HOME,
    OLD_JRE_VERSION,
    TARGET_VERSION,
    Artifact,
    FileEntry,
    GiB,
    InstalledProduct,
    InstallerBehaviour,
    InstallerRun,
    MiB,
    PendingReboot,
    RebootBehaviour,
    ServiceState,
    ServiceStatus,
    ShutdownCall,
    StartMode,
    fake_installer_payload,
    make_artifact,
    norm_path,
)

__all__ = [
    "CONNECTOR_LOG",
    "CONNECTOR_PRODUCT",
    "CONNECTOR_SERVICE",
    "INSTALLER_FILE",
    "INSTALL_ROOT",
    "INSTALL_SUCCESS_CODES",
    "NEW_JRE_HOME",
    "NEW_JRE_VERSION",
    "OLD_JRE_HOME",
    "OLD_JRE_VERSION",
    "SCENARIOS",
    "TARGET_VERSION",
    "Artifact",
    "FileEntry",
    "GiB",
    "HostState",
    "InstalledProduct",
    "InstallerBehaviour",
    "InstallerRun",
    "MiB",
    "PendingReboot",
    "RebootBehaviour",
    "ServiceState",
    "ServiceStatus",
    "ShutdownCall",
    "StartMode",
    "fake_installer_payload",
    "make_artifact",
    "scenario",
]


@dataclass
class HostState:
    scenario: str
    computer_name: str = "IDM-CONN01"
    os_caption: str = "Microsoft Windows Server 2016 Standard"
    os_version: str = "10.0.14393"
    manufacturer: str = "VMware, Inc."
    model: str = "VMware7,1"
    # The tenant's AD-over-IWA directory as Workspace ONE Access names it (the sandbox's stand-in serves it
    # with this name); None: the stand-in's default.
    directory_name: str | None = None
    # Whether that directory still requires STARTTLS: a host already upgraded belongs to a tenant where the
    # upgrade turned it off (the procedure's step before the install).
    directory_starttls: bool = True
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
    text_files: dict[str, list[str]] = field(default_factory=dict)  # normalised path -> lines
    processes: dict[int, str] = field(default_factory=dict)  # running detached processes: pid -> ProcessName
    msi_pids: set[int] = field(default_factory=set)  # installer runs holding the Windows Installer mutex
    installer_runs: list[InstallerRun] = field(default_factory=list)  # every installer start, in order
    next_pid: int = 4812
    shutdown_scheduled: bool = False  # a `shutdown /r /t N` is counting down
    shutdown_asked_at: datetime | None = None  # the host's clock when the last accepted shutdown was asked
    artifact_url: str | None = None  # where this host's web server serves the artifact (set by the server)
    downloads: int = 0  # stage: download attempts (http or copy), successful or not
    installs_started: int = 0  # installer processes started
    installs_run: int = 0  # installer runs that finished, whatever their exit code
    installs_killed: int = 0  # installer runs a reboot killed before they finished
    reboots_requested: int = 0  # shutdown /r calls that took (exit 0 or 1115)
    boots: int = 0
    shutdown_calls: list[ShutdownCall] = field(default_factory=list)  # every `shutdown.exe /r ...`, as sent
    # The host's clock runs this far from the real one (VM time sync steps it: `step_clock`).
    clock_offset: timedelta = timedelta(0)
    # When the installer exits, time sync steps the clock by this many seconds (the clock-step scenario).
    clock_step_after_install_seconds: float = 0.0
    # After a boot the connector (delayed auto-start) stays Start Pending this long, simulated seconds:
    # WinRM answers well before it (Windows starts delayed auto-start services about 120 s after boot).
    service_start_pending_after_boot_seconds: float = 0.0
    # A start of the connector is under way: (its number, simulated seconds until it completes), waiting
    # for the server to time it (sandbox.ps_handlers arms it as a BackgroundProcess with the next command).
    service_start_timer: tuple[int, float] | None = None
    service_starts: int = 0  # starts begun; a timer only completes the start it was armed for

    def now(self) -> datetime:
        """The host's clock (UTC): what Get-Date and [DateTime]::UtcNow say there."""
        return datetime.now(UTC) + self.clock_offset

    def step_clock(self, seconds: float) -> None:
        """Time sync steps the clock. LastBootUpTime is now minus the uptime, so it moves by as much."""
        step = timedelta(seconds=seconds)
        self.clock_offset += step
        self.boot_time += step
        if self.shutdown_asked_at is not None:  # the same moment, on the stepped clock
            self.shutdown_asked_at += step

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
        self.files[norm_path(path)] = entry
        return entry

    def file(self, path: str) -> FileEntry | None:
        return self.files.get(norm_path(path))

    def copy_file(self, source: str, destination: str) -> FileEntry | None:
        entry = self.file(source)
        if entry is None:
            return None
        copied = FileEntry(path=destination, size=entry.size, sha256=entry.sha256)
        self.files[norm_path(destination)] = copied
        if (lines := self.read_lines(source)) is not None:
            self.text_files[norm_path(destination)] = list(lines)
        return copied

    def remove_file(self, path: str) -> bool:
        self.text_files.pop(norm_path(path), None)
        return self.files.pop(norm_path(path), None) is not None

    def write_lines(self, path: str, lines: list[str]) -> None:
        """A text file as Set-Content writes it (CRLF line ends)."""
        self.put_file(path, "".join(line + "\r\n" for line in lines).encode("utf-8"))
        self.text_files[norm_path(path)] = list(lines)

    def append_lines(self, path: str, lines: list[str]) -> None:
        self.write_lines(path, (self.read_lines(path) or []) + lines)

    def read_lines(self, path: str) -> list[str] | None:
        """The lines of a text file; None when there is no such file (or it is not text)."""
        lines = self.text_files.get(norm_path(path))
        return None if lines is None or self.file(path) is None else list(lines)

    def tail(self, path: str, n: int) -> list[str]:
        """`Get-Content -Tail n`, or [] when the file is absent or n is not positive."""
        lines = self.read_lines(path)
        return lines[-n:] if lines and n > 0 else []

    def new_pid(self) -> int:
        self.next_pid += 4  # Windows hands out process ids in multiples of four
        return self.next_pid

    @property
    def msi_busy(self) -> bool:
        """The Installer\\InProgress key exists: an installer of ours runs, or the other installation that
        `busy_first_starts` stands for is still running (it becomes visible once it has refused a start
        and goes away as the N-th start is refused)."""
        foreign = 0 < self.installs_started < self.installer.busy_first_starts
        return bool(self.msi_pids) or foreign

    def begin_service_start(self, pending_seconds: float) -> str | None:
        """The Service Control Manager starts the connector: Start Pending for `pending_seconds` (simulated),
        then Running or failed, as `start_connector_service`; 0: at once. The refusal of an immediate start
        (its message), else None."""
        service = self.service
        if service is None or service.start_mode == "Disabled":
            return None
        if pending_seconds <= 0:
            return self.start_connector_service()
        self.service_starts += 1
        service.state = "Start Pending"
        self.service_start_timer = (self.service_starts, pending_seconds)
        return None

    def take_service_start_timer(self) -> tuple[int, float] | None:
        """The start to be timed, once: (its number, simulated seconds)."""
        timer, self.service_start_timer = self.service_start_timer, None
        return timer

    def complete_service_start(self, number: int) -> None:
        """Start number `number` is over, unless the service was stopped or started anew since."""
        if self.service is not None and self.service.state == "Start Pending" and number == self.service_starts:
            self.start_connector_service()

    def start_connector_service(self) -> str | None:
        """The connector starts now: the service state and connector.log follow; the error or None."""
        service = self.service
        if service is None:
            return None
        now = self.now()
        service.restart()
        if service.state == "Running":
            version = self.connector.version if self.connector else TARGET_VERSION
            self.append_lines(CONNECTOR_LOG, logs.connector_started(now, version))
            return None
        if service.start_mode == "Disabled":
            return None
        self.append_lines(CONNECTOR_LOG, logs.connector_failed(now))
        return f"Cannot start service {service.name} on computer '.'."  # ServiceController's message

    def start_installer(self, log: str, exit_file: str) -> InstallerRun:
        """The detached installer process starts: decide its outcome, stop the service, begin its log."""
        behaviour = self.installer
        busy = self.msi_busy or self.installs_started < behaviour.busy_first_starts
        self.installs_started += 1
        pid = self.new_pid()
        self.processes[pid] = "powershell"  # the wrapper that waits for the installer
        service_before = self.service.state if self.service else None
        if busy:
            run = InstallerRun(pid, 1618, behaviour.busy_duration_seconds, log, exit_file, False, service_before)
        else:
            run = InstallerRun(
                pid, behaviour.exit_code, behaviour.duration_seconds, log, exit_file, True, service_before
            )
            self.msi_pids.add(pid)
            if self.service is not None:
                self.service.state = "Stopped"  # the installer stops the connector to replace its files
        self.write_lines(log, logs.msi_log_started(datetime.now(UTC), busy=busy))
        return run

    def installer_exited(self, run: InstallerRun) -> None:
        """The installer finished: apply (or roll back), finish its log, write the exit file."""
        self.processes.pop(run.pid, None)
        self.msi_pids.discard(run.pid)
        if self.clock_step_after_install_seconds:
            self.step_clock(self.clock_step_after_install_seconds)
        self.run_installer(run.exit_code)
        if run.exit_code not in INSTALL_SUCCESS_CODES and run.holds_msi_mutex and self.service is not None:
            self.service.state = run.service_before or self.service.state  # rolled back, service restarted
        version = self.installer.installs_version
        if self.installer.long_log_lines:
            self.append_lines(
                run.log,
                logs.long_lines(datetime.now(UTC), self.installer.long_log_lines, self.installer.long_log_line_chars),
            )
        self.append_lines(run.log, logs.msi_log_finished(datetime.now(UTC), run.exit_code, version))
        self.write_lines(run.exit_file, [str(run.exit_code)])

    def installer_killed(self, run: InstallerRun) -> None:
        """A reboot killed the installer: no exit file, the log stops mid-way."""
        self.processes.pop(run.pid, None)
        self.msi_pids.discard(run.pid)
        self.installs_killed += 1

    def run_installer(self, exit_code: int | None = None) -> int:
        """Apply what the connector installer does on completion; returns its exit code.

        `exit_code` defaults to the scenario's. A failing installer (1603, 1618 and the like) rolls back,
        as Windows Installer does, so nothing changes. A JRE upgrade leaves the old JRE's files to be
        replaced at the next boot (PendingFileRenameOperations) and JAVA_HOME to switch then.
        """
        self.installs_run += 1
        behaviour = self.installer
        exit_code = behaviour.exit_code if exit_code is None else exit_code
        if exit_code not in INSTALL_SUCCESS_CODES:
            return exit_code
        if self.connector is None:
            self.connector = InstalledProduct(CONNECTOR_PRODUCT, behaviour.installs_version)
        else:
            self.connector.version = behaviour.installs_version
        if behaviour.upgrades_jre:
            self.jres[behaviour.new_jre_home] = behaviour.new_jre_version
            self.pending_java_home = behaviour.new_jre_home
            old = self.java_home or OLD_JRE_HOME
            self.pending.file_rename_operations += [rf"\??\{old}\bin\server\jvm.dll", ""]
        if exit_code == 3010:
            # Files in use are replaced at the next boot; that is how 3010 shows up in the registry.
            self.pending.file_rename_operations.append(rf"\??\{INSTALL_ROOT}\jre\bin\server\jvm.dll")
        if self.service is None:
            self.service = ServiceState()
        self.start_connector_service()
        return exit_code

    def finish_boot(self, now: datetime | None = None) -> None:
        """The host comes back from a reboot: new boot time, pending work applied, services started."""
        now = (now or self.now()).replace(microsecond=0)
        # LastBootUpTime is compared at one-second resolution; a new boot must never look like the old one,
        # nor fall in the second its shutdown was asked (no real server reboots that fast; the sandbox can).
        floor = self.boot_time
        if self.shutdown_asked_at is not None:
            floor = max(floor, self.shutdown_asked_at.replace(microsecond=0))
        self.boot_time = max(now, floor + timedelta(seconds=1))
        self.boots += 1
        if self.pending.new_computer_name:
            self.computer_name = self.pending.new_computer_name
        self.pending = PendingReboot()
        self.shutdown_scheduled = False
        self.processes.clear()  # nothing survives a boot (a reboot's kill already cleared ours)
        self.msi_pids.clear()
        if self.pending_java_home:
            self.java_home, self.pending_java_home = self.pending_java_home, None
        self.service_start_timer = None  # a start under way before the reboot died with it
        if self.service is not None:
            self.service.state = "Stopped"
            if self.service.start_mode == "Auto":
                self.begin_service_start(self.service_start_pending_after_boot_seconds)

    def shutdown(self, args: tuple[str, ...] = ("/r",)) -> int:
        """`shutdown.exe /r ...` as this host answers it; 0 and 1115 mean the host is going down."""
        self.shutdown_calls.append(ShutdownCall(args))
        code = self.reboot.shutdown_exit_codes.pop(0) if self.reboot.shutdown_exit_codes else None
        if code is None:
            code = 1190 if self.shutdown_scheduled else 0
        if code in (0, 1115):
            self.shutdown_asked_at = self.now()
        return code


def _vmware_tools() -> InstalledProduct:
    return InstalledProduct("VMware Tools", "11.3.5.18557794")


_LAST_START = datetime(2024, 3, 4, 5, 7, 31, 412000, tzinfo=UTC)  # shortly after the scenarios' boot time


def _default() -> HostState:
    state = HostState(
        scenario="default",
        connector=InstalledProduct(CONNECTOR_PRODUCT, "19.03.0.0"),
        other_products=[_vmware_tools()],
    )
    state.write_lines(CONNECTOR_LOG, logs.connector_started(_LAST_START, "19.03.0.0"))
    return state


def _physical() -> HostState:
    state = _default()
    state.manufacturer, state.model = "Dell Inc.", "PowerEdge R640"
    state.other_products = [InstalledProduct("Dell OpenManage Server Administrator", "9.5.0", wow64=True)]
    state.installer.upgrades_jre = False  # no JRE change here: the upgrade needs no reboot
    return state


def _already_current() -> HostState:
    state = _default()
    state.connector = InstalledProduct(CONNECTOR_PRODUCT, TARGET_VERSION)
    state.write_lines(CONNECTOR_LOG, logs.connector_started(_LAST_START, TARGET_VERSION))
    state.java_home = NEW_JRE_HOME
    state.jres[NEW_JRE_HOME] = NEW_JRE_VERSION
    state.installer.upgrades_jre = False
    state.directory_starttls = False  # turned off by the upgrade that brought it to the target version
    return state


def _install_fails_1603() -> HostState:
    state = _default()
    state.installer.exit_code = 1603
    state.installer.upgrades_jre = False
    return state


def _huge_log_lines() -> HostState:
    """The installer fails (1603) after a custom action wrote six lines of a megabyte each to its log."""
    state = _install_fails_1603()
    state.installer.long_log_lines = 6
    return state


def _service_wont_start() -> HostState:
    state = _default()
    state.service = ServiceState(state="Stopped", healthy=False)
    state.write_lines(CONNECTOR_LOG, logs.connector_failed(_LAST_START))
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


def _delayed_service_start() -> HostState:
    state = _default()
    # Windows' delayed auto-start: about 120 s after boot (field notes section 8); WinRM answers long before.
    state.service_start_pending_after_boot_seconds = 120.0
    return state


def _clock_step() -> HostState:
    state = _default()
    # VM time sync steps the clock while the installer runs: LastBootUpTime moves although nothing rebooted.
    state.clock_step_after_install_seconds = 3.0
    return state


def _installer_launch_fails() -> HostState:
    """The wrapper starts, but its Start-Process cannot launch the installer (blocked by policy or AV)."""
    state = _default()
    state.installer.launch_error = "This command cannot be run due to the error: Access is denied."
    return state


def _several_uninstall_entries() -> HostState:
    """Programs & Features as some hosts have it: the connector under WOW6432Node with a build suffix,
    and listed first a hidden component (SystemComponent = 1) whose own version is higher."""
    state = _default()
    state.connector = InstalledProduct(CONNECTOR_PRODUCT, "19.03.0.0 Build 13180", wow64=True)
    state.other_products = [
        InstalledProduct(f"{CONNECTOR_PRODUCT} Service", "20.10.0.0", system_component=True),
        _vmware_tools(),
    ]
    state.installer.installs_version = f"{TARGET_VERSION} Build 13999"
    return state


def _service_account_reset() -> HostState:
    """The installer resets the connector service's logon account to LocalSystem (IWA then fails)."""
    state = _default()
    state.installer.resets_service_account_to = "LocalSystem"
    state.installer.upgrades_jre = False
    return state


# Names as real tenants and hosts have them: typographic quotes and dashes (U+2019 is a single quote to
# PowerShell), umlauts, a localized log line. In a WinRM shell left at code page 437 they arrive mangled.
UNICODE_DIRECTORY = "Zürich – Ünïcødé ’s"
UNICODE_LOG_MESSAGE = "Überprüfung fehlgeschlagen"


def _unicode_names() -> HostState:
    state = _default()
    state.directory_name = UNICODE_DIRECTORY
    stamp = _LAST_START.strftime("%Y-%m-%d %H:%M:%S,") + f"{_LAST_START.microsecond // 1000:03d}"
    state.append_lines(
        CONNECTOR_LOG,
        [
            f"{stamp} WARN  (pool-2-thread-1) [;;] com.vmware.horizon.connector.directory.DirectorySyncService - "
            f"{UNICODE_LOG_MESSAGE}: Verzeichnis „{UNICODE_DIRECTORY}“ wird später erneut synchronisiert"
        ],
    )
    return state


_SCENARIOS: dict[str, Callable[[], HostState]] = {
    "default": _default,
    "physical": _physical,
    "already-current": _already_current,
    "install-fails-1603": _install_fails_1603,
    "huge-log-lines": _huge_log_lines,
    "service-wont-start": _service_wont_start,
    "reboot-never-returns": _reboot_never_returns,
    "pending-reboot": _pending_reboot,
    "low-disk": _low_disk,
    "hash-mismatch": _hash_mismatch,
    "installer-launch-fails": _installer_launch_fails,
    "several-uninstall-entries": _several_uninstall_entries,
    "service-account-reset": _service_account_reset,
    "delayed-service-start": _delayed_service_start,
    "clock-step": _clock_step,
    "unicode-names": _unicode_names,
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
