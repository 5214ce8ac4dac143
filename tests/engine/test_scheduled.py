"""Scheduled runs in the engine, and a maintenance window that closes while a run is under way.

The engine reads an injected clock (a test moves it); it naps at most schedule_poll_seconds between
looks at the database, so a moved clock or a cancel is seen within a poll.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot.core.models import ApprovalState, RunState, iso
from bot.store.store import Store
from tests.engine.test_engine import Approver, events_of
from tests.support.configs import APPROVER, REQUESTER
from tests.support.fake_steps import FileHost
from tests.support.waiting import eventually

STEPS = ["alpha", "bravo", "charlie", "delta"]
# Wednesday 2026-12-02 10:00 UTC; the window below is open 09:00-11:00 UTC every day.
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
DAILY = '["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]'


def window(start: str = "09:00", end: str = "11:00", zone: str = "UTC", freeze: str = "") -> str:
    return f"""
[windows.night]
days = {DAILY}
start = "{start}"
end = "{end}"
timezone = "{zone}"

[groups.prod]
hosts = ["host01", "host02"]
window = "night"
{freeze}
"""


class Clock:
    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def fast(clock: Clock) -> dict:
    return {"clock": clock, "schedule_poll_seconds": 0.02}


async def polls(n: int = 10) -> None:
    """Let the engine take a few looks (it naps 0.02 s): what should not happen has had its chance."""
    for _ in range(n):
        await asyncio.sleep(0.02)


async def test_scheduled_run_waits_for_its_time_then_starts(engine_factory, tmp_path):
    clock = Clock()
    engine = await engine_factory(Approver(), engine_kwargs=fast(clock))
    due = T0 + timedelta(hours=1)
    [run] = await engine.submit(["host01"], REQUESTER, scheduled_for=due)
    assert run.state is RunState.scheduled and run.scheduled_for == due
    await polls()
    assert engine.store.get_run(run.id).state is RunState.scheduled
    assert FileHost(tmp_path, "host01").applies() == []
    clock.now = due - timedelta(seconds=1)
    await polls()
    assert engine.store.get_run(run.id).state is RunState.scheduled
    clock.now = due
    await asyncio.wait_for(engine.join(), 10)
    assert engine.store.get_run(run.id).state is RunState.succeeded
    assert FileHost(tmp_path, "host01").applies() == STEPS
    started = next(e for e in engine.store.audit_events(run.id) if e.event == "run.started")
    assert started.detail["scheduled_for"] == iso(due)
    assert engine.store.verify_audit().ok
    await engine.stop()


async def test_due_while_down_inside_its_window_starts_at_once(engine_factory, tmp_path):
    clock = Clock()
    engine = await engine_factory(Approver(), engine_kwargs=fast(clock), extra=window())
    # written by an earlier process, due 30 minutes ago (09:30, inside the window that is still open)
    [run] = engine.store.create_runs(
        ["host01"], requester=REQUESTER, plan=STEPS, scheduled_for=T0 - timedelta(minutes=30)
    )
    await engine.start()
    await asyncio.wait_for(engine.join(), 10)
    assert engine.store.get_run(run.id).state is RunState.succeeded
    assert "run.rescheduled" not in events_of(engine.store, run.id)
    await engine.stop()


async def test_due_while_down_after_its_window_closed_is_rescheduled_and_says_so(engine_factory, tmp_path):
    clock = Clock(T0 + timedelta(hours=2))  # 12:00: the 09:00-11:00 window closed an hour ago
    approver = Approver()
    engine = await engine_factory(approver, engine_kwargs=fast(clock), extra=window(zone="Europe/Berlin"))
    due = T0 - timedelta(minutes=30)
    [run] = engine.store.create_runs(["host01"], requester=REQUESTER, plan=STEPS, scheduled_for=due)
    await engine.start()
    moved = await eventually(lambda: engine.store.get_run(run.id).scheduled_for != due, what="rescheduled")
    run = engine.store.get_run(run.id)
    assert moved and run.state is RunState.scheduled
    # Europe/Berlin 09:00 on Thursday is 08:00 UTC
    assert run.scheduled_for == datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    [event] = [e for e in engine.store.audit_events(run.id) if e.event == "run.rescheduled"]
    assert event.detail["to"].startswith("2026-12-03T08:00") and event.detail["from"].startswith("2026-12-02T09:30")
    assert "maintenance window night is closed" in event.detail["why"]
    said = await eventually(lambda: [e for e in approver.events if e.kind == "run.rescheduled"], what="published")
    assert "rescheduled for Thu 2026-12-03 09:00 CET (08:00 UTC)" in said[0].text
    assert FileHost(tmp_path, "host01").applies() == []
    clock.now = run.scheduled_for
    await asyncio.wait_for(engine.join(), 10)
    assert engine.store.get_run(run.id).state is RunState.succeeded
    assert engine.store.verify_audit().ok
    await engine.stop()


async def test_a_freeze_added_later_moves_a_run_that_comes_due_inside_it(engine_factory, tmp_path):
    clock = Clock()
    freeze = """
