"""The simulated host's answers to the upgrade's scripts: steps/ps/{filehash,stage,install_start,
install_status,service,reboot,product}.ps1. Each handler mirrors its script line by line: the same
parameter checks, JSON fields, exit codes and stderr text. A missing required parameter is a `throw`
(exit 1, "<script>: <Param> is required"); the other failures write one line to stderr with
[Console]::Error.WriteLine and `exit N`.

filehash     {Path}
             -> {exists: bool, path, sha256: lowercase hex | null, bytes: int | null}
stage        {Url, Sha256, Directory, FileName}
             -> {path, sha256 (lowercase), bytes, reused: bool, seconds: float}
             An existing Directory\\FileName with the right hash is reused (no download); one with another
             hash is deleted first. http(s) -> Invoke-WebRequest, file:// or a path/UNC -> Copy-Item, into
             FileName.partial, then hashed and renamed.
             exit 2 "download of <Url> failed: <message>"; exit 3 "SHA-256 mismatch for <FileName>: expected
             <x>, got <y>; the downloaded file was deleted"; exit 1 for a bad Sha256 or FileName.
install_start {Installer, Arguments, Log, StateFile, Token}
             -> {token, pid, startedAt, log, exitFile, alreadyStarted: bool}
             StateFile already holding Token: that record with alreadyStarted true, nothing started.
             Otherwise the installer runs detached (Win32_Process.Create) and writes its exit code to
             exitFile (= StateFile + ".exit") when done. exit 1 when Installer is not a file;
             exit 5 "install_start: Win32_Process.Create failed: <ReturnValue or message>".
install_status {StateFile, Tail}
             -> {known: false, msiBusy} when StateFile is absent; else {known: true, token, pid, startedAt,
             running: bool, exitCode: int | null, logTail: [str], msiBusy: bool}
             running: the wrapper (a powershell process with that pid) lives and there is no exit file
             yet. Killed by a reboot: running false, exitCode null. msiBusy: the Installer\\InProgress key.
service      {ServiceName, Start: bool, LogPath, Tail}
             -> {exists: bool, state, startMode, startError: str | null, logTail: [str]}
             Start true (a JSON boolean) on a Stopped, not Disabled service: one Start-Service, its error
             message in startError; state/startMode are read again afterwards.
reboot       {DelaySeconds, Reason, Token, MarkerDirectory}
             -> {issued, alreadyScheduled, alreadyRebooted: bool, shutdownExitCode: int | null, bootTime}
             Marker MarkerDirectory\\reboot-<Token>.json (written before shutdown.exe) holds the boot time the
             reboot was asked from; with a marker nothing is issued: alreadyRebooted when the boot time has
             changed since, else alreadyScheduled; bootTime is always the boot time before the reboot.
             shutdown.exe /r /t DelaySeconds /c Reason; 1190 -> /a and once more; 1115 counts as issued.
             exit 6 "reboot: shutdown.exe /r failed with exit code <n>[ (access denied: ...)]" (the marker is
             removed). Token: letters, digits, . _ - only (exit 1 otherwise).
product      {ProductNamePattern} -> {installed: bool, displayName, version} (Uninstall keys, as preflight)
"""

from __future__ import annotations

import hashlib
import json
import ntpath
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from sandbox.handler_base import (
    BackgroundProcess,
    Handler,
    HandlerResult,
    find_product,
    iso_utc,
    missing_param,
    ps_int,
    script_error,
    script_exit,
)
from sandbox.host import HostState

DOWNLOAD_SECONDS = 2.0  # a simulated download of the installer
HASH_SECONDS = 0.1  # hashing a file that is already there


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    path = ntpath.join(str(params["Directory"]), name)

    def emit(reused: bool, size: int, seconds: float) -> dict[str, Any]:
        return {"path": path, "sha256": want, "bytes": size, "reused": reused, "seconds": round(seconds, 2)}

    existing = state.file(path)
    if existing is not None:
        if existing.sha256 == want:
            return HandlerResult(stdout=emit(True, existing.size, HASH_SECONDS), duration_seconds=HASH_SECONDS)
        state.remove_file(path)

    state.downloads += 1
    if re.match(r"https?://", url, re.IGNORECASE):
        payload = _served_payload(state, url)
        if payload is None:
            return _download_failed(url, "The remote server returned an error: (404) Not Found.")
        got, size = _sha256(payload), len(payload)

        def store() -> None:
            state.put_file(path, payload)

    else:
        source = _local_path(url)
        entry = state.file(source)
        if entry is None:
            return _download_failed(url, f"Cannot find path '{source}' because it does not exist.")
        got, size = entry.sha256, entry.size

        def store() -> None:
            state.copy_file(source, path)

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


def _local_path(url: str) -> str:
    """What `([Uri]$url).LocalPath` gives for a file: URL; anything else is used as a path as it is."""
    if not url.lower().startswith("file:"):
        return url
    parts = urlsplit(url)
    path = unquote(parts.path).replace("/", "\\")
    if parts.netloc and parts.netloc.lower() != "localhost":
        return f"\\\\{parts.netloc}{path}"
    return path.lstrip("\\")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----- install_start / install_status ---------------------------------------------------------------


