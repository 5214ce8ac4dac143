"""When the audit trail is checkpointed: at the end of every run, at start-up, and every few minutes while
runs are active (bot.store.checkpoints says what a checkpoint is).

The engine asks for a run's checkpoint once the run's last event is persisted and before it tells anyone the
run ended, so that checkpoint covers it and the Slack thread finds it written. A crash between the two loses
nothing: the start-up checkpoint covers what the last one did not. Each new checkpoint of a run is published
(``audit.checkpoint``) and the Slack front end posts it in the run's thread, the copy the bot cannot edit
silently; the others are posted at the top of the channel.
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

    async def checkpoint(self, reason: str, run_id: str | None = None) -> Checkpoint | None:
        """A new checkpoint of the trail as it is now; None when nothing was appended since the last one."""
        checkpoint, new = await self.store.call(self.store.write_checkpoint, self.signer, reason, run_id)
        if checkpoint is None or not new:
            return None
        log.info("audit checkpoint: %s events, head %s (%s)", checkpoint.count, checkpoint.head[:12], reason)
        return checkpoint

    @staticmethod
    def describe(checkpoint: Checkpoint) -> str:
        signed = "signed" if checkpoint.signature else "not signed"
        return f"audit checkpoint: {checkpoint.count} events, head {checkpoint.head[:16]}…, {signed}"

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
                if not active:
                    continue
                oldest = min(active, key=lambda r: r.created_at)
                checkpoint = await self.checkpoint("while runs are active", oldest.id)
                if checkpoint is not None:  # posted in that run's thread
                    data = {"checkpoint": checkpoint.model_dump()}
                    event = ProgressEvent(
                        "audit.checkpoint", oldest.id, oldest.host, self.describe(checkpoint), data=data
                    )
                    self.publish(event)
            except Exception:  # a busy or broken database: the next end of run checkpoints anyway
                log.exception("periodic audit checkpoint failed; trying again in %.0f s", self.every_seconds)
