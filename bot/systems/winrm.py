"""The WinRM executor: runs one steps/ps script on a host and returns its JSON document.

How a script travels (field notes section 8): the command line is always the same short
`powershell.exe -NoProfile -NonInteractive -EncodedCommand <bootstrap>`; the bootstrap silences progress,
makes PowerShell write UTF-8, reads ALL of stdin as UTF-8 and runs it as one script block. The script
itself (one prologue line setting `$Params` from a JSON literal, then steps/ps/NAME.ps1) goes through the
WS-Management Send operation on stdin, so its size is not bounded by cmd.exe's 8,191 characters. The
shell is opened with code page 65001 so output is UTF-8 even before the bootstrap runs.

pywinrm is synchronous and has no overall deadline, so each command is driven by hand in a worker
thread (open shell, Command, Send, Receive until Done or the deadline, Signal, delete shell), with a
fresh Protocol per command so no session is ever shared between threads. A global semaphore bounds the
hosts worked on at once and a per-host lock keeps one command per host.

Retries are for transport trouble only, and only where they cannot repeat a change on the host:
before the command was sent, any script; while reading output, the same command is polled again,
never started again; when the Command or the Send that carries the script was lost, only scripts
marked ``retry_safe``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import html
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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

from bot.core.config import Config, Secrets
from bot.core.errors import ExternalSystemError

log = logging.getLogger(__name__)

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "steps" / "ps"
CMD_LINE_LIMIT = 8191  # cmd.exe's limit on a whole command line
UTF8_CODEPAGE = 65001
# One Send carries at most this much of the script: Windows refuses envelopes over MaxEnvelopeSizekb
# (500 KB by default) and base64 grows the bytes by a third.
STDIN_CHUNK_BYTES = 192 * 1024
# Every character PowerShell's tokenizer ends a single-quoted string at (CharExtensions.IsSingleQuote).
SINGLE_QUOTES = ("'", "\u2018", "\u2019", "\u201a", "\u201b")
# Runs on Windows PowerShell 4.0 and 5.1 (New-Object, not ::new(), which is 5.0+). Progress is silenced
# before the first cmdlet so no CLIXML progress record opens stderr; stdin is read whole and run as ONE
# script block (`-Command -` would run it line by line). The shell's code page is 65001 already; setting
# OutputEncoding as well keeps output UTF-8 where a host or policy changed the console's code page.
BOOTSTRAP = (
    "$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'\n"
    "[Console]::OutputEncoding = New-Object Text.UTF8Encoding $false\n"
    "$idmUpgradeStdin = New-Object IO.StreamReader ([Console]::OpenStandardInput()), "
    "(New-Object Text.UTF8Encoding $false)\n"
    "& ([ScriptBlock]::Create($idmUpgradeStdin.ReadToEnd()))\n"
)
STDERR_LIMIT = 2000
ACCESS_DENIED_FAULTS = frozenset({5, 0x80070005})
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


@dataclass(frozen=True)
class ScriptResult:
    data: Any
    exit_code: int
    stderr: str
    seconds: float
    attempts: int
    stderr_cut: int = 0  # bytes of stderr over winrm.max_output_kib, read and dropped


def size_text(count: float) -> str:
    """A byte count for people: 512 bytes, 41.2 KiB, 3.0 MiB."""
    if count < 1024:
        return f"{count:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            break
    return f"{count:.1f} {unit}"


class CappedStream:
    """One output stream of a command, keeping at most ``limit`` bytes: its first three quarters and its last
    quarter. Output in between is read (the command must be drained to finish) and counted, not kept, so
    a script that prints megabytes costs ``limit`` bytes of memory, not megabytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.tail_limit = limit // 4
        self.head_limit = limit - self.tail_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.received = 0

    def add(self, data: bytes) -> None:
        self.received += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def kept(self) -> int:
        return len(self.head) + len(self.tail)

    @property
    def cut(self) -> int:
        return self.received - self.kept

    @property
    def note(self) -> str:
        return (
            f"[... {size_text(self.cut)} of output cut; the first {size_text(len(self.head))} "
            f"and the last {size_text(len(self.tail))} are kept]"
        )

    def value(self) -> bytes:
        """What was kept; when something was cut, the note stands where it was."""
        if not self.cut:
            return bytes(self.head + self.tail)
        return bytes(self.head) + f"\n{self.note}\n".encode() + bytes(self.tail)


@dataclass(frozen=True)
class CommandOutput:
    exit_code: int
    stdout: CappedStream
    stderr: CappedStream


def powershell_literal(params: dict[str, Any]) -> str:
    """A single-quoted PowerShell string holding JSON: every single-quote character doubled.

    All five are doubled explicitly: json.dumps happens to write U+2018-U+201B as \\u escapes, but the
    script now travels as UTF-8, so the JSON is written as is (ensure_ascii=False) and must not rely on it.
    """
    text = json.dumps(params, separators=(",", ":"), default=str, ensure_ascii=False)
    for quote in SINGLE_QUOTES:
        text = text.replace(quote, quote * 2)
    return "'" + text + "'"


