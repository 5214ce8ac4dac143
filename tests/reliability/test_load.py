"""Load: 100 simulated hosts upgraded in batches through Slack (HTTP mode) with winrm.max_parallel = 20,
while 200 other slash commands and button clicks arrive at the same time.

What must hold: every ack (the HTTP answer Slack waits for) within Slack's 3 s; every run ends succeeded,
none stuck; the fleet never has more than max_parallel WinRM commands in flight (each command is made to
last COMMAND_SECONDS so that 25 batches really compete for the 20 slots); the Slack outbox drains with
nothing failed; after the bot stops, nothing holds the database's write lock or the engine lease and no
bot task is left running.

The thread is delivered at slack.messages_per_second = 10 (the maximum) while the runs work, and the
delivered rate is measured. 100 runs make about 2,300 Slack messages, i.e. about 230 s at 10 per second,
more than this test's budget; so once the runs have ended the remaining backlog is delivered with the
deliverer's pacing lifted (``progress.deliverer.interval = 0``), and the time it would take at 10 per second is
reported. IDM_LOAD_FULL_DRAIN=1 keeps the pacing to the end (about 4 minutes).

The figures go to stdout and to tests/reliability/.results/load.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from bot.core.config import Secrets
from bot.core.models import RunState
from bot.slack.app import SlackBot
from bot.store.lease import EngineLease
from bot.store.store import Store
from sandbox.run import sandbox_config
from sandbox.slack import SlackStandIn
from sandbox.slack_state import APPROVER, OPS_CHANNEL, OUTSIDER, REQUESTER
from sandbox.winrm_server import ConcurrencyGauge, start_hosts
from sandbox.workspace_one import WorkspaceOneStandIn, iwa_directory, ldap_directory, local_directory
from tests.reliability import results
from tests.support.waiting import eventually

HOSTS = 100
BATCH_SIZE = 4  # 25 batches: more batches than max_parallel, so the slots are the limit, not the batches
MAX_PARALLEL = 20
OTHER_REQUESTS = 200
COMMAND_SECONDS = 0.3  # every WinRM command lasts this much longer on the hosts, so slots are contended
SPREAD_SECONDS = 25.0  # the other requests arrive over this long, while the runs work
ACK_LIMIT = 3.0  # Slack gives up on an ack after 3 s
RUNS_TIMEOUT = 150.0
FULL_DRAIN = os.environ.get("IDM_LOAD_FULL_DRAIN") == "1"
DRAIN_TIMEOUT = 400.0 if FULL_DRAIN else 90.0
SEED = 20240611
SIGNING_SECRET = "load-signing-secret"
USERS = ["U0GROUPMEMB", "U0APPROVER2", REQUESTER, APPROVER, OUTSIDER]
BAD_TEXTS = [
    "hostXX",
    "host01;whoami",
    "$(reboot)",
    "",
    "hοst01",  # Greek omicron
    "cancel not-a-run",
    "status run-zz",
    "history host01 host02",
    "check",
    "x" * 2500,
    " ".join(f"host{i:02d}" for i in range(1, 40)),  # over max_hosts_per_request
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Monitor:
    """Reads the bot's database through its own read-only connection (never the engine's thread)."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def rows(self, sql: str, *args) -> list[tuple]:
        return self.conn.execute(sql, args).fetchall()

    def states(self) -> Counter:
        return Counter(state for (state,) in self.rows("SELECT state FROM runs"))

    def close(self) -> None:
        self.conn.close()


