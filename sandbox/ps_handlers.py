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

service (the connector service; Windows PowerShell 5.1 behaviour that depends on how the script is
written, read from its text by sandbox.script_text):

    {ServiceName, Start: bool, LogPath, Tail}
    -> {exists: bool, state, startMode, startError: str | null, logTail: [str]}
    Start true (a JSON boolean) on a Stopped, not Disabled service starts it once:
    - `(Get-Service ...).Start()` (ServiceController.Start) returns at once; the service is Start Pending
      for its `start_seconds`, then Running (or Stopped again when it is broken). An immediate refusal
      is startError "Cannot start service NAME on computer '.'." (the InnerException's message).
    - `Start-Service` blocks, with no timeout, until the start is over: the command takes the whole
      start (the bot's command deadline kills it first when the start is long); its refusal is
      "Service 'DISPLAY (NAME)' cannot be started due to the following error: Cannot start ...".
    - neither in the script: nothing is started.
    logTail: `Get-Content -Tail`, each line an object {"value", "PSPath", "PSDrive", ...} unless the
    script unwraps the lines to strings (as 5.1's ConvertTo-Json does, PowerShell issue 6458).

reboot:

    {DelaySeconds, Reason, Token, MarkerDirectory, MarginSeconds}
    -> {issued, alreadyScheduled, alreadyRebooted: bool, shutdownExitCode: int | null, bootTime, requestedAt}
    Marker MarkerDirectory\reboot-<Token>.json (written before shutdown.exe) holds the boot time and the
    host-clock time the reboot was asked at (requestedAt); with a marker nothing is issued:
    alreadyRebooted when the boot time is later than requestedAt minus MarginSeconds (a clock step moves
    LastBootUpTime too, so "different" is not enough), else alreadyScheduled. A marker without
    requestedAt (an older version's) falls back to "the boot time differs". bootTime and requestedAt are
    always the marker's. The shutdown.exe arguments are the ones the script's splatted array holds (its
    `$Params` variables resolved); the host records them (`HostState.shutdown_calls`, event 1074's
    reason). 1190 -> /a and once more; 1115 counts as issued. exit 6 "reboot: shutdown.exe /r failed with
    exit code <n>[ (access denied: ...)]" (the marker is removed). Token: letters, digits, . _ - only.

The upgrade's other scripts (filehash, stage, install_start, install_status, product) have their
handlers, parameters and outputs in sandbox/upgrade_handlers.py.

A start of the connector service that takes time (Start Pending) is timed by the server: every handler
in `HANDLERS` hands a pending start on as a `BackgroundProcess` (scaled by the server's time scale like
every other delay, and killed by a reboot) with the next command it answers.
"""

from __future__ import annotations

import json
import ntpath
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox import script_text
from sandbox.handler_base import (
    BackgroundProcess,
    Handler,
    HandlerResult,
    find_product,
    iso_utc,
    like,
    missing_param,
    ps_int,
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
    "reboot",
    "script_error",
    "script_exit",
    "service",
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


# ----- service ----------------------------------------------------------------------------------------

_COMMENT = re.compile(r"#.*$", re.MULTILINE)
_START_SERVICE = re.compile(r"\bStart-Service\b", re.IGNORECASE)
_CONTROLLER_START = re.compile(r"\.Start\(\s*\)")


def _code(script: str) -> str:
    """The script without its comments: what it does, not what it says."""
    return _COMMENT.sub("", script)


def service(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("service", params, "ServiceName"):
        return error
    svc = state.service
    if svc is not None and svc.name.casefold() != str(params["ServiceName"]).casefold():
        svc = None
    tail, log = ps_int(params.get("Tail")), str(params.get("LogPath") or "")
    width = ps_int(params.get("LineChars"))

    def document(start_error: str | None) -> dict[str, Any]:
        return {
            "exists": svc is not None,
            "state": svc.state if svc else None,
            "startMode": svc.start_mode if svc else None,
            "startError": start_error,
            "logTail": script_text.get_content_lines(log, script_text.cut_long_lines(state.tail(log, tail), width))
            if log
            else [],
        }

    if svc is None or params.get("Start") is not True or svc.state != "Stopped" or svc.start_mode == "Disabled":
        return HandlerResult(stdout=document(None))
    code = _code(script_text.current())
    if _START_SERVICE.search(code):
        # Start-Service waits for the start to end, however long: the command lasts the whole start.
        refused = state.begin_service_start(svc.start_seconds)
        if refused:
            refused = (
                f"Service '{svc.display_name} ({svc.name})' cannot be started due to the following error: {refused}"
            )
        if svc.state != "Start Pending":
            return HandlerResult(stdout=document(refused))
        number, out = state.service_starts, document(None)

        def started() -> None:
            state.complete_service_start(number)
            out.update(document(None))  # the script reads the service again once Start-Service returns

        return HandlerResult(stdout=out, duration_seconds=svc.start_seconds, on_complete=started)
    if _CONTROLLER_START.search(code):
        return HandlerResult(stdout=document(state.begin_service_start(svc.start_seconds)))
    return HandlerResult(stdout=document(None))


# ----- reboot -----------------------------------------------------------------------------------------

_SPLATTED_SHUTDOWN = re.compile(r"&\s*shutdown(?:\.exe)?\s+@(\w+)", re.IGNORECASE)


def _shutdown_args(script: str, resolved: Mapping[str, str]) -> tuple[str, ...] | None:
    """The argument array the script splats into `shutdown.exe /r`, as shutdown.exe gets it: quoted words
    as they are, a variable assigned from `$Params.NAME` as `resolved[NAME]`, any other as written."""
    code = _code(script)
    call = _SPLATTED_SHUTDOWN.search(code)
    if call is None:
        return None
    array = re.search(rf"\${call.group(1)}\s*=\s*@\(([^)]*)\)", code, re.IGNORECASE)
    if array is None:
        return None
    sources = {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"^\s*\$(\w+)\s*=.*?\$Params\.(\w+)", code, re.IGNORECASE | re.MULTILINE)
    }
    args = []
    for item in (part.strip() for part in array.group(1).split(",")):
        source = sources.get(item[1:].lower(), "") if item.startswith("$") else ""
        if len(item) >= 2 and item[0] in "'\"" and item[-1] == item[0]:
            args.append(item[1:-1])
        elif source in resolved:
            args.append(resolved[source])
        else:
            args.append(item)
    return tuple(args)


def _reason_text(reason: Any) -> str:
    """What reboot.ps1 makes of Reason for /c: " replaced, at most 512 characters, no trailing \\."""
    why = str(reason or "").replace('"', "'")[:512].rstrip("\\")
    return why or "idm-upgrade"


def reboot(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("reboot", params, "Token", "MarkerDirectory"):
        return error
    token = str(params["Token"])
    if not re.fullmatch(r"[A-Za-z0-9._-]+", token):
        return script_error("reboot: Token may hold only letters, digits and . _ -")
    delay = ps_int(params.get("DelaySeconds"))
    if not 0 <= delay <= 315360000:
        return script_error("reboot: DelaySeconds must be 0-315360000")
    margin = ps_int(params.get("MarginSeconds"))
    boot = iso_utc(state)
    marker = ntpath.join(str(params["MarkerDirectory"]), f"reboot-{token}.json")

    def emit(issued: bool, scheduled: bool, rebooted: bool, code: int | None, record: dict) -> HandlerResult:
        return HandlerResult(
            stdout={
                "issued": issued,
                "alreadyScheduled": scheduled,
                "alreadyRebooted": rebooted,
                "shutdownExitCode": code,
                "bootTime": record.get("bootTime"),
                "requestedAt": record.get("requestedAt"),
            },
            reboot_after_seconds=delay if issued else None,
        )

    if (lines := state.read_lines(marker)) is not None:
        record = json.loads("\n".join(lines))
        before, asked = str(record.get("bootTime")), record.get("requestedAt")
        if asked:
            # The scripts' UTC format sorts as time does; the margin is subtracted as reboot.ps1 does.
            since = datetime.strptime(str(asked), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            rebooted = state.boot_time > since - timedelta(seconds=margin)
        else:
            rebooted = before != boot
        return emit(False, not rebooted, rebooted, None, record)
    args = _shutdown_args(
        script_text.current(), {"DelaySeconds": str(delay), "Reason": _reason_text(params.get("Reason"))}
    )
    if args is None:
        return script_error("reboot: the sandbox found no `& shutdown.exe @args` call in the script")
    record = {"token": token, "bootTime": boot, "requestedAt": state.now().strftime("%Y-%m-%dT%H:%M:%SZ")}
    state.write_lines(marker, [json.dumps(record, separators=(",", ":"))])
    code = state.shutdown(args)
    if code == 1190:
        state.shutdown_scheduled = False  # shutdown /a
        code = state.shutdown(args)
    if code not in (0, 1115):
        state.remove_file(marker)
        hint = " (access denied: the account lacks SeRemoteShutdownPrivilege)" if code == 5 else ""
        return script_exit(f"reboot: shutdown.exe /r failed with exit code {code}{hint}", 6)
    state.shutdown_scheduled = True
    state.reboots_requested += 1
    return emit(True, False, False, code, record)


# ----- a service start that takes time -----------------------------------------------------------------


def _times_service_starts(handler: Handler) -> Handler:
    """The handler, handing a pending service start on to the server to time (see the module docstring)."""

    def answer(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
        result = handler(state, params)
        if state.service_start_timer is None or result.process is not None:
            return result
        timer = state.take_service_start_timer()
        assert timer is not None
        number, seconds = timer
        start = BackgroundProcess(
            name=f"start of service {state.service.name if state.service else '?'}",
            duration_seconds=seconds,
            on_exit=lambda: state.complete_service_start(number),
            on_kill=lambda: None,  # the boot that follows begins its own start
        )
        return replace(result, process=start)

    return answer


# Script name (its `# idm-upgrade: NAME` line) -> handler. Add one entry per new steps/ps script.
HANDLERS: dict[str, Handler] = {
    name: _times_service_starts(handler)
    for name, handler in {
        "preflight": preflight,
        "boottime": boottime,
        **UPGRADE_HANDLERS,  # filehash, stage, install_start, install_status, product
        "service": service,
        "reboot": reboot,
    }.items()
}
