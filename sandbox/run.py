"""`idm-upgrade sandbox`: a complete upgrade in Slack form, with no Slack, no Windows and no credentials.

Everything speaks the real protocols on 127.0.0.1: the Slack stand-in, N simulated connector hosts over
WinRM, the Workspace ONE Access stand-in, and the bot itself in HTTP mode. A signed `/idm-upgrade` is sent
as the requester; each approval is clicked as an approver (or asked at this terminal); the channel is drawn
here as Slack would show it; the run ends with the audit chain verified and a one-line result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from bot.core.config import Config, Secrets, parse_config
from bot.core.gates import gate_named
from bot.core.models import ApprovalState
from bot.core.signing import generate_key_file, parse_public_key
from bot.slack.app import SlackBot
from bot.slack.witness import read_checkpoints
from bot.store import checkpoints
from sandbox.slack import SlackStandIn
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.winrm_server import WinRMHostServer, start_hosts
from sandbox.workspace_one import WorkspaceOneStandIn, default_directories

SIGNING_SECRET = "sandbox-" + secrets.token_hex(8)
REDRAW_SECONDS = 0.5


def sandbox_config(hosts: list[WinRMHostServer], ws1_url: str, database: Path, signing_key: Path) -> Config:
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
[winrm]
scheme = "http"
transport = "basic"
poll_seconds = 0.5
connect_timeout_seconds = 1
[reboot]
timeout_seconds = 60
[workspace_one]
url = "{ws1_url}"
[audit]
signing_key_file = "{signing_key}"
{tables}"""
    return parse_config(tomllib.loads(text))


class Screen:
    """Draws the channel: redrawn in place on a terminal; on a pipe, each new line once, like a log."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self._seen: set[str] = set()

    def draw(self, rendered: str, status: str) -> None:
        if self.tty:
            self.out.write("\x1b[H\x1b[2J" + rendered + "\n\n" + status + "\n")
        else:
            for line in rendered.splitlines():
                if line.strip() and line not in self._seen:
                    self._seen.add(line)
                    self.out.write(line + "\n")
        self.out.flush()

    def final(self, rendered: str) -> None:
        if self.tty:
            self.draw(rendered, "")
        else:
            self.out.write("\n--- the channel at the end ---\n" + rendered + "\n")


class Clicker:
    """Answers each approval request in the thread: as the approver at once, or by asking here."""

    def __init__(self, mode: str, stdin: TextIO, out: TextIO):
        self.mode, self.stdin, self.out = mode, stdin, out
        self.answered: set[str] = set()

    async def answer(self, bot: SlackBot, slack: SlackStandIn, sender) -> None:
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
                    self.out.write(f"\n{approval.gate} for {run.host}: approve? [y/N] ")
                    self.out.flush()
                    line = await asyncio.to_thread(self.stdin.readline)
                    if line.strip().lower() not in ("y", "yes"):
                        action = "deny"
                await sender.click_button(APPROVER, action, value=approval.id, message_ts=found[0].ts)


async def run_sandbox(
    hosts: int = 1,
    scenario: str = "default",
    approve: str = "auto",
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    timeout: float = 300,
    database: str | None = None,
) -> int:
    out = out or sys.stdout
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    # Ctrl-C is a request to stop, seen at the next redraw: not a cancellation thrown into whatever is
    # awaited at that moment, which a busy machine showed can be swallowed (the run then ended "succeeded").
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals off the main thread
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        return await _run_sandbox(hosts, scenario, approve, out, stdin, timeout, database, started, interrupted)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)


async def _run_sandbox(
    hosts: int,
    scenario: str,
    approve: str,
    out: TextIO,
    stdin: TextIO | None,
    timeout: float,
    database: str | None,
    started: float,
    interrupted: asyncio.Event,
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        slack = await stack.enter_async_context(SlackStandIn(signing_secret=SIGNING_SECRET))
        password = secrets.token_urlsafe(12)
        servers = await start_hosts(hosts, scenario, password=password, time_scale=0.1)
        for server in servers:
            stack.push_async_callback(server.stop)
            server.state.artifact_url = servers[0].installer_url  # one artifact store for the fleet
        # The tenant as the scenario has it (unicode-names: a directory named with non-ASCII characters)
        first = servers[0].state
        directories = default_directories(first.directory_name, iwa_starttls=first.directory_starttls)
        ws1 = await stack.enter_async_context(WorkspaceOneStandIn(directories))
        if database:
            db_path = Path(database)
        else:
            temporary = stack.enter_context(tempfile.TemporaryDirectory(prefix="idm-upgrade-sandbox-"))
            db_path = Path(temporary) / "sandbox.db"
        # the checkpoints are signed as in production: a key of its own, outside the database's directory
        key_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idm-upgrade-sandbox-key-")))
        public_key = generate_key_file(key_dir / "audit.key")
        config = sandbox_config(servers, ws1.url, db_path, key_dir / "audit.key")
        env = Secrets.from_env(
            {
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
        screen = Screen(out)
        out.write(f"$ /idm-upgrade {names}    (as @requester, scenario {scenario})\n")
        await sender.send_slash_command(REQUESTER, names)
        clicker = Clicker(approve, stdin or sys.stdin, out)
        while time.monotonic() - started < timeout:
            if interrupted.is_set():
                raise KeyboardInterrupt  # after the stack's cleanup below: bot, stand-ins and hosts stop
            await clicker.answer(bot, slack, sender)
            runs = await bot.store.call(bot.store.runs)
            done = runs and not any(r.state.active for r in runs)
            screen.draw(slack.render_channel(OPS_CHANNEL), f"sandbox: {time.monotonic() - started:.0f} s")
            if done and await bot.progress.idle(timeout=10):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(interrupted.wait(), REDRAW_SECONDS)
        if interrupted.is_set():
            raise KeyboardInterrupt
        screen.final(slack.render_channel(OPS_CHANNEL))
        runs = await bot.store.call(bot.store.runs)
        verdict = await bot.store.call(bot.store.verify_audit)
        states = ", ".join(f"{r.host} {r.state.label}" for r in sorted(runs, key=lambda r: r.batch_position))
        # as an auditor would: the checkpoints the bot posted, read back from Slack (in a thread: the stand-in
        # answers on this loop), against the chain
        posted, _notes = await asyncio.to_thread(read_checkpoints, "xoxb-sandbox", OPS_CHANNEL, slack.api_url)
        trusted = {public_key: parse_public_key(public_key)}
        anchored = await bot.store.call(checkpoints.check, bot.store.conn, posted, trusted)
        ok = bool(runs) and all(r.state.value == "succeeded" for r in runs) and verdict.ok and anchored.ok
        out.write(
            f"\nsandbox: {states or 'no run was started'} in {time.monotonic() - started:.0f} s; "
            f"audit chain {'verified' if verdict.ok else 'BROKEN'} ({verdict.checked} events), "
            f"{len(posted)} signed checkpoint(s) in Slack {'hold' if anchored.ok else 'do NOT hold'}\n"
        )
        return 0 if ok else 1
