"""Maintenance windows and freezes through Slack: signed /idm-upgrade requests, the bot's clock set by the test."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.core.models import RunState
from sandbox.slack_state import REQUESTER
from tests.support.waiting import eventually

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # a Wednesday; host01's window opens on Saturday night
OPENS = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
WEEKEND = """
[windows.weekend]
days = ["Sat"]
start = "22:00"
end = "04:00"
timezone = "Europe/Berlin"
"""
FREEZE = """
[[freeze]]
start = 2026-12-01T00:00:00+01:00
end = 2026-12-04T00:00:00+01:00
reason = "year-end close"
"""
HOST01_WEEKEND = 'hosts.host01: window = "weekend"'


async def bot(slack_bot, tables=WEEKEND, clock=NOW):
    return await slack_bot(ws1=False, extra=HOST01_WEEKEND, tables=tables, clock=lambda: clock)


async def ask(h, text: str) -> dict:
    result = await h.sender.send_slash_command(REQUESTER, text)
    assert result.status == 200
    return await h.reply(result)


def nothing_queued(h) -> None:
    assert h.runs() == []
    assert [e.event for e in h.store.audit_events() if e.event.startswith("run.")] == []


async def test_outside_the_window_the_reply_offers_the_next_opening_and_queues_nothing(slack_bot):
    h = await bot(slack_bot)
    reply = await ask(h, "host01")
    assert reply["response_type"] == "ephemeral"
    assert reply["text"] == (
        "Not started: host01 is outside its maintenance window weekend (Sat 22:00-04:00 Europe/Berlin); it next "
        "opens Sat 2026-12-05 22:00 CET (21:00 UTC) to Sun 04:00 CET (03:00 UTC). To run at the earliest allowed time (2026-12-05 21:00 "
        "UTC), ask for `/idm-upgrade host01 at next-window` or `/idm-upgrade host01 at 2026-12-05T22:00+01:00`."
    )
    nothing_queued(h)


async def test_a_freeze_refuses_and_queues_nothing(slack_bot):
    h = await bot(slack_bot, tables=WEEKEND + FREEZE, clock=OPENS.replace(day=3))
    reply = await ask(h, "host01")
    assert reply["text"].startswith(
        "Not started: a change freeze is on until 2026-12-03 23:00 UTC (2026-12-04T00:00+01:00): year-end close; "
        "no run starts during it. To run at the earliest allowed time (2026-12-05 21:00 UTC), ask for `/idm-upgrade host01 at next-window`"
    )
    nothing_queued(h)


async def test_at_next_window_schedules_the_run_for_the_opening(slack_bot):
    h = await bot(slack_bot)
    reply = await ask(h, "host01 at next-window")
    [run] = h.runs()
    assert reply["text"] == (
        f"Upgrade scheduled for Sat 2026-12-05 22:00 CET (21:00 UTC) in window weekend: `{run.id}` (host01); "
        f"cancel with `/idm-upgrade cancel {run.id}`. Follow it in <#C0OPSCHANL>."
    )
    assert run.state is RunState.scheduled and run.scheduled_for == OPENS
    [requested] = [e for e in h.store.audit_events(run.id) if e.event == "run.requested"]
    assert requested.detail["scheduled_for"] == "2026-12-05T21:00:00.000000+00:00"
    # not started before its time: the engine left it alone
    assert {s.state.value for s in h.store.steps(run.id)} == {"pending"}
    assert h.store.get_run(run.id).state is RunState.scheduled


async def test_at_in_the_past_malformed_or_in_a_freeze_is_refused(slack_bot):
    h = await bot(slack_bot, tables=WEEKEND + FREEZE, clock=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    reply = await ask(h, "host01 at 2026-11-30T11:00Z")
    assert reply["text"].startswith(
        "Not started: 2026-11-30T11:00Z is in the past (it is 2026-11-30 12:00 UTC now); ask for a later time, or "
        "leave out `at` to start now. To run at the earliest allowed time (2026-12-05 21:00 UTC), ask for `/idm-upgrade host01 at next-window`"
    )
    reply = await ask(h, "host01 at tomorrow")
    assert reply["text"].startswith("`tomorrow` is not a time I can use: write `at next-window`, or a date and time")
    reply = await ask(h, "host01 at 2026-12-02T09:00+01:00")
    assert reply["text"].startswith(
        "Not started: 2026-12-02T09:00+01:00 is in a change freeze: a change freeze is on until 2026-12-03 23:00 UTC"
    )
    assert "`/idm-upgrade host01 at 2026-12-05T22:00+01:00`" in reply["text"]
    nothing_queued(h)


async def test_a_dry_run_is_not_held_to_the_window(slack_bot):
    h = await bot(slack_bot)
    reply = await ask(h, "check host01")
    [run] = h.runs()
    assert reply["text"].startswith(f"Dry run (check only, nothing is changed) queued: `{run.id}` (host01)")
    assert run.check_only and run.scheduled_for is None
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=60, what="the dry run ended")
