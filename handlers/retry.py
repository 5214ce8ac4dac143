"""The run card's **Retry** button (action ``retry_run``, value: the run id): a failed run tried again from
its failed step. Ack first; every refusal is ephemeral and changes nothing (the engine decides)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.slack.context import SlackContext
from bot.slack.escape import escape
from handlers.actions import RUN_ID, clicker, tell

# The why of a click, in run.retried: a button carries no words of its own.
BUTTON_WHY = "Retry button on the run card"


def register(app: AsyncApp, deps: SlackContext) -> None:
    @app.action("retry_run")
    async def retry_run(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        async with deps.handling(context) as handled:
            await ack()
            value, user = str(action.get("value", "")), clicker(body)
            if not RUN_ID.fullmatch(value) or user is None:
                await tell(respond, "This button does not belong to an idm-upgrade run.")
                return
            if refusal := context.get("refusal"):  # another workspace, app or channel (bot.slack.origin)
                await tell(respond, f"Not accepted: {refusal}.")
                return
            reply = await deps.engine.retry(value, user, BUTTON_WHY)
            await handled.done()
            await tell(respond, escape(reply.message))
