"""Slack misbehaving while a run works: 429 storm, 5xx, then down for 30 s. The run is not held up; the
thread catches up afterwards with nothing lost, nothing reordered, and the pace respected."""

from __future__ import annotations

import asyncio
import time

from bot.core.models import RunState
from sandbox.slack_state import OPS_CHANNEL, REQUESTER
from sandbox.workspace_one import iwa_directory
from tests.support.waiting import eventually

PACE = 2.0  # messages per second per channel, configured for this test


async def test_slack_outage_delays_the_thread_but_loses_nothing(slack_bot):
    # No gate on this run (physical, STARTTLS already off, the install not gated): it can finish while Slack
    # is away. With the install gate on (the default) the run would wait for a click nobody can make.
    h = await slack_bot(
        "physical",
        messages_per_second=PACE,
        extra="policy: approve_install = false",
        ws1_directories=[iwa_directory("corp.example.com", use_start_tls=False)],
    )
    response = await h.sender.send_slash_command(REQUESTER, "host01")
    assert response.status == 200
    [run] = await eventually(h.runs, what="the slash command created a run")  # created after the ack
    h.slack.rate_limit(6, retry_after=1)
    await asyncio.sleep(3)
    h.slack.server_errors(4, status=500)
    await asyncio.sleep(1)
    await h.slack.down()
    went_down = time.monotonic()
    # Slack stays down until up() below, however long the run takes
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=120, what="the run ended")
    finished_while_down = time.monotonic()
    assert h.store.get_run(run.id).state is RunState.succeeded  # Slack's outage did not stop the upgrade
    assert h.host.state.connector.version == "19.03.0.1"
    await asyncio.sleep(max(0.0, 30 - (finished_while_down - went_down)))
    await h.slack.up()
    assert await h.bot.progress.idle(timeout=120)

    sent = h.store.conn.execute(
        "SELECT kind, state, slack_ts FROM outbox WHERE run_id = ? ORDER BY id", (run.id,)
    ).fetchall()
    assert {state for _, state, _ in sent} == {"sent"}, sent
    assert h.slack.ratelimited_count >= 1 and h.slack.server_error_count >= 1
    # the thread: every posted row is there, once, in the order it was stored
    [card] = [m for m in h.slack.top_level(OPS_CHANNEL) if m.thread_ts is None]
    thread = h.slack.thread(OPS_CHANNEL, card.ts)[1:]
    posted = [ts for kind, _, ts in sent if kind not in ("card", "card_update", "approval_update")]
    assert [m.ts for m in thread] == posted
    assert len({m.ts for m in thread}) == len(thread)
    for title in ("Preflight checks", "Run the connector installer", "Verify the installed version"):
        assert sum(m.text.startswith(f"{title}: done") for m in thread) == 1, title
    assert "succeeded" in card.text
    # the pace: never more than PACE posts in any one-second window (plus one at the window's edge)
    assert h.slack.max_calls_in_window("chat.postMessage", OPS_CHANNEL, window=1.0) <= PACE + 1
