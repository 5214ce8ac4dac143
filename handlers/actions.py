"""Buttons: approve, deny, snapshot_taken (on requests) and cancel_run (on the card). Ack first."""

from __future__ import annotations

import re

from slack_bolt.async_app import AsyncApp

from bot.slack_context import SlackContext

APPROVAL_ID = re.compile(r"apr-[0-9a-f]{8}")
RUN_ID = re.compile(r"run-[0-9a-f]{8}")


def clicker(body: dict) -> str | None:
    user = body.get("user")
    return user.get("id") if isinstance(user, dict) and isinstance(user.get("id"), str) else None


def register(app: AsyncApp, deps: SlackContext) -> None:
    async def decide(ack, body, action, respond) -> None:
        await ack()
        value = str(action.get("value", ""))
        user = clicker(body)
        if not APPROVAL_ID.fullmatch(value) or user is None:
            await respond(
                text="This button does not belong to an idm-upgrade request.",
                response_type="ephemeral",
                replace_original=False,
            )
            return
        decision = "deny" if action["action_id"] == "deny" else "approve"
        reply = await deps.engine.decide(value, user, decision)
        await respond(text=reply.message, response_type="ephemeral", replace_original=False)

    for action_id in ("approve", "deny", "snapshot_taken"):
        app.action(action_id)(decide)

    @app.action("cancel_run")
    async def cancel_run(ack, body, action, respond) -> None:
        await ack()
        value = str(action.get("value", ""))
        user = clicker(body)
        if not RUN_ID.fullmatch(value) or user is None:
            await respond(
                text="This button does not belong to an idm-upgrade run.",
                response_type="ephemeral",
                replace_original=False,
            )
            return
        reply = await deps.engine.cancel(value, user)
        await respond(text=reply.message, response_type="ephemeral", replace_original=False)

    @app.action(re.compile(".*"))
    async def unknown_button(ack, respond) -> None:
        # Registered last: any other action id (a stale button from another version) gets a plain answer.
        await ack()
        await respond(
            text="Not accepted: this button is not one idm-upgrade knows; use the buttons on the run's thread.",
            response_type="ephemeral",
            replace_original=False,
        )
