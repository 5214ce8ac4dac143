"""A WinRM (WS-Management over HTTP) server that plays one simulated connector host.

Real pywinrm talks to it unmodified (transport 'basic', endpoint http://127.0.0.1:PORT/wsman): shells
are created (in the code page the client asked for, 437 by default, which output is then written in) and
deleted; a command whose command line is a bootstrap reading stdin (the bot's) gets its script through
Send, buffered per command, and runs it only once stdin ended (End="true"); the command line itself
stays bounded by cmd.exe's 8,191 characters, stdin is not. Commands run asynchronously for their
simulated duration, a Receive that
outlasts the request's OperationTimeout gets the same 500 TimedOut fault Windows sends (so clients poll
as they must against real hosts), and a reboot really closes the listening socket so clients see
connection errors. See sandbox/host.py for the host model and sandbox/ps_handlers.py for the scripts.

Entry points:
- `WinRMHostServer`: the asyncio server (`async with WinRMHostServer(state) as server:`).
- `start_hosts(n, ...)`: N servers in the running loop, sharing one fleet-wide in-flight gauge.
- sandbox.threaded: `running_host(...)` / `running_fleet(...)`, the same in a background thread.
- `serve_host(name, port, scenario)`: `idm-upgrade sandbox host`; prints one JSON line, serves until
  interrupted.

Extra HTTP routes, unauthenticated because they are the sandbox's, not Windows': GET /_sandbox/stats
(JSON counters) and GET /artifacts/<installer file> (the simulated download). Both go down with the host.

Processes a script starts outside its shell (`HandlerResult.process`, the detached installer) run as
background tasks: they survive the command and its shell, and a reboot kills them. A reboot scheduled
with `reboot_after_seconds` is void once the host has booted again in the meantime, as on Windows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import secrets
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from aiohttp import web

from sandbox import wsman
from sandbox.faults import HOLD_SECONDS, Faults, noise
from sandbox.handler_base import BackgroundProcess
from sandbox.host import HostState, scenario
from sandbox.powershell import Execution, StdinScript, run_command_line
from sandbox.ps_handlers import HANDLERS, Handler

log = logging.getLogger(__name__)

DEFAULT_USERNAME = "sandbox-admin"
SANDBOX_TIME_SCALE = 0.1  # serve_host: slow enough to watch, fast enough to wait for
_REQUEST_LOG_LIMIT = 10_000  # a long-running sandbox polls forever; keep the log bounded
# Of each output stream, one Receive response carries at most this much: with base64 both streams stay
# inside Windows' default MaxEnvelopeSizekb of 500.
RECEIVE_STREAM_BYTES = 128 * 1024


class ConcurrencyGauge:
    """Current and peak number of commands running, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)

    def exit(self) -> None:
        with self._lock:
            self.current -= 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.current


@dataclass(frozen=True)
class RequestRecord:
    """One WS-Management request as the host saw it (including ones a fault answered)."""

    at: float  # time.time()
    action: str  # Create, Command, Send, Receive, Signal, Delete; or the raw action URI; "?" if unparsed
    status: int  # HTTP status answered; 0 when the connection was dropped
    shell_id: str | None = None
    command_id: str | None = None
    # Command with the script in its command line, or the Send that ended a bootstrap's stdin: the
    # script's marker name and the $Params it got
    script: str | None = None
    params: dict[str, Any] | None = None
    # e.g. "codepage 65001", "reading stdin", "stdin ended", "TimedOut", "terminate", "dropped", "exit 0"
    detail: str = ""


@dataclass
class _Command:
    id: str
    shell_id: str
    execution: Execution | None  # None while a StdinScript waits for the end of its stdin
    codepage: int
    reads_stdin: StdinScript | None = None
    stdin: bytearray = field(default_factory=bytearray)
    stdin_ended: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_sent: int = 0  # how much of each stream earlier Receives carried
    stderr_sent: int = 0
    terminated: bool = False
    task: asyncio.Task[None] | None = None


@dataclass
class _Shell:
    id: str
    codepage: int
    commands: dict[str, _Command] = field(default_factory=dict)


class _Dropped(Exception):
    """The connection was closed on purpose; nothing must be written back."""