@pytest.mark.timeout(700 if FULL_DRAIN else 300)
async def test_100_hosts_in_batches_with_200_concurrent_requests(tmp_path, capsys):
    wall = time.monotonic()
    rng = random.Random(SEED)
    db_path = tmp_path / "load.db"
    password = "load-" + "".join(rng.choices("abcdefghijkmnpqrstuvwxyz23456789", k=16))
    gauge = ConcurrencyGauge()
    stack = contextlib.AsyncExitStack()
    async with stack:
        slack = await stack.enter_async_context(SlackStandIn(signing_secret=SIGNING_SECRET))
        servers = await start_hosts(HOSTS, "physical", password=password, time_scale=0.01, fleet_gauge=gauge)
        for server in servers:
            stack.push_async_callback(server.stop)
            server.state.artifact_url = servers[0].installer_url  # one artifact store for the fleet
            server.faults.command_delay_seconds = COMMAND_SECONDS
        # STARTTLS is already off on the IWA directory (the KB 77158 hotfix) and the install is not gated
        # (policy.approve_install = false): no approval is needed, the fleet runs unattended.
        directories = [iwa_directory(use_start_tls=False), ldap_directory(), local_directory()]
        ws1 = await stack.enter_async_context(WorkspaceOneStandIn(directories))
        base = sandbox_config(servers, ws1.url, db_path)
        config = base.model_copy(
            update={
                "winrm": base.winrm.model_copy(update={"max_parallel": MAX_PARALLEL, "poll_seconds": 0.2}),
                "slack": base.slack.model_copy(update={"messages_per_second": 10}),
                "policy": base.policy.model_copy(update={"approve_install": False}),
            }
        )
        hosts = list(config.hosts)
        assert len(hosts) == HOSTS and config.slack.max_hosts_per_request >= BATCH_SIZE
        secrets = Secrets.from_env(
            {
                "SLACK_BOT_TOKEN": "xoxb-sandbox",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "WINRM_USERNAME": servers[0].username,
                "WINRM_PASSWORD": password,
                "WS1_CLIENT_ID": ws1.client_id,
                "WS1_CLIENT_SECRET": ws1.client_secret,
            }
        )
        bot = SlackBot(config, secrets, socket_mode=False, api_url=slack.api_url)
        await bot.start(port=0)
        stopped = False

        async def stop_bot() -> None:
            if not stopped:
                await bot.stop()

        stack.push_async_callback(stop_bot)
        sender = slack.sender(f"{bot.url}/slack/events", SIGNING_SECRET)
        monitor = Monitor(db_path)
        stack.callback(monitor.close)
        started = time.monotonic()

        # ---- the traffic -------------------------------------------------------------------------
        acks: list[tuple[str, float, int]] = []  # (kind, seconds, HTTP status)
        answers: list[tuple[str, object]] = []  # (kind, the SlackHttpResult) for the other requests

        def record(kind: str, result) -> None:
            acks.append((kind, result.seconds, result.status))

        async def upgrade_batches() -> None:
            batches = [hosts[i : i + BATCH_SIZE] for i in range(0, HOSTS, BATCH_SIZE)]
            for batch in batches:  # submitted one after another, 50 ms apart, as people would
                record("upgrade", await sender.send_slash_command(REQUESTER, " ".join(batch)))
                await asyncio.sleep(0.05)

        async def first_card_ts() -> str:
            cards = await eventually(
                lambda: [m for m in slack.top_level(OPS_CHANNEL) if "Connector upgrade" in m.text],
                timeout=60,
                what="the first run's card in the channel",
            )
            return cards[0].ts

        def random_run_id() -> str | None:
            rows = monitor.rows("SELECT id FROM runs")
            return rng.choice(rows)[0] if rows else None

        def busy_host() -> str | None:
            # a host still queued late in its batch stays busy for a while yet; else any host with an active run
            for sql in (
                "SELECT host FROM runs WHERE state = 'queued' AND batch_position >= 2",
                "SELECT host FROM runs WHERE state = 'queued'",
                "SELECT host FROM runs WHERE state IN ('running', 'waiting_approval')",
            ):
                if rows := monitor.rows(sql):
                    return rng.choice(rows)[0]
            return None

        plan = (
            ["status"] * 30
            + ["status_run"] * 10
            + ["history"] * 15
            + ["history_host"] * 15
            + ["help"] * 20
            + ["bad"] * 40
            + ["check_busy"] * 20
            + ["cancel_outsider"] * 30
            + ["stale_approval"] * 20
        )
        assert len(plan) == OTHER_REQUESTS
        rng.shuffle(plan)
        delays = sorted(rng.uniform(0.2, SPREAD_SECONDS) for _ in plan)

        async def other(kind: str, delay: float) -> None:
            await asyncio.sleep(delay)
            user = rng.choice(USERS)
            if kind == "status":
                result = await sender.send_slash_command(user, "status")
            elif kind == "status_run":
                result = await sender.send_slash_command(user, f"status {random_run_id() or 'run-00000000'}")
            elif kind == "history":
                result = await sender.send_slash_command(user, "history")
            elif kind == "history_host":
                result = await sender.send_slash_command(user, f"history {rng.choice(hosts)}")
            elif kind == "help":
                result = await sender.send_slash_command(user, "help")
            elif kind == "bad":
                result = await sender.send_slash_command(user, rng.choice(BAD_TEXTS))
            elif kind == "check_busy":
                host = busy_host()
                assert host is not None, "every run already started: spread the requests over less time"
                result = await sender.send_slash_command(REQUESTER, f"check {host}")
            elif kind == "cancel_outsider":
                run_id = random_run_id() or "run-00000000"
                ts = await first_card_ts()
                result = await sender.click_button(OUTSIDER, "cancel_run", value=run_id, message_ts=ts)
            else:  # a click on an approval request that does not exist (stale client, another bot's)
                ts = await first_card_ts()
                action = rng.choice(["approve", "deny"])
                value = f"apr-{rng.getrandbits(32):08x}"
                result = await sender.click_button(APPROVER, action, value=value, message_ts=ts)
            record(kind, result)
            answers.append((kind, result))

        # a check of a busy host comes early enough that some hosts are surely still queued
        delays = [d * 0.6 if k == "check_busy" else d for k, d in zip(plan, delays, strict=True)]
        traffic = asyncio.gather(upgrade_batches(), *(other(k, d) for k, d in zip(plan, delays, strict=True)))
        await asyncio.wait_for(traffic, timeout=SPREAD_SECONDS + 60)
        traffic_done = time.monotonic()

        # ---- the runs end ------------------------------------------------------------------------
        deadline = time.monotonic() + RUNS_TIMEOUT
        while time.monotonic() < deadline:
            states = monitor.states()
            if sum(states.values()) >= HOSTS and not (
                states["queued"] + states["running"] + states["waiting_approval"]
            ):
                break
            await asyncio.sleep(0.2)
        runs_done = time.monotonic()
        runs = await bot.store.call(bot.store.runs)
        not_finished = [f"{r.host} {r.id} {r.state.value}" for r in runs if r.state.active]
        assert not not_finished, f"stuck runs after {RUNS_TIMEOUT:g} s: {not_finished[:10]}"
        upgrade_runs = [r for r in runs if not r.check_only]
        check_runs = [r for r in runs if r.check_only]
        assert sorted(r.host for r in upgrade_runs) == sorted(hosts), "one upgrade run per host"
        failed = [f"{r.host}: {r.state.value}: {r.result}" for r in upgrade_runs if r.state is not RunState.succeeded]
        assert not failed, failed[:10]
        assert all(s.state.connector.version == "19.03.0.1" for s in servers)
        assert sum(s.state.installs_started for s in servers) == HOSTS, "one installer start per host"

        # ---- the Slack thread drains ---------------------------------------------------------------
        sent_at_runs_end = monitor.rows("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")[0][0]
        posts = [c for c in slack.calls if c.method in ("chat.postMessage", "chat.update") and c.ok]
        paced_rate = len(posts) / max(1e-9, runs_done - started)
        max_in_5s = slack.max_calls_in_window("chat.postMessage", OPS_CHANNEL, 5.0)
        if not FULL_DRAIN:
            bot.progress.deliverer.interval = 0.0  # deliver the backlog now; its paced duration is reported below
            bot.progress.deliverer.edit_interval = 0.0  # the edits' own lane (chat.update, Tier 3) likewise
        drained = await bot.progress.idle(timeout=DRAIN_TIMEOUT)
        drain_done = time.monotonic()
        outbox = Counter(dict(monitor.rows("SELECT state, COUNT(*) FROM outbox GROUP BY state")))
        assert drained, f"the outbox did not drain within {DRAIN_TIMEOUT:g} s: {dict(outbox)}"
        assert outbox["failed"] == 0, dict(outbox)
        unprojected = monitor.rows(
            "SELECT COUNT(*) FROM audit a JOIN slack_threads t ON t.run_id = a.run_id WHERE a.seq > t.projected_seq"
        )[0][0]
        assert unprojected == 0, "audit events never turned into Slack messages"
        # a batch of several hosts is a fleet: its results stay in their threads (the fleet card has the
        # channel's view), so each is found by its text (messages.run_finished: "HOST: STATE: …")
        ends = Counter(f"{r.host}: {r.state.label}: " for r in runs)
        finals = Counter(
            end for m in slack.messages(OPS_CHANNEL) if m.thread_ts for end in ends if (m.text or "").startswith(end)
        )
        assert finals == ends, "every run's result reached its thread"
        backlog = outbox["sent"] - sent_at_runs_end
        # paced at messages_per_second while the runs worked (one over for the window's edges)
        assert max_in_5s <= 5 * config.slack.messages_per_second + 1, max_in_5s

        # ---- answers to the other requests -------------------------------------------------------
        # the last response_url posts: the replies come after the acks; the assertion below names any missing
        def reply_ids() -> list[str]:
            return [result.sent_payload["response_url"].rsplit("/", 1)[-1] for _, result in answers]

        with contextlib.suppress(AssertionError):
            await eventually(
                lambda: all(slack.response_urls[rid].posts for rid in reply_ids()),
                timeout=30,
                what="a reply to every request",
            )
        replies: dict[str, list[str]] = {}
        for kind, result in answers:
            rid = result.sent_payload["response_url"].rsplit("/", 1)[-1]
            posts = slack.response_urls[rid].posts
            replies.setdefault(kind, []).append(" ".join(str((p.body or {}).get("text", "")) for p in posts))
        unanswered = [k for k, texts in replies.items() for t in texts if not t.strip()]
        assert not unanswered, f"requests without an answer: {Counter(unanswered)}"
        refusal_words = {
            "bad": ("not a host name", "Unknown host", "Which host?", "is not a run id", "takes", "needs", "limit"),
            "check_busy": ("already has an active run",),
            "cancel_outsider": ("Not accepted:", "already ended"),
            "stale_approval": ("There is no approval request",),
        }
        refused = Counter()
        for kind, words in refusal_words.items():
            for text in replies.get(kind, []):
                assert any(w in text for w in words), (kind, text)
                refused[kind] += 1
        assert all(r.cancel_requested_by is None for r in runs), "an outsider's cancel changed a run"
        events = await bot.store.call(bot.store.audit_events)
        assert not [e for e in events if e.event in ("run.cancelled", "run.cancel_requested")]

        # ---- stop: no lock is left behind -----------------------------------------------------------
        peak = gauge.peak
        await bot.stop()
        stopped = True
        leftover = [
            t.get_name()
            for t in asyncio.all_tasks()
            if not t.done() and t.get_name().startswith(("batch ", "slack-outbox", "progress-sinks"))
        ]
        assert not leftover, f"bot tasks still running after stop: {leftover}"
        probe = sqlite3.connect(db_path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails at once ("database is locked") if anyone holds it
            probe.execute("ROLLBACK")
        finally:
            probe.close()
        EngineLease(db_path).acquire().release()
        fresh = Store(db_path, busy_timeout_ms=0)
        try:
            verdict = fresh.verify_audit()
        finally:
            fresh.close()
        assert verdict.ok, verdict

    # ---- figures ---------------------------------------------------------------------------------
    seconds = [s for _, s, _ in acks]
    statuses = Counter(status for _, _, status in acks)
    figures = {
        "hosts": HOSTS,
        "batches": HOSTS // BATCH_SIZE,
        "batch_size": BATCH_SIZE,
        "max_parallel": MAX_PARALLEL,
        "requests": len(acks),
        "upgrade_requests": sum(1 for k, _, _ in acks if k == "upgrade"),
        "other_requests": len(answers),
        "requests_by_kind": dict(Counter(k for k, _, _ in acks)),
        "refused": sum(refused.values()),
        "refused_by_kind": dict(refused),
        "check_runs_started": len(check_runs),
        "http_statuses": {str(k): v for k, v in statuses.items()},
        "ack_p50_s": round(statistics.median(seconds), 4),
        "ack_p99_s": round(percentile(seconds, 0.99), 4),
        "ack_max_s": round(max(seconds), 4),
        "acks_over_3s": sum(1 for s in seconds if s >= ACK_LIMIT),
        "runs_succeeded": sum(1 for r in upgrade_runs if r.state is RunState.succeeded),
        "runs_stuck": len(not_finished),
        "fleet_peak_commands_in_flight": peak,
        "winrm_commands_started": sum(s.commands_started for s in servers),
        "command_seconds_added": COMMAND_SECONDS,
        "slack_messages_delivered": outbox["sent"],
        "slack_messages_per_run": round(outbox["sent"] / len(runs), 1),
        "slack_delivered_when_runs_ended": sent_at_runs_end,
        "slack_backlog_when_runs_ended": backlog,
        "slack_paced_rate_per_s": round(paced_rate, 2),
        "slack_max_posts_in_5s": max_in_5s,
        "slack_pacing_lifted_for_backlog": not FULL_DRAIN,
        "slack_backlog_paced_seconds": round(backlog / config.slack.messages_per_second, 1),
        "slack_web_api_calls": len(slack.calls),
        "runs_seconds": round(runs_done - started, 1),
        "traffic_seconds": round(traffic_done - started, 1),
        "drain_seconds_after_runs": round(drain_done - runs_done, 1),
        "wall_seconds": round(time.monotonic() - wall, 1),
        "seed": SEED,
    }
    results.record("load", "fleet", figures)
    with capsys.disabled():
        print("\nload figures:\n" + json.dumps(figures, indent=2))
    assert statuses == Counter({200: len(acks)}), statuses
    assert figures["acks_over_3s"] == 0, figures
    assert peak <= MAX_PARALLEL, figures
    assert figures["runs_succeeded"] == HOSTS
