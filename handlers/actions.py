"""Buttons: approve, deny, snapshot_taken (on requests) and cancel_run (on the card). Ack first."""

from __future__ import annotations

import re

from slack_bolt.async_app import AsyncApp

from bot.slack_context import SlackContext

APPROVAL_ID = re.compile(r"^apr-[0-9a-f]{8}$")
RUN_ID = re.compile(r"^run-[0-9a-f]{8}$")


def register(app: AsyncApp, deps: SlackContext) -> None:
    async def decide(ack, body, action, respond) -> None:
        await ack()
        value = str(action.get("value", ""))
        if not APPROVAL_ID.match(value):
            await respond(
                text="This button does not belong to an idm-upgrade request.",
                response_type="ephemeral",
                replace_original=False,
            )
            return
        decision = "deny" if action["action_id"] == "deny" else "approve"
        reply = await deps.engine.decide(value, body["user"]["id"], decision)
        await respond(text=reply.message, response_type="ephemeral", replace_original=False)

    for action_id in ("approve", "deny", "snapshot_taken"):
        app.action(action_id)(decide)

    @app.action("cancel_run")
    async def cancel_run(ack, body, action, respond) -> None:
        await ack()
        value = str(action.get("value", ""))
        if not RUN_ID.match(value):
            await respond(
                text="This button does not belong to an idm-upgrade run.",
                response_type="ephemeral",
                replace_original=False,
            )
            return
        reply = await deps.engine.cancel(value, body["user"]["id"])
        await respond(text=reply.message, response_type="ephemeral", replace_original=False)
