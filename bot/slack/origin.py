"""Where a request comes from: this bot's workspace (or organization), this Slack app, the right channel.

A valid signature proves only that Slack sent the request for an app with this signing secret. The app may be
installed in several workspaces or org-wide, and a command may be typed in any channel or DM; a click must be
on the message where the bot posted that request. The bot's own identity comes from ``auth.test`` of its token
(asked once, kept); ``auth.test`` does not return the app id for a bot token, so that comes from
``slack.app_id`` or else from ``bots.info``. Until the bot knows who it is, it takes no request (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import SlackConfig
from bot.store.outbox import Outbox
from bot.store.store import Store

log = logging.getLogger(__name__)

POSTED_WAIT_SECONDS = 5.0  # a click can arrive before the bot has recorded the ts Slack gave its message


@dataclass(frozen=True)
class Identity:
    team_id: str
    enterprise_id: str | None
    app_id: str
    org_wide: bool  # an org-wide install takes requests from every workspace of its enterprise


class SlackIdentity:
    """This bot's team, enterprise and app, asked of Slack once and kept; None while Slack cannot say."""

    def __init__(self, client: AsyncWebClient, app_id: str | None = None):
        self.client, self.configured_app_id = client, app_id
        self._known: Identity | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Identity | None:
        if self._known is not None:
            return self._known
        async with self._lock:
            if self._known is None:
                try:
                    self._known = await self._ask()
                except Exception as exc:
                    log.warning("cannot learn the bot's Slack identity (%s); requests are refused until then", exc)
        return self._known

    async def _ask(self) -> Identity:
        auth = await self.client.auth_test()
        app_id = self.configured_app_id or auth.get("app_id")
        if not app_id:
            app_id = (await self.client.bots_info(bot=auth["bot_id"]))["bot"]["app_id"]
        return Identity(
            team_id=str(auth["team_id"]),
            enterprise_id=auth.get("enterprise_id") or None,
            app_id=str(app_id),
            org_wide=bool(auth.get("is_enterprise_install")),
        )


def _id(value: Any) -> str | None:
    """An id field of a request: a string, or an object with an ``id`` (block_actions' team, enterprise)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def origin_problem(
    kind: str, body: dict[str, Any], me: Identity | None, slack: SlackConfig, group_channels: Collection[str] = ()
) -> str | None:
    """Why this request is not taken (a sentence for the person), or None when it comes from the right place.

    A command is taken in slack.channel and in each host group's channel (there only for that group's hosts:
    handlers/commands.py)."""
    if me is None:
        return "idm-upgrade could not confirm its own Slack workspace (auth.test failed); try again in a minute"
    command = kind == "command"
    flat = command or kind == "event_callback"  # ids as top-level strings, not objects as in a payload
    user: dict[str, Any] = body["user"] if isinstance(body.get("user"), dict) else {}
    team = _id(body.get("team_id") if flat else body.get("team")) or _id(user.get("team_id"))
    enterprise = _id(body.get("enterprise_id") if flat else body.get("enterprise"))
    app = body.get("api_app_id")
    if app != me.app_id:
        return "this request was made for another Slack app, not idm-upgrade; use idm-upgrade's own command and buttons"
    if enterprise != me.enterprise_id:
        return "this request comes from another Slack organization; idm-upgrade takes requests only from its own"
    if not me.org_wide and team != me.team_id:
        return "this request comes from another Slack workspace; idm-upgrade takes requests only from its own"
    if command:
        channel = str(body.get("channel_id") or "")
        if channel == slack.channel or channel in group_channels:
            return None
        if channel.startswith("D") and slack.allow_direct_messages:
            return None
        where = "a direct message" if channel.startswith("D") else "this channel"
        return f"/idm-upgrade is not taken in {where}; use it in <#{slack.channel}>"
    return None


async def click_problem(store: Store, approval_id: str, body: dict[str, Any]) -> str | None:
    """Why a click on an approval request's button does not count: it is not on the message the bot posted
    for that request (another channel, another message, or a request the bot never posted)."""
    outbox = Outbox(store)
    posted = await store.call(outbox.approval_message, approval_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POSTED_WAIT_SECONDS
    while posted is not None and posted[1] is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
        posted = await store.call(outbox.approval_message, approval_id)
    container, message = body.get("container"), body.get("message")
    container = container if isinstance(container, dict) else {}
    message = message if isinstance(message, dict) else {}
    channels = {_id(body.get("channel")), container.get("channel_id")} - {None}
    stamps = {message.get("ts"), container.get("message_ts")} - {None}
    if posted is None or posted[1] is None or channels != {posted[0]} or stamps != {posted[1]}:
        return "this button is not on the message where idm-upgrade posted this request; use the request in the run's thread"
    return None
