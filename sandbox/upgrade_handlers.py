"""The simulated host's answers to the upgrade's scripts: steps/ps/{filehash,stage,install_start,
install_status,product}.ps1 (service and reboot: sandbox/ps_handlers.py). Each handler mirrors its
script line by line: the same parameter checks, JSON fields, exit codes and stderr text. A missing required parameter is a `throw`
(exit 1, "<script>: <Param> is required"); the other failures write one line to stderr with
[Console]::Error.WriteLine and `exit N`.

Where Windows PowerShell 5.1's answer depends on how the script is written, the handler reads the script
text (`sandbox.script_text`): `Get-Content -Tail` lines not unwrapped to strings come back as objects
{"value", "PSPath", "PSDrive", ...}; an install_start that does not start the fixed wrapper with
base64 data is refused (a wrapper built from values runs them as code).

filehash     {Path}
             -> {exists: bool, path, sha256: lowercase hex | null, bytes: int | null}
stage        {Url, Sha256, Directory, FileName}
             -> {path, sha256 (lowercase), bytes, reused: bool, seconds: float}
             An existing Directory\\FileName with the right hash is reused (no download); one with another
             hash is deleted first. Only http(s) (Invoke-WebRequest), into FileName.partial, then hashed
             and renamed: a file share read from a WinRM session is a second hop (ANONYMOUS LOGON).
             exit 2 "download of <Url> failed: <message>"; exit 3 "SHA-256 mismatch for <FileName>: expected
             <x>, got <y>; the downloaded file was deleted"; exit 1 for a bad Sha256, FileName or Url.
install_start {Installer, Arguments, Log, StateFile, Token, ServiceName (optional)}
             -> {token, pid, startedAt, log, exitFile, errorFile, startNameBefore, alreadyStarted: bool}
             StateFile already holding Token: that record with alreadyStarted true, nothing started.
             Otherwise a fixed wrapper script, its data (installer, arguments, exit and error files) as
             base64 JSON, runs detached (Win32_Process.Create): `Start-Process -Wait -PassThru` of the
             installer, its exit code to exitFile (= StateFile + ".exit"); a launch failure's message to
             errorFile (= StateFile + ".error"). startNameBefore: the service's StartName before the
             launch. exit 1 when Installer is not a file; exit 5 "install_start: Win32_Process.Create
             failed: <ReturnValue or message>".
             InstallShield's setup.exe without /w returns its own 0 while the MSI may fail: the exit file
             then holds 0 and the log "Installation success or error status: <MSI's code>".
install_status {StateFile, Tail, ServiceName (optional)}
             -> {known: false, msiBusy} when StateFile is absent; else {known: true, token, pid, startedAt,
             running: bool, exitCode: int | null, msiStatus: int | null, launchError: str | null,
             logTail: [str], msiBusy: bool, startName, startNameBefore}
             running: the wrapper (a powershell process with that pid) lives, there is no exit file and
             no launch error. Killed by a reboot: running false, exitCode null. msiBusy: the
             Installer\\InProgress key. msiStatus: the log's last "Installation success or error status: N",
             read once the wrapper is done. startName: the service's StartName now.
product      {ProductNamePattern} -> {installed: bool, displayName, version, entries: int}
             Uninstall keys, as preflight: of the entries whose DisplayName is -like the pattern (entries
             counts them all), the highest DisplayVersion that is not SystemComponent = 1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ntpath
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sandbox import script_text
from sandbox.handler_base import (
    BackgroundProcess,
    Handler,
    HandlerResult,
    find_product,
    like,
    missing_param,
    ps_int,
    script_error,
    script_exit,
)
from sandbox.host import HostState, InstallerRun

DOWNLOAD_SECONDS = 2.0  # a simulated download of the installer
HASH_SECONDS = 0.1  # hashing a file that is already there


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _now_iso(state: HostState) -> str:
    """[DateTime]::UtcNow on the host: its own clock, which time sync may have stepped."""
    return state.now().strftime("%Y-%m-%dT%H:%M:%SZ")


# ----- filehash -------------------------------------------------------------------------------------


def filehash(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("filehash", params, "Path"):
        return error
    path = str(params["Path"])
    entry = state.file(path)
    return HandlerResult(
        stdout={
            "exists": entry is not None,
            "path": path,
            "sha256": entry.sha256 if entry else None,
            "bytes": entry.size if entry else None,
        }
    )


# ----- stage ----------------------------------------------------------------------------------------


def stage(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("stage", params, "Url", "Sha256", "Directory", "FileName"):
        return error
    url, want, name = str(params["Url"]), str(params["Sha256"]).lower(), str(params["FileName"])
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        return script_error("stage: Sha256 must be 64 hex digits")
    if re.search(r"[\\/:]", name) or name == "..":
        return script_error("stage: FileName must be a bare file name")
    if not re.match(r"https?://", url, re.IGNORECASE):
        return script_error("stage: Url must be http:// or https:// (a file share is a second hop from WinRM)")
    path = ntpath.join(str(params["Directory"]), name)

    def emit(reused: bool, size: int, seconds: float) -> dict[str, Any]:
        return {"path": path, "sha256": want, "bytes": size, "reused": reused, "seconds": round(seconds, 2)}

    existing = state.file(path)
    if existing is not None:
        if existing.sha256 == want:
            return HandlerResult(stdout=emit(True, existing.size, HASH_SECONDS), duration_seconds=HASH_SECONDS)
        state.remove_file(path)

    state.downloads += 1
    payload = _served_payload(state, url)
    if payload is None:
        return _download_failed(url, "The remote server returned an error: (404) Not Found.")
    got, size = _sha256(payload), len(payload)

    def store() -> None:
        state.put_file(path, payload)

    if got != want:
        message = f"SHA-256 mismatch for {name}: expected {want}, got {got}; the downloaded file was deleted"
        return HandlerResult(exit_code=3, stderr=message, stderr_plain=True, duration_seconds=DOWNLOAD_SECONDS)
    return HandlerResult(
        stdout=emit(False, size, DOWNLOAD_SECONDS), duration_seconds=DOWNLOAD_SECONDS, on_complete=store
    )


def _download_failed(url: str, message: str) -> HandlerResult:
    return HandlerResult(
        exit_code=2, stderr=f"download of {url} failed: {message}", stderr_plain=True, duration_seconds=0.5
    )


def _served_payload(state: HostState, url: str) -> bytes | None:
    """The bytes this host's artifact route serves at `url`, or None where the web server says 404."""
    if state.artifact_url and url == state.artifact_url:
        return state.artifact.payload
    served = urlsplit(state.artifact_url or "")
    asked = urlsplit(url)
    here = {served.hostname, "localhost", "127.0.0.1", state.computer_name.lower()} - {None}
    if (
        asked.scheme.lower() == served.scheme
        and asked.hostname in here
        and asked.port == served.port
        and asked.path == f"/artifacts/{state.artifact.file_name}"
    ):
        return state.artifact.payload
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----- install_start / install_status ---------------------------------------------------------------


