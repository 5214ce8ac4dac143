"""Log text the simulated host writes: the installer's verbose MSI log and the connector's connector.log.

Only the lines a person (or the bot, quoting a log tail) would look at; the formats follow real
Windows Installer verbose logs (`/l*v`) and the connector's log4j layout.
"""

from __future__ import annotations

from datetime import datetime

PRODUCT = "VMware Identity Manager Connector"
_CLIENT = "MSI (c) (A4:1C)"
_SERVER = "MSI (s) (C8:74)"


def _msi_clock(now: datetime) -> str:
    return now.strftime("%H:%M:%S:") + f"{now.microsecond // 1000:03d}"


def _msi_date(now: datetime) -> str:
    return f"{now.month}/{now.day}/{now.year}  {now.hour}:{now.minute:02d}:{now.second:02d}"


def msi_log_started(now: datetime, *, busy: bool = False) -> list[str]:
    """What the log holds shortly after the installer started (busy: another install holds the mutex)."""
    head = [
        f"=== Verbose logging started: {_msi_date(now)}  Build type: SHIP UNICODE 5.00.10011.00  "
        r"Calling process: C:\Windows\system32\msiexec.exe ===",
        f"{_CLIENT} [{_msi_clock(now)}]: Resetting cached policy values",
        f"{_CLIENT} [{_msi_clock(now)}]: Machine policy value 'Debug' is 0",
    ]
    if busy:
        return [
            *head,
            f"{_CLIENT} [{_msi_clock(now)}]: Failed to grab execution mutex. System error 258.",
            f"{_CLIENT} [{_msi_clock(now)}]: Another installation is in progress. You must complete that "
            "installation before continuing this one.",
        ]
    return [
        *head,
        f"{_SERVER} [{_msi_clock(now)}]: Grabbed execution mutex.",
        f"Action start {now:%H:%M:%S}: InstallValidate.",
        f"Action start {now:%H:%M:%S}: StopServices.",
        f"Action start {now:%H:%M:%S}: InstallFiles.",
    ]


def long_lines(now: datetime, count: int, chars: int) -> list[str]:
    """``count`` log lines of ``chars`` characters: a custom action that dumped its whole environment."""
    head = f"{_SERVER} [{_msi_clock(now)}]: CustomAction ConfigureConnector wrote: PATH="
    return [(head + f"C:\\Tools\\{n}\\bin;" * (chars // 12 + 1))[:chars] for n in range(count)]


def msi_log_finished(now: datetime, exit_code: int, version: str) -> list[str]:
    """The lines the installer writes as it ends with `exit_code`."""
    clock = _msi_clock(now)
    if exit_code == 1618:
        return [
            f"{_CLIENT} [{clock}]: MainEngineThread is returning 1618",
            f"=== Verbose logging stopped: {_msi_date(now)} ===",
        ]
    ok = exit_code in (0, 3010, 1641)
    lines = []
    if not ok:
        lines += [
            f"CustomAction InstallConnectorService returned actual error code {exit_code} (note this may not be "
            "100% accurate if translation happened inside sandbox)",
            f"Action ended {now:%H:%M:%S}: InstallFinalize. Return value 3.",
            f"{_SERVER} [{clock}]: Executing op: RollbackInfo(,RollbackAction=Rollback,RollbackDescription=Rolling "
            "back action:,RollbackTemplate=[1],CleanupAction=RollbackCleanup,CleanupDescription=Removing backup "
            "files,CleanupTemplate=File: [1])",
        ]
    else:
        lines.append(f"Action ended {now:%H:%M:%S}: InstallFinalize. Return value 1.")
    outcome = "Installation completed successfully." if ok else "Installation failed."
    lines += [
        f"{_SERVER} [{clock}]: Product: {PRODUCT} -- {outcome}",
        f"{_SERVER} [{clock}]: Windows Installer installed the product. Product Name: {PRODUCT}. Product Version: "
        f"{version}. Product Language: 1033. Manufacturer: VMware, Inc.. Installation success or error status: "
        f"{exit_code}.",
    ]
    if exit_code in (3010, 1641):
        verb = "initiated a restart" if exit_code == 1641 else "requires a restart"
        lines.append(f"{_SERVER} [{clock}]: Windows Installer {verb}. Product Name: {PRODUCT}.")
    lines += [
        f"{_SERVER} [{clock}]: MainEngineThread is returning {exit_code}",
        f"=== Verbose logging stopped: {_msi_date(now)} ===",
    ]
    return lines


def _log4j(now: datetime, level: str, thread: str, logger: str, message: str) -> str:
    stamp = now.strftime("%Y-%m-%d %H:%M:%S,") + f"{now.microsecond // 1000:03d}"
    return f"{stamp} {level:<5} ({thread}) [;;] {logger} - {message}"


def connector_started(now: datetime, version: str) -> list[str]:
    return [
        _log4j(
            now, "INFO", "main", "com.vmware.horizon.connector.init.StartupListener", f"Connector {version} starting"
        ),
        _log4j(
            now, "INFO", "localhost-startStop-1", "com.vmware.horizon.connector.ConnectorConfig", "Configuration loaded"
        ),
        _log4j(now, "INFO", "main", "org.apache.catalina.startup.Catalina", "Server startup in 41873 ms"),
    ]


def connector_failed(now: datetime) -> list[str]:
    """A start that dies on its keystore: the JVM exits and the service falls back to Stopped."""
    return [
        _log4j(now, "INFO", "main", "com.vmware.horizon.connector.init.StartupListener", "Connector starting"),
        _log4j(
            now,
            "ERROR",
            "localhost-startStop-1",
            "org.springframework.web.context.ContextLoader",
            "Context initialization failed",
        ),
        "org.springframework.beans.factory.BeanCreationException: Error creating bean with name 'keystoreManager': "
        "Invocation of init method failed; nested exception is java.io.IOException: Keystore was tampered with, "
        "or password was incorrect",
        "\tat org.springframework.beans.factory.support.AbstractAutowireCapableBeanFactory.initializeBean("
        "AbstractAutowireCapableBeanFactory.java:1628)",
        "Caused by: java.security.UnrecoverableKeyException: Password verification failed",
        _log4j(
            now,
            "ERROR",
            "main",
            "org.apache.catalina.core.StandardContext",
            "Context [/hc] startup failed due to previous errors",
        ),
    ]
