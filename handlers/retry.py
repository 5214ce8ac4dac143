"""The run card's **Retry** button (action ``retry_run``, value: the run id): a failed run tried again from
its failed step. Ack first; every refusal is ephemeral and changes nothing (the engine decides)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.context import SlackContext
from handlers.actions import run_button

# The why of a click, in run.retried: a button carries no words of its own.
BUTTON_WHY = "Retry button on the run card"


def register(app: AsyncApp, deps: SlackContext) -> None:
    app.action("retry_run")(run_button(deps, lambda run_id, user: deps.engine.retry(run_id, user, BUTTON_WHY)))
