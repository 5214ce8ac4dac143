"""The App Home of everyone who opened it, published and kept current (a progress sink of the engine).

Who opened it is kept in memory, not in the database: Slack sends ``app_home_opened`` every time a person opens
the tab, so after a restart each viewer is known again at their next look, and nothing stale is kept for people
who left. While runs change state the Home of each viewer is republished at most once per
``slack.home_refresh_seconds`` (the first change at once, the ones that follow together after the pause):
``deliver`` only marks the fleet changed, so the engine never waits on Slack.

A card's permalink (``chat.getPermalink``) never changes, so it is asked once per run and kept; a publish asks
at most ``LINKS_PER_PUBLISH`` new ones (the rest are shown at a later publish), and only for the hosts on the
page the person sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config
from bot.core.models import utcnow
from bot.engine.events import ProgressEvent
from bot.slack.home import home_view, page_count, page_hosts
from bot.store.host_overview import HostRow, host_rows
from bot.store.store import Store

log = logging.getLogger(__name__)

MAX_VIEWERS = 100  # the most recent viewers kept current; one views.publish each per refresh
LINKS_PER_PUBLISH = 20
QUIET_KINDS = frozenset({"step.note"})  # progress within a step: the Home shows states, not notes


class HomeTab:
    def __init__(
        self,
        store: Store,
        client: AsyncWebClient,
        config: Config,
        *,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.store, self.client, self.config, self.clock = store, client, config, clock
        self.refresh_seconds = config.slack.home_refresh_seconds
        self.viewers: OrderedDict[str, int] = OrderedDict()  # user -> the page they see
        self.notices: dict[str, str] = {}  # user -> the answer to their last click, shown atop their Home
        self.links: dict[str, str] = {}  # run id -> its card's permalink
        self.publishes = 0  # views.publish calls made (the sandbox and tests read it)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the engine's side: a progress sink --------------------------------------------------------

    async def deliver(self, event: ProgressEvent) -> None:
        if event.kind not in QUIET_KINDS and self.viewers:
            self._changed.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh(), name="home-tab")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            rows = await self.store.call(host_rows, self.store, list(self.config.hosts))  # once for everyone
            for user in list(self.viewers):
                await self.publish(user, rows)
            await asyncio.sleep(self.refresh_seconds)  # the debounce: changes meanwhile go out together

    # -- a person's side ---------------------------------------------------------------------------

    async def opened(self, user: str, page: int | None = None) -> None:
        """They opened the Home tab (or turned its page): remember them and publish theirs now."""
        current = self.viewers.pop(user, 0)
        self.viewers[user] = current if page is None else page
        if page is None:  # opened anew: the answer to an earlier click has been read
            self.notices.pop(user, None)
        while len(self.viewers) > MAX_VIEWERS:
            self.viewers.popitem(last=False)
        await self.publish(user)

    async def tell(self, user: str, notice: str) -> None:
        """Answer a click made on the Home (it has no response_url): the answer atop their Home."""
        self.notices[user] = notice
        if user not in self.viewers:
            self.viewers[user] = 0
        await self.publish(user)

    async def publish(self, user: str, rows: list[HostRow] | None = None) -> bool:
        if rows is None:
            rows = await self.store.call(host_rows, self.store, list(self.config.hosts))
        page = min(self.viewers.get(user, 0), page_count(rows, self.config) - 1)
        links = await self._links(page_hosts(rows, self.config, page))
        view = home_view(rows, self.config, self.clock(), links=links, page=page, notice=self.notices.get(user))
        try:
            self.publishes += 1
            await self.client.views_publish(user_id=user, view=view)
            return True
        except Exception as exc:  # Slack down or the user gone: the next change or opening tries again
            log.warning("could not publish the App Home of %s (%s)", user, type(exc).__name__)
            return False

    async def _links(self, rows: Iterable[HostRow]) -> dict[str, str]:
        asked = 0
        for row in rows:
            if row.run is None or row.card_ts is None or row.channel is None or row.run.id in self.links:
                continue
            if asked >= LINKS_PER_PUBLISH:
                break
            asked += 1
            try:
                answer = await self.client.chat_getPermalink(channel=row.channel, message_ts=row.card_ts)
                self.links[row.run.id] = str(answer["permalink"])
            except Exception as exc:
                log.info("no permalink for the card of %s (%s)", row.run.id, type(exc).__name__)
        return self.links
