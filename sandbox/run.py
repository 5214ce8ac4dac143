"""`idm-upgrade sandbox`: a complete upgrade in Slack form, with no Slack, no Windows and no credentials.

Everything speaks the real protocols on 127.0.0.1: the Slack stand-in, N simulated connector hosts over
WinRM, the Workspace ONE Access stand-in, and the bot itself in HTTP mode. A signed `/idm-upgrade` is sent
as the requester; each approval is clicked as an approver (or asked at this terminal); the channel is drawn
here as Slack would show it; the run ends with the audit chain verified and a one-line result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from bot.core.config import Config, Secrets, parse_config
from bot.core.gates import gate_named
from bot.core.models import ApprovalState, Run, StepState, utcnow
from bot.core.signing import generate_key_file, parse_public_key
from bot.slack.app import SlackBot
from bot.slack.witness import read_checkpoints
from bot.store import checkpoints
from bot.terminal.view import StdinLines
from sandbox.screen import HOLD_UNPLACED_DRAWINGS, make_screen
from sandbox.servicenow import ServiceNowStandIn
from sandbox.slack import SlackStandIn
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.slack_views import home_of, open_home, render_home
from sandbox.winrm_server import WinRMHostServer, start_hosts
from sandbox.workspace_one import WorkspaceOneStandIn, default_directories

SIGNING_SECRET = "sandbox-" + secrets.token_hex(8)
REDRAW_SECONDS = 0.5
# The sandbox gives up on a run after this long (time spent at a prompt not counted). Every timeout of the
# bot's own in sandbox_config is well inside it, so each scenario ends with the bot's own verdict.
GIVE_UP_SECONDS = 180.0
# The bot's own timeouts in the sandbox: short, as the hosts' clocks run ten times fast (time_scale=0.1).
SERVICE_TIMEOUT_SECONDS = 30  # the slowest scenario, delayed-service-start, is Running 12 s after the boot
REBOOT_TIMEOUT_SECONDS = 60  # a reboot takes 3 s here
INSTALLER_TIMEOUT_MINUTES = 1  # an install takes 4.5 s here


def sandbox_config(
    hosts: list[WinRMHostServer], ws1_url: str, database: Path, signing_key: Path | None = None, extra: str = ""
) -> Config:
    tables = "".join(
        f'[hosts.host{i:02d}]\naddress = "127.0.0.1"\nport = {urlsplit(h.endpoint).port}\n'
        for i, h in enumerate(hosts, start=1)
    )
    # policy.approve_install keeps its production default (true): the sandbox shows every request a real run
    # makes, and the approver (auto or this terminal) answers the install's like the others.
    text = f"""
[slack]
channel = "{OPS_CHANNEL}"
requesters = ["{REQUESTER}"]
approvers = ["{APPROVER}"]
approval_timeout_minutes = 10
messages_per_second = 10
[database]
path = "{database}"
[installer]
url = "{hosts[0].installer_url}"
sha256 = "{hosts[0].installer_sha256}"
version = "19.03.0.1"
timeout_minutes = {INSTALLER_TIMEOUT_MINUTES}
busy_wait_seconds = 5
[winrm]
scheme = "http"
transport = "basic"
poll_seconds = 0.5
connect_timeout_seconds = 1
command_timeout_seconds = 30
[connector]
service_timeout_seconds = {SERVICE_TIMEOUT_SECONDS}
[reboot]
timeout_seconds = {REBOOT_TIMEOUT_SECONDS}
[workspace_one]
url = "{ws1_url}"
[audit]
{f'signing_key_file = "{signing_key}"' if signing_key else ""}
{extra}
{tables}"""
    return parse_config(tomllib.loads(text))


@dataclass(frozen=True)
class ChangeScenario:
    """A scenario of the bot's change management rather than of the hosts: its hosts behave as ``hosts``
    does; ``config`` (called at start, with the time) adds TOML; ``words`` are added to the command."""

    hosts: str
    config: Callable[[datetime, list[str]], tuple[str, str]]  # -> (TOML, a line saying what it set up)
    words: str


def _scheduled(now: datetime, names: list[str]) -> tuple[str, str]:
    # Windows are set in whole minutes: this one opens at the first minute at least 5 s away, for 30 minutes.
    opens = (now + timedelta(seconds=65)).replace(second=0, microsecond=0)
    closes = opens + timedelta(minutes=30)
    toml = f"""
