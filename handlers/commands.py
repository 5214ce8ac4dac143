"""`/idm-upgrade`: ack at once, parse, authorize, hand to the engine, answer the person ephemerally."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.core.config import Config
from bot.engine.admission import Refused, Request
from bot.slack.context import SlackContext
from bot.slack.escape import escape
from bot.slack.parse import USAGE, Command, CommandError, parse
from bot.store.store import BatchRequest, HostBusy

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
                parsed = parse(command.get("text") or "", hosts, most, groups)
                reply = await _run(parsed, user, deps, str(command.get("channel_id") or ""))
            except CommandError as exc:
                reply = str(exc)
            await handled.done()
            await respond(text=reply, response_type="ephemeral")


async def start_from_text(text: str, user: str, deps: SlackContext) -> str:
    """A start made elsewhere (the Home tab's Check, its Upgrade modal) exactly as `/idm-upgrade TEXT` makes it:
    the same parsing, policy, admission and answers; from no channel (the Home has none)."""
    config = deps.config
    groups = {name: group.hosts for name, group in config.groups.items()}
    try:
        parsed = parse(text, list(config.hosts), config.slack.max_hosts_per_request, groups)
    except CommandError as exc:
        return f"Not started: {exc}"
    if parsed.verb not in ("upgrade", "check"):
        return f"Not started: `{escape(text)}` does not start a run."
    return await _start(parsed, user, deps, "")


async def _run(command: Command, user: str, deps: SlackContext, channel: str = "") -> str:
    engine = deps.engine
    if command.verb == "help":
        return USAGE
    if command.verb in ("upgrade", "check"):
        return await _start(command, user, deps, channel)
    if command.verb == "cancel" and command.run_id is not None:
        return (await engine.cancel(command.run_id, user)).message
    if command.verb == "retry" and command.run_id is not None:
        return escape((await engine.retry(command.run_id, user, command.why)).message)
    if command.verb == "revert" and command.run_id is not None:
        return (await engine.revert(command.run_id, user)).message
    group = command.groups[0] if command.groups else None
    if command.verb == "status":
        return await deps.status_text(command.run_id, group=group)
    return await deps.history_text(command.hosts[0] if command.hosts else None, group=group)


async def _start(command: Command, user: str, deps: SlackContext, channel: str) -> str:
    """One batch per group named (side by side), one for the hosts named on their own. Every batch is
    checked first (the channel, requesters, ticket, window), then all are created in one transaction: a
    refusal of any batch, or a busy host, refuses the whole request and creates nothing."""
    config, engine = deps.config, deps.engine
    if outside := _outside_channel(command, config, channel):
        return outside
    check_only = command.verb == "check"
    batches, schedules = [], []
    for group, hosts in command.batches({name: g.hosts for name, g in config.groups.items()}):
        verdict = await deps.policy.may_request(user, hosts)
        if not verdict.allowed:
            log.info("refused /idm-upgrade from %s: %s", user, verdict.reason)
            return f"Not started: {verdict.reason}."
        request = Request(hosts, user, check_only, command.ticket, command.at, group=group)
        try:
            admitted = await engine.admission.admit(request)
        except Refused as exc:
            return f"Not started{f' (group {group})' if group else ''}: {escape(str(exc))}."
        batches.append(BatchRequest(hosts, group, admitted.scheduled_for))
        schedules.append(admitted.schedule if admitted.scheduled_for is not None else None)
    try:
        created = await engine.submit_batches(batches, user, check_only=check_only, ticket=command.ticket)
    except HostBusy as exc:
        return f"Not started: {escape(str(exc))}. No run of this request was created."
    what = "Dry run (check only, nothing is changed)" if check_only else "Upgrade"
    lines = []
    for runs, schedule in zip(created, schedules, strict=True):
        ids = ", ".join(f"`{r.id}` ({r.host})" for r in runs)
        order = " one after another, stopping at the first failure" if len(runs) > 1 else ""
        head = f"{what} of group *{runs[0].group}*" if runs[0].group else what
        # hosts named on their own may be in several groups: each run reports in its host's group's channel
        where = " and ".join(f"<#{c}>" for c in dict.fromkeys(config.channel_of(r.host) for r in runs))
        if schedule is not None:
            cancel = f"`/idm-upgrade cancel {runs[0].id}`" if len(runs) == 1 else "`/idm-upgrade cancel RUN` for each"
            lines.append(f"{head} scheduled for {schedule}{order}: {ids}; cancel with {cancel}. Follow it in {where}.")
        else:
            lines.append(f"{head} queued{order}: {ids}. Follow it in {where}.")
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} batches, side by side:\n" + "\n".join(f"• {line}" for line in lines)


def _outside_channel(command: Command, config: Config, channel: str) -> str | None:
    """In a host group's channel only that group's hosts may be started (slack.channel takes any host)."""
    if not channel or channel == config.slack.channel:
        return None
    here = [name for name, group in config.groups.items() if group.channel == channel]
    if not here:
        return None  # a direct message (origin checked it is allowed)
    outside = [host for host in command.hosts if config.group_of(host) not in here]
    if not outside:
        return None
    return (
        f"Not started: in this channel only the hosts of group {', '.join(here)} are started, and "
        f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not in it; ask in <#{config.slack.channel}>."
    )
