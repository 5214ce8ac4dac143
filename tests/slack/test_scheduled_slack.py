"""A scheduled run through Slack: signed slash commands in, the stand-in's channel out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.core.models import Run, RunState
from bot.slack import messages as msg
from sandbox.slack_state import OPS_CHANNEL, REQUESTER
from tests.support.waiting import eventually


async def test_a_scheduled_run_shows_when_on_its_card_and_in_status_and_cancels_at_once(slack_bot):
    h = await slack_bot("physical", ws1=False)
    await h.sender.send_slash_command(REQUESTER, "host01 at 2030-01-05T10:00+01:00")
    [run] = await eventually(h.runs, what="the slash command created a run")
    assert run.state is RunState.scheduled and run.scheduled_for == datetime(2030, 1, 5, 9, 0, tzinfo=UTC)

    def card_says(words: str):
        cards = [m for m in h.slack.top_level(OPS_CHANNEL) if m.thread_ts is None and run.id in m.text]
        return cards and words in cards[0].text and cards[0]

    card = await eventually(lambda: card_says("scheduled for Sat 2030-01-05 09:00 UTC"), what="the card")
    assert "🗓️ scheduled for Sat 2030-01-05 09:00 UTC" in card.blocks[1]["text"]["text"]
    status = await h.sender.send_slash_command(REQUESTER, "status")
    body = await h.reply(status)
    assert f"`{run.id}` host01: scheduled for Sat 2030-01-05 09:00 UTC" in str(body)

    cancel = await h.sender.send_slash_command(REQUESTER, f"cancel {run.id}")
    body = await h.reply(cancel)
    assert "cancelled before it started" in str(body)
    assert h.store.get_run(run.id).state is RunState.cancelled
    await eventually(lambda: card_says("cancelled"), what="the card shows the cancel")
    events = [e.event for e in h.store.audit_events(run.id)]
    assert events == ["run.requested", "run.cancelled"]  # never started: nothing reached the host


def test_card_shows_a_scheduled_time_in_its_windows_zone_and_in_utc():
    moment = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    run = Run(
        id="run-0a1b2c3d",
        host="host01",
        requester=REQUESTER,
        state=RunState.scheduled,
        batch_id="bat-1",
        batch_position=0,
        plan=[],
        created_at=now,
        updated_at=now,
        scheduled_for=moment,
    )
    shown = msg.card(run, [], {}, "19.03.0.1", zone=ZoneInfo("Europe/Berlin"))
    assert "*State:* 🗓️ scheduled for Sat 2026-12-05 22:00 CET (21:00 UTC)" in shown["blocks"][1]["text"]["text"]
    assert (
        shown["text"]
        == "Connector upgrade on host01: scheduled for Sat 2026-12-05 22:00 CET (21:00 UTC) (run-0a1b2c3d)"
    )


def test_the_thread_says_when_a_scheduled_run_moved_and_when_it_started(tmp_path):
    from tests.support.outbox import outbox

    store, _engine, progress = outbox(tmp_path)
    due = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"], scheduled_for=due)
    later = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    store.reschedule_run(run.id, later, why="its maintenance window night is closed")
    store.set_run_state(run.id, RunState.running, event="run.started", detail={"scheduled_for": later.isoformat()})
    progress.projector.project(run.id)
    texts = [json.loads(p).get("text", "") for (p,) in store.conn.execute("SELECT payload FROM outbox ORDER BY id")]
    replies = [t for t in texts if t.startswith("Schedule:")]
    assert replies == [
        "Schedule: Rescheduled: was due Wed 2026-12-02 09:30 UTC, now Thu 2026-12-03 08:00 UTC: "
        "its maintenance window night is closed",
        "Schedule: Started: it was scheduled for Thu 2026-12-03 08:00 UTC",
    ]
    store.close()
