"""Crash anywhere: SIGKILL the Slack bot (`idm-upgrade serve`) at persisted transitions of a full default
upgrade, restart it, and check nothing was repeated on the host, nothing lost from the audit trail, and the
Slack thread has no gaps (at most a bounded few duplicates).

Everything is a separate process or a real server: the bot subprocess, `idm-upgrade sandbox host`, the Slack
and Workspace ONE Access stand-ins. Kill points are chosen from a traced clean run with a recorded seed.
CI runs a few (RELIABILITY_KILL_POINTS, default 3); `make reliability` runs at least 30.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.core.gates import gate_named
from bot.store import checkpoints
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.slack_thread import running_slack
from sandbox.workspace_one import WorkspaceOneStandIn

ROOT = Path(__file__).resolve().parents[2]
SECRET = "crash-signing-secret"
RECLICK_SECONDS = 15  # a request still open this long after its click is clicked again
KILL_POINTS = int(os.environ.get("RELIABILITY_KILL_POINTS", "3"))
SEED = int(os.environ.get("RELIABILITY_SEED", "20261128"))
# Each trial has its own budget: up to two bot starts and two drives, on a loaded machine. The test's own
# waits end first with an AssertionError that says what did not happen; this is the backstop.
DRIVE_SECONDS = 150
TRIAL_BUDGET = 2 * 60 + 2 * DRIVE_SECONDS + 60


STEP_TITLES = [
    "Preflight checks",
    "Snapshot the virtual machine",
    "Turn STARTTLS off",
    "Download the installer",
    "Run the connector installer",
    "Connector service running",
    "Reboot the server",
    "Verify the installed version",
    "STARTTLS stays off",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class World:
    """One trial's world: a simulated host process, Slack and Workspace ONE stand-ins, a config, a database."""

    def __init__(self, tmp: Path, slack, ws1):
        self.tmp, self.slack, self.ws1 = tmp, slack, ws1
        self.host = subprocess.Popen(
            [sys.executable, "-m", "bot", "sandbox", "host", "--name", "host01", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.info = json.loads(self.host.stdout.readline())
        self.port = free_port()
        self.db = tmp / "bot.db"
        url = urlsplit(self.info["endpoint"])
        self.config = tmp / "idm-upgrade.toml"
        self.config.write_text(f"""
[slack]
channel = "{OPS_CHANNEL}"
requesters = ["U0REQUESTER"]
approvers = ["{APPROVER}"]
approval_timeout_minutes = 10
messages_per_second = 10
[database]
path = "{self.db}"
[installer]
url = "{self.info["installer_url"]}"
sha256 = "{self.info["installer_sha256"]}"
version = "19.03.0.1"
[winrm]
scheme = "http"
transport = "basic"
poll_seconds = 0.3
connect_timeout_seconds = 1
[reboot]
timeout_seconds = 60
[workspace_one]
url = "{ws1.url}"
[hosts.host01]
address = "{url.hostname}"
port = {url.port}
""")
        self.sender = slack.standin.sender(f"http://127.0.0.1:{self.port}/slack/events", SECRET)
        self.bot: subprocess.Popen | None = None

    def start_bot(self, env_extra: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDM_UPGRADE_", "SLACK_"))}
        env |= {
            "SLACK_BOT_TOKEN": "xoxb-sandbox",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": self.slack.api_url,
            "WINRM_USERNAME": self.info["username"],
            "WINRM_PASSWORD": self.info["password"],
            "WS1_CLIENT_ID": self.ws1.client_id,
            "WS1_CLIENT_SECRET": self.ws1.client_secret,
            **(env_extra or {}),
        }
        self.bot = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--http", "--port", str(self.port), "--config", str(self.config)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(1200):  # up to 60 s on a loaded machine
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                if self.bot.poll() is not None:
                    return  # killed already (a kill point during start-up)
                time.sleep(0.05)

    def stop(self) -> None:
        if self.bot and self.bot.poll() is None:
            self.bot.send_signal(signal.SIGTERM)
            self.bot.wait(30)
        self.host.send_signal(signal.SIGINT)
        self.host.wait(10)

    def query(self, sql: str, *params):
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def stats(self) -> dict:
        base = self.info["endpoint"].rsplit("/wsman", 1)[0]
        with urllib.request.urlopen(f"{base}/_sandbox/stats", timeout=5) as response:
            return json.loads(response.read())

    def threads_delivered(self) -> bool:
        """The bot's own answer (/healthz): every run's events projected into its thread, nothing pending."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as response:
                health = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503 when the Slack check failed; the body still says
            health = json.loads(exc.read())
        except OSError:
            return False
        threads = health.get("threads") or {}
        return threads.get("runs_not_projected") == 0 and threads.get("pending_messages") == 0

    def drive(self, until_dead: bool, timeout: float = DRIVE_SECONDS) -> bool:
        """Send the command if no run exists, click open requests; until the run ends and its thread is
        complete (or the bot dies)."""
        stop = time.monotonic() + timeout
        sent_at = 0.0
        clicked: dict[tuple[str, str], float] = {}  # (approval, message) -> when it was last clicked
        while time.monotonic() < stop:
            if self.bot.poll() is not None:
                return False
            runs = self.query("SELECT id, state FROM runs")
            if not runs and time.monotonic() - sent_at > 5:
                sent_at = time.monotonic()
                # a bot that is still starting or just died drops the request; it is sent again
                with contextlib.suppress(Exception):
                    self.slack.call(self.sender.send_slash_command(REQUESTER, "host01"))
            final = bool(runs) and runs[0][1] in ("succeeded", "failed", "denied", "cancelled")
            if final and not until_dead and self.threads_delivered():
                return True
            for approval_id, gate in self.query("SELECT id, gate FROM approvals WHERE state = 'open'"):
                action = gate_named(gate).button
                found = self.slack.standin.latest_button(OPS_CHANNEL, action, value=approval_id)
                key = (approval_id, found[0].ts) if found else None
                # a click whose request was lost (the bot died or was busy) is made again, as a person would
                if found and time.monotonic() - clicked.get(key, -RECLICK_SECONDS) >= RECLICK_SECONDS:
                    clicked[key] = time.monotonic()
                    # the bot may die mid-click: the restart resumes the request
                    with contextlib.suppress(Exception):
                        self.slack.call(
                            self.sender.click_button(APPROVER, action, value=approval_id, message_ts=found[0].ts)
                        )
            time.sleep(0.1)
        state = runs[0][1] if runs else "no run"
        raise AssertionError(f"within {timeout:.0f} s the run did not finish with a complete thread (run: {state})")

    def check(self) -> dict:
        [(run_id, state, result)] = self.query("SELECT id, state, result FROM runs")
        assert state == "succeeded", result
        seen = self.stats()
        assert seen["installs_started"] == 1, seen
        assert seen["reboots_requested"] == 1, seen
        assert len(self.ws1.updates) == 1
        verify = subprocess.run(
            [sys.executable, "-m", "bot", "audit", "verify", "--config", str(self.config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert verify.returncode == 0, verify.stderr
        # the run's end was anchored in Slack, whichever line the bot died at, and the trail holds against it
        last_seq = self.query("SELECT MAX(seq) FROM audit WHERE run_id = ?", run_id)[0][0]
        witnessed = self.witnessed_until(last_seq)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDM_UPGRADE_", "SLACK_"))}
        env |= {"SLACK_BOT_TOKEN": "xoxb-sandbox", "SLACK_API_URL": self.slack.api_url}
        against_slack = subprocess.run(
            [sys.executable, "-m", "bot", "audit", "verify", "--checkpoints", "slack", "--config", str(self.config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert against_slack.returncode == 0, against_slack.stderr
        events = [e for (e,) in self.query("SELECT event FROM audit ORDER BY seq")]
        assert events.count("run.requested") == 1 and events.count("run.succeeded") == 1
        assert events.count("step.succeeded") == len(STEP_TITLES)
        # the thread: every step's result is there; duplicates are bounded (one per crash at most)
        thread = [m for m in self.slack.standin.messages(OPS_CHANNEL) if m.thread_ts]
        texts = [m.text for m in thread]
        for title in STEP_TITLES:
            done = [t for t in texts if t.startswith(title) and ": done" in t]
            assert 1 <= len(done) <= 2, (title, done)
        duplicates = len(texts) - len(set(texts))
        assert duplicates <= 3, duplicates
        return {
            "run": run_id,
            "thread_messages": len(texts),
            "duplicates": duplicates,
            "checkpoints_in_slack": witnessed,
        }

    def witnessed_until(self, seq: int, timeout: float = 30) -> int:
        """How many checkpoint messages Slack holds once one covers ``seq`` (the run's last event)."""
        stop = time.monotonic() + timeout
        while True:
            posted = [
                found
                for m in self.slack.standin.messages(OPS_CHANNEL)
                if (found := checkpoints.from_message_text(m.text)) is not None
            ]
            if any(c.seq >= seq for c in posted):
                return len(posted)
            if time.monotonic() > stop:
                raise AssertionError(f"no checkpoint in Slack covers seq {seq} after {timeout:.0f} s: {posted}")
            time.sleep(0.1)


def trial(tmp: Path, kill_at: str | None) -> dict:
    tmp.mkdir(parents=True)
    with running_slack(signing_secret=SECRET) as slack:
        ws1 = WorkspaceOneStandIn()
        slack.call(ws1.start())
        world = World(tmp, slack, ws1)
        trace = tmp / "trace.txt"
        try:
            env = {"IDM_UPGRADE_TRACE": str(trace)}
            if kill_at:
                env["IDM_UPGRADE_KILL_AT"] = kill_at
            world.start_bot(env)
            finished = world.drive(until_dead=bool(kill_at))
            if kill_at:
                assert not finished and world.bot.wait(10) == -signal.SIGKILL
                world.start_bot()
                world.drive(until_dead=False)
            outcome = world.check()
            lines = trace.read_text().splitlines() if trace.exists() else []
            outcome["killed_at"] = next((line for line in lines if line.startswith("KILLED")), None)
            outcome["transitions"] = len([line for line in lines if not line.startswith("KILLED")])
            outcome["final_reply"] = any(
                m.thread_ts and m.text.startswith("host01: succeeded") for m in slack.standin.messages(OPS_CHANNEL)
            )
            return outcome
        finally:
            world.stop()
            slack.call(ws1.stop())


def record(name: str, outcome: dict, clean: dict | None = None) -> None:
    """Each trial adds its line to .results/crash_anywhere.json (the reliability report quotes it)."""
    results = ROOT / "tests" / "reliability" / ".results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / "crash_anywhere.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    if recorded.get("seed") != SEED or not isinstance(recorded.get("kill_points"), list):
        recorded = {"seed": SEED, "kill_points": []}
    if clean is not None:
        recorded["transitions_in_clean_run"] = clean["transitions"]
    recorded["kill_points"] = [k for k in recorded["kill_points"] if k.get("kill_point") != name]
    recorded["kill_points"].append({"kill_point": name, **outcome})
    path.write_text(json.dumps(recorded, indent=1))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> dict:
    """One clean run, traced: how many transitions there are to kill at."""
    clean = trial(tmp_path_factory.mktemp("crash") / "clean", None)
    assert clean["final_reply"], "the clean run's thread has no final reply"
    return clean


def chosen_kill_point(clean: dict, index: int) -> str:
    """The index-th of KILL_POINTS kill points drawn (with the recorded seed) from the clean run's trace."""
    total = clean["transitions"]
    assert total >= 40, total
    rng = random.Random(SEED)
    chosen = sorted(rng.sample(range(1, total + 1), min(KILL_POINTS, total)))
    whens = [rng.choice(["before", "after"]) for _ in chosen]
    return f"{chosen[index]}:{whens[index]}"


@pytest.mark.timeout(TRIAL_BUDGET * 2)  # the module's clean run is set up inside the first test's budget
@pytest.mark.parametrize("index", range(KILL_POINTS))
def test_crash_anywhere_through_slack(clean_run, index, tmp_path):
    kill_at = chosen_kill_point(clean_run, index)
    outcome = trial(tmp_path / "trial", kill_at)
    assert outcome["killed_at"], f"kill point {kill_at} was not reached"
    assert outcome["final_reply"], outcome
    record(kill_at, outcome, clean_run)


@pytest.mark.timeout(TRIAL_BUDGET)
@pytest.mark.parametrize("kill_at", ["run.succeeded:after", "slack.project:before"])
def test_a_crash_before_the_last_events_are_projected_loses_no_reply(kill_at, tmp_path):
    """Killed right after the run's final state is committed (its last events not yet in the outbox), or
    as a projection commits: the restart projects from the cursor, and the final reply still arrives."""
    outcome = trial(tmp_path / "trial", kill_at)
    assert outcome["killed_at"] and kill_at.split(":")[0] in outcome["killed_at"], outcome
    assert outcome["final_reply"], "the final reply was lost"
    record(kill_at, outcome)
