"""The Slack thread of each run, through the outbox: stored first, then delivered in order, paced.

The thread is a projection of the audit trail. The projector turns a run's new audit events into
outbox rows and advances the run's cursor in the same transaction, so a crash at any line loses no
message: a restart projects from the cursor again. The card is one message updated in place; its
content is rendered when it is sent, so any number of changes coalesce into one ``chat.update``.

The deliverer sends rows per channel in id order (so each thread stays in order), at most
``slack.messages_per_second``; 429 (Retry-After), 5xx and connection errors are retried without
end, so a Slack outage delays the thread but never loses it and never stops a run. A message whose
sending was interrupted by a crash after Slack accepted it is sent again: at most one duplicate
per crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import slack_messages as msg
from bot.config import Config
from bot.engine import Engine
from bot.models import iso, utcnow
from bot.sink import ProgressEvent
from bot.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 8.0
# When the channel's backlog would take this long to send at the pace, a thread's consecutive pending
# replies go out as one message: a fleet's threads catch up sooner, and nothing is dropped or reordered.
MERGE_BACKLOG_SECONDS = 30.0
MERGE_MAX_BLOCKS = 40  # Slack allows 50 blocks in a message
PROJECT_COALESCE_SECONDS = 0.05  # a run's events within this long become one outbox transaction
FATAL_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "msg_too_long",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "no_permission",
        "missing_scope",
        "message_not_found",
        "cant_update_message",
    }
)


class SlackProgress:
    """A progress sink that projects runs into the outbox, and the deliverer that empties it."""

    def __init__(self, engine: Engine, client: AsyncWebClient, config: Config):
        self.engine, self.client, self.config = engine, client, config
        self.store: Store = engine.store
        self.channel = config.slack.channel
        self.interval = 1.0 / config.slack.messages_per_second
        self.titles = {step_id: step.title for step_id, step in engine.steps.items()}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_call: dict[str, float] = {}
        self.delivered = 0
        self.merge_backlog_seconds = MERGE_BACKLOG_SECONDS
        self._dirty: set[str] = set()  # runs with audit events not projected yet
        self._projector: asyncio.Task | None = None
        self._sending = -1  # the outbox row being sent; projection and delivery share the store's thread

    # -- projection (runs on the store's thread) -------------------------------------------------

    async def deliver(self, event: ProgressEvent) -> None:
        """ProgressSink: called after the engine persisted the event.

        Projection is coalesced: a run's burst of events becomes one transaction a moment later, instead of
        one per event queued between the engine's own (the per-run benchmark's overhead). Safe to delay:
        the projection is derived from the audit trail, and start-up catches up from the cursor.
        """
        if event.kind == "step.note":  # not in the audit trail: after what came before it, at once
            await self.engine.db(self._project_then_note, event.run_id, event.step or "", event.text)
            self._wakeup.set()
            return
        self._dirty.add(event.run_id)
        if self._projector is None or self._projector.done():
            self._projector = asyncio.get_running_loop().create_task(self._project_dirty(), name="slack-project")

    async def _project_dirty(self) -> None:
        await asyncio.sleep(PROJECT_COALESCE_SECONDS)
        while self._dirty:
            await self.engine.db(self.project, self._dirty.pop())
        self._wakeup.set()

    def _project_then_note(self, run_id: str, step: str, text: str) -> None:
        self._dirty.discard(run_id)
        self.project(run_id)
        self._enqueue_note(run_id, step, text)

    def project(self, run_id: str) -> int:
        """Turn the run's audit events after its cursor into outbox rows; returns how many rows."""
        with self.store.transaction("slack.project") as conn:
            row = conn.execute("SELECT projected_seq FROM slack_threads WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO slack_threads (run_id, channel) VALUES (?, ?)", (run_id, self.channel))
            last = row[0] if row else 0
            events = self.store.audit_events(run_id, after=last)
            if not events:
                return 0
            run = self.store.get_run(run_id)
            steps = {s.step: s for s in self.store.steps(run_id)}
            rows: list[tuple[str, dict | None, str | None]] = []
            for event in events:
                if event.event == "step.started" and event.detail.get("attempt", 1) == 1:
                    continue  # the card shows the step in progress; a restart's second start gets a line
                rows.extend(self._rows_for(event, run, steps))
            # A card update still pending renders the card when it is sent, so it shows these events too;
            # one already being rendered and sent does not, and another is queued behind it.
            pending_update = conn.execute(
                "SELECT 1 FROM outbox WHERE run_id = ? AND kind = 'card_update' AND state = 'pending' AND id != ?",
                (run_id, self._sending),
            ).fetchone()
            if not pending_update and not any(kind == "card" for kind, _, _ in rows):
                rows.append(("card_update", None, None))
            for kind, payload, approval_id in rows:
                self._insert(conn, run_id, kind, payload, approval_id)
            conn.execute("UPDATE slack_threads SET projected_seq = ? WHERE run_id = ?", (events[-1].seq, run_id))
        return len(rows)

    def _rows_for(self, event, run, steps) -> list[tuple[str, dict | None, str | None]]:
        title = self.titles.get(event.step or "", event.step or "")
        if event.event == "run.requested":
            return [("card", None, None)]
        if event.event == "run.started":
            return []  # the card's state says it; a reply would spend one of the channel's paced posts
        if event.event.startswith("step."):
            return [("reply", msg.step_reply(event, steps.get(event.step), title), None)]
        if event.event == "approval.requested":
            return [("approval", None, event.detail["approval_id"])]
        if event.event in ("approval.granted", "approval.denied", "approval.expired"):
            approval_id = event.detail["approval_id"]
            rows = [("approval_update", None, approval_id)]
            if event.event == "approval.granted" and not event.detail.get("gate_open"):
                text = (
                    f"Approval by <@{event.actor}> recorded ({event.detail['approvals']} of {event.detail['required']})"
                )
                rows.append(("reply", msg.message(text, [msg.context(text)]), None))
            return rows
        if event.event in ("run.succeeded", "run.failed", "run.cancelled"):
            return [("final", None, None)]
        return []  # approval.refused: answered to that person only (ephemeral)

    def _enqueue_note(self, run_id: str, step: str, text: str) -> None:
        with self.store.transaction("slack.note") as conn:
            if conn.execute("SELECT 1 FROM slack_threads WHERE run_id = ?", (run_id,)).fetchone():
                self._insert(conn, run_id, "reply", msg.note(text, self.titles.get(step, step)), None)

    def _insert(self, conn, run_id: str, kind: str, payload: dict | None, approval_id: str | None) -> None:
        conn.execute(
            "INSERT INTO outbox (run_id, channel, thread_key, kind, payload, created_at, approval_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, self.channel, run_id, kind, json.dumps(payload) if payload else "{}", iso(utcnow()), approval_id),
        )

    # -- delivery --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._deliver_forever(), name="slack-outbox")

    async def catch_up(self) -> None:
        """At start-up: project every run that has a thread or is active, then deliver what is pending."""
        run_ids = await self.engine.db(self._runs_to_project)
        for run_id in run_ids:
            await self.engine.db(self.project, run_id)
        self._wakeup.set()

    def _runs_to_project(self) -> list[str]:
        # By the cursor, not by the run's state: a run that ended before its first projection (killed within
        # the coalescing moment) still owes its thread everything. Terminal runs never had a thread.
        rows = self.store.conn.execute(
            "SELECT r.id FROM runs r LEFT JOIN slack_threads t ON t.run_id = r.id "
            "WHERE (t.run_id IS NOT NULL OR r.requester NOT LIKE 'cli:%') "
            "AND (SELECT MAX(seq) FROM audit a WHERE a.run_id = r.id) > COALESCE(t.projected_seq, 0) "
            "ORDER BY r.created_at"
        ).fetchall()
        return [r[0] for r in rows]

    async def stop(self) -> None:
        if self._projector is not None:
            # what is left is projected by catch_up() at the next start, from the cursor
            self._projector.cancel()
            await asyncio.gather(self._projector, return_exceptions=True)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def idle(self, timeout: float = 30) -> bool:
        """True once every run's thread has all its events, delivered (for tests and the sandbox)."""
        stop = time.monotonic() + timeout
        while time.monotonic() < stop:
            projecting = self._dirty or (self._projector is not None and not self._projector.done())
            if not projecting and (await self.engine.db(self.store.thread_backlog)).delivered:
                return True
            await asyncio.sleep(0.05)
        return False

    def _next_pending(self) -> dict[str, Any] | None:
        row = self.store.conn.execute(
            "SELECT o.id, o.run_id, o.channel, o.kind, o.payload, o.approval_id, t.card_ts "
            "FROM outbox o LEFT JOIN slack_threads t ON t.run_id = o.run_id "
            "WHERE o.state = 'pending' "
            # A thread that waits for a person goes first (in its own order), so approval requests are not
            # stuck behind other runs' progress when a large fleet fills the paced queue.
            "ORDER BY o.run_id IN (SELECT run_id FROM outbox WHERE state = 'pending' AND kind = 'approval') DESC, "
            "o.id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "run_id", "channel", "kind", "payload", "approval_id", "card_ts")
        return dict(zip(keys, row, strict=True))

    async def _deliver_forever(self) -> None:
        backoff = 1.0
        while True:
            self._sending = -1
            entry = await self.engine.db(self._next_pending)
            if entry is None:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=5)
                continue
            await self._pace(entry["channel"])
            if entry["kind"] == "reply":
                entry = await self.engine.db(self._merge_backlog, entry)
            self._sending = entry["id"]
            try:
                ts = await self._send(entry)
            except SlackApiError as exc:
                self._called(entry["channel"])
                error = exc.response.get("error", "") if exc.response is not None else ""
                status = exc.response.status_code if exc.response is not None else 0
                if error in FATAL_ERRORS or (400 <= status < 500 and status != 429 and error):
                    log.error(
                        "Slack refused outbox message %s (%s): %s; skipping it", entry["id"], entry["kind"], error
                    )
                    await self.engine.db(self._mark, entry["id"], "failed", None, error)
                    continue
                delay = float(exc.response.headers.get("Retry-After", backoff)) if status == 429 else backoff
                log.warning("Slack answered %s %s; retrying message %s in %.1f s", status, error, entry["id"], delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            except Exception as exc:  # connection refused, timeouts: Slack is away, the thread waits
                self._called(entry["channel"])
                log.warning(
                    "Slack unreachable (%s); retrying message %s in %.1f s", type(exc).__name__, entry["id"], backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            self._called(entry["channel"])
            backoff = 1.0
            self.delivered += 1
            await self.engine.db(self._mark, entry.get("merged", entry["id"]), "sent", ts, None)

    def _merge_backlog(self, entry: dict[str, Any]) -> dict[str, Any]:
        """With a long backlog in the channel, this reply and the thread's next pending replies as one."""
        [(pending,)] = self.store.conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND channel = ?", (entry["channel"],)
        ).fetchall()
        if pending / self.config.slack.messages_per_second < self.merge_backlog_seconds:
            return entry
        rows = self.store.conn.execute(
            "SELECT id, kind, payload FROM outbox WHERE run_id = ? AND state = 'pending' AND id >= ? ORDER BY id",
            (entry["run_id"], entry["id"]),
        ).fetchall()
        ids, texts, blocks = [], [], []
        for entry_id, kind, payload in rows:
            message = json.loads(payload)
            if kind != "reply" or len(blocks) + len(message.get("blocks", [])) > MERGE_MAX_BLOCKS:
                break  # the thread's order: never past a message of another kind
            ids.append(entry_id)
            texts.append(message.get("text", ""))
            blocks.extend(message.get("blocks", []))
        if len(ids) < 2:
            return entry
        text = msg.fit("\n".join(texts), msg.TEXT_LIMIT)
        return {**entry, "payload": json.dumps({"text": text, "blocks": blocks}), "merged": ids}

    async def _pace(self, channel: str) -> None:
        wait = self._last_call.get(channel, 0.0) + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _called(self, channel: str) -> None:
        # Counted from Slack's answer, not from sending: a call that took long to arrive must not let the
        # next one reach Slack sooner than the pace (the benchmark saw 11 calls in a second at 10 per second).
        self._last_call[channel] = time.monotonic()

    async def _send(self, entry: dict[str, Any]) -> str | None:
        kind, channel = entry["kind"], entry["channel"]
        if kind in ("card", "card_update"):
            payload = await self.engine.db(self._card, entry["run_id"])
            if kind == "card" or not entry["card_ts"]:
                response = await self.client.chat_postMessage(channel=channel, **payload)
                await self.engine.db(self._set_card_ts, entry["run_id"], response["ts"])
                return response["ts"]
            await self.client.chat_update(channel=channel, ts=entry["card_ts"], **payload)
            return entry["card_ts"]
        thread = {"thread_ts": entry["card_ts"]} if entry["card_ts"] else {}
        if kind == "approval":
            payload = await self.engine.db(self._approval, entry["approval_id"], False)
        elif kind == "approval_update":
            ts = await self.engine.db(self._approval_ts, entry["approval_id"])
            if ts is None:
                return None  # the request itself never reached Slack; nothing to update
            payload = await self.engine.db(self._approval, entry["approval_id"], True)
            await self.client.chat_update(channel=channel, ts=ts, **payload)
            return ts
        elif kind == "final":
            payload = msg.run_finished(await self.engine.db(self.store.get_run, entry["run_id"]))
            thread["reply_broadcast"] = True
        else:
            payload = json.loads(entry["payload"])
        response = await self.client.chat_postMessage(channel=channel, **thread, **payload)
        return response["ts"]

    def _card(self, run_id: str) -> dict[str, Any]:
        return msg.card(
            self.store.get_run(run_id), self.store.steps(run_id), self.titles, self.config.installer.version
        )

    def _approval(self, approval_id: str, decided: bool) -> dict[str, Any]:
        approval = self.store.get_approval(approval_id)
        run = self.store.get_run(approval.run_id)
        build = msg.approval_decided if decided or approval.state.value != "open" else msg.approval_request
        return build(approval, run, self.titles.get(approval.step, approval.step))

    def _approval_ts(self, approval_id: str) -> str | None:
        row = self.store.conn.execute(
            "SELECT slack_ts FROM outbox WHERE approval_id = ? AND kind = 'approval' AND state = 'sent'", (approval_id,)
        ).fetchone()
        return row[0] if row else None

    def _set_card_ts(self, run_id: str, ts: str) -> None:
        with self.store.transaction("slack.card"):
            self.store.conn.execute("UPDATE slack_threads SET card_ts = ? WHERE run_id = ?", (ts, run_id))

    def _mark(self, entry_ids: int | list[int], state: str, ts: str | None, error: str | None) -> None:
        """One row, or the rows merged into one message: all in one transaction."""
        with self.store.transaction("slack.sent"):
            for entry_id in entry_ids if isinstance(entry_ids, list) else [entry_ids]:
                self.store.conn.execute(
                    "UPDATE outbox SET state = ?, slack_ts = ?, error = ?, sent_at = ?, attempts = attempts + 1 "
                    "WHERE id = ?",
                    (state, ts, error, iso(utcnow()), entry_id),
                )
