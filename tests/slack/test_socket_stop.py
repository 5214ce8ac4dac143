"""`idm-upgrade serve --socket-mode` as a real process: SIGTERM ends it in every state, Slack reachable or not."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bot.slack.socket import failure_text
from sandbox.slack import SlackStandIn
from tests.support.configs import write_config
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
STOP_BOUND_SECONDS = 20  # "a few seconds", with room for a loaded CI machine
ATTEMPT = re.compile(r"Socket Mode: connection attempt (\d+) failed \((.+)\); next attempt in ([\d.]+) s$")


class ServeProcess:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc, self.lines = proc, []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def attempts(self) -> list[re.Match[str]]:
        return [m for m in (ATTEMPT.search(line) for line in self.lines) if m]

    async def wait_for_attempts(self, count: int) -> None:
        try:
            await eventually(
                lambda: len(self.attempts()) >= count or self.proc.returncode is not None,
                timeout=60,
                what=f"{count} failed attempts logged",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the log so far:\n" + "\n".join(self.lines)) from None
        assert self.proc.returncode is None, "serve ended by itself:\n" + "\n".join(self.lines)

    async def terminate(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        code = await asyncio.wait_for(self.proc.wait(), STOP_BOUND_SECONDS)
        await self._reader
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def start_serve(tmp_path: Path, slack: SlackStandIn, app_token: str = "xapp-sandbox") -> ServeProcess:
    config = write_config(tmp_path, hosts=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "IDM_UPGRADE_", "WS1_", "VCENTER_"))}
    env |= {
        "SLACK_BOT_TOKEN": "xoxb-sandbox",
        "SLACK_SIGNING_SECRET": "s",
        "SLACK_APP_TOKEN": app_token,
        "SLACK_API_URL": slack.api_url,
        "WINRM_USERNAME": "u",
        "WINRM_PASSWORD": "p",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        "--socket-mode",
        "--config",
        str(config),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return ServeProcess(proc)


@pytest.mark.parametrize(
    ("case", "signum", "says"),
    [
        ("down", signal.SIGTERM, "ClientConnectorError: Cannot connect to host"),
        ("down", signal.SIGINT, "ClientConnectorError: Cannot connect to host"),
        ("refusing the app token", signal.SIGTERM, "apps.connections.open answered invalid_auth"),
    ],
    ids=["down-sigterm", "down-ctrl-c", "refusing-sigterm"],
)
async def test_a_signal_stops_socket_mode_serve_while_slack_is_unreachable(tmp_path, case, signum, says):
    async with SlackStandIn() as slack:
        if case == "down":
            await slack.down()  # connections refused: apps.connections.open cannot be reached
        serve = await start_serve(tmp_path, slack, app_token="xapp-revoked" if case != "down" else "xapp-sandbox")
        try:
            await serve.wait_for_attempts(3)
            code = await serve.terminate(signum)
        finally:
            serve.kill()
    log = "\n".join(serve.lines)
    assert code == 0, log
    assert "Traceback" not in log, log
    attempts = serve.attempts()
    # one line per attempt, numbered in order, backing off: 1 s, 2 s, 4 s, ...
    assert [int(m[1]) for m in attempts] == list(range(1, len(attempts) + 1)), log
    delays = [float(m[3]) for m in attempts]
    assert delays[:3] == [1, 2, 4] and delays == sorted(delays), log
    assert all(m[2].startswith(says) for m in attempts), log
    # nothing else about connecting: neither slack_sdk's retry lines nor its "Failed to connect" tracebacks
    about_socket = [line for line in serve.lines if "apps.connections.open" in line or "Socket Mode" in line]
    assert [line for line in about_socket if not ATTEMPT.search(line)] == [], log


async def test_sigterm_stops_socket_mode_serve_while_connected(tmp_path):
    async with SlackStandIn() as slack:
        serve = await start_serve(tmp_path, slack)
        try:
            await slack.wait_socket_connected(60)
            await eventually(
                lambda: any("connected to Slack with Socket Mode" in line for line in serve.lines),
                what="the bot said it is connected",
            )
            code = await serve.terminate()
            await eventually(lambda: not slack.socket.connections, what="the socket closed")
        finally:
            serve.kill()
    log = "\n".join(serve.lines)
    assert code == 0 and "Traceback" not in log, log
    assert serve.attempts() == [], log


async def test_socket_mode_connects_once_slack_comes_back(tmp_path):
    async with SlackStandIn() as slack:
        await slack.down()
        serve = await start_serve(tmp_path, slack)
        try:
            await eventually(lambda: serve.attempts(), timeout=60, what="a failed attempt logged")
            await slack.up()
            await slack.wait_socket_connected(60)
            ack = await slack.socket_send_slash_command("U0REQUESTER", "help")
            assert ack.envelope_id
            code = await serve.terminate()
        finally:
            serve.kill()
    assert code == 0, "\n".join(serve.lines)


def test_a_failed_attempt_is_told_in_one_line_without_the_websocket_ticket():
    url = URL("ws://127.0.0.1:9/socket-mode?ticket=s3cr3t-t1cket&app_id=A0SANDBOX")
    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    refused = aiohttp.WSServerHandshakeError(info, (), status=401, message="Invalid response status")
    text = failure_text(refused)
    assert "s3cr3t-t1cket" not in text and "ticket=<redacted>" in text and "\n" not in text
    assert text.startswith("WSServerHandshakeError: 401")
