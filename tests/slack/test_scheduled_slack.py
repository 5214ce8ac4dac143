"""A scheduled run through Slack: signed slash commands in, the stand-in's channel out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.core.config import WindowConfig
from bot.core.gates import gate_named
from bot.core.models import ApprovalState, Run, RunState
from bot.core.windows import MaintenanceWindow
from bot.slack import messages as msg
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from tests.support.waiting import eventually

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # a Wednesday
WEEKEND = """
[windows.weekend]
days = ["Sat"]
start = "22:00"
end = "04:00"
timezone = "Europe/Berlin"
"""
# open every day 10:00-12:00 in Berlin: 09:00-11:00 UTC, so open at NOW
DAYTIME = """
[windows.daytime]
days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
start = "10:00"
end = "12:00"
timezone = "Europe/Berlin"
"""


def card_of(h, run_id: str, words: str):
    cards = [m for m in h.slack.top_level(OPS_CHANNEL) if m.thread_ts is None and run_id in m.text]
    return cards and words in cards[0].text and cards[0]


async def test_a_scheduled_run_shows_when_on_its_card_and_in_status_and_cancels_at_once(slack_bot):
    h = await slack_bot(
        "physical", ws1=False, extra='hosts.host01: window = "weekend"', tables=WEEKEND, clock=lambda: NOW
    )
    await h.sender.send_slash_command(REQUESTER, "host01 at next-window")
    [run] = await eventually(h.runs, what="the slash command created a run")
    assert run.state is RunState.scheduled and run.scheduled_for == datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
    when = "scheduled for Sat 2026-12-05 22:00 CET (21:00 UTC)"
    card = await eventually(lambda: card_of(h, run.id, when), what="the card")
    assert f"🗓️ {when}" in card.blocks[1]["text"]["text"]
    status = await h.sender.send_slash_command(REQUESTER, "status")
    body = await h.reply(status)
    assert f"`{run.id}` host01: {when}" in str(body)

    cancel = await h.sender.send_slash_command(REQUESTER, f"cancel {run.id}")
    body = await h.reply(cancel)
    assert "cancelled before it started" in str(body)
    assert h.store.get_run(run.id).state is RunState.cancelled
    await eventually(lambda: card_of(h, run.id, "cancelled"), what="the card shows the cancel")
    events = [e.event for e in h.store.audit_events(run.id)]
    assert events == ["run.requested", "run.cancelled"]  # never started: nothing reached the host
    assert h.host.server.state.reboots_requested == 0


async def test_a_window_closing_before_the_reboot_holds_it_until_an_approver_overrides_in_slack(slack_bot):
    clock = [NOW]
    h = await slack_bot(
        "default", ws1=False, extra='hosts.host01: window = "daytime"', tables=DAYTIME, clock=lambda: clock[0]
    )
    await h.sender.send_slash_command(REQUESTER, "host01")
    [run] = await eventually(h.runs, what="the slash command created a run")
    clicked: set[str] = set()

    async def click(approval) -> bool:
        action = gate_named(approval.gate).button
        found = h.slack.latest_button(OPS_CHANNEL, action, value=approval.id)
        if found is None:
            return False
        response = await h.sender.click_button(APPROVER, action, value=approval.id, message_ts=found[0].ts)
        assert response.status == 200
        clicked.add(approval.id)
        return True

    async def override_asked():
        for approval in h.store.approvals(run.id):
            if approval.state is not ApprovalState.open or approval.id in clicked:
                continue
            if approval.gate == "reboot outside window":
                return approval
            if approval.gate == "reboot":
                clock[0] = NOW + timedelta(hours=1, minutes=10)  # 12:10 in Berlin: the window closed at 12:00
            await click(approval)
        return None

    override = await eventually(override_asked, timeout=120, what="the override request")
    message = await eventually(
        lambda: h.slack.latest_button(OPS_CHANNEL, "approve", value=override.id), what="the override in Slack"
    )
    shown = message[0].blocks[0]["text"]["text"]
    assert "OUTSIDE its maintenance window daytime, which closed at Wed 2026-12-02 12:00 CET (11:00 UTC)" in shown
    assert h.host.server.state.reboots_requested == 0  # held: no reboot reached the host
    assert h.store.get_run(run.id).state is RunState.waiting_approval
    assert await click(override)
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=120, what="the run ended")
    assert h.store.get_run(run.id).state is RunState.succeeded
    assert h.host.server.state.reboots_requested == 1
    [granted] = [
        e for e in h.store.audit_events(run.id) if e.event == "approval.granted" and e.detail["change"].get("override")
    ]
    assert granted.actor == APPROVER and granted.detail["change"]["window"] == "daytime"


BERLIN = MaintenanceWindow("night", WindowConfig(days=["Sat"], start="22:00", end="04:00", timezone="Europe/Berlin"))


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
    shown = msg.card(run, [], {}, "19.03.0.1", window=BERLIN)
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