def install_start(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("install_start", params, "Installer", "Log", "StateFile", "Token"):
        return error
    state_file, token = str(params["StateFile"]), str(params["Token"])
    if (lines := state.read_lines(state_file)) is not None:
        earlier = json.loads("\n".join(lines))
        if earlier.get("token") == token:
            fields = ("token", "pid", "startedAt", "log", "exitFile", "errorFile", "startNameBefore")
            return HandlerResult(stdout={**{k: earlier.get(k) for k in fields}, "alreadyStarted": True})
    installer = str(params["Installer"])
    if state.file(installer) is None:
        return script_error(f"install_start: installer not found: {installer}")
    exit_file, error_file = state_file + ".exit", state_file + ".error"
    state.remove_file(exit_file)
    state.remove_file(error_file)
    data = {"installer": installer, "arguments": str(params.get("Arguments") or ""), "exitFile": exit_file}
    # What the started wrapper reads back from its base64 data: the installer's file and argument line.
    wrapper = started_wrapper(script_text.current(), {**data, "errorFile": error_file})
    if isinstance(wrapper, HandlerResult):
        return wrapper
    log = str(params["Log"])
    if (code := state.installer.create_return_value) != 0:
        return script_exit(f"install_start: Win32_Process.Create failed: {code}", 5)

    record: dict[str, Any] = {
        "token": token,
        "pid": None,
        "startedAt": _now_iso(state),
        "log": log,
        "exitFile": wrapper["exitFile"],
        "errorFile": wrapper["errorFile"],
        "startNameBefore": _start_name(state, params.get("ServiceName")),
    }
    if state.installer.launch_error is not None:
        return _launch_fails(state, state_file, record)
    run = state.start_installer(log, wrapper["exitFile"])
    run.installer, run.arguments = wrapper["installer"], wrapper["arguments"]
    state.installer_runs.append(run)
    record["pid"] = run.pid
    state.write_lines(state_file, [_json(record)])
    process = BackgroundProcess(
        name=f"installer (pid {run.pid})",
        duration_seconds=run.duration_seconds,
        on_exit=lambda: _installer_exited(state, run),
        on_kill=lambda: state.installer_killed(run),
        reboot_after_seconds=state.installer.reboot_after_1641_seconds if run.exit_code == 1641 else None,
    )
    return HandlerResult(stdout={**record, "alreadyStarted": False}, process=process)


# The wrapper install_start.ps1 starts: a single-quoted here-string assigned to $w, whose one '@DATA@'
# literal the script replaces with the base64 of its data. Anything else is a wrapper built from values.
_WRAPPER = re.compile(r"^\$w = @'\r?\n(?P<body>.*?)\r?\n'@[ \t]*$", re.MULTILINE | re.DOTALL)
_FILLED = re.compile(
    r"\$w\.Replace\('@DATA@', \[Convert\]::ToBase64String\(\[Text\.Encoding\]::UTF8\.GetBytes\(\$data\)\)\)"
)
_PS_QUOTES = "'\u2018\u2019\u201a\u201b"  # every character that opens or closes a single-quoted string


def started_wrapper(script: str, data: dict[str, str]) -> dict[str, str] | HandlerResult:
    """The data the detached wrapper decodes, or a refusal when the script would build its code from values.

    The host runs `$w` with '@DATA@' replaced by base64 of `data`; the code it runs (everything outside
    single-quoted strings, by PowerShell's quote characters) must be the same for any data.
    """
    found = _WRAPPER.search(script)
    if found is None or _FILLED.search(script) is None or found.group("body").count("'@DATA@'") != 1:
        return script_error(
            "sandbox: install_start must start a fixed wrapper script with its data as base64 (field notes §8); "
            "this script builds the wrapper's code from values, which PowerShell would run as code"
        )
    body = found.group("body")
    encoded = base64.b64encode(json.dumps(data, ensure_ascii=False).encode()).decode()
    filled = body.replace("'@DATA@'", f"'{encoded}'")
    if _code_outside_strings(filled) != _code_outside_strings(body):
        return script_error("sandbox: the wrapper's code changed with its data")
    read = re.search(r"FromBase64String\('([A-Za-z0-9+/=]*)'\)", filled)
    if read is None:
        return script_error("sandbox: the wrapper does not read its data with [Convert]::FromBase64String")
    decoded = json.loads(base64.b64decode(read.group(1)))
    return {key: str(decoded.get(key) or "") for key in ("installer", "arguments", "exitFile", "errorFile")}


def _code_outside_strings(code: str) -> str:
    """The code with each single-quoted string's content dropped (a doubled quote of any kind is a quote)."""
    out, i, inside = [], 0, False
    while i < len(code):
        ch = code[i]
        if ch in _PS_QUOTES:
            if inside and i + 1 < len(code) and code[i + 1] in _PS_QUOTES:
                i += 2
                continue
            inside = not inside
            out.append("'")
        elif not inside:
            out.append(ch)
        i += 1
    return "".join(out)


def _start_name(state: HostState, service_name: Any) -> str | None:
    """Win32_Service.StartName of the named service (Where-Object Name -eq: case-insensitive)."""
    svc = state.service
    if not service_name or svc is None or svc.name.casefold() != str(service_name).casefold():
        return None
    return svc.start_name


def _installs_and_waits(arguments: str) -> bool:
    """InstallShield's setup.exe waits for its MSI (and returns the MSI's code) only with /w."""
    return any(word.lower() == "/w" for word in arguments.split())


def _installer_exited(state: HostState, run: InstallerRun) -> None:
    state.installer_exited(run)  # the log ends with the MSI's status; the exit file holds it too
    behaviour = state.installer
    setup_code = behaviour.setup_exit_code
    if setup_code is None and not _installs_and_waits(run.arguments):
        setup_code = 0  # setup.exe handed the MSI over and returned its own success
    if setup_code is not None:
        state.write_lines(run.exit_file, [str(setup_code)])
    if run.exit_code in (0, 3010, 1641) and behaviour.resets_service_account_to and state.service is not None:
        state.service.start_name = behaviour.resets_service_account_to


def _launch_fails(state: HostState, state_file: str, record: dict[str, Any]) -> HandlerResult:
    """The wrapper starts and its Start-Process throws (the installer never runs): the message goes to
    errorFile a moment later, and the wrapper exits."""
    pid = state.new_pid()
    state.processes[pid] = "powershell"
    record = {**record, "pid": pid}
    state.write_lines(state_file, [_json(record)])
    message = str(state.installer.launch_error)

    def failed() -> None:
        state.processes.pop(pid, None)
        state.write_lines(record["errorFile"], [message])

    def killed() -> None:
        state.processes.pop(pid, None)

    process = BackgroundProcess(
        name=f"installer wrapper (pid {pid})", duration_seconds=0.5, on_exit=failed, on_kill=killed
    )
    return HandlerResult(stdout={**record, "alreadyStarted": False}, process=process)


def install_status(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("install_status", params, "StateFile"):
        return error
    busy = state.msi_busy
    lines = state.read_lines(str(params["StateFile"]))
    if lines is None:
        return HandlerResult(stdout={"known": False, "msiBusy": busy})
    record = json.loads("\n".join(lines))
    code = None
    if record.get("exitFile") and (text := state.read_lines(record["exitFile"])) is not None:
        value = "\n".join(text).strip()
        code = int(value) if re.fullmatch(r"-?\d+", value) else None
    launch_error = None
    if record.get("errorFile") and (text := state.read_lines(record["errorFile"])) is not None:
        launch_error = "\n".join(text).strip()
    alive = bool(record.get("pid")) and state.processes.get(record["pid"]) == "powershell"
    log = record.get("log")
    tail, msi_status = [], None
    if log and (log_lines := state.read_lines(log)) is not None:
        lines = script_text.cut_long_lines(state.tail(log, ps_int(params.get("Tail"))), ps_int(params.get("LineChars")))
        tail = script_text.get_content_lines(log, lines)
        if code is not None or not alive:
            statuses = [m.group(1) for line in log_lines if (m := _MSI_STATUS.search(line))]
            msi_status = int(statuses[-1]) if statuses else None
    return HandlerResult(
        stdout={
            "known": True,
            "token": record.get("token"),
            "pid": record.get("pid"),
            "startedAt": record.get("startedAt"),
            "running": alive and code is None and not launch_error,
            "exitCode": code,
            "msiStatus": msi_status,
            "launchError": launch_error,
            "logTail": tail,
            "msiBusy": busy,
            "startName": _start_name(state, params.get("ServiceName")),
            "startNameBefore": record.get("startNameBefore"),
        }
    )


_MSI_STATUS = re.compile(r"Installation success or error status: (-?\d+)")


# ----- product --------------------------------------------------------------------------------------


def product(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("product", params, "ProductNamePattern"):
        return error
    pattern = str(params["ProductNamePattern"])
    found = find_product(state, pattern)
    return HandlerResult(
        stdout={
            "installed": found is not None,
            "displayName": found.display_name if found else None,
            "version": found.version if found else None,
            "entries": sum(1 for p in state.products() if like(p.display_name, pattern)),
        }
    )


UPGRADE_HANDLERS: dict[str, Handler] = {
    "filehash": filehash,
    "stage": stage,
    "install_start": install_start,
    "install_status": install_status,
    "product": product,
}
