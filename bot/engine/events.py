"""Progress events and where they go (the terminal now, Slack later), without ever blocking the engine."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """Something a person watching the run should hear about. Published after it is persisted."""

    kind: str  # run.queued, run.started, run.resumed, step.started, step.note, step.finished,
    #            approval.requested, approval.decided, run.finished
    run_id: str
    host: str
    text: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class ProgressSink(Protocol):
    async def deliver(self, event: ProgressEvent) -> None: ...


class SinkDispatcher:
    """Queues events for the sinks; a slow or failing sink delays only itself, never the engine."""

    def __init__(self, sinks: list[ProgressSink]):
        self.sinks = sinks
        self._queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def publish(self, event: ProgressEvent) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="progress-sinks")
        self._queue.put_nowait(event)

    async def _pump(self) -> None:
        while (event := await self._queue.get()) is not None:
            for sink in self.sinks:
                try:
                    await sink.deliver(event)
                except Exception:
                    log.exception("progress sink %s failed on %s; continuing", type(sink).__name__, event.kind)
            self._queue.task_done()
        self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every event published so far has been delivered."""
        if self._task is not None:
            await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
