"""Outbox → Slack: each channel's rows in id order (so each thread stays in order), paced, retried.

At most ``slack.messages_per_second``; 429 (Retry-After), 5xx and connection errors are retried without
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
from bot.slack.projector import ThreadProjector
from bot.store.outbox import Outbox, PendingEntry
from bot.store.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 8.0
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
        self.merge_backlog_seconds = MERGE_BACKLOG_SECONDS
        self.delivered = 0
        self._last_call: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._deliver_forever(), name="slack-outbox")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _deliver_forever(self) -> None:
        backoff = 1.0
        while True:
            self.projector.sending = -1
            entry = await self.store.call(self.outbox.next_pending)
            if entry is None:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=5)
                continue
            await self._pace(entry.channel)
            if entry.kind == "reply":
                entry = await self.store.call(self.merge_backlog, entry)
            self.projector.sending = entry.id
            try:
                ts = await self._send(entry)
            except SlackApiError as exc:
                self._called(entry.channel)
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
                self._called(entry.channel)
                log.warning(
                    "Slack unreachable (%s); retrying message %s in %.1f s", type(exc).__name__, entry.id, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            self._called(entry.channel)
            backoff = 1.0
            self.delivered += 1
            await self.store.call(self.outbox.mark, entry.ids, "sent", ts, None)

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

    async def _pace(self, channel: str) -> None:
        wait = self._last_call.get(channel, 0.0) + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _called(self, channel: str) -> None:
        # Counted from Slack's answer, not from sending: a call that took long to arrive must not let the
        # next one reach Slack sooner than the pace (the benchmark saw 11 calls in a second at 10 per second).
        self._last_call[channel] = time.monotonic()

    async def _send(self, entry: PendingEntry) -> str | None:
        kind, channel = entry.kind, entry.channel
        if kind in ("card", "card_update"):
            payload = await self.store.call(self._card, entry.run_id)
            if kind == "card" or not entry.card_ts:
                response = await self.client.chat_postMessage(channel=channel, **payload)
                await self.store.call(self.outbox.set_card_ts, entry.run_id, response["ts"])
                return str(response["ts"])
            await self.client.chat_update(channel=channel, ts=entry.card_ts, **payload)
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
            return ts
        elif kind == "final":
            payload = await self.store.call(self._final, entry.run_id)
            thread["reply_broadcast"] = True
        else:
            payload = json.loads(entry.payload)
        response = await self.client.chat_postMessage(channel=channel, **thread, **payload)
        return str(response["ts"])

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
