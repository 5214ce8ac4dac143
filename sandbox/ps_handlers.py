"""What the simulated host does when a `steps/ps/NAME.ps1` script runs on it.

The sandbox cannot execute PowerShell, so each script has a Python handler here, keyed by the name on
the script's `# idm-upgrade: NAME` line, that answers from the `HostState` exactly as the script would
answer on a real server: same JSON field names, same exit codes, same failure cases. A test checks that
every script has a handler and every handler a script.

A handler is called when the command starts and must be quick; a slow command says so with
`HandlerResult.duration_seconds` (simulated seconds), and changes that should only happen when it
finishes go in `on_complete`.

preflight output (camelCase, one JSON object):

    computerName    str         $env:COMPUTERNAME
    os              {caption, version}                       Win32_OperatingSystem
    connector       {installed: bool, displayName, version}  first Uninstall entry (native view, then
                                                             WOW6432Node) whose DisplayName is -like
                                                             ProductNamePattern; null fields when none
    service         {name, exists: bool, state, startMode}   Win32_Service; state "Running"/"Stopped"/...,
                                                             startMode "Auto"/"Manual"/"Disabled"
    java            {home, version}                          machine JAVA_HOME; java.exe FileVersion under
                                                             it (null when unset or java.exe absent)
    disk            {drive, freeBytes}                       Win32_LogicalDisk; freeBytes null if no drive
    pendingReboot   {any: bool, reasons: [str]}              reasons, in this order, from:
                                                             "ComponentBasedServicing", "WindowsUpdate",
                                                             "PendingFileRenameOperations", "ComputerRename"
    machine         {manufacturer, model, virtual: bool}     Win32_ComputerSystem; virtual = VMware*
    bootTime        str         LastBootUpTime in UTC, "YYYY-MM-DDTHH:MM:SSZ"

preflight parameters: ServiceName, ProductNamePattern (a -like pattern), Drive ("C:"); all required.

boottime output: {"bootTime": str}, the same format as preflight's. No parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.host import HostState


@dataclass(frozen=True)
class HandlerResult:
    stdout: Any = ""  # a str is written as is; anything else as JSON (ConvertTo-Json -Compress)
    exit_code: int = 0
    stderr: str = ""  # plain text; the server wraps it in CLIXML as PowerShell does
    duration_seconds: float = 0.0  # simulated seconds before the command is Done
    on_complete: Callable[[], None] | None = None  # state changes applied when (if) it finishes
    reboot_after_seconds: float | None = None  # like `shutdown /r /t N`, counted from completion


Handler = Callable[[HostState, Mapping[str, Any]], HandlerResult]


def script_error(message: str, *, exit_code: int = 1) -> HandlerResult:
    """A script that stopped on a terminating error (`throw` under ErrorActionPreference Stop)."""
    return HandlerResult(stdout="", exit_code=exit_code, stderr=message)


def like(value: str | None, pattern: str) -> bool:
    """PowerShell's -like: case-insensitive, whole string, with * ? [a-z] wildcards and ` escapes."""
    if value is None:
        return False
    regex, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "`" and i + 1 < len(pattern):
            i += 1
            regex.append(re.escape(pattern[i]))
        elif ch == "*":
            regex.append(".*")
        elif ch == "?":
            regex.append(".")
        elif ch == "[" and (end := pattern.find("]", i + 1)) > i + 1:
            regex.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end
        else:
            regex.append(re.escape(ch))
        i += 1
    return re.fullmatch("".join(regex), value, re.IGNORECASE | re.DOTALL) is not None


_PREFLIGHT_PARAMS = ("ServiceName", "ProductNamePattern", "Drive")


def preflight(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    for key in _PREFLIGHT_PARAMS:
        if not params.get(key):
            return script_error(f"preflight: {key} is required")
    drive = str(params["Drive"])
    if not re.fullmatch(r"[A-Za-z]:", drive):
        return script_error("preflight: Drive must look like C:")

    # The registry lists the native view before WOW6432Node; the script keeps the first match.
    products = sorted(state.products(), key=lambda product: product.wow64)
    product = next((p for p in products if like(p.display_name, str(params["ProductNamePattern"]))), None)
    service = state.service
    if service is not None and service.name.casefold() != str(params["ServiceName"]).casefold():
        service = None  # WQL compares case-insensitively
    reasons = state.pending.reasons()
    return HandlerResult(
        stdout={
            "computerName": state.computer_name,
            "os": {"caption": state.os_caption, "version": state.os_version},
            "connector": {
                "installed": product is not None,
                "displayName": product.display_name if product else None,
                "version": product.version if product else None,
            },
            "service": {
                "name": params["ServiceName"],
                "exists": service is not None,
                "state": service.state if service else None,
                "startMode": service.start_mode if service else None,
            },
            "java": {"home": state.java_home, "version": state.java_version},
            "disk": {"drive": drive, "freeBytes": state.free_bytes.get(drive.upper())},
            "pendingReboot": {"any": bool(reasons), "reasons": reasons},
            "machine": {"manufacturer": state.manufacturer, "model": state.model, "virtual": state.virtual},
            "bootTime": _iso_utc(state),
        }
    )


def boottime(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    """{"bootTime": "YYYY-MM-DDTHH:MM:SSZ"}, the same value preflight reports."""
    return HandlerResult(stdout={"bootTime": _iso_utc(state)})


def _iso_utc(state: HostState) -> str:
    return state.boot_time.strftime("%Y-%m-%dT%H:%M:%SZ")


# Script name (its `# idm-upgrade: NAME` line) -> handler. Add one entry per new steps/ps script.
HANDLERS: dict[str, Handler] = {
    "preflight": preflight,
    "boottime": boottime,
}
