"""The benchmarks' world: the bot as its own process, and everything it talks to, on 127.0.0.1.

- the bot: `idm-upgrade serve --http` (a subprocess, so its RSS and its event loop are its own);
- the hosts: `python -m bench.hosts` (a subprocess) or, for one host, a daemon-thread server;
- Slack and Workspace ONE Access: the sandbox stand-ins, on this process's loop;
- an approver that clicks each approval the moment the bot opens it (signed HTTP, as a person would).

The approver reads the bot's database read-only to see a request open and delivered, then clicks at once on
the request's own message (the bot takes a click only there; approval requests go first in the paced outbox,
so the wait is short; the channel's pace is measured on its own, as thread lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.core.gates import gate_named
from sandbox.slack import SlackStandIn
from sandbox.slack_sender import block_actions_payload
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.workspace_one import WorkspaceOneStandIn

ROOT = Path(__file__).resolve().parents[1]
SIGNING_SECRET = "bench-" + secrets.token_hex(8)
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_healthy(process: subprocess.Popen, port: int, what: str) -> None:
    """Until GET /healthz answers; an error naming `what` if the process exits or START_TIMEOUT passes."""
    stop = time.monotonic() + START_TIMEOUT
    while time.monotonic() < stop:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode})")
        with contextlib.suppress(OSError):
            await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not answer /healthz")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def at(value: str) -> float:
    """An audit timestamp (ISO 8601) as seconds since the epoch."""
    return datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True)
class HostInfo:
    endpoint: str
    username: str
    password: str
    installer_url: str
    installer_sha256: str

    @classmethod
    def of(cls, described: dict[str, Any]) -> HostInfo:
        return cls(**{k: described[k] for k in cls.__dataclass_fields__})


class HostFleet:
    """`python -m bench.hosts`: n simulated hosts in one process of their own."""

    def __init__(self, count: int, scenario: str = "default", time_scale: float = 0.0):
        password = secrets.token_urlsafe(12)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.hosts",
                "--count",
                str(count),
                "--scenario",
                scenario,
                "--time-scale",
                str(time_scale),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "BENCH_HOST_PASSWORD": password},
        )
        self.hosts: list[HostInfo] = []
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "ready":
                break
            self.hosts.append(HostInfo.of(json.loads(line)))
        if len(self.hosts) != count:
            self.stop()
            raise RuntimeError(f"bench.hosts started {len(self.hosts)} of {count} hosts")

    def stop(self) -> None:
        stop_process(self.process)


def host_names(count: int) -> list[str]:
    return [f"host{i:03d}" for i in range(1, count + 1)]


def bot_config(
    path: Path,
    hosts: list[HostInfo],
    ws1_url: str,
    *,
    max_parallel: int = 20,
    messages_per_second: float = 10,
    poll_seconds: float = 0.2,
    slack_extra: str = "",
    tables_extra: str = "",
) -> Path:
    tables = "".join(
        f'[hosts.{name}]\naddress = "127.0.0.1"\nport = {urlsplit(h.endpoint).port}\n'
        for name, h in zip(host_names(len(hosts)), hosts, strict=True)
    )
    path.write_text(f"""
