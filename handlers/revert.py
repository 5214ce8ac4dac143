"""The run card's "Revert to snapshot" button (action_id ``revert_run``, value the run id). Ack first.

The engine decides whether the run may be reverted (``Engine.revert``: an ended failed or denied run whose
snapshot step took a snapshot and which changed the host; the requester or an approver asks); its refusal
goes to the clicker only. The revert itself is an approval the run's thread shows (``bot.engine.revert``).
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.context import SlackContext
from handlers.actions import run_button


def register(app: AsyncApp, deps: SlackContext) -> None:
    app.action("revert_run")(run_button(deps, lambda run_id, user: deps.engine.revert(run_id, user)))
