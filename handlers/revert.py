"""The run card's "Revert to snapshot" button (action_id ``revert_run``, value the run id). Ack first.

The engine decides whether the run may be reverted (``Engine.revert``: an ended failed or denied run whose
snapshot step took a snapshot and which changed the host; the requester or an approver asks); its refusal
goes to the clicker only. The revert itself is an approval the run's thread shows (``bot.engine.revert``).
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.slack.context import SlackContext
from handlers.actions import RUN_ID, clicker, tell


def register(app: AsyncApp, deps: SlackContext) -> None:
    @app.action("revert_run")
    async def revert_run(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        async with deps.handling(context) as handled:
            await ack()
            value, user = str(action.get("value", "")), clicker(body)
            if not RUN_ID.fullmatch(value) or user is None:
                await tell(respond, "This button does not belong to an idm-upgrade run.")
                return
            if refusal := context.get("refusal"):
                await tell(respond, f"Not accepted: {refusal}.")
                return
            reply = await deps.engine.revert(value, user)
            await handled.done()
            await tell(respond, reply.message)