class WinRMHostServer:
    """One simulated Windows host on 127.0.0.1:port (0 picks a free port)."""

    def __init__(
        self,
        state: HostState,
        *,
        username: str = DEFAULT_USERNAME,
        password: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        handlers: Mapping[str, Handler] | None = None,
        fleet_gauge: ConcurrencyGauge | None = None,
    ) -> None:
        self.state = state
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.host = host
        self.port = port
        self.time_scale = time_scale
        self.handlers: dict[str, Handler] = dict(HANDLERS if handlers is None else handlers)
        self.faults = Faults()
        self.in_flight = ConcurrencyGauge()
        self.fleet_gauge = fleet_gauge
        self.timed_out_receives = 0
        self.commands_started = 0
        self.scripts_run: Counter[str] = Counter()  # marked scripts with a handler, by name
        # Appended in the server's loop, copied from test threads: a deque must not be iterated while it grows.
        self._requests: deque[RequestRecord] = deque(maxlen=_REQUEST_LOG_LIMIT)
        self._requests_lock = threading.Lock()
        self._shells: dict[str, _Shell] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._down: set[str] = set()  # why the host is not listening: "reboot", "refuse"
        self._online = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._processes: dict[asyncio.Task[None], BackgroundProcess] = {}

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> WinRMHostServer:
        app = web.Application()
        app.router.add_post("/wsman", self._wsman)
        app.router.add_get("/_sandbox/stats", self._stats_route)
        app.router.add_get("/_sandbox/commands", self._commands_route)
        app.router.add_get("/artifacts/{name}", self._artifact_route)
        # A short shutdown timeout: a pending long-poll Receive must not hold up stop() or a reboot.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()
        self.state.artifact_url = self.installer_url  # what the stage script may download from
        return self

    async def stop(self) -> None:
        tasks = [
            *self._background,
            *self._processes,
            *(c.task for sh in self._shells.values() for c in sh.commands.values()),
        ]
        for task in [*self._background, *self._processes]:
            task.cancel()
        for shell in list(self._shells.values()):
            self._discard_shell(shell)
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None
        self._online.clear()

    async def __aenter__(self) -> WinRMHostServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/wsman"

    @property
    def installer_url(self) -> str:
        return f"http://{self.host}:{self.port}/artifacts/{self.state.artifact.file_name}"

    @property
    def installer_sha256(self) -> str:
        """The checksum an operator would configure; `hash-mismatch` serves bytes that don't match it."""
        return self.state.artifact.advertised_sha256

    @property
    def online(self) -> bool:
        return self._site is not None

    @property
    def requests(self) -> list[RequestRecord]:
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    @property
    def commands_in_flight(self) -> int:
        return self.in_flight.current

    @property
    def peak_commands_in_flight(self) -> int:
        return self.in_flight.peak

    def stats(self) -> dict[str, Any]:
        return {
            "computer_name": self.state.computer_name,
            "scenario": self.state.scenario,
            "online": self.online,
            "commands_in_flight": self.in_flight.current,
            "peak_commands_in_flight": self.in_flight.peak,
            "commands_started": self.commands_started,
            "shells_open": len(self._shells),
            "timed_out_receives": self.timed_out_receives,
            "requests": len(self._requests),
            "scripts": dict(self.scripts_run),
            "downloads": self.state.downloads,
            "installs_started": self.state.installs_started,
            "installs_run": self.state.installs_run,
            "installs_killed": self.state.installs_killed,
            "reboots_requested": self.state.reboots_requested,
            "boots": self.state.boots,
            "boot_time": self.state.boot_time.isoformat(),
        }

    def describe(self) -> dict[str, str]:
        """The line `idm-upgrade sandbox host` prints: enough for a bot config to reach this host."""
        return {
            "endpoint": self.endpoint,
            "username": self.username,
            "password": self.password,
            "scenario": self.state.scenario,
            "installer_url": self.installer_url,
            "installer_sha256": self.installer_sha256,
        }

    # ----- power: reboots and refused connections ---------------------------------------------------

    async def begin_reboot(self) -> None:
        """Go down now (connections refused, shells lost), come back after the simulated downtime.

        Returns once the host is down. With `reboot.never_returns` it stays down until stop().
        """
        if "reboot" in self._down:
            return
        self._down.add("reboot")
        for shell in list(self._shells.values()):
            self._discard_shell(shell)
        self._kill_processes()
        await self._listen()
        if not self.state.reboot.never_returns:
            self._spawn(self._come_back(self.state.reboot.downtime_seconds * self.time_scale))

    async def _come_back(self, after: float) -> None:
        await asyncio.sleep(after)
        self.state.finish_boot()
        self._down.discard("reboot")
        await self._listen()

    async def power_off(self) -> None:
        """The VM is off (a revert to a snapshot without memory): connections refused until power_on()."""
        self._down.add("power")
        for shell in list(self._shells.values()):
            self._discard_shell(shell)
        self._kill_processes()
        await self._listen()

    async def power_on(self) -> None:
        """The VM boots: a new boot time, services started, listening again (a reboot in progress is over)."""
        if "power" not in self._down:
            return
        self.state.finish_boot()
        self._down.discard("power")
        self._down.discard("reboot")
        await self._listen()

    async def refuse_connections(self) -> None:
        """Stop listening (a firewall drop or a stopped WinRM service); open shells survive."""
        self._down.add("refuse")
        await self._listen()

    async def accept_connections(self) -> None:
        self._down.discard("refuse")
        await self._listen()

    async def wait_online(self) -> None:
        """Returns when the host listens again; bound it with asyncio.timeout()."""
        await self._online.wait()

    async def _listen(self) -> None:
        """Make the socket match the power state: listening iff nothing holds the host down."""
        assert self._runner is not None, "start() first"
        if self._down and self._site is not None:
            site, self._site = self._site, None
            self._online.clear()
            await site.stop()
            # Stopping the listener leaves accepted keep-alive connections open; a host that goes down
            # takes them with it.
            server = self._runner.server
            for connection in server.connections if server is not None else []:
                if connection.transport is not None:
                    connection.transport.abort()
        elif not self._down and self._site is None:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
            self._site = site
            if self.port == 0:
                self.port = self._runner.addresses[0][1]
            self._online.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----- HTTP -------------------------------------------------------------------------------------

    async def _wsman(self, request: web.Request) -> web.StreamResponse:
        if self.faults.delay_seconds > 0:
            await asyncio.sleep(self.faults.delay_seconds)
        body = await request.read()
        try:
            req: wsman.WSManRequest | None = wsman.parse_request(body)
        except wsman.MalformedRequest:
            req = None
        action = req.action if req else "?"
        shell_id = req.shell_id if req else None

        # Windows checks credentials before it looks at the message.
        if not self._authorized(request) or self.faults.take("unauthorized"):
            self._record(action, 401, shell_id=shell_id, detail="unauthorized")
            return web.Response(status=401, headers={"WWW-Authenticate": 'Negotiate, Basic realm="WSMAN"'})
        if req is None:
            fault = wsman.Fault("s:Sender", "w:SchemaValidationError", "The SOAP XML is not valid.", 2150858817)
            return self._fault(fault, "uuid:00000000-0000-0000-0000-000000000000", "?", None)
        if self.faults.take("server_errors"):
            if not self.faults.server_error_body:
                self._record(action, 500, shell_id=shell_id, detail="injected 500, empty body")
                return web.Response(status=500)
            return self._fault(wsman.internal_error(), req.message_id, action, shell_id, detail="injected 500")
        if action == "Receive" and self.faults.take("drop_receives"):
            self._record(action, 0, shell_id=shell_id, detail="dropped")
            return self._drop(request)
        if req.resource_uri != wsman.SHELL_RESOURCE_URI:
            fault = wsman.Fault(
                "s:Sender", "w:DestinationUnreachable", f"The resource URI {req.resource_uri} is not supported."
            )
            return self._fault(fault, req.message_id, action, shell_id)

        try:
            if action == "Create":
                return self._create(request, req)
            shell = self._shells.get(req.shell_id or "")
            if shell is None:
                return self._fault(wsman.shell_not_found(req.shell_id or ""), req.message_id, action, shell_id)
            if action == "Command":
                return self._command(req, shell)
            if action == "Receive":
                return await self._receive(request, req, shell)
            if action == "Signal":
                return self._signal(req, shell)
            if action == "Send":
                return self._send(req, shell)
            if action == "Delete":
                self._discard_shell(shell)
                self._record(action, 200, shell_id=shell.id)
                return self._soap(wsman.delete_response(req))
            return self._fault(wsman.action_not_supported(req.action_uri), req.message_id, action, shell_id)
        except wsman.MalformedRequest as exc:
            return self._fault(wsman.invalid_parameter(str(exc)), req.message_id, action, shell_id)
        except _Dropped:
            return self._drop(request)

    def _create(self, request: web.Request, req: wsman.WSManRequest) -> web.Response:
        try:
            codepage = int(req.options.get("WINRS_CODEPAGE", "437"))
        except ValueError:
            codepage = 437
        shell = _Shell(wsman.new_id(), codepage)
        self._shells[shell.id] = shell
        self._record("Create", 200, shell_id=shell.id, detail=f"codepage {codepage}")
        return self._soap(
            wsman.create_response(
                req, shell.id, address=self.endpoint, owner=self.username, client_ip=request.remote or ""
            )
        )

    def _command(self, req: wsman.WSManRequest, shell: _Shell) -> web.Response:
        launched = run_command_line(wsman.command_line(req), self.state, self.handlers)
        if isinstance(launched, StdinScript):
            # powershell.exe runs, reading stdin; the script is known (and run) once stdin has ended
            command = _Command(wsman.new_id(), shell.id, None, shell.codepage, reads_stdin=launched)
            shell.commands[command.id] = command
            self._start(command)
            self._record("Command", 200, shell_id=shell.id, command_id=command.id, detail="reading stdin")
            return self._soap(wsman.command_response(req, command.id))
        self._accept(launched)
        command = _Command(wsman.new_id(), shell.id, launched, shell.codepage)
        command.stdin_ended.set()  # nothing reads it: the command runs at once
        shell.commands[command.id] = command
        self._start(command)
        self._record(
            "Command",
            200,
            shell_id=shell.id,
            command_id=command.id,
            script=launched.script,
            params=launched.params,
            detail="" if launched.script else "not a marked script",
        )
        return self._soap(wsman.command_response(req, command.id))

    def _accept(self, execution: Execution) -> None:
        """The script starts: count it, and start what it starts outside its shell."""
        if execution.script in self.handlers:
            self.scripts_run[execution.script] += 1
        if execution.result.process is not None:
            self._start_process(execution.result.process)

    def _send(self, req: wsman.WSManRequest, shell: _Shell) -> web.Response:
        chunk = wsman.send_stream(req)
        command = shell.commands.get(chunk.command_id)
        if command is None:
            fault = wsman.invalid_parameter("The Windows Remote Shell received a request for an unknown CommandId.")
            return self._fault(fault, req.message_id, "Send", shell.id, chunk.command_id)
        if command.stdin_ended.is_set() and command.reads_stdin is not None:
            fault = wsman.invalid_parameter("The stdin stream of this command was already closed (End was sent).")
            return self._fault(fault, req.message_id, "Send", shell.id, command.id, "stdin closed")
        if command.reads_stdin is None or command.done.is_set():
            # A process that does not read stdin leaves it in the pipe; Windows accepts the Send.
            self._record("Send", 200, shell_id=shell.id, command_id=command.id, detail="stdin not read")
            return self._soap(wsman.send_response(req))
        command.stdin += chunk.data
        if not chunk.end:
            self._record("Send", 200, shell_id=shell.id, command_id=command.id, detail="stdin")
            return self._soap(wsman.send_response(req))
        execution = command.reads_stdin.run(bytes(command.stdin), shell.codepage, self.state, self.handlers)
        self._accept(execution)
        command.execution = execution
        command.stdin_ended.set()
        self._record(
            "Send",
            200,
            shell_id=shell.id,
            command_id=command.id,
            script=execution.script,
            params=execution.params,
            detail="stdin ended",
        )
        return self._soap(wsman.send_response(req))

    async def _receive(self, request: web.Request, req: wsman.WSManRequest, shell: _Shell) -> web.Response:
        command = shell.commands.get(wsman.body_command_id(req))
        if command is None:
            fault = wsman.invalid_parameter("The Windows Remote Shell received a request for an unknown CommandId.")
            return self._fault(fault, req.message_id, "Receive", shell.id)
        try:
            async with asyncio.timeout(req.operation_timeout):
                await command.done.wait()
        except TimeoutError:
            self.timed_out_receives += 1
            return self._fault(wsman.TIMED_OUT, req.message_id, "Receive", shell.id, command.id, "TimedOut")
        if not self.online:
            raise _Dropped  # the host went down while this Receive waited
        # As Windows does, a Receive carries what fits in one envelope (MaxEnvelopeSizekb); the command reads
        # as Done only with the Receive that carries the last of its output.
        stdout = command.stdout[command.stdout_sent : command.stdout_sent + RECEIVE_STREAM_BYTES]
        stderr = command.stderr[command.stderr_sent : command.stderr_sent + RECEIVE_STREAM_BYTES]
        command.stdout_sent += len(stdout)
        command.stderr_sent += len(stderr)
        drained = command.stdout_sent >= len(command.stdout) and command.stderr_sent >= len(command.stderr)
        exit_code = command.exit_code if drained else None
        self._record("Receive", 200, shell_id=shell.id, command_id=command.id, detail=f"exit {exit_code}")
        return self._soap(wsman.receive_response(req, command.id, stdout=stdout, stderr=stderr, exit_code=exit_code))

    def _signal(self, req: wsman.WSManRequest, shell: _Shell) -> web.Response:
        command_id = wsman.body_command_id(req)
        command = shell.commands.get(command_id)
        if command is None:
            fault = wsman.invalid_parameter("The Windows Remote Shell received a request for an unknown CommandId.")
            return self._fault(fault, req.message_id, "Signal", shell.id, command_id)
        code = wsman.signal_code(req)
        was_running = self._terminate(command)
        detail = code + (" (while running)" if was_running else "")
        self._record("Signal", 200, shell_id=shell.id, command_id=command.id, detail=detail)
        return self._soap(wsman.signal_response(req))

    # ----- commands ---------------------------------------------------------------------------------

    def _start(self, command: _Command) -> None:
        self.commands_started += 1
        # Counted from the moment the host accepts the command until its process ends (or is killed);
        # the exit happens in a done-callback so a task cancelled before it ever ran is still counted out.
        gauges = [g for g in (self.in_flight, self.fleet_gauge) if g is not None]
        for gauge in gauges:
            gauge.enter()
        command.task = asyncio.get_running_loop().create_task(self._run(command))

        def finished(task: asyncio.Task[None]) -> None:
            for gauge in gauges:
                gauge.exit()
            if task.cancelled():
                command.terminated = True
                command.exit_code = 1 if command.exit_code is None else command.exit_code
            command.done.set()

        command.task.add_done_callback(finished)

    async def _hold(self, command: _Command) -> None:
        """The hold_until_fleet_in_flight fault: wait, bounded, until that many commands run at once."""
        wanted, gauge = self.faults.hold_until_fleet_in_flight, self.fleet_gauge
        if wanted <= 0 or gauge is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOLD_SECONDS
        # The gauge is a thread-safe counter shared by hosts that may run on other loops: poll it, bounded.
        while gauge.current < wanted and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def _run(self, command: _Command) -> None:
        await command.stdin_ended.wait()  # a bootstrap reading stdin runs its script once stdin ended
        await self._hold(command)
        execution = command.execution
        assert execution is not None
        result = execution.result
        wait = result.duration_seconds * self.time_scale + self.faults.command_delay_seconds
        if wait > 0:
            await asyncio.sleep(wait)
        exit_code, stderr = result.exit_code, execution.stderr_bytes(command.codepage)
        if result.on_complete is not None:
            try:
                result.on_complete()
            except Exception:
                log.exception("sandbox on_complete of %r failed", execution.script)
                exit_code = 1
        stdout = execution.stdout_bytes(command.codepage)
        if self.faults.noise_script in ("", execution.script):  # a chatty script: log lines before its document
            stdout = noise(self.faults.noise_stdout_bytes) + stdout
            stderr = stderr + noise(self.faults.noise_stderr_bytes)
        command.stdout, command.stderr = stdout, stderr
        command.exit_code = exit_code
        if result.reboot_after_seconds is not None:
            self._spawn(self._reboot_later(result.reboot_after_seconds * self.time_scale))

    async def _reboot_later(self, delay: float) -> None:
        boots = self.state.boots
        await asyncio.sleep(delay)
        if self.state.boots == boots:  # a scheduled shutdown does not survive a boot
            await self.begin_reboot()

    # ----- processes outside the shell --------------------------------------------------------------

    def _start_process(self, process: BackgroundProcess) -> None:
        task = asyncio.get_running_loop().create_task(self._run_process(process))
        self._processes[task] = process
        task.add_done_callback(lambda t: self._processes.pop(t, None))

    async def _run_process(self, process: BackgroundProcess) -> None:
        await asyncio.sleep(process.duration_seconds * self.time_scale)
        try:
            process.on_exit()
        except Exception:
            log.exception("sandbox process %s failed on exit", process.name)
        if process.reboot_after_seconds is not None:
            self._spawn(self._reboot_later(process.reboot_after_seconds * self.time_scale))

    def _kill_processes(self) -> None:
        """The host goes down: every process still running dies without finishing."""
        for task, process in list(self._processes.items()):
            if task.done():
                continue
            task.cancel()
            try:
                process.on_kill()
            except Exception:
                log.exception("sandbox process %s failed on kill", process.name)

    def _terminate(self, command: _Command) -> bool:
        """Kill the command if it still runs; True when it did."""
        if command.task is not None and not command.task.done():
            command.task.cancel()
            return True
        return False

    def _discard_shell(self, shell: _Shell) -> None:
        for command in shell.commands.values():
            self._terminate(command)
        self._shells.pop(shell.id, None)

    # ----- responses and bookkeeping ---------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Windows account names are case-insensitive; passwords are not.
        return user.casefold() == self.username.casefold() and hmac.compare_digest(
            password.encode(), self.password.encode()
        )

    def _soap(self, payload: bytes, status: int = 200) -> web.Response:
        return web.Response(status=status, body=payload, content_type="application/soap+xml", charset="UTF-8")

    def _fault(
        self,
        fault: wsman.Fault,
        relates_to: str,
        action: str,
        shell_id: str | None,
        command_id: str | None = None,
        detail: str = "",
    ) -> web.Response:
        self._record(
            action, fault.http_status, shell_id=shell_id, command_id=command_id, detail=detail or fault.subcode
        )
        payload = wsman.fault_response(fault, relates_to=relates_to, machine=self.state.computer_name)
        return self._soap(payload, status=fault.http_status)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        # aiohttp finds the transport closed and writes nothing; the client sees the connection reset.
        return web.Response(status=500)

    def _record(self, action: str, status: int, **fields: Any) -> None:
        record = RequestRecord(at=time.time(), action=action, status=status, **fields)
        with self._requests_lock:
            self._requests.append(record)

    async def _commands_route(self, request: web.Request) -> web.Response:
        """The scripts this host was sent, in order, with their $Params (a benchmark replays them): from the
        command line, or from stdin when it ended."""
        sent = [
            {"script": r.script, "params": r.params or {}} for r in self.requests if r.action in ("Command", "Send")
        ]
        return web.json_response([c for c in sent if c["script"]])

    async def _stats_route(self, request: web.Request) -> web.Response:
        body = self.stats()
        if self.fleet_gauge is not None:
            body["fleet_commands_in_flight"] = self.fleet_gauge.current
            body["fleet_peak_commands_in_flight"] = self.fleet_gauge.peak
        return web.json_response(body)

    async def _artifact_route(self, request: web.Request) -> web.Response:
        artifact = self.state.artifact
        if request.match_info["name"] != artifact.file_name:
            raise web.HTTPNotFound()
        return web.Response(body=artifact.payload, content_type="application/octet-stream")