[[freeze]]
start = 2026-12-02T09:00:00Z
end = 2026-12-04T00:00:00Z
reason = "year-end change freeze"
"""
    engine = await engine_factory(Approver(), engine_kwargs=fast(clock), extra=window(freeze=freeze))
    [run] = engine.store.create_runs(["host01"], requester=REQUESTER, plan=STEPS, scheduled_for=T0)
    await engine.start()
    await eventually(lambda: engine.store.get_run(run.id).scheduled_for != T0, what="rescheduled")
    # after the freeze (Friday 00:00), the window's next opening: Friday 09:00 UTC
    assert engine.store.get_run(run.id).scheduled_for == datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    [event] = [e for e in engine.store.audit_events(run.id) if e.event == "run.rescheduled"]
    assert "year-end change freeze" in event.detail["why"]
    assert FileHost(tmp_path, "host01").applies() == []
    await engine.stop()


async def test_cancel_a_scheduled_run_cancels_it_and_the_rest_of_its_batch(engine_factory, tmp_path):
    clock = Clock()
    approver = Approver()
    engine = await engine_factory(approver, engine_kwargs=fast(clock))
    first, second = await engine.submit(["host01", "host02"], REQUESTER, scheduled_for=T0 + timedelta(days=1))
    await polls()
    reply = await engine.cancel(first.id, REQUESTER)
    assert reply.ok and "cancelled before it started" in reply.message
    await asyncio.wait_for(engine.join(), 10)
    assert engine.store.get_run(first.id).state is RunState.cancelled
    later = engine.store.get_run(second.id)
    assert later.state is RunState.cancelled and "host01 before it in the batch ended cancelled" in later.result
    assert events_of(engine.store, first.id)[-1] == "run.cancelled"
    assert engine.store.audit_events(first.id)[-1].actor == REQUESTER
    assert FileHost(tmp_path, "host01").applies() == [] and FileHost(tmp_path, "host02").applies() == []
    again = await engine.cancel(first.id, REQUESTER)
    assert not again.ok and "already ended" in again.message
    await engine.stop()


class WindowClosesAtReboot(Approver):
    """Approves the run's gates like a person; the moment the reboot is asked for, the window closes
    (the clock passes its end). The override request is answered only if ``override`` is set."""

    def __init__(self, clock: Clock, override: str | None = None):
        super().__init__()
        self.clock, self.override = clock, override

    async def deliver(self, event):
        self.events.append(event)
        if event.kind != "approval.requested" or not self.engine:
            return
        gate = event.data["gate"]
        if gate == "reboot":
            self.clock.now = T0 + timedelta(hours=1, minutes=5)  # 11:05: the window closed at 11:00
        if gate == "reboot outside window":
            if self.override:
                self.replies.append(await self.engine.decide(event.data["approval_id"], APPROVER, self.override))
            return
        self.replies.append(await self.engine.decide(event.data["approval_id"], APPROVER, "approve"))


async def held(engine, run_id: str):
    def waiting():
        asked = [a for a in engine.store.approvals(run_id) if a.gate == "reboot outside window"]
        return asked if asked and asked[-1].state is ApprovalState.open else None

    return (await eventually(waiting, what="the override request"))[-1]


async def test_window_closing_mid_run_holds_the_reboot_until_the_next_opening(engine_factory, tmp_path):
    clock = Clock()
    approver = WindowClosesAtReboot(clock)
    engine = await engine_factory(approver, engine_kwargs=fast(clock), extra=window())
    [run] = await engine.submit(["host01"], REQUESTER)
    override = await held(engine, run.id)
    await polls()
    # every step before the reboot done; no reboot reached the host
    assert FileHost(tmp_path, "host01").applies() == ["alpha", "bravo", "charlie"]
    assert override.change["window"] == "night" and override.change["override"] is True
    assert override.change["closed_at"].startswith("2026-12-02T11:00")
    notes = [e.text for e in approver.events if e.kind == "step.note" and e.step == "delta"]
    assert any("window night closed at Wed 2026-12-02 11:00 UTC" in n and "next opening" in n for n in notes)
    clock.now = T0 + timedelta(days=1, minutes=-55)  # Thursday 09:05: open again
    await asyncio.wait_for(engine.join(), 10)
    assert engine.store.get_run(run.id).state is RunState.succeeded
    assert FileHost(tmp_path, "host01").applies() == STEPS
    assert engine.store.get_approval(override.id).state is ApprovalState.superseded
    assert engine.store.verify_audit().ok
    await engine.stop()


async def test_override_lets_it_reboot_outside_the_window_and_is_audited_as_override(engine_factory, tmp_path):
    clock = Clock()
    approver = WindowClosesAtReboot(clock, override="approve")
    engine = await engine_factory(approver, engine_kwargs=fast(clock), extra=window())
    [run] = await engine.submit(["host01"], REQUESTER)
    await asyncio.wait_for(engine.join(), 10)
    assert engine.store.get_run(run.id).state is RunState.succeeded
    assert FileHost(tmp_path, "host01").applies() == STEPS
    granted = [
        e
        for e in engine.store.audit_events(run.id)
        if e.event == "approval.granted" and e.detail["change"].get("override")
    ]
    assert len(granted) == 1 and granted[0].actor == APPROVER
    assert granted[0].detail["gate"] == "reboot outside window" and granted[0].detail["change"]["window"] == "night"
    # the clock never reached the next opening: the reboot ran at 11:05, on the override
    assert clock.now.hour == 11
    await engine.stop()


async def test_denied_override_keeps_waiting_for_the_window(engine_factory, tmp_path):
    clock = Clock()
    approver = WindowClosesAtReboot(clock, override="deny")
    engine = await engine_factory(approver, engine_kwargs=fast(clock), extra=window())
    [run] = await engine.submit(["host01"], REQUESTER)
    await eventually(
        lambda: [a for a in engine.store.approvals(run.id) if a.state is ApprovalState.denied], what="denied"
    )
    await polls()
    assert engine.store.get_run(run.id).state is RunState.running
    assert FileHost(tmp_path, "host01").applies() == ["alpha", "bravo", "charlie"]
    clock.now = T0 + timedelta(days=1, minutes=-55)
    await asyncio.wait_for(engine.join(), 10)
    assert engine.store.get_run(run.id).state is RunState.succeeded
    await engine.stop()


async def test_a_restart_while_the_reboot_waits_for_its_window_waits_on(engine_factory, tmp_path):
    clock = Clock()
    engine = await engine_factory(WindowClosesAtReboot(clock), engine_kwargs=fast(clock), extra=window())
    [run] = await engine.submit(["host01"], REQUESTER)
    override = await held(engine, run.id)
    await engine.stop()  # the process goes away; the run stays as persisted
    engine.store.close()

    again = await engine_factory(Approver([]), engine_kwargs=fast(clock), extra=window())
    await again.start()
    await polls()
    assert FileHost(tmp_path, "host01").applies() == ["alpha", "bravo", "charlie"]
    asked = [a for a in again.store.approvals(run.id) if a.gate == "reboot outside window"]
    assert [a.id for a in asked] == [override.id]  # the same request, not a second one
    reply = await again.decide(override.id, APPROVER, "approve")
    assert reply.ok
    await asyncio.wait_for(again.join(), 10)
    assert again.store.get_run(run.id).state is RunState.succeeded
    assert FileHost(tmp_path, "host01").applies() == STEPS
    await again.stop()


def test_store_reschedules_only_a_scheduled_run(tmp_path):
    store = Store(tmp_path / "idm-upgrade.db")
    try:
        [run] = store.create_runs(["host01"], requester=REQUESTER, plan=STEPS)
        assert store.reschedule_run(run.id, T0, why="test") is None  # queued: not a scheduled run
        assert "run.rescheduled" not in events_of(store, run.id)
    finally:
        store.close()


async def test_cancel_while_the_reboot_waits_for_its_window_stops_the_run_without_a_reboot(engine_factory, tmp_path):
    clock = Clock()
    engine = await engine_factory(WindowClosesAtReboot(clock), engine_kwargs=fast(clock), extra=window())
    [run] = await engine.submit(["host01"], REQUESTER)
    override = await held(engine, run.id)
    reply = await engine.cancel(run.id, REQUESTER)
    assert reply.ok
    await asyncio.wait_for(engine.join(), 10)
    run = engine.store.get_run(run.id)
    assert run.state is RunState.cancelled and run.result.startswith(f"cancelled by {REQUESTER}")
    assert engine.store.get_approval(override.id).state is ApprovalState.cancelled
    assert FileHost(tmp_path, "host01").applies() == ["alpha", "bravo", "charlie"]
    await engine.stop()


async def test_a_scheduled_run_whose_change_no_longer_allows_it_is_cancelled_unstarted(engine_factory, tmp_path):
    """At its time the run's ticket is checked again in ServiceNow (the stand-in, over HTTP): the change
    ended before the run came due, so the run and the rest of its batch never start."""
    from bot.systems.servicenow import ServiceNowChanges
    from sandbox.servicenow import ServiceNowStandIn

    async with ServiceNowStandIn() as snow:
        snow.add("CHG0012345", start=T0 - timedelta(hours=1), end=T0 + timedelta(minutes=30))
        client = ServiceNowChanges(snow.config(), snow.secrets())
        try:
            clock = Clock()
            change = f'[change]\nticket = "required"\n[change.servicenow]\nurl = "{snow.url}"\n'
            engine = await engine_factory(Approver(), engine_kwargs={**fast(clock), "changes": client}, extra=change)
            first, second = await engine.submit(
                ["host01", "host02"], REQUESTER, ticket="CHG0012345", scheduled_for=T0 + timedelta(hours=1)
            )
            clock.now = T0 + timedelta(hours=1)  # due, after the change's planned end
            await asyncio.wait_for(engine.join(), 10)
            run = engine.store.get_run(first.id)
            assert run.state is RunState.cancelled and run.result.startswith("not started: change CHG0012345")
            assert "planned end" in run.result
            assert engine.store.get_run(second.id).state is RunState.cancelled
            assert FileHost(tmp_path, "host01").applies() == [] and FileHost(tmp_path, "host02").applies() == []
            assert "run.started" not in events_of(engine.store, first.id)
            await engine.stop()
        finally:
            await client.close()
