"""Audit trail → outbox: the thread of each run, as a projection of its audit events.

The projector turns a run's new audit events into outbox rows and advances the run's cursor in the same
transaction, so a crash at any line loses no message: a restart projects from the cursor again. A run's
burst of events is projected in one transaction a moment later (the per-run benchmark's overhead),
which is safe because the projection is derived from the audit trail.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.core.models import AuditEvent, Run, StepRecord
from bot.core.windows import describe_moment
from bot.engine.dry_run import stored_plan
from bot.engine.events import ProgressEvent
from bot.engine.recap import batch_recap
from bot.slack import messages as msg
from bot.slack.escape import escape
from bot.slack.fleet import fleet_recap, fleet_rows
from bot.store import checkpoints, fleet
from bot.store.outbox import Outbox
from bot.store.store import Store

# A run's end; "run.denied" once that state exists (DESIGN.md section 3).
RUN_ENDS = frozenset({"run.succeeded", "run.failed", "run.cancelled", "run.denied"})
PROJECT_COALESCE_SECONDS = 0.05  # a run's events within this long become one outbox transaction

Row = tuple[str, dict[str, Any] | None, str | None]  # kind, payload, approval id


class ThreadProjector:
    """A progress sink: projects runs into the outbox, then wakes the deliverer."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        channel: str,
        titles: dict[str, str],
        wake: asyncio.Event,
        read_only: frozenset[str] = frozenset(),
        channel_of: Callable[[str], str] | None = None,
        fleets: bool = False,
    ):
        # ``channel``: slack.channel, for what belongs to no run (checkpoints); a run's thread and its batch's
        # recap go to ``channel_of(host)``: its host group's channel ([groups.NAME] channel), else the same
        self.store, self.outbox, self.channel, self.titles, self.wake = store, outbox, channel, titles, wake
        self.channel_of = channel_of or (lambda _host: channel)
        self.read_only = read_only  # steps that only read: "ok" in a batch's recap
        self.fleets = fleets  # slack.fleet_progress = "card": a fleet's threads carry what a person must see
        self.sending: set[int] = set()  # the outbox rows the deliverer is sending (both on the store's thread)
        # Runs with audit events not projected yet, in the order their events came: a batch's cards are
        # posted in the batch's order (a set popped them in hash order: host01, host03, host02).
        self._dirty: dict[str, None] = {}
        self._task: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        return bool(self._dirty) or (self._task is not None and not self._task.done())

    async def deliver(self, event: ProgressEvent) -> None:
        """ProgressSink: called after the engine persisted the event."""
        if event.kind == "audit.checkpoint":  # not in the audit trail either: after the run's last event
            await self.store.call(self._project_then_checkpoints, event.run_id)
            self.wake.set()
            return
        if event.kind == "step.note":  # not in the audit trail: after what came before it, at once
            await self.store.call(self._project_then_note, event.run_id, event.step or "", event.text)
            self.wake.set()
            return
        self._dirty.setdefault(event.run_id, None)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._project_dirty(), name="slack-project")

    async def _project_dirty(self) -> None:
        await asyncio.sleep(PROJECT_COALESCE_SECONDS)
        # Until nothing is dirty after the checkpoints too: a run's event that arrives while they are queued
        # finds this task still running (deliver() starts no other), so this task must project it.
        while self._dirty:
            while self._dirty:
                run_id = next(iter(self._dirty))
                del self._dirty[run_id]
                await self.store.call(self.project, run_id)
            # a run's end checkpoint is written before its end is told: queued here, after the final message
            await self.store.call(self.queue_checkpoints)
        self.wake.set()

    async def catch_up(self) -> None:
        """At start-up: every run with events past its cursor."""
        for run_id in await self.store.call(self.outbox.runs_to_project):
            await self.store.call(self.project, run_id)
        await self.store.call(self.queue_checkpoints)
        self.wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            # what is left is projected by catch_up() at the next start, from the cursor
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _project_then_note(self, run_id: str, step: str, text: str) -> None:
        self._dirty.pop(run_id, None)
        self.project(run_id)
        if self.fleets and fleet.fleet_of(self.store.conn, run_id):
            return  # a fleet's host thread has no progress notes: its card shows the step in progress
        with self.store.transaction("slack.note") as conn:
            if channel := self.outbox.thread_channel(conn, run_id):
                self.outbox.insert(conn, run_id, channel, "reply", msg.note(text, self.titles.get(step, step)), None)

    def _project_then_checkpoints(self, run_id: str) -> None:
        self._dirty.pop(run_id, None)
        self.project(run_id)
        self.queue_checkpoints()

    def queue_checkpoints(self) -> int:
        """Every checkpoint not yet in the outbox: in its run's thread, else (written at start-up, by
        `audit checkpoint`, or for a terminal run) at the top of the channel. Queued once, in one transaction
        with the mark, so a crash neither loses nor repeats one."""
        if not checkpoints.not_queued(self.store.conn):  # most projections: no write, no transaction
            return 0
        with self.store.transaction("slack.checkpoint") as conn:
            waiting = checkpoints.not_queued(conn)
            for checkpoint_id, checkpoint in waiting:
                run_id = checkpoint.run_id
                # the witness reads checkpoints from slack.channel only: a thread in a group's channel gets none
                thread = self.outbox.thread_channel(conn, run_id) if run_id is not None else None
                in_thread = thread == self.channel
                self.outbox.insert(
                    conn, run_id if in_thread else None, self.channel, "checkpoint", msg.checkpoint(checkpoint), None
                )
                checkpoints.mark_queued(conn, checkpoint_id)
        return len(waiting)

    def project(self, run_id: str) -> int:
        """Turn the run's audit events after its cursor into outbox rows; returns how many rows."""
        with self.store.transaction("slack.project") as conn:
            run = self.store.get_run(run_id)
            # a thread stays in the channel it was started in, should the host move to another group
            channel = self.outbox.thread_channel(conn, run_id) or self.channel_of(run.host)
            last = self.outbox.cursor(conn, run_id, channel)
            events = self.store.audit_events(run_id, after=last)
            if not events:
                return 0
            steps = {s.step: s for s in self.store.steps(run_id)}
            fleet_id = fleet.fleet_of(conn, run_id) if self.fleets else None
            if fleet_id is not None:  # first: a new fleet's card goes out before any host's
                fleet.queue_card(conn, fleet_id, channel, self.sending)
                pairs = [(e, self._rows_for(e, run, steps)) for e in events]
                rows = fleet_rows(pairs, fleet.card_queued(conn, run_id))
                if rows or fleet.card_queued(conn, run_id):
                    self._finish_rows(conn, run_id, channel, rows)
                self.outbox.advance(conn, run_id, events[-1].seq)
                if any(e.event in RUN_ENDS for e in events):
                    self._queue_recap(conn, run)
                return len(rows)
            rows = []
            for group in _skips_together(events):
                if len(group) > 1:  # the rest of the plan skipped for one reason: one reply, not one each
                    titles = [self.titles.get(e.step or "", e.step or "") for e in group]
                    rows.append(("reply", msg.steps_skipped(titles, group[0].detail.get("reason") or ""), None))
                    continue
                [event] = group
                if event.event == "step.started" and (
                    event.detail.get("attempt", 1) == 1 or event.detail.get("retried")
                ):
                    continue  # the card shows the step in progress; a restart's second start gets a line
                rows.extend(self._rows_for(event, run, steps))
            self._finish_rows(conn, run_id, channel, rows)
            self.outbox.advance(conn, run_id, events[-1].seq)
            if any(e.event in RUN_ENDS for e in events):
                self._queue_recap(conn, run)
        return len(rows)

    def _finish_rows(self, conn: sqlite3.Connection, run_id: str, channel: str, rows: list[Row]) -> None:
        """The rows, then a card update unless the card is among them or an update is pending."""
        if not self._card_update_queued(conn, run_id) and not any(kind == "card" for kind, _, _ in rows):
            rows.append(("card_update", None, None))
        for kind, payload, approval_id in rows:
            self.outbox.insert(conn, run_id, channel, kind, payload, approval_id)

    def _queue_recap(self, conn: sqlite3.Connection, run: Run) -> None:
        """After a batch's last run's end is projected: its recap, once, at the top of the channel (its first
        host's: a group's batch is in its group's channel).

        In the transaction that projects that end, so a crash neither loses nor repeats it; a batch whose other
        runs are not all ended and projected yet gets it when the last of them is.
        """
        batch = self.store.batch(run.batch_id)
        key, fleet_id = run.batch_id, fleet.fleet_of(conn, run.id) if self.fleets else None
        if fleet_id is not None:  # a fleet of several batches: one recap per channel, of its hosts there
            channel = self.outbox.thread_channel(conn, run.id) or self.channel_of(run.host)
            here = [self.store.get_run(r) for r in fleet.runs_of(conn, fleet_id)]
            here = [r for r in here if (self.outbox.thread_channel(conn, r.id) or self.channel_of(r.host)) == channel]
            if len({r.batch_id for r in here}) > 1:
                batch, key = here, f"{fleet_id}:{channel}"
        if len(batch) < 2 or any(r.state.active for r in batch):
            return
        if any(self.outbox.owes_projection(conn, r.id) for r in batch) or self.outbox.recap_queued(conn, key):
            return
        lines = batch_recap(batch, {r.id: self.store.steps(r.id) for r in batch}, self.read_only)
        channel = self.outbox.thread_channel(conn, batch[0].id) or self.channel_of(batch[0].host)
        recap = msg.batch_recap(key, lines) if key == run.batch_id else fleet_recap(key, lines)
        self.outbox.insert_recap(conn, key, channel, recap)

    def _card_update_queued(self, conn: sqlite3.Connection, run_id: str) -> bool:
        # A pending card update renders the card when it is sent, so it shows these events too; one already
        # being rendered and sent does not, and another is queued behind it.
        return self.outbox.card_update_pending(conn, run_id, besides=self.sending)

    def _rows_for(self, event: AuditEvent, run: Run, steps: dict[str, StepRecord]) -> list[Row]:
        title = self.titles.get(event.step or "", event.step or "")
        if event.event == "run.requested":
            return [("card", None, None)]
        if event.event == "run.started":
            if scheduled := event.detail.get("scheduled_for"):  # a scheduled run: the thread says it began
                text = f"Started: it was scheduled for {_utc(scheduled)}"
                return [("reply", msg.note(text, "Schedule"), None)]
            return []  # the card's state says it; a reply would spend one of the channel's paced posts
        if event.event == "run.rescheduled":  # the card shows the new time; the thread says why it moved
            text = (
                f"Rescheduled: was due {_utc(event.detail.get('from'))}, now {_utc(event.detail['to'])}: "
                f"{event.detail.get('why', '')}"
            )
            return [("reply", msg.note(text, "Schedule"), None)]
        if event.event == "run.retried":  # the card shows the new attempt; the thread says who and why
            why = escape(event.detail.get("why") or "")
            text = f"🔁 retried by <@{event.actor}> (attempt {event.detail.get('attempt')})" + (
                f": {why}" if why else ""
            )
            return [("reply", msg.message(text, [msg.section(text)]), None)]
        if event.event.startswith("step."):
            return [("reply", msg.step_reply(event, steps.get(event.step or ""), title), None)]
        if event.event == "approval.requested":
            return [("approval", None, event.detail["approval_id"])]
        if event.event == "approval.superseded":
            text = f"The {event.detail['gate']} request no longer matches: {event.detail.get('reason', '')}"
            return [
                ("approval_update", None, event.detail["approval_id"]),
                ("reply", msg.note(text, title), None),
            ]
        if event.event in ("approval.granted", "approval.denied", "approval.expired"):
            approval_id = event.detail["approval_id"]
            rows: list[Row] = [("approval_update", None, approval_id)]
            if event.event == "approval.granted" and not event.detail.get("gate_open"):
                text = (
                    f"Approval by <@{event.actor}> recorded ({event.detail['approvals']} of {event.detail['required']})"
                )
                rows.append(("reply", msg.message(text, [msg.context(text)]), None))
            return rows
        if event.event.startswith("revert."):
            return [("reply", msg.note(_revert_text(event), "Revert to snapshot"), None)]
        if event.event in RUN_ENDS:
            plan = stored_plan(steps.values()) if run.check_only else None
            if plan is not None:  # the dry run's answer, in the thread, before its end
                return [("reply", msg.dry_run_plan(run, plan), None), ("final", None, None)]
            return [("final", None, None)]
        return []  # approval.refused: answered to that person only (ephemeral)