@functools.lru_cache(maxsize=128)
def script_body(path: Path) -> str:
    """A script's text, read once: build_script runs on the event loop, which must not wait on the disk
    (the ack benchmark caught reads stalling behind the database's fsyncs with 50 runs in flight)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no PowerShell script {path.name} in {path.parent}") from None


def build_script(name: str, params: dict[str, Any] | None = None, scripts_dir: Path = SCRIPTS_DIR) -> str:
    """steps/ps/NAME.ps1 with one line prepended that sets $Params from a JSON literal.

    The line silences errors and progress before ConvertFrom-Json: a cmdlet that runs first can write a
    progress record, and then CLIXML opens stderr ahead of the script's own failure text.
    """
    body = script_body(scripts_dir / f"{name}.ps1")
    return (
        "$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'; "
        f"$Params = {powershell_literal(params or {})} | ConvertFrom-Json\n{body}"
    )


@functools.cache
def command_line() -> str:
    """The one command line every script is run with: the bootstrap that reads the script from stdin."""
    encoded = base64.b64encode(BOOTSTRAP.encode("utf-16-le")).decode("ascii")
    return f"powershell.exe -NoProfile -NonInteractive -EncodedCommand {encoded}"


def start_script(protocol: Protocol, shell_id: str, script: str) -> str:
    """Command (the bootstrap), then Send (the script as UTF-8 on stdin, closed at the end): the command id.

    console_mode_stdin=False: stdin is a pipe the bootstrap reads to its end, as Ansible sends it.
    Tests and benchmarks use this to send exactly what the executor sends.
    """
    command_id = protocol.run_command(shell_id, command_line(), console_mode_stdin=False)
    send_stdin(protocol, shell_id, command_id, script)
    return command_id


def send_stdin(protocol: Protocol, shell_id: str, command_id: str, script: str) -> None:
    data = script.encode("utf-8")
    chunks = [data[i : i + STDIN_CHUNK_BYTES] for i in range(0, len(data), STDIN_CHUNK_BYTES)] or [b""]
    for i, chunk in enumerate(chunks):
        protocol.send_command_input(shell_id, command_id, chunk, end=i == len(chunks) - 1)


_CLIXML_HEADER = re.compile(r"#< CLIXML\r?\n?")
# A CLIXML document's pieces: the <Objs> wrapper, each serialised object, each string record.
_CLIXML_PIECE = re.compile(
    r"<Objs\b[^>]*>|</Objs>|<Obj\b.*?</Obj>|<Obj\b[^>]*/>|<S\b(?P<attrs>[^>]*)>(?P<text>.*?)</S>", re.DOTALL
)
_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def clean_stderr(raw: bytes) -> str:
    """stderr as plain text: Error records of PowerShell's CLIXML decoded, everything written outside the
    records kept (a script's own [Console]::Error.WriteLine lands before, inside or after the document),
    progress and other records dropped.

    Parsed piece by piece, not as XML: the plain text that lands inside the document is not escaped.
    """
    text = raw.decode("utf-8", errors="replace")
    if "#< CLIXML" in text:
        parts: list[str] = []
        for chunk in _CLIXML_HEADER.split(text):
            position = 0
            for piece in _CLIXML_PIECE.finditer(chunk):
                parts.append(chunk[position : piece.start()])
                position = piece.end()
                if piece.group("text") is not None and 'S="Error"' in piece.group("attrs"):
                    parts.append(_clixml_text(piece.group("text")))
            parts.append(chunk[position:])
        text = "".join(parts)
    text = text.replace("\r\n", "\n").strip()
    if len(text) <= STDERR_LIMIT:
        return text
    # The head says what failed first; the tail often says why the script ended: keep both.
    head, tail = STDERR_LIMIT * 3 // 4, STDERR_LIMIT // 4
    return f"{text[:head]} […{len(text) - head - tail} characters cut…] {text[-tail:]}"


def _clixml_text(text: str) -> str:
    decoded = _CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return html.unescape(decoded)


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
        body = build_script(script, params, self.scripts_dir)
        line = command_line()
        if len(line) > CMD_LINE_LIMIT:  # the script is on stdin; only the bootstrap could outgrow cmd.exe
            raise CommandTooLong(
                host,
                f"{script}: the command line would be {len(line)} characters; Windows allows {CMD_LINE_LIMIT}. "
                "Shorten the bootstrap.",
            )
        seconds = deadline if deadline is not None else self.config.winrm.command_timeout_seconds
        started = time.monotonic()
        stop_at = started + seconds
        lock = self._host_locks.setdefault(host, asyncio.Lock())
        async with lock:  # one command per host at a time; how many hosts at once is the engine's slots
            attempt = 0
            while True:
                attempt += 1
                try:
                    output = await self._in_thread(
                        self._execute,
                        self._protocol(host),
                        host,
                        script,
                        body,
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
        return self._result(host, script, output, time.monotonic() - started, attempt)

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

    def _result(self, host: str, script: str, output: CommandOutput, seconds: float, attempts: int) -> ScriptResult:
        exit_code, stdout, stderr = output.exit_code, output.stdout, output.stderr
        text = stdout.value().decode("utf-8", errors="replace").strip()
        errors = clean_stderr(stderr.value())
        if stderr.cut:
            log.warning("%s: %s wrote %s to stderr; %s", host, script, size_text(stderr.received), stderr.note)
            if stderr.note not in errors:
                errors = f"{errors} {stderr.note}"
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = None
            if exit_code == 0 and stdout.cut:
                raise BadOutput(
                    host,
                    f"{script} wrote {size_text(stdout.received)} to stdout, more than winrm.max_output_kib "
                    f"({stdout.limit // 1024} KiB) allows, so its output was cut {stdout.note} and what was kept "
                    "is not one JSON document",
                ) from None
            if exit_code == 0:
                preview = text[:200] + ("…" if len(text) > 200 else "")
                raise BadOutput(host, f"{script} did not write one JSON document (got: {preview!r})") from None
        if exit_code != 0:
            raise ScriptFailed(host, script, exit_code, errors, data)
        if data is None:
            raise BadOutput(host, f"{script} wrote nothing to stdout")
        return ScriptResult(data, exit_code, errors, seconds, attempts, stderr.cut)

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
            transport=cast(Any, transport),  # validated by the config's Literal
            username=self._username.get_secret_value(),
            password=self._password.get_secret_value(),
            server_cert_validation=winrm.server_cert_validation,
            ca_trust_path=cast(Any, winrm.ca_trust_path),  # None: the system's trust store, as before
            operation_timeout_sec=op,
            read_timeout_sec=read_timeout or max(winrm.read_timeout_seconds, op + 1),
        )

    def _execute(
        self,
        cancel: threading.Event,
        protocol: Protocol,
        host: str,
        script: str,
        body: str,
        stop_at: float,
        seconds: float,
        retry_safe: bool,
        ends_connection: bool = False,
    ) -> CommandOutput:
        # nothing has run yet: any error retryable. 65001: output in UTF-8, which is how it is decoded.
        shell_id = self._call(host, lambda: protocol.open_shell(codepage=UTF8_CODEPAGE))
        try:
            # Once the Command may exist on the host, a lost request (the Command, or the Send that carries
            # the script) leaves its outcome unknown: only a retry-safe script is sent again.
            try:
                try:
                    command_id = self._call(
                        host, lambda: protocol.run_command(shell_id, command_line(), console_mode_stdin=False)
                    )
                    self._call(host, lambda: send_stdin(protocol, shell_id, command_id, body))
                except WinRMOperationTimeoutError:  # the service gave up on the request: as uncertain as a loss
                    raise HostUnreachable(host, "the WinRM service did not take the command in time") from None
            except ExecutorError as exc:
                if exc.retryable and not retry_safe:
                    raise CommandOutcomeUnknown(
                        host,
                        f"{script}: the connection failed while the command was being sent, so it may be running; "
                        "not sent again because it may change the host. Check the host, then retry the run.",
                    ) from None
                raise
            # Capped as it arrives (each Receive carries at most an envelope's worth): never held whole.
            limit = self.config.winrm.max_output_kib * 1024
            stdout, stderr, lost = CappedStream(limit), CappedStream(limit), 0
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
                stdout.add(out)
                stderr.add(err)
                if done:
                    self._terminate(protocol, shell_id, command_id)
                    return CommandOutput(exit_code, stdout, stderr)
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

    # -- probes --------------------------------------------------------------------------------

    async def probe(self, host: str, script: str, seconds: float, params: dict[str, Any] | None = None) -> ScriptResult:
        """One short attempt of a read-only script, for a host that may be down (restarting).

        Connect and operation timeouts of a few seconds and no retry: a probe of a host that is down must
        cost seconds, not read_timeout. Waiting for the host to come back is the caller's business.
        """
        body = build_script(script, params or {}, self.scripts_dir)
        short = max(1, int(self.config.winrm.connect_timeout_seconds))
        protocol = self._protocol(host, operation_timeout=short, read_timeout=short + 2)
        async with self._host_locks.setdefault(host, asyncio.Lock()):
            output = await self._in_thread(
                self._execute, protocol, host, script, body, time.monotonic() + seconds, seconds, True
            )
        return self._result(host, script, output, seconds, 1)


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
