"""Outbox → Slack: each channel's rows in id order (so each thread stays in order), paced, retried.

Posts (chat.postMessage) at most ``slack.messages_per_second`` per channel; edits (chat.update: the cards, a
decided request) on a lane of their own at ``slack.updates_per_minute`` (Slack's Tier 3), each pending edit of
one message folded into one call (``slack.fleet_progress = "threads"``: one lane for both, as before). 429 (Retry-After), 5xx and connection errors are retried without
end, so a Slack outage delays the thread but never loses it and never stops a run. A message whose
sending was interrupted by a crash after Slack accepted it is sent again: at most one duplicate per
crash. The card is one message updated in place; its content is rendered when it is sent, so any number
of changes coalesce into one ``chat.update``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config
from bot.core.models import Run, StepRecord
from bot.core.windows import window_for
from bot.slack import messages as msg
from bot.slack.fleet import fleet_card
from bot.slack.projector import ThreadProjector
from bot.store import fleet
from bot.store.outbox import Outbox, PendingEntry
from bot.store.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 8.0
# The rows the posts' lane sends (chat.postMessage, paced per channel); edits have a lane of their own.
POSTS = ("card", "reply", "approval", "final", "checkpoint", "recap", "fleet_card")
EDIT_LANE = "chat.update"
# When the channel's backlog would take this long to send at the pace, a thread's consecutive pending
# replies go out as one message: a fleet's threads catch up sooner, and nothing is dropped or reordered.
MERGE_BACKLOG_SECONDS = 30.0
MERGE_MAX_BLOCKS = 40  # Slack allows 50 blocks in a message
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

STOP_RETRY_SECONDS = 0.5  # stop(): how long to wait for the lanes before cancelling them again


class OutboxDeliverer:
    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        client: AsyncWebClient,
        config: Config,
        titles: dict[str, str],
        projector: ThreadProjector,
        wake: asyncio.Event,
        offers: Callable[[Run, list[StepRecord]], list[str]] = lambda run, records: [],
    ):
        self.store, self.outbox, self.client, self.config = store, outbox, client, config
        self.titles, self.projector, self.wake = titles, projector, wake
        self.offers = offers  # an ended run's buttons (bot.engine.recovery.offers, with the engine's steps)
        self.interval = 1.0 / config.slack.messages_per_second
        # Edits (chat.update, Slack's Tier 3) go on their own lane and budget: a long queue of posts never
        # holds a card's edit back, nor edits a post. "threads" keeps the one lane of before (the baseline).
        self.edit_interval = 60.0 / config.slack.updates_per_minute
        self.lanes = config.slack.fleet_progress == "card"
        self.merge_backlog_seconds = MERGE_BACKLOG_SECONDS
        self.delivered = 0
        self.edits = 0  # chat.update calls made for the edit rows (a coalesced edit counts once)
        self._last_call: dict[str, float] = {}  # by channel; EDIT_LANE for the edits' budget
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            if self.lanes:
                self._tasks = [
                    loop.create_task(self._deliver_forever(POSTS), name="slack-outbox"),
                    loop.create_task(self._deliver_forever(None, edits=True), name="slack-edits"),
                ]
            else:
                self._tasks = [loop.create_task(self._deliver_forever(None), name="slack-outbox")]

    async def stop(self) -> None:
        # Cancelled again until done: on Python 3.11 asyncio.wait_for can swallow a cancel that arrives as the
        # event it waits on is set (here: one lane waking the other), and a lane would then run on forever.
        while pending := [task for task in self._tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=STOP_RETRY_SECONDS)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _deliver_forever(self, kinds: tuple[str, ...] | None, edits: bool = False) -> None:
        backoff = 1.0
        while True:
            self.wake.clear()  # before looking: a row queued after this wakes the wait below
            if edits:
                entry = await self.store.call(self.outbox.next_edit)
            else:
                entry = await self.store.call(self.outbox.next_pending, kinds)
            if entry is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):  # unlike wait_for, never swallows a cancel
                        await self.wake.wait()
                continue
            lane = EDIT_LANE if edits else entry.channel
            await self._pace(lane, self.edit_interval if edits else self.interval)
            if entry.kind == "reply":
                entry = await self.store.call(self.merge_backlog, entry)
            covered = await self.store.call(self._cover, entry)
            try:
                ts = await self._send(entry)
            except SlackApiError as exc:
                self._called(lane)
                self.projector.sending.difference_update(covered)
                error = exc.response.get("error", "") if exc.response is not None else ""
                status = exc.response.status_code if exc.response is not None else 0
                if error in FATAL_ERRORS or (400 <= status < 500 and status != 429 and error):
                    log.error("Slack refused outbox message %s (%s): %s; skipping it", entry.id, entry.kind, error)
                    await self.store.call(self.outbox.mark, (entry.id,), "failed", None, error)
                    continue
                delay = float(exc.response.headers.get("Retry-After", backoff)) if status == 429 else backoff
                log.warning("Slack answered %s %s; retrying message %s in %.1f s", status, error, entry.id, delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            except Exception as exc:  # connection refused, timeouts: Slack is away, the thread waits
                self._called(lane)
                self.projector.sending.difference_update(covered)
                log.warning(
                    "Slack unreachable (%s); retrying message %s in %.1f s", type(exc).__name__, entry.id, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            self._called(lane)
            backoff = 1.0
            self.delivered += 1
            await self.store.call(self.outbox.mark, tuple(dict.fromkeys((*entry.ids, *covered))), "sent", ts, None)
            self.projector.sending.difference_update(covered)  # after the mark: never pending and uncovered
            if not edits:
                self.wake.set()  # an edit may have waited for this message to be posted

    def _cover(self, entry: PendingEntry) -> tuple[int, ...]:
        """The rows this send covers, marked as being sent (the projector queues a new edit past them). With
        lanes, every pending edit of the message it renders: they coalesce into this one call."""
        covered: tuple[int, ...] = (entry.id,)
        if self.lanes and entry.kind in ("card_update", "approval_update", "fleet_card", "fleet_update"):
            covered = self.outbox.same_edits(entry)
        self.projector.sending.update(covered)
        return covered

    def merge_backlog(self, entry: PendingEntry) -> PendingEntry:
        """With a long backlog in the channel, this reply and the thread's next pending replies as one."""
        pending = self.outbox.pending_in_channel(entry.channel)
        if pending / self.config.slack.messages_per_second < self.merge_backlog_seconds:
            return entry
        ids: list[int] = []
        texts: list[str] = []
        blocks: list[dict[str, Any]] = []
        for entry_id, kind, payload in self.outbox.pending_of_run_from(entry.run_id, entry.id):
            message = json.loads(payload)
            if kind != "reply" or len(blocks) + len(message.get("blocks", [])) > MERGE_MAX_BLOCKS:
                break  # the thread's order: never past a message of another kind
            ids.append(entry_id)
            texts.append(message.get("text", ""))
            blocks.extend(message.get("blocks", []))
        if len(ids) < 2:
            return entry
        text = msg.fit("\n".join(texts), msg.TEXT_LIMIT)
        return dataclasses.replace(entry, payload=json.dumps({"text": text, "blocks": blocks}), merged=tuple(ids))

    async def _pace(self, channel: str, interval: float | None = None) -> None:
        wait = self._last_call.get(channel, 0.0) + (self.interval if interval is None else interval) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _called(self, channel: str) -> None:
        # Counted from Slack's answer, not from sending: a call that took long to arrive must not let the
        # next one reach Slack sooner than the pace (the benchmark saw 11 calls in a second at 10 per second).
        self._last_call[channel] = time.monotonic()

    async def _send(self, entry: PendingEntry) -> str | None:
        kind, channel = entry.kind, entry.channel
        if kind in ("fleet_card", "fleet_update"):
            return await self._send_fleet(entry)
        if kind in ("card", "card_update"):
            payload = await self.store.call(self._card, entry.run_id)
            if kind == "card" or not entry.card_ts:
                response = await self.client.chat_postMessage(channel=channel, **payload)
                await self.store.call(self.outbox.set_card_ts, entry.run_id, response["ts"])
                return str(response["ts"])
            await self.client.chat_update(channel=channel, ts=entry.card_ts, **payload)
            self.edits += 1
            return entry.card_ts
        thread: dict[str, Any] = {"thread_ts": entry.card_ts} if entry.card_ts else {}
        if kind == "approval":
            payload = await self.store.call(self._approval, entry.approval_id, False)
        elif kind == "approval_update":
            ts = await self.store.call(self.outbox.approval_ts, entry.approval_id)
            if ts is None:
                return None  # the request itself never reached Slack; nothing to update
            payload = await self.store.call(self._approval, entry.approval_id, True)
            await self.client.chat_update(channel=channel, ts=ts, **payload)
            self.edits += 1
            return ts
        elif kind == "final":
            payload = await self.store.call(self._final, entry.run_id)
            # a fleet's results are on its fleet card: only a run of its own tells the channel
            thread["reply_broadcast"] = not (self.lanes and await self.store.call(self._in_fleet, entry.run_id))
        else:
            payload = json.loads(entry.payload)
        response = await self.client.chat_postMessage(channel=channel, **thread, **payload)
        return str(response["ts"])

    async def _send_fleet(self, entry: PendingEntry) -> str:
        fleet_id = entry.thread_key or ""
        payload = await self.store.call(self._fleet_card, fleet_id, entry.channel)
        if entry.card_ts:
            await self.client.chat_update(channel=entry.channel, ts=entry.card_ts, **payload)
            self.edits += 1
            return entry.card_ts
        response = await self.client.chat_postMessage(channel=entry.channel, **payload)
        await self.store.call(self._set_fleet_ts, fleet_id, entry.channel, str(response["ts"]))
        return str(response["ts"])

    def _fleet_card(self, fleet_id: str, channel: str) -> dict[str, Any]:
        conn = self.store.conn
        runs = [self.store.get_run(run_id) for run_id in fleet.runs_of(conn, fleet_id)]
        here = [
            r for r in runs if (self.outbox.thread_channel(conn, r.id) or self.config.channel_of(r.host)) == channel
        ]
        steps = {r.id: self.store.steps(r.id) for r in here}
        return fleet_card(fleet_id, here, steps, self.titles, self.config.installer.version, len(runs))

    def _set_fleet_ts(self, fleet_id: str, channel: str, ts: str) -> None:
        with self.store.transaction("slack.fleet_card") as conn:
            fleet.set_card_ts(conn, fleet_id, channel, ts)

    def _in_fleet(self, run_id: str) -> bool:
        return fleet.fleet_of(self.store.conn, run_id) is not None

    def _card(self, run_id: str) -> dict[str, Any]:
        run = self.store.get_run(run_id)
        known = msg.people(run, self.store.approvals(run_id))
        window = window_for(self.config, run.host)  # a scheduled run's time, in its window's zone too
        records = self.store.steps(run_id)
        offers = self.offers(run, records)
        return msg.card(run, records, self.titles, self.config.installer.version, known, window, offers)

    def _final(self, run_id: str) -> dict[str, Any]:
        run = self.store.get_run(run_id)
        return msg.run_finished(run, msg.people(run, self.store.approvals(run_id)))

    def _approval(self, approval_id: str, decided: bool) -> dict[str, Any]:
        approval = self.store.get_approval(approval_id)
        run = self.store.get_run(approval.run_id)
        build = msg.approval_decided if decided or approval.state.value != "open" else msg.approval_request
        group = self.config.group_of(run.host)
        deciders = msg.deciders(self.config.slack, approval.gate, self.config.groups[group] if group else None)
        return build(approval, run, self.titles.get(approval.step, approval.step), deciders)