[windows.sandbox]
days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
start = "{opens:%H:%M}"
end = "{closes:%H:%M}"
timezone = "UTC"
[groups.fleet]
hosts = {json.dumps(names)}
window = "sandbox"
"""
    seconds = (opens - now).total_seconds()
    return toml, f"maintenance window sandbox: daily {opens:%H:%M}-{closes:%H:%M} UTC, opens in {seconds:.0f} s"


CHANGE_SCENARIOS: dict[str, ChangeScenario] = {
    "scheduled": ChangeScenario("default", _scheduled, "at next-window"),
}


class Clicker:
    """Answers each approval request in the thread: as the approver at once, or by asking here.

    At the prompt the request is drawn first (`show`), then asked; the time a person takes to answer is
    `waited`, which the sandbox's give-up clock does not count. Ctrl-C at the prompt stops the sandbox: the
    line is read by a daemon thread (StdinLines), so nothing waits for an Enter that never comes."""

    def __init__(self, mode: str, stdin: TextIO, out: TextIO, interrupted: asyncio.Event):
        self.mode, self.stdin, self.out, self.interrupted = mode, stdin, out, interrupted
        self.answered: set[str] = set()
        self.waited = 0.0
        self._lines: StdinLines | None = None

    async def answer(self, bot: SlackBot, slack: SlackStandIn, sender, show: Callable[[], Awaitable[None]]) -> None:
        for run in await bot.store.call(bot.store.runs, active=True):
            for approval in await bot.store.call(bot.store.approvals, run.id):
                if approval.state is not ApprovalState.open or approval.id in self.answered:
                    continue
                action = gate_named(approval.gate).button
                found = slack.latest_button(OPS_CHANNEL, action, value=approval.id)
                if found is None:
                    continue
                self.answered.add(approval.id)
                if self.mode == "prompt":
                    await show()  # the request as Slack shows it, before the question about it
                    self.out.write("\n" + gate_named(approval.gate).prompt(run.host))
                    self.out.flush()
                    line = await self._read_answer()
                    if line.strip().lower() not in ("y", "yes"):
                        action = "deny"
                await sender.click_button(APPROVER, action, value=approval.id, message_ts=found[0].ts)

    async def _read_answer(self) -> str:
        """The line typed (end of input: ""), or KeyboardInterrupt on Ctrl-C while waiting for it."""
        if self._lines is None:
            self._lines = StdinLines(self.stdin)
        asked = time.monotonic()
        reading = asyncio.ensure_future(self._lines.readline())
        stopping = asyncio.ensure_future(self.interrupted.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            self.waited += time.monotonic() - asked
        if not reading.done():
            reading.cancel()
            raise KeyboardInterrupt
        line = reading.result() or ""
        if not self.stdin.isatty():  # a terminal echoed the answer; a piped one is shown here
            self.out.write(line.strip() + "\n")
        return line


SANDBOX_TICKET = "CHG0012345"


@dataclass(frozen=True)
class _ChangeBoard:
    config: str = ""  # TOML for [change]
    environment: dict[str, str] = field(default_factory=dict)
    note: str = ""  # what the sandbox says about it before the command


async def _change_board(stack: contextlib.AsyncExitStack, servicenow: bool) -> tuple[_ChangeBoard, str]:
    """With --servicenow: the stand-in with an approved change in Implement, open from an hour ago for the next
    four, and tickets required; the ticket to type. Without: nothing."""
    if not servicenow:
        return _ChangeBoard(), ""
    snow = await stack.enter_async_context(ServiceNowStandIn())
    now = datetime.now(UTC)
    snow.add(SANDBOX_TICKET, start=now - timedelta(hours=1), end=now + timedelta(hours=4))
    config = f'[change]\nticket = "required"\n[change.servicenow]\nurl = "{snow.url}"\ntimeout_seconds = 5\n'
    row = snow.changes[SANDBOX_TICKET]
    note = (
        f"ServiceNow stand-in at {snow.url}: {SANDBOX_TICKET} approval {row['approval']}, state {row['state']} "
        f"(Implement), planned {row['start_date']} to {row['end_date']} UTC; tickets required\n"
    )
    return _ChangeBoard(config, snow.environment(), note), f"ticket:{SANDBOX_TICKET}"


async def thread_hosts(bot: SlackBot) -> dict[str, str]:
    """Each run's thread (its card's ts) and the host it is about."""

    def query() -> dict[str, str]:
        rows = bot.store.conn.execute(
            "SELECT t.card_ts, r.host FROM slack_threads t JOIN runs r ON r.id = t.run_id WHERE t.card_ts IS NOT NULL"
        )
        return dict(rows.fetchall())

    return await bot.store.call(query)


async def where_each_run_is(bot: SlackBot, runs: list[Run]) -> str:
    """`host01 still running (step service)`, for each run the sandbox gave up on."""
    parts = []
    for run in runs:
        steps = await bot.store.call(bot.store.steps, run.id)
        current = next((s.step for s in steps if not s.state.finished and s.state is not StepState.pending), None)
        parts.append(f"{run.host} still {run.state.label}" + (f" (step {current})" if current else ""))
    return ", ".join(parts)


async def run_sandbox(
    hosts: int = 1,
    scenario: str = "default",
    approve: str = "auto",
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    timeout: float = GIVE_UP_SECONDS,
    database: str | None = None,
    terminal: bool | None = None,
    servicenow: bool = False,
    home: bool = False,
) -> int:
    """Exit 0 when every run succeeded and the audit holds; 1 otherwise, or when the sandbox gave up waiting.

    `terminal`: draw on the alternate screen (True) or as a log (False); None: as `out` is a terminal or not."""
    out = out or sys.stdout
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    # Ctrl-C is a request to stop, seen at the next redraw: not a cancellation thrown into whatever is
    # awaited at that moment, which a busy machine showed can be swallowed (the run then ended "succeeded").
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals off the main thread
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    options = _Options(hosts, scenario, approve, out, stdin or sys.stdin, timeout, database, terminal, servicenow, home)
    try:
        return await _run_sandbox(options, started, interrupted)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)


@dataclass(frozen=True)
class _Options:
    hosts: int
    scenario: str
    approve: str
    out: TextIO
    stdin: TextIO
    timeout: float
    database: str | None
    terminal: bool | None
    servicenow: bool = False
    home: bool = False  # --home: print the App Home after the scenario


async def _run_sandbox(options: _Options, started: float, interrupted: asyncio.Event) -> int:
    out = options.out
    async with contextlib.AsyncExitStack() as stack:
        slack = await stack.enter_async_context(SlackStandIn(signing_secret=SIGNING_SECRET))
        password = secrets.token_urlsafe(12)
        special = CHANGE_SCENARIOS.get(options.scenario)
        host_scenario = special.hosts if special else options.scenario
        servers = await start_hosts(options.hosts, host_scenario, password=password, time_scale=0.1)
        for server in servers:
            stack.push_async_callback(server.stop)
            server.state.artifact_url = servers[0].installer_url  # one artifact store for the fleet
        # The tenant as the scenario has it (unicode-names: a directory named with non-ASCII characters)
        first = servers[0].state
        directories = default_directories(first.directory_name, iwa_starttls=first.directory_starttls)
        ws1 = await stack.enter_async_context(WorkspaceOneStandIn(directories))
        if options.database:
            db_path = Path(options.database)
        else:
            temporary = stack.enter_context(tempfile.TemporaryDirectory(prefix="idm-upgrade-sandbox-"))
            db_path = Path(temporary) / "sandbox.db"
        # the checkpoints are signed as in production: a key of its own, outside the database's directory
        key_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idm-upgrade-sandbox-key-")))
        public_key = generate_key_file(key_dir / "audit.key")
        change, command = await _change_board(stack, options.servicenow)
        names_of = [f"host{i:02d}" for i in range(1, len(servers) + 1)]
        more, setup = special.config(utcnow(), names_of) if special else ("", "")
        config = sandbox_config(servers, ws1.url, db_path, key_dir / "audit.key", change.config + more)
        env = Secrets.from_env(
            {
                **change.environment,
                "SLACK_BOT_TOKEN": "xoxb-sandbox",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "WINRM_USERNAME": servers[0].username,
                "WINRM_PASSWORD": password,
                "WS1_CLIENT_ID": ws1.client_id,
                "WS1_CLIENT_SECRET": ws1.client_secret,
            }
        )
        bot = SlackBot(config, env, socket_mode=False, api_url=slack.api_url)
        await bot.start(port=0)
        stack.push_async_callback(bot.stop)
        sender = slack.sender(f"{bot.url}/slack/events", SIGNING_SECRET)
        names = " ".join(config.hosts)
        typed = " ".join(part for part in (names, command, special.words if special else "") if part)
        channel = slack.workspace.channel(OPS_CHANNEL)
        screen = make_screen(out, channel.name if channel else OPS_CHANNEL, options.terminal)
        clicker = Clicker(options.approve, options.stdin, out, interrupted)

        def elapsed() -> float:
            return time.monotonic() - started - clicker.waited

        async def draw() -> None:
            status = f"sandbox: {time.monotonic() - started:.0f} s"
            screen.draw(slack.channel_messages(OPS_CHANNEL), await thread_hosts(bot), status)

        async def show_request() -> None:
            await draw()
            screen.invalidate()  # the question is written below the drawing

        out.write(change.note)
        if setup:
            out.write(f"sandbox: {setup}\n")
        out.write(f"$ /idm-upgrade {typed}    (as @requester, scenario {options.scenario})\n")
        await sender.send_slash_command(REQUESTER, typed)
        out.flush()  # once the run is submitted: a Ctrl-C from here on stops a run under way
        finished = False
        with screen:
            while elapsed() < options.timeout:
                if interrupted.is_set():
                    raise KeyboardInterrupt  # the screen is left, then the stack's cleanup: bot, stand-ins, hosts
                await draw()
                await clicker.answer(bot, slack, sender, show_request)
                runs = await bot.store.call(bot.store.runs)
                done = bool(runs) and not any(r.state.active for r in runs)
                if done and await bot.progress.idle(timeout=10):
                    finished = True
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(interrupted.wait(), REDRAW_SECONDS)
            if interrupted.is_set():
                raise KeyboardInterrupt
            # all is delivered: what is not a run's (the batch recap) is held back no longer than these drawings
            for _ in range(HOLD_UNPLACED_DRAWINGS + 1):
                await draw()
        screen.final(slack.render_channel(OPS_CHANNEL))
        if options.home:  # @requester opens the bot's Home tab
            await open_home(sender, REQUESTER)
            for _ in range(200):  # the event is handled after its ack: up to 10 s for the published view
                if home_of(slack, REQUESTER) is not None:
                    break
                await asyncio.sleep(0.05)
            out.write("\n" + render_home(slack, REQUESTER) + "\n")
        runs = await bot.store.call(bot.store.runs)
        if not finished:
            still = [r for r in sorted(runs, key=lambda r: r.batch_position) if r.state.active]
            if still:
                where = await where_each_run_is(bot, still)
            elif runs:
                where = "the runs ended but their threads were not all delivered to Slack"
            else:
                where = "no run was started"
            out.write(f"\nsandbox: gave up after {elapsed():.0f} s; {where}\n")
            out.flush()
            return 1
        verdict = await bot.store.call(bot.store.verify_audit)
        states = ", ".join(f"{r.host} {r.state.label}" for r in sorted(runs, key=lambda r: r.batch_position))
        # as an auditor would: the checkpoints the bot posted, read back from Slack (in a thread: the stand-in
        # answers on this loop), against the chain
        posted, _notes = await asyncio.to_thread(read_checkpoints, "xoxb-sandbox", OPS_CHANNEL, slack.api_url)
        trusted = {public_key: parse_public_key(public_key)}
        anchored = await bot.store.call(checkpoints.check, bot.store.conn, posted, trusted)
        ok = all(r.state.value == "succeeded" for r in runs) and verdict.ok and anchored.ok
        out.write(
            f"\nsandbox: {states} in {time.monotonic() - started:.0f} s; "
            f"audit chain {'verified' if verdict.ok else 'BROKEN'} ({verdict.checked} events), "
            f"{len(posted)} signed checkpoint(s) in Slack {'hold' if anchored.ok else 'do NOT hold'}\n"
        )
        out.flush()
        return 0 if ok else 1
