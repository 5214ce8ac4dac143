"""Buttons: approve, deny, snapshot_taken (on requests) and cancel_run (on the card). Ack first."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.slack.context import SlackContext

APPROVAL_ID = re.compile(r"apr-[0-9a-f]{8}")
RUN_ID = re.compile(r"run-[0-9a-f]{8}")


def clicker(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    return user.get("id") if isinstance(user, dict) and isinstance(user.get("id"), str) else None


async def tell(respond: AsyncRespond, text: str) -> None:
    """Answer only the person who clicked, leaving the message as it is."""
    await respond(text=text, response_type="ephemeral", replace_original=False)


def register(app: AsyncApp, deps: SlackContext) -> None:
    async def decide(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        value, user = str(action.get("value", "")), clicker(body)
        if not APPROVAL_ID.fullmatch(value) or user is None:
            await tell(respond, "This button does not belong to an idm-upgrade request.")
            return
        decision = "deny" if action["action_id"] == "deny" else "approve"
        await tell(respond, (await deps.engine.decide(value, user, decision)).message)

    for action_id in ("approve", "deny", "snapshot_taken"):
        app.action(action_id)(decide)

    @app.action("cancel_run")
    async def cancel_run(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        value, user = str(action.get("value", "")), clicker(body)
        if not RUN_ID.fullmatch(value) or user is None:
            await tell(respond, "This button does not belong to an idm-upgrade run.")
            return
        await tell(respond, (await deps.engine.cancel(value, user)).message)

    @app.action(re.compile(".*"))
    async def unknown_button(ack: AsyncAck, respond: AsyncRespond) -> None:
        # Registered last: any other action id (a stale button from another version) gets a plain answer.
        await ack()
        await tell(
            respond, "Not accepted: this button is not one idm-upgrade knows; use the buttons on the run's thread."
        )
