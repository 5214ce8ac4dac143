"""The Home tab's buttons: Check (a dry run, as `/idm-upgrade check HOST`), Upgrade (for those who may start one,
the confirmation modal with the dry-run plan; the upgrade starts at its submission, handlers/home_submit.py) and
the page buttons.

A click on the Home has no channel and no response_url: the answer goes atop the person's Home. Ack first.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.context import SlackContext
from bot.slack.escape import escape
from bot.slack.home import CHECK, PAGE, UPGRADE, upgrade_modal
from bot.store.host_overview import last_plan
from handlers.actions import clicker
from handlers.commands import start_from_text

log = logging.getLogger(__name__)


def host_of(deps: SlackContext, action: dict[str, Any]) -> str | None:
    """The button's host, only if it is one the configuration names (a button's value is the client's word)."""
    value = action.get("value")
    return value if isinstance(value, str) and value in deps.config.hosts else None


def register(app: AsyncApp, deps: SlackContext) -> None:
    async def tell(user: str, text: str) -> None:
        if deps.home is not None:
            await deps.home.tell(user, text)

    async def clicked_host(
        body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext
    ) -> tuple[str, str] | None:
        """Who clicked which configured host's button; None, the clicker told why, for a refused origin or
        a value that is not a configured host (a forged button)."""
        user, host = clicker(body), host_of(deps, action)
        if user is None:
            return None
        if refusal := context.get("refusal"):
            await tell(user, f"Not started: {refusal}.")
            return None
        if host is None:
            await tell(user, f"Not started: `{escape(action.get('value'))}` is not a configured host.")
            return None
        return user, host

    @app.action(CHECK)
    async def home_check(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        async with deps.handling(context) as handled:
            await ack()
            if (clicked := await clicked_host(body, action, context)) is None:
                return
            user, host = clicked
            reply = await start_from_text(f"check {host}", user, deps)
            await handled.done()
            await tell(user, reply)

    @app.action(UPGRADE)
    async def home_upgrade(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient
    ) -> None:
        async with deps.handling(context):
            await ack()
            if (clicked := await clicked_host(body, action, context)) is None:
                return
            user, host = clicked
            # The trigger_id is good for 3 s: only the policy (group members are cached) and the store are asked
            # before the modal opens. The submission asks the policy again, and admission, before it starts.
            verdict = await deps.policy.may_request(user, [host])
            if not verdict.allowed:
                await tell(user, f"Not started: {verdict.reason}.")
                return
            store = deps.engine.store
            found = await store.call(last_plan, store, host)
            checked = (found[0].id, found[0].finished_at, found[1]) if found else None
            steps = [(s.id, s.title, s.gate.name if s.gate else None) for s in deps.engine.steps.values()]
            view = upgrade_modal(host, deps.config, deps.engine.clock(), checked=checked, steps=steps)
            try:
                await client.views_open(trigger_id=body["trigger_id"], view=view)
            except Exception as exc:
                log.warning("could not open the upgrade modal for %s (%s)", user, type(exc).__name__)
                await tell(user, f"Could not open the confirmation for {host} (Slack said no); click *Upgrade* again.")

    @app.action(re.compile(f"^{PAGE}_(prev|next)$"))
    async def home_page(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext) -> None:
        async with deps.handling(context):
            await ack()
            user, value = clicker(body), str(action.get("value", ""))
            if user is None or context.get("refusal") or not value.isdigit() or deps.home is None:
                return
            await deps.home.opened(user, page=int(value))
