"""`/idm-upgrade`: ack at once, parse, authorize, hand to the engine, answer the person ephemerally."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.engine.admission import Refused, Request
from bot.slack.context import SlackContext
from bot.slack.escape import escape
from bot.slack.parse import USAGE, Command, CommandError, parse
from bot.store.store import HostBusy

log = logging.getLogger(__name__)


def register(app: AsyncApp, deps: SlackContext) -> None:
    @app.command("/idm-upgrade")
    async def idm_upgrade(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        async with deps.handling(context) as handled:
            await ack()
            if refusal := context.get("refusal"):  # another workspace, app or channel (bot.slack.origin)
                await respond(text=f"Not started: {refusal}.", response_type="ephemeral")
                return
            user = command["user_id"]
            try:
                config = deps.config
                hosts, most = list(config.hosts), config.slack.max_hosts_per_request
                groups = {name: group.hosts for name, group in config.groups.items()}
                reply = await _run(parse(command.get("text") or "", hosts, most, groups), user, deps)
            except CommandError as exc:
                reply = str(exc)
            await handled.done()
            await respond(text=reply, response_type="ephemeral")


async def _run(command: Command, user: str, deps: SlackContext) -> str:
    engine = deps.engine
    if command.verb == "help":
        return USAGE
    if command.verb in ("upgrade", "check"):
        verdict = await deps.policy.may_request(user)
        if not verdict.allowed:
            log.info("refused /idm-upgrade from %s: %s", user, verdict.reason)
            return f"Not started: {verdict.reason}."
        check_only = command.verb == "check"
        request = Request(list(command.hosts), user, check_only, command.ticket, command.at)
        try:
            admitted = await engine.admission.admit(request)
            runs = await engine.submit(
                list(command.hosts),
                user,
                check_only=check_only,
                ticket=command.ticket,
                scheduled_for=admitted.scheduled_for,
            )
        except (HostBusy, Refused) as exc:
            return f"Not started: {escape(str(exc))}."
        what = "Dry run (check only, nothing is changed)" if command.verb == "check" else "Upgrade"
        ids = ", ".join(f"`{r.id}` ({r.host})" for r in runs)
        order = " one after another, stopping at the first failure" if len(runs) > 1 else ""
        if admitted.scheduled_for is not None:
            cancel = f"`/idm-upgrade cancel {runs[0].id}`" if len(runs) == 1 else "`/idm-upgrade cancel RUN` for each"
            return f"Scheduled for {admitted.schedule}{order}: {ids}; cancel with {cancel}."
        return f"{what} queued{order}: {ids}. Follow it in <#{deps.config.slack.channel}>."
    if command.verb == "cancel" and command.run_id is not None:
        return (await engine.cancel(command.run_id, user)).message
    if command.verb == "status":
        return await deps.status_text(command.run_id)
    return await deps.history_text(command.hosts[0] if command.hosts else None)