[slack]
channel = "{OPS_CHANNEL}"
requesters = ["U0REQUESTER"]
approvers = ["{APPROVER}"]
approval_timeout_minutes = 60
messages_per_second = {messages_per_second}
max_hosts_per_request = 200
{slack_extra}
[database]
path = "{path.with_suffix(".db")}"
[installer]
url = "{hosts[0].installer_url}"
sha256 = "{hosts[0].installer_sha256}"
version = "19.03.0.1"
[winrm]
scheme = "http"
transport = "basic"
max_parallel = {max_parallel}
poll_seconds = {poll_seconds}
connect_timeout_seconds = 2
[reboot]
timeout_seconds = 300
[workspace_one]
url = "{ws1_url}"
{tables}{tables_extra}""")
    return path


class BotProcess:
    """`idm-upgrade serve --http` against the stand-ins; RSS read from /proc."""

    def __init__(self, config: Path, slack: SlackStandIn, ws1: WorkspaceOneStandIn, host: HostInfo):
        self.config = config
        self.database = config.with_suffix(".db")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/slack/events"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDM_UPGRADE_", "SLACK_"))}
        env |= {
            "SLACK_BOT_TOKEN": "xoxb-sandbox",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "WINRM_USERNAME": host.username,
            "WINRM_PASSWORD": host.password,
            "WS1_CLIENT_ID": ws1.client_id,
            "WS1_CLIENT_SECRET": ws1.client_secret,
        }
        self.log = open(config.with_suffix(".log"), "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--http", "--port", str(self.port), "--config", str(config)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    async def ready(self) -> None:
        await wait_healthy(self.process, self.port, f"the bot (log: {self.log.name})")

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak) of the bot process, in KiB."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    def cpu_seconds(self) -> float:
        return process_cpu(self.process.pid)

    def database_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.database.parent.glob(self.database.name + "*"))

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


class BareBolt:
    """`python -m bench.bare_bolt`: the ack-only baseline, a process of its own like the bot."""

    def __init__(self, slack: SlackStandIn):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/slack/events"
        env = {**os.environ, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_bolt", "--port", str(self.port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        await wait_healthy(self.process, self.port, "the bare Bolt app")

    def stop(self) -> None:
        stop_process(self.process)


class Observer:
    """The bot's database, read-only, from the benchmark's side."""

    def __init__(self, database: Path):
        self.database = database
        self._conn: sqlite3.Connection | None = None

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        if self._conn is None:
            if not self.database.exists():
                return []
            self._conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []

    def states(self) -> dict[str, int]:
        return dict(self.rows("SELECT state, COUNT(*) FROM runs GROUP BY state"))

    def active(self) -> int:
        return sum(n for s, n in self.states().items() if s in ("queued", "running", "waiting_approval"))

    def pending_messages(self) -> int:
        """Outbox rows not delivered to Slack yet."""
        found = self.rows("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        return found[0][0] if found else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@dataclass
class Approver:
    """Clicks Approve (or Snapshot taken) on every request the moment it is open; records each ack's latency."""

    slack: SlackStandIn
    observer: Observer
    bot_url: str
    clicked: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)

    async def run(self) -> None:
        sender = self.slack.sender(self.bot_url, SIGNING_SECRET)
        # A click counts only on the message where the bot posted the request: wait until it is delivered.
        delivered = (
            "SELECT a.id, a.gate, o.channel, o.slack_ts FROM approvals a JOIN outbox o ON o.approval_id = a.id "
            "AND o.kind = 'approval' AND o.state = 'sent' WHERE a.state = 'open'"
        )
        while True:
            for approval_id, gate, channel, ts in self.observer.rows(delivered):
                if approval_id in self.clicked:
                    continue
                self.clicked.add(approval_id)
                action = gate_named(gate).button
                payload = block_actions_payload(self.slack, APPROVER, action, approval_id, ts, channel)
                request = sender.build({"payload": json.dumps(payload)})
                result = await sender.replay(request, sent_payload=payload)
                if result.status != 200:
                    raise RuntimeError(f"approval click answered {result.status}: {result.body[:200]}")
                self.latencies.append(result.seconds)
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_bot(config: Path, slack: SlackStandIn, ws1: WorkspaceOneStandIn, host: HostInfo):
    """The bot process, ready; an Observer of its database; an Approver clicking. All stopped on exit."""
    bot = BotProcess(config, slack, ws1, host)
    observer = Observer(bot.database)
    approver = Approver(slack, observer, bot.url)
    clicking: asyncio.Task | None = None
    try:
        await bot.ready()
        clicking = asyncio.get_running_loop().create_task(approver.run())
        yield bot, observer, approver
    finally:
        if clicking is not None:
            clicking.cancel()
            await asyncio.gather(clicking, return_exceptions=True)
        observer.close()
        bot.stop()


async def request_runs(slack: SlackStandIn, bot_url: str, names: list[str]) -> list[float]:
    """One `/idm-upgrade HOST` per host (each its own run, so they may run in parallel); ack latencies."""
    sender = slack.sender(bot_url, SIGNING_SECRET)
    latencies = []
    for name in names:
        result = await sender.send_slash_command(REQUESTER, name)
        if result.status != 200:
            raise RuntimeError(f"/idm-upgrade {name} answered {result.status}")
        latencies.append(result.seconds)
    return latencies


async def until(predicate, what: str, timeout: float, interval: float = 0.05) -> None:
    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (nearest rank)."""
    if not samples:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1] * 1000, "n": len(ordered)}
