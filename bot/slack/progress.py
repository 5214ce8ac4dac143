"""The Slack thread of each run: the projector (audit → outbox) and the deliverer (outbox → Slack), wired.

The engine publishes to ``SlackProgress`` as a progress sink; ``idle()`` tells when every thread has all
its events, delivered (the sandbox and tests wait on it; ``/healthz`` reports the same backlog).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config
from bot.core.models import Run, StepRecord
from bot.engine.events import ProgressEvent
from bot.slack.deliverer import OutboxDeliverer
from bot.slack.projector import ThreadProjector
from bot.store.outbox import Outbox
from bot.store.store import Store


class SlackProgress:
    def __init__(
        self,
        store: Store,
        client: AsyncWebClient,
        config: Config,
        titles: dict[str, str],
        read_only: frozenset[str] = frozenset(),
        offers: Callable[[Run, list[StepRecord]], list[str]] = lambda run, records: [],
    ):
        self.store, self.titles = store, titles
        self.outbox = Outbox(store)
        wake = asyncio.Event()
        self.projector = ThreadProjector(
            store,
            self.outbox,
            config.slack.channel,
            titles,
            wake,
            read_only,
            channel_of=config.channel_of,
            fleets=config.slack.fleet_progress == "card",
        )
        self.deliverer = OutboxDeliverer(store, self.outbox, client, config, titles, self.projector, wake, offers)

    async def deliver(self, event: ProgressEvent) -> None:
        await self.projector.deliver(event)

    def start(self) -> None:
        self.deliverer.start()

    async def catch_up(self) -> None:
        await self.projector.catch_up()

    async def stop(self) -> None:
        await self.projector.stop()
        await self.deliverer.stop()

    async def idle(self, timeout: float = 30) -> bool:
        """True once every run's thread has all its events, delivered (for tests and the sandbox)."""
        stop = time.monotonic() + timeout
        while time.monotonic() < stop:
            if not self.projector.busy and (await self.store.call(self.outbox.backlog)).delivered:
                return True
            await asyncio.sleep(0.05)
        return False