def _skips_together(events: list[AuditEvent]) -> list[list[AuditEvent]]:
    """The events in order, each alone, except that consecutive skips with the same reason (not a step
    this build cannot do) form one group."""
    groups: list[list[AuditEvent]] = []
    for event in events:
        skip = event.event == "step.skipped" and not event.detail.get("not_available")
        last = groups[-1][-1] if groups else None
        if (
            skip
            and last is not None
            and last.event == "step.skipped"
            and not last.detail.get("not_available")
            and last.detail.get("reason") == event.detail.get("reason")
        ):
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


def _revert_text(event: AuditEvent) -> str:
    """A revert.* event in words (bot.engine.revert); the snapshot by name and id, as its approval shows it."""
    detail = event.detail
    snapshot = detail.get("snapshot") or {}
    named = f"'{snapshot.get('name')}'" + (f" ({snapshot['id']})" if snapshot.get("id") else "")
    if event.event == "revert.requested":
        why = f": {detail['why']}" if detail.get("why") else ""
        return f"asked by {event.actor} for snapshot {named}{why}; an approver decides"
    if event.event == "revert.started":
        return f"reverting VM {detail.get('vm')} to snapshot {named}" + (" by hand" if detail.get("by_hand") else "")
    if event.event == "revert.reverted":
        by = f" by {detail['by']}" if detail.get("by") else ""
        power = f"; the VM is {detail['power_state']}" if detail.get("power_state") else ""
        return f"VM reverted to snapshot {named}{by}{power}"
    if event.event == "revert.powered_on":
        return f"VM powered on ({detail.get('power_state')}); waiting for WinRM"
    if event.event == "revert.verified":
        host = detail.get("host") or {}
        return f"verified: connector {host.get('version')}, service {host.get('service')}"
    return f"FAILED: {detail.get('reason', '')}"


def _utc(text: str | None) -> str:
    return describe_moment(datetime.fromisoformat(text), None) if text else "?"
