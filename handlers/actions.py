"""Buttons: approve, deny, snapshot_taken (on requests) and cancel_run (on the card). Ack first."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.core.models import ApprovalState
from bot.engine.engine import Reply
from bot.slack.context import SlackContext
from bot.slack.origin import click_problem

APPROVAL_ID = re.compile(r"apr-[0-9a-f]{8}")
RUN_ID = re.compile(r"run-[0-9a-f]{8}")


def clicker(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    return user.get("id") if isinstance(user, dict) and isinstance(user.get("id"), str) else None


async def tell(respond: AsyncRespond, text: str) -> None:
    """Answer only the person who clicked, leaving the message as it is."""
    await respond(text=text, response_type="ephemeral", replace_original=False)


async def misplaced(deps: SlackContext, approval_id: str, body: dict[str, Any], refusal: str | None) -> str | None:
    """Why a click on an open request does not count although its clicker might decide: it came from another
    workspace or app (``refusal``), or is not on the request's message. Audited as ``approval.refused``."""
    if deps.intake is None:
        return refusal
    store = deps.engine.store
    approval = await store.call(store.find_approval, approval_id)
    if approval is None or approval.state is not ApprovalState.open:
        return refusal  # nothing to protect; the engine answers "no such request" or "already decided"
    problem = refusal or await click_problem(store, approval_id, body)
    if problem is not None:
        await store.call(store.record_refusal, approval_id, clicker(body) or "unknown", problem)
    return problem


RunAction = Callable[[str, str], Awaitable[Reply]]


def run_button(deps: SlackContext, act: RunAction) -> Callable[..., Awaitable[None]]:
    """A listener for a button on the run card whose value is the run id (cancel_run, retry_run, revert_run):
    ack first, check the value and the origin, then ``act(run_id, user)``; the engine's reply goes to the
    clicker only. Built by bot code from ids and configured names: nothing in it to escape."""

    async def listener(
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
            reply = await act(value, user)
            await handled.done()
            await tell(respond, reply.message)

    return listener


def register(app: AsyncApp, deps: SlackContext) -> None:
    async def decide(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        async with deps.handling(context) as handled:
            await ack()
            value, user = str(action.get("value", "")), clicker(body)
            if not APPROVAL_ID.fullmatch(value) or user is None:
                await tell(respond, "This button does not belong to an idm-upgrade request.")
                return
            if problem := await misplaced(deps, value, body, context.get("refusal")):
                await handled.done()
                await tell(respond, f"Not accepted: {problem}; the request stays open.")
                return
            decision = "deny" if action["action_id"] == "deny" else "approve"
            reply = await deps.engine.decide(value, user, decision)
            await handled.done()
            await tell(respond, reply.message)

    for action_id in ("approve", "deny", "snapshot_taken"):
        app.action(action_id)(decide)

    app.action("cancel_run")(run_button(deps, deps.engine.cancel))

    @app.action(re.compile(".*"))
    async def unknown_button(ack: AsyncAck, respond: AsyncRespond, context: AsyncBoltContext) -> None:
        # Registered last: any other action id (a stale button from another version) gets a plain answer.
        async with deps.handling(context):
            await ack()
            await tell(
                respond, "Not accepted: this button is not one idm-upgrade knows; use the buttons on the run's thread."
            )
