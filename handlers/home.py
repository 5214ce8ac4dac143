"""`app_home_opened`: the person opened the bot's Home tab; publish theirs (the fleet at a glance). Ack first."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.slack.context import SlackContext

log = logging.getLogger(__name__)


def register(app: AsyncApp, deps: SlackContext) -> None:
    @app.event("app_home_opened")
    async def app_home_opened(ack: AsyncAck, event: dict[str, Any], context: AsyncBoltContext) -> None:
        async with deps.handling(context):
            await ack()
            if context.get("refusal"):  # another workspace or app (bot.slack.origin): nothing is shown to it
                return
            user = event.get("user")
            if event.get("tab") != "home" or not isinstance(user, str) or deps.home is None:
                return  # the Messages tab, or no Home wired (the in-process handler tests)
            await deps.home.opened(user)
