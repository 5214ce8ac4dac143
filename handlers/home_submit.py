"""The Upgrade modal's submission (callback_id home_upgrade_confirm): start the upgrade as `/idm-upgrade HOST`.

Nothing in the view is trusted: the host (private_metadata) must be a configured one, the ticket typed is
checked as the command checks it, and the policy and admission decide now, not when the modal opened.

Ack first, which closes the modal; the answer (started, or why not) goes atop the person's Home, where the
modal was opened. Not into the modal: an ack that updates it and a views.update after it race, and Slack may
apply them in either order (the ack's "checking…" could land last and hide the answer).
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.slack.context import SlackContext
from bot.slack.escape import escape
from bot.slack.home import CONFIRM, TICKET_BLOCK, TICKET_INPUT
from handlers.actions import clicker
from handlers.commands import start_from_text


def typed_ticket(view: dict[str, Any]) -> str | None:
    values = ((view.get("state") or {}).get("values") or {}).get(TICKET_BLOCK) or {}
    value = (values.get(TICKET_INPUT) or {}).get("value")
    return value.strip() if isinstance(value, str) and value.strip() else None


def register(app: AsyncApp, deps: SlackContext) -> None:
    @app.view(CONFIRM)
    async def home_upgrade_confirm(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        async with deps.handling(context) as handled:
            host = str(view.get("private_metadata") or "")
            await ack()
            user = clicker(body)
            if user is None:
                return
            if refusal := context.get("refusal"):
                reply = f"Not started: {refusal}."
            elif host not in deps.config.hosts:
                reply = f"Not started: `{escape(host)}` is not a configured host."
            elif (ticket := typed_ticket(view)) is not None and (len(ticket.split()) != 1 or ":" in ticket):
                reply = f"Not started: `{escape(ticket)}` is not a change ticket (one word, like CHG0001234)."
            else:
                reply = await start_from_text(host + (f" ticket:{ticket}" if ticket else ""), user, deps)
            await handled.done()
            if deps.home is not None:
                await deps.home.tell(user, reply)