def install_start(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("install_start", params, "Installer", "Log", "StateFile", "Token"):
        return error
    state_file, token = str(params["StateFile"]), str(params["Token"])
    if (lines := state.read_lines(state_file)) is not None:
        record = json.loads("\n".join(lines))
        if record.get("token") == token:
            fields = ("token", "pid", "startedAt", "log", "exitFile")
            return HandlerResult(stdout={**{k: record.get(k) for k in fields}, "alreadyStarted": True})
    installer = str(params["Installer"])
    if state.file(installer) is None:
        return script_error(f"install_start: installer not found: {installer}")
    exit_file = state_file + ".exit"
    state.remove_file(exit_file)
    log = str(params["Log"])
    if (code := state.installer.create_return_value) != 0:
        return script_exit(f"install_start: Win32_Process.Create failed: {code}", 5)

    run = state.start_installer(log, exit_file)
    record = {"token": token, "pid": run.pid, "startedAt": _now_iso(), "log": log, "exitFile": exit_file}
    state.write_lines(state_file, [_json(record)])
    process = BackgroundProcess(
        name=f"installer (pid {run.pid})",
        duration_seconds=run.duration_seconds,
        on_exit=lambda: state.installer_exited(run),
        on_kill=lambda: state.installer_killed(run),
        reboot_after_seconds=state.installer.reboot_after_1641_seconds if run.exit_code == 1641 else None,
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
    alive = bool(record.get("pid")) and state.processes.get(record["pid"]) == "powershell"
    log = record.get("log")
    return HandlerResult(
        stdout={
            "known": True,
            "token": record.get("token"),
            "pid": record.get("pid"),
            "startedAt": record.get("startedAt"),
            "running": alive and code is None,
            "exitCode": code,
            "logTail": state.tail(log, ps_int(params.get("Tail"))) if log else [],
            "msiBusy": busy,
        }
    )


# ----- service --------------------------------------------------------------------------------------


def service(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("service", params, "ServiceName"):
        return error
    svc = state.service
    if svc is not None and svc.name.casefold() != str(params["ServiceName"]).casefold():
        svc = None
    start_error = None
    if svc is not None and params.get("Start") is True and svc.state == "Stopped" and svc.start_mode != "Disabled":
        start_error = state.start_connector_service()
    tail, log = ps_int(params.get("Tail")), str(params.get("LogPath") or "")
    return HandlerResult(
        stdout={
            "exists": svc is not None,
            "state": svc.state if svc else None,
            "startMode": svc.start_mode if svc else None,
            "startError": start_error,
            "logTail": state.tail(log, tail) if log else [],
        }
    )


# ----- reboot ---------------------------------------------------------------------------------------


def reboot(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("reboot", params, "Token", "MarkerDirectory"):
        return error
    token = str(params["Token"])
    if not re.fullmatch(r"[A-Za-z0-9._-]+", token):
        return script_error("reboot: Token may hold only letters, digits and . _ -")
    delay = ps_int(params.get("DelaySeconds"))
    if not 0 <= delay <= 315360000:
        return script_error("reboot: DelaySeconds must be 0-315360000")
    boot = iso_utc(state)
    marker = ntpath.join(str(params["MarkerDirectory"]), f"reboot-{token}.json")

    def emit(issued: bool, scheduled: bool, rebooted: bool, code: int | None, before: str) -> HandlerResult:
        return HandlerResult(
            stdout={
                "issued": issued,
                "alreadyScheduled": scheduled,
                "alreadyRebooted": rebooted,
                "shutdownExitCode": code,
                "bootTime": before,
            },
            reboot_after_seconds=delay if issued else None,
        )

    if (lines := state.read_lines(marker)) is not None:
        before = str(json.loads("\n".join(lines)).get("bootTime"))
        return emit(False, before == boot, before != boot, None, before)
    state.write_lines(marker, [_json({"token": token, "bootTime": boot, "requestedAt": _now_iso()})])
    code = state.shutdown()
    if code == 1190:
        state.shutdown_scheduled = False  # shutdown /a
        code = state.shutdown()
    if code not in (0, 1115):
        state.remove_file(marker)
        hint = " (access denied: the account lacks SeRemoteShutdownPrivilege)" if code == 5 else ""
        return script_exit(f"reboot: shutdown.exe /r failed with exit code {code}{hint}", 6)
    state.shutdown_scheduled = True
    state.reboots_requested += 1
    return emit(True, False, False, code, boot)


# ----- product --------------------------------------------------------------------------------------


def product(state: HostState, params: Mapping[str, Any]) -> HandlerResult:
    if error := missing_param("product", params, "ProductNamePattern"):
        return error
    found = find_product(state, str(params["ProductNamePattern"]))
    return HandlerResult(
        stdout={
            "installed": found is not None,
            "displayName": found.display_name if found else None,
            "version": found.version if found else None,
        }
    )


UPGRADE_HANDLERS: dict[str, Handler] = {
    "filehash": filehash,
    "stage": stage,
    "install_start": install_start,
    "install_status": install_status,
    "service": service,
    "reboot": reboot,
    "product": product,
}
