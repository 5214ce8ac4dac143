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

The upgrade's other scripts (filehash, stage, install_start, install_status, service, reboot, product)
have their handlers, parameters and outputs in sandbox/upgrade_handlers.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sandbox.handler_base import (
    BackgroundProcess,
    Handler,
    HandlerResult,
    find_product,
    iso_utc,
    like,
    script_error,
    script_exit,
)
from sandbox.host import HostState
from sandbox.upgrade_handlers import UPGRADE_HANDLERS

__all__ = [
    "HANDLERS",
    "BackgroundProcess",
    "Handler",
    "HandlerResult",
    "boottime",
    "like",
    "preflight",
    "script_error",
    "script_exit",
]


_PREFLIGHT_PARAMS = ("ServiceName", "ProductNamePattern", "Drive")


def preflight(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    for key in _PREFLIGHT_PARAMS:
        if not params.get(key):
            return script_error(f"preflight: {key} is required")
    drive = str(params["Drive"])
    if not re.fullmatch(r"[A-Za-z]:", drive):
        return script_error("preflight: Drive must look like C:")

    # The registry lists the native view before WOW6432Node; the script keeps the first match.
    product = find_product(state, str(params["ProductNamePattern"]))
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
            "bootTime": iso_utc(state),
        }
    )


def boottime(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    """{"bootTime": "YYYY-MM-DDTHH:MM:SSZ"}, the same value preflight reports."""
    return HandlerResult(stdout={"bootTime": iso_utc(state)})


# Script name (its `# idm-upgrade: NAME` line) -> handler. Add one entry per new steps/ps script.
HANDLERS: dict[str, Handler] = {
    "preflight": preflight,
    "boottime": boottime,
    **UPGRADE_HANDLERS,  # filehash, stage, install_start, install_status, service, reboot, product
}
