"""When the audit trail is checkpointed: at the end of every run, at start-up, and every few minutes while
runs are active (bot.store.checkpoints says what a checkpoint is).

It is a progress sink: a run's end reaches it after the run's last event is persisted, so that run's
checkpoint covers it. A crash between the two loses nothing: the start-up checkpoint covers what the last
one did not. Each new checkpoint is published (``audit.checkpoint``) so the Slack front end posts it in the
run's thread, the copy the bot cannot edit silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bot.core.signing import AuditSigner
from bot.engine.events import ProgressEvent
from bot.store.checkpoints import Checkpoint
from bot.store.store import Store

log = logging.getLogger(__name__)

Publish = Callable[[ProgressEvent], None]


class Checkpointer:
    def __init__(self, store: Store, signer: AuditSigner | None, every_minutes: float, publish: Publish):
        self.store, self.signer, self.every_seconds, self.publish = store, signer, every_minutes * 60, publish
        self._task: asyncio.Task | None = None

    async def deliver(self, event: ProgressEvent) -> None:
        """ProgressSink: a run that finished is checkpointed, with its run id (its thread gets the copy)."""
        if event.kind == "run.finished":
            await self.checkpoint(f"end of run {event.run_id}", event.run_id, event.host)

    async def checkpoint(self, reason: str, run_id: str | None = None, host: str = "") -> Checkpoint | None:
        checkpoint, new = await self.store.call(self.store.write_checkpoint, self.signer, reason, run_id)
        if checkpoint is not None and new:
            log.info("audit checkpoint: %s events, head %s (%s)", checkpoint.count, checkpoint.head[:12], reason)
            if run_id is not None:
                signed = "signed" if checkpoint.signature else "not signed"
                text = f"audit checkpoint: {checkpoint.count} events, head {checkpoint.head[:16]}…, {signed}"
                data = {"checkpoint": checkpoint.model_dump()}
                self.publish(ProgressEvent("audit.checkpoint", run_id, host, text, data=data))
        return checkpoint

    async def start(self) -> None:
        """At start-up: the trail as the last process left it, then the periodic checkpoints."""
        await self.checkpoint("at start-up")
        self._task = asyncio.get_running_loop().create_task(self._every_few_minutes(), name="audit-checkpoints")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _every_few_minutes(self) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                active = await self.store.call(self.store.runs, active=True)
                if active:
                    oldest = min(active, key=lambda r: r.created_at)
                    await self.checkpoint("while runs are active", oldest.id, oldest.host)
            except Exception:  # a busy or broken database: the next end of run checkpoints anyway
                log.exception("periodic audit checkpoint failed; trying again in %.0f s", self.every_seconds)
