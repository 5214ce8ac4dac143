"""The WinRM executor: runs one steps/ps script on a host and returns its JSON document.

pywinrm is synchronous and has no overall deadline, so each command is driven by hand in a worker
thread (open shell, Command, Receive until Done or the deadline, Signal, delete shell), with a fresh
Protocol per command so no session is ever shared between threads. A global semaphore bounds the
hosts worked on at once and a per-host lock keeps one command per host.

Retries are for transport trouble only, and only where they cannot repeat a change on the host:
before the command was sent, any script; while reading output, the same command is polled again,
never started again; when the Command request itself was lost, only scripts marked ``retry_safe``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import math
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from winrm import transport as winrm_transport
from winrm.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from bot.config import Config, Secrets
from bot.errors import ExternalSystemError

log = logging.getLogger(__name__)

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "steps" / "ps"
CMD_LINE_LIMIT = 8191  # cmd.exe's limit on a whole command line
STDERR_LIMIT = 2000
ACCESS_DENIED_FAULTS = frozenset({5, 0x80070005})
REBOOT_PROBE_MAX_SECONDS = 12.0  # the longest wait between two boot-time probes after a reboot
SHELL_NOT_FOUND_FAULT = 0x8033805B  # w:InvalidSelectors: the host no longer knows the shell (it restarted)
# transport -> (pywinrm's flag that its library imported, the pip requirement that brings it)
TRANSPORT_EXTRAS = {
    "ntlm": ("HAVE_NTLM", "pywinrm"),
    "kerberos": ("HAVE_KERBEROS", "'pywinrm[kerberos]'"),
    "credssp": ("HAVE_CREDSSP", "'pywinrm[credssp]'"),
}


class ExecutorError(ExternalSystemError):
    """A command on a host did not give a result. ``retryable`` marks transport trouble worth retrying."""

    retryable = False

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"{host}: {message}")


class HostUnreachable(ExecutorError):
    retryable = True


class AuthenticationFailed(ExecutorError):
    pass


class TLSVerificationFailed(ExecutorError):
    pass


class CommandTimedOut(ExecutorError):
    def __init__(self, host: str, script: str, deadline: float):
        self.deadline = deadline
        super().__init__(host, f"{script} did not finish within its deadline of {deadline:g} s and was stopped")


class ScriptFailed(ExecutorError):
    def __init__(self, host: str, script: str, exit_code: int, stderr: str, output: Any = None):
        self.exit_code, self.stderr, self.output = exit_code, stderr, output
        detail = f": {stderr}" if stderr else ""
        super().__init__(host, f"{script} failed with exit code {exit_code}{detail}")


class BadOutput(ExecutorError):
    pass


class CommandTooLong(ExecutorError):
    pass


class ServerError(ExecutorError):
    """The WinRM service answered with an error that is not about us (HTTP 5xx)."""

    retryable = True


class ShellLost(HostUnreachable):
    """The host answered that our shell does not exist: it restarted (or its WinRM service did)."""


class CommandOutcomeUnknown(HostUnreachable):
    """The connection failed while the command was being sent: it may be running. Never resent."""

    retryable = False


class RebootTimedOut(ExecutorError):
    def __init__(self, host: str, timeout: float, last: str):
        self.timeout = timeout
        super().__init__(host, f"did not come back from the reboot within {timeout:g} s (last: {last})")


@dataclass(frozen=True)
class ScriptResult:
    data: Any
    exit_code: int
    stderr: str
    seconds: float
    attempts: int


def powershell_literal(params: dict[str, Any]) -> str:
    """A single-quoted PowerShell string holding JSON: quotes doubled, nothing else is special."""
    return "'" + json.dumps(params, separators=(",", ":"), default=str).replace("'", "''") + "'"


@functools.lru_cache(maxsize=128)
def script_body(path: Path) -> str:
    """A script's text, read once: build_script runs on the event loop, which must not wait on the disk
    (the ack benchmark caught reads stalling behind the database's fsyncs with 50 runs in flight)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no PowerShell script {path.name} in {path.parent}") from None


def build_script(name: str, params: dict[str, Any] | None = None, scripts_dir: Path = SCRIPTS_DIR) -> str:
    """steps/ps/NAME.ps1 with one line prepended that sets $Params from a JSON literal."""
    body = script_body(scripts_dir / f"{name}.ps1")
    return f"$Params = {powershell_literal(params or {})} | ConvertFrom-Json\n{body}"


def command_line(script: str) -> str:
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return f"powershell -NoProfile -NonInteractive -EncodedCommand {encoded}"


def clean_stderr(raw: bytes) -> str:
    """PowerShell's CLIXML error stream as plain text; progress records dropped."""
    text = raw.decode("utf-8", errors="replace")
    if text.startswith("#< CLIXML"):
        try:
            root = ET.fromstring(text.split("\n", 1)[1] if "\n" in text else "")
        except ET.ParseError:
            return text.strip()[:STDERR_LIMIT]
        parts = [
            (node.text or "").replace("_x000D__x000A_", "\n").replace("_x000A_", "\n")
            for node in root.iter()
            if node.tag.endswith("}S") and node.get("S") == "Error"
        ]
        text = "".join(parts)
    text = text.strip()
    return text if len(text) <= STDERR_LIMIT else text[:STDERR_LIMIT] + " […truncated]"


class WinRMExecutor:
    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        *,
        scripts_dir: Path = SCRIPTS_DIR,
        retry_delays: tuple[float, ...] = (1.0, 3.0, 9.0),
        receive_retries: int = 3,
    ):
        self.config = config
        if secrets.winrm_username is None or secrets.winrm_password is None:
            raise ValueError("WINRM_USERNAME and WINRM_PASSWORD must be set in the environment")
        missing = {
            f"hosts.{name} ({transport})": extra
            for name in config.hosts
            if (transport := config.transport_for(name)) in TRANSPORT_EXTRAS
            and not getattr(winrm_transport, TRANSPORT_EXTRAS[transport][0])
            for extra in [TRANSPORT_EXTRAS[transport][1]]
        }
        if missing:
            raise ValueError(
                "WinRM transport library not installed for "
                + ", ".join(missing)
                + f"; install it with: pip install {' '.join(sorted(set(missing.values())))}"
            )
        self._username = secrets.winrm_username
        self._password = secrets.winrm_password
        self.scripts_dir = scripts_dir
        self.retry_delays = retry_delays
        self.receive_retries = receive_retries
        self._slots = asyncio.Semaphore(config.winrm.max_parallel)
        self._host_locks: dict[str, asyncio.Lock] = {}
        # Own threads, sized for max_parallel: the default executor is tiny on a 2-core machine.
        self._threads = ThreadPoolExecutor(max_workers=config.winrm.max_parallel + 4, thread_name_prefix="winrm")
        self._warned: set[str] = set()

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- the async face --------------------------------------------------------------------------

    async def run(
        self,
        host: str,
        script: str,
        params: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
        retry_safe: bool = False,
        ends_connection: bool = False,
    ) -> ScriptResult:
        """Run steps/ps/SCRIPT.ps1 on HOST within ``deadline`` seconds; return its JSON document.

        ``ends_connection``: the script restarts the host, so a connection lost while it runs is its
        expected end (raised at once as HostUnreachable), not trouble worth polling again.
        """
        if host not in self.config.hosts:
            raise ValueError(f"unknown host {host!r}")
        line = command_line(build_script(script, params, self.scripts_dir))
        if len(line) > CMD_LINE_LIMIT:
            raise CommandTooLong(
                host,
                f"{script}: the command line would be {len(line)} characters; Windows allows {CMD_LINE_LIMIT}. "
                "Shorten the script or its parameters.",
            )
        seconds = deadline if deadline is not None else self.config.winrm.command_timeout_seconds
        started = time.monotonic()
        stop_at = started + seconds
        lock = self._host_locks.setdefault(host, asyncio.Lock())
        async with self._slots, lock:
            attempt = 0
            while True:
                attempt += 1
                try:
                    exit_code, stdout, stderr = await self._in_thread(
                        self._execute,
                        self._protocol(host),
                        host,
                        script,
                        line,
                        stop_at,
                        seconds,
                        retry_safe,
                        ends_connection,
                    )
                    break
                except ExecutorError as exc:
                    delay = self.retry_delays[attempt - 1] if attempt <= len(self.retry_delays) else None
                    if not exc.retryable or delay is None or time.monotonic() + delay >= stop_at:
                        raise
                    log.warning("%s; retrying %s in %.1f s (attempt %d)", exc, script, delay, attempt + 1)
                    await asyncio.sleep(delay)
        return self._result(host, script, exit_code, stdout, stderr, time.monotonic() - started, attempt)

    async def _in_thread(self, fn: Callable, *args: Any) -> Any:
        cancel = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(self._threads, fn, cancel, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Tell the thread to stop polling and terminate the command, and keep holding the host's
            # lock until it has: a cancelled task must not leave a second command running beside it.
            cancel.set()
            await asyncio.wait({future}, timeout=self.config.winrm.read_timeout_seconds + 5)
            if future.done() and not future.cancelled():
                future.exception()  # its "cancelled and stopped" is this cancellation; nobody else reads it
            raise

    def _result(
        self, host: str, script: str, exit_code: int, stdout: bytes, stderr: bytes, seconds: float, attempts: int
    ) -> ScriptResult:
        text = stdout.decode("utf-8", errors="replace").strip()
        errors = clean_stderr(stderr)
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = None
            if exit_code == 0:
                preview = text[:200] + ("…" if len(text) > 200 else "")
                raise BadOutput(host, f"{script} did not write one JSON document (got: {preview!r})") from None
        if exit_code != 0:
            raise ScriptFailed(host, script, exit_code, errors, data)
        if data is None:
            raise BadOutput(host, f"{script} wrote nothing to stdout")
        return ScriptResult(data, exit_code, errors, seconds, attempts)

    # -- the worker thread -----------------------------------------------------------------------

    def _protocol(self, host: str, operation_timeout: int | None = None, read_timeout: int | None = None) -> Protocol:
        winrm = self.config.winrm
        endpoint = self.config.winrm_endpoint(host)
        transport = self.config.transport_for(host)
        if host not in self._warned:
            self._warned.add(host)
            if winrm.server_cert_validation == "ignore" and endpoint.startswith("https"):
                log.warning("%s: TLS certificate validation is OFF (winrm.server_cert_validation = 'ignore')", host)
            if transport == "basic" and endpoint.startswith("http:"):
                log.warning("%s: basic authentication over plain http: the password crosses the network readable", host)
        op = operation_timeout or winrm.operation_timeout_seconds
        return Protocol(
            endpoint,
            transport=transport,
            username=self._username.get_secret_value(),
            password=self._password.get_secret_value(),
            server_cert_validation=winrm.server_cert_validation,
            ca_trust_path=winrm.ca_trust_path,
            operation_timeout_sec=op,
            read_timeout_sec=read_timeout or max(winrm.read_timeout_seconds, op + 1),
        )

    def _execute(
        self,
        cancel: threading.Event,
        protocol: Protocol,
        host: str,
        script: str,
        line: str,
        stop_at: float,
        seconds: float,
        retry_safe: bool,
        ends_connection: bool = False,
    ) -> tuple[int, bytes, bytes]:
        shell_id = self._call(host, lambda: protocol.open_shell())  # nothing has run yet: any error retryable
        try:
            try:
                command_id = self._call(host, lambda: protocol.run_command(shell_id, line))
            except ExecutorError as exc:
                if exc.retryable and not retry_safe:
                    raise CommandOutcomeUnknown(
                        host,
                        f"{script}: the connection failed while the command was being sent, so it may be running; "
                        "not sent again because it may change the host. Check the host, then retry the run.",
                    ) from None
                raise
            stdout, stderr, lost = [], [], 0
            default_wait = self.config.winrm.operation_timeout_seconds
            while True:
                remaining = stop_at - time.monotonic()
                if cancel.is_set() or remaining <= 0:
                    self._terminate(protocol, shell_id, command_id)
                    if cancel.is_set():
                        raise ExecutorError(host, f"{script} was cancelled and stopped")
                    raise CommandTimedOut(host, script, seconds)
                # Never wait on the server past the deadline: shorten this Receive when time is short.
                protocol.operation_timeout_sec = max(1, min(default_wait, math.ceil(remaining)))
                try:
                    out, err, exit_code, done = self._call(
                        host, lambda: protocol.get_command_output_raw(shell_id, command_id)
                    )
                except WinRMOperationTimeoutError:
                    continue
                except ExecutorError as exc:
                    lost += 1
                    if not exc.retryable:
                        raise
                    # Polling a shell the host says it no longer has can never succeed; and for a command that
                    # restarts the host, losing the connection is how it ends: stop at once in both cases.
                    gone = isinstance(exc, ShellLost) or (ends_connection and isinstance(exc, HostUnreachable))
                    if lost > self.receive_retries or gone:
                        if retry_safe:
                            raise
                        raise CommandOutcomeUnknown(
                            host,
                            f"{script}: lost contact with the host while it ran ({exc.args[0].split(': ', 1)[-1]}); "
                            "its outcome is unknown and it is not run again because it may change the host.",
                        ) from None
                    log.warning("%s; polling %s again (the command is not sent again)", exc, script)
                    time.sleep(min(2**lost * 0.25, 2))
                    continue
                stdout.append(out)
                stderr.append(err)
                if done:
                    self._terminate(protocol, shell_id, command_id)
                    return exit_code, b"".join(stdout), b"".join(stderr)
        finally:
            try:
                protocol.close_shell(shell_id)
            except Exception:  # the shell dies with the connection or the reboot anyway
                log.debug("%s: could not delete shell %s", host, shell_id)

    def _terminate(self, protocol: Protocol, shell_id: str, command_id: str) -> None:
        try:
            protocol.cleanup_command(shell_id, command_id)
        except Exception:
            log.debug("Signal(terminate) for command %s failed", command_id)

    def _call(self, host: str, fn: Callable[[], Any]) -> Any:
        """One WS-Management request, with pywinrm's and requests' errors turned into plain words."""
        try:
            return fn()
        except WinRMOperationTimeoutError:
            raise
        except AuthenticationError:
            raise AuthenticationFailed(
                host,
                "the WinRM service refused the credentials (check WINRM_USERNAME / WINRM_PASSWORD and "
                "that the account is a local administrator)",
            ) from None
        except requests.exceptions.SSLError as exc:
            raise TLSVerificationFailed(
                host,
                f"TLS verification failed ({_reason(exc)}); install the host's CA certificate, "
                "or set winrm.server_cert_validation = 'ignore' deliberately",
            ) from None
        except requests.exceptions.ConnectTimeout:
            raise HostUnreachable(host, "connection timed out (is the host up and port open?)") from None
        except requests.exceptions.ConnectionError as exc:
            raise HostUnreachable(host, f"cannot reach the WinRM service ({_reason(exc)})") from None
        except requests.exceptions.Timeout:
            raise HostUnreachable(host, "the WinRM service did not answer in time") from None
        except WSManFaultError as exc:
            code = exc.wsman_fault_code or exc.fault_code
            if exc.wsman_fault_code in ACCESS_DENIED_FAULTS:
                raise AuthenticationFailed(host, f"access denied by the WinRM service (fault {code})") from None
            if exc.wsman_fault_code == SHELL_NOT_FOUND_FAULT:
                raise ShellLost(host, "the host no longer has the command's shell (it restarted)") from None
            # Other faults (out of memory, quota, service busy) pass; retrying is bounded and phase-safe.
            raise ServerError(host, f"WinRM fault {code}: {exc.reason}") from None
        except WinRMTransportError as exc:
            if exc.code == 401:
                raise AuthenticationFailed(host, "the WinRM service refused the credentials (HTTP 401)") from None
            if exc.code >= 500:
                raise ServerError(host, f"the WinRM service answered HTTP {exc.code}") from None
            raise ExecutorError(host, f"the WinRM service answered HTTP {exc.code}") from None
        except WinRMError as exc:
            raise ExecutorError(host, f"WinRM error: {type(exc).__name__}") from None

    # -- reboots ---------------------------------------------------------------------------------

    async def boot_time(self, host: str, deadline: float | None = None) -> datetime:
        result = await self.run(host, "boottime", deadline=deadline, retry_safe=True)
        return datetime.fromisoformat(result.data["bootTime"].replace("Z", "+00:00"))

    async def wait_for_reboot(
        self,
        host: str,
        before_boot_time: datetime,
        timeout: float,
        *,
        max_delay: float | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> datetime:
        """Wait, bounded by ``timeout``, until the host answers with a boot time other than before.

        Like Ansible's win_reboot: a short probe per attempt, the boot time compared (a host that
        answers with the old boot time has not gone down yet), backoff with jitter, capped. The backoff
        starts at winrm.poll_seconds, not at seconds: a host that is back is noticed within one poll
        (benchmarked: a fixed 2 s first wait was most of a fast run's time).
        """
        stop_at = time.monotonic() + timeout
        base = self.config.winrm.poll_seconds
        # At most two polls (and never over 12 s) between probes: a host that is back is seen soon after.
        cap = max_delay if max_delay is not None else min(REBOOT_PROBE_MAX_SECONDS, 2 * base)
        probe = self.config.winrm.connect_timeout_seconds * 2
        attempt, last = 0, "no answer yet"
        while (remaining := stop_at - time.monotonic()) > 0:
            try:
                booted = await self._probe_boot_time(host, min(probe, remaining))
                if booted != before_boot_time:
                    return booted
                last = "the host still reports the old boot time (not restarted yet)"
            except ExecutorError as exc:
                last = str(exc)
            attempt += 1
            delay = min(base * 2 ** (attempt - 1), cap) + random.uniform(0, min(base, 1.0))
            await sleep(min(delay, max(0.0, stop_at - time.monotonic())))
        raise RebootTimedOut(host, timeout, last)

    async def _probe_boot_time(self, host: str, seconds: float) -> datetime:
        line = command_line(build_script("boottime", {}, self.scripts_dir))
        # Short timeouts: a host that is down must cost seconds per probe, not read_timeout.
        short = max(1, int(self.config.winrm.connect_timeout_seconds))
        protocol = self._protocol(host, operation_timeout=short, read_timeout=short + 2)
        lock = self._host_locks.setdefault(host, asyncio.Lock())
        async with self._slots, lock:
            exit_code, stdout, stderr = await self._in_thread(
                self._execute, protocol, host, "boottime", line, time.monotonic() + seconds, seconds, True
            )
        data = self._result(host, "boottime", exit_code, stdout, stderr, seconds, 1).data
        return datetime.fromisoformat(data["bootTime"].replace("Z", "+00:00"))


def _reason(exc: BaseException) -> str:
    """A few words on why a connection failed; never the URL or anything else from the request."""
    text = str(exc).lower()
    for marker in (
        "connection refused",
        "connection reset",
        "connection aborted",
        "remote end closed",
        "name or service not known",
        "no route to host",
        "certificate verify failed",
        "timed out",
    ):
        if marker in text:
            return marker
    return type(exc).__name__