# ----- several hosts in one loop ----------------------------------------------------------------------


async def start_hosts(
    n: int,
    scenario_name: str = "default",
    *,
    fleet_gauge: ConcurrencyGauge | None = None,
    **server_kwargs: Any,
) -> list[WinRMHostServer]:
    """Start n hosts of one scenario in the running loop; they share one fleet-wide in-flight gauge.

    Host i is named IDM-CONN01, IDM-CONN02, ...; the caller stops each server.
    """
    gauge = fleet_gauge or ConcurrencyGauge()
    servers: list[WinRMHostServer] = []
    try:
        for i in range(1, n + 1):
            state = scenario(scenario_name)
            state.computer_name = f"IDM-CONN{i:02d}"
            servers.append(await WinRMHostServer(state, fleet_gauge=gauge, **server_kwargs).start())
    except BaseException:
        for server in servers:
            await server.stop()
        raise
    return servers


# ----- idm-upgrade sandbox host ------------------------------------------------------------------------


def serve_host(
    name: str,
    port: int,
    scenario_name: str = "default",
    *,
    host: str = "127.0.0.1",
    username: str = DEFAULT_USERNAME,
    password: str | None = None,
    time_scale: float = SANDBOX_TIME_SCALE,
    out: IO[str] | None = None,
) -> None:
    """Serve one simulated host until SIGINT/SIGTERM.

    First writes one JSON line {endpoint, username, password, scenario, installer_url, installer_sha256}
    to `out` (stdout). `name` becomes the host's computer name (upper-cased, 15 characters as NetBIOS).
    An unknown scenario raises ValueError before anything is served.
    """
    state = scenario(scenario_name)
    state.computer_name = name.upper()[:15]
    server = WinRMHostServer(state, username=username, password=password, host=host, port=port, time_scale=time_scale)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(server, out or sys.stdout))


async def _serve_until_stopped(server: WinRMHostServer, out: IO[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with server:
        print(json.dumps(server.describe()), file=out, flush=True)
        await stop.wait()
