"""Host groups through Slack: a group's hosts one after another, several groups side by side, each group's
runs in its own channel, requested by its requesters and decided by its approvers; status/history GROUP."""

from __future__ import annotations

from bot.core.gates import gate_named
from bot.core.models import ApprovalState, RunState
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from tests.support.waiting import eventually

PROD_CHANNEL, STAGING_CHANNEL = "C0PRODCHAN", "C0STAGECHN"
PROD_APPROVER, STAGING_APPROVER = "U0PRODAPPR", "U0STAGAPPR"
PROD_REQUESTER = "U0PRODREQS"  # may start prod only

# prod's hosts are listed out of name order: a group runs in the order it is configured
GROUPS = f"""
[groups.prod]
hosts = ["host02", "host01"]
channel = "{PROD_CHANNEL}"
approvers = ["{PROD_APPROVER}"]
requesters = ["{PROD_REQUESTER}", "{REQUESTER}"]

[groups.staging]
hosts = ["host03", "host04"]
channel = "{STAGING_CHANNEL}"
approvers = ["{STAGING_APPROVER}"]
"""


def _workspace(workspace) -> None:
    for user, name in [
        (PROD_APPROVER, "prod-approver"),
        (STAGING_APPROVER, "staging-approver"),
        (PROD_REQUESTER, "prod-requester"),
    ]:
        workspace.add_user(user, name, channels=[OPS_CHANNEL])
    workspace.add_channel(PROD_CHANNEL, "idm-prod")
    workspace.add_channel(STAGING_CHANNEL, "idm-staging")


async def _bot(slack_bot):
    return await slack_bot("default", hosts=4, tables=GROUPS, before_start=_workspace)


async def _command(h, user: str, text: str, channel: str = OPS_CHANNEL) -> str:
    response = await h.sender.send_slash_command(user, text, channel_id=channel)
    assert response.status == 200
    return (await h.reply(response))["text"]


def _by_host(h) -> dict:
    return {r.host: r for r in h.runs()}


def _seq(h, run_id: str, event: str) -> int:
    return next(e.seq for e in h.store.audit_events(run_id) if e.event == event)


async def _open_request(h, run_id: str, channel: str):
    """The run's open approval request and its message, once delivered to ``channel``."""

    def delivered():
        for approval in h.store.approvals(run_id):
            if approval.state is ApprovalState.open:
                found = h.slack.latest_button(channel, gate_named(approval.gate).button, value=approval.id)
                if found:
                    return approval, found[0]
        return None

    try:
        return await eventually(delivered, timeout=60, what=f"an approval request of {run_id} in {channel}")
    except AssertionError as exc:  # say where the run is, and what the channel shows
        steps = [(s.step, s.state.value, s.reason) for s in h.store.steps(run_id)]
        raise AssertionError(
            f"{exc}; run {h.store.get_run(run_id).state}, steps {steps}, approvals {h.store.approvals(run_id)}\n"
            + h.slack.render_channel(channel)
        ) from None


async def test_groups_run_side_by_side_one_host_at_a_time_in_their_own_channels_with_their_own_approvers(slack_bot):
    h = await _bot(slack_bot)
    reply = await _command(h, REQUESTER, "prod staging")
    runs = _by_host(h)
    assert set(runs) == {"host01", "host02", "host03", "host04"}
    # one batch per group, each in the group's configured order
    assert runs["host02"].batch_id == runs["host01"].batch_id != runs["host03"].batch_id == runs["host04"].batch_id
    assert [runs[x].batch_position for x in ("host02", "host01", "host03", "host04")] == [0, 1, 0, 1]
    assert {r.group for r in runs.values()} == {"prod", "staging"}
    assert runs["host02"].group == "prod" and runs["host04"].group == "staging"
    assert "2 batches, side by side" in reply
    assert "group *prod* queued" in reply and f"<#{PROD_CHANNEL}>" in reply
    assert "group *staging* queued" in reply and f"<#{STAGING_CHANNEL}>" in reply

    # side by side: each group's first host waits for its approver while the second hosts wait their turn
    prod_first, prod_second = runs["host02"], runs["host01"]
    stage_first, stage_second = runs["host03"], runs["host04"]
    prod_request, prod_message = await _open_request(h, prod_first.id, PROD_CHANNEL)
    stage_request, stage_message = await _open_request(h, stage_first.id, STAGING_CHANNEL)
    states = {host: h.store.get_run(r.id).state for host, r in runs.items()}
    assert states["host02"] is RunState.waiting_approval and states["host03"] is RunState.waiting_approval
    assert states["host01"] is RunState.queued and states["host04"] is RunState.queued

    # each group's threads are in its channel, none in slack.channel; the request mentions that group's approvers
    cards = {ch: [m.text for m in h.slack.top_level(ch)] for ch in (PROD_CHANNEL, STAGING_CHANNEL, OPS_CHANNEL)}
    assert any(prod_first.id in t for t in cards[PROD_CHANNEL])
    assert any(stage_first.id in t for t in cards[STAGING_CHANNEL])
    assert not any(r.id in t for r in runs.values() for t in cards[OPS_CHANNEL])
    assert f"<@{PROD_APPROVER}>" in prod_message.text and f"<@{APPROVER}>" not in prod_message.text
    assert f"<@{STAGING_APPROVER}>" in stage_message.text

    # the other group's approver, and slack.approvers, cannot decide prod's request
    action = gate_named(prod_request.gate).button
    for outsider in (STAGING_APPROVER, APPROVER):
        clicked = await h.sender.click_button(
            outsider, action, value=prod_request.id, message_ts=prod_message.ts, channel_id=PROD_CHANNEL
        )
        await h.reply(clicked)
        assert h.ephemeral_texts(outsider)[-1].startswith("Not accepted:")
    assert h.store.get_approval(prod_request.id).state is ApprovalState.open

    # prod's approver denies its first host: the rest of prod stops, staging goes on
    denied = await h.sender.click_button(
        PROD_APPROVER, "deny", value=prod_request.id, message_ts=prod_message.ts, channel_id=PROD_CHANNEL
    )
    await h.reply(denied)
    await eventually(lambda: not h.store.get_run(prod_second.id).state.active, timeout=60, what="prod stopped")
    assert h.store.get_run(prod_first.id).state is not RunState.succeeded
    assert h.store.get_run(prod_second.id).state is RunState.cancelled
    assert not [e for e in h.store.audit_events(prod_second.id) if e.event == "run.started"]

    # staging: its approver decides both hosts (prod's approver may not); the second starts only after the first
    refused_once = False
    for run in (stage_first, stage_second):
        while h.store.get_run(run.id).state.active:
            approval, message = await _open_request(h, run.id, STAGING_CHANNEL)
            button = gate_named(approval.gate).button
            if not refused_once and not gate_named(approval.gate).is_confirmation:
                clicked = await h.sender.click_button(
                    PROD_APPROVER, button, value=approval.id, message_ts=message.ts, channel_id=STAGING_CHANNEL
                )
                await h.reply(clicked)
                assert "not an approver for group staging" in h.ephemeral_texts(PROD_APPROVER)[-1]
                assert h.store.get_approval(approval.id).state is ApprovalState.open
                refused_once = True
            clicked = await h.sender.click_button(
                STAGING_APPROVER, button, value=approval.id, message_ts=message.ts, channel_id=STAGING_CHANNEL
            )
            await h.reply(clicked)
            await eventually(
                lambda a=approval: h.store.get_approval(a.id).state is not ApprovalState.open or None,
                timeout=30,
                what="the approval decided",
            )
            await eventually(
                lambda r=run: (
                    not h.store.get_run(r.id).state.active
                    or any(a.state is ApprovalState.open for a in h.store.approvals(r.id))
                ),
                timeout=90,
                what="the next request or the run's end",
            )
    assert refused_once
    assert h.store.get_run(stage_first.id).state is RunState.succeeded
    assert h.store.get_run(stage_second.id).state is RunState.succeeded
    assert _seq(h, stage_second.id, "run.started") > _seq(h, stage_first.id, "run.succeeded")
    # each batch's recap in its group's channel
    assert await h.bot.progress.idle(timeout=60)
    assert any("Batch recap" in m.text for m in h.slack.top_level(STAGING_CHANNEL))
    assert any("Batch recap" in m.text for m in h.slack.top_level(PROD_CHANNEL))
    assert not any("Batch recap" in m.text for m in h.slack.top_level(OPS_CHANNEL))
    print(h.slack.render_channel(STAGING_CHANNEL))


async def test_a_requester_of_one_group_cannot_start_another_and_a_refusal_creates_nothing(slack_bot):
    h = await _bot(slack_bot)
    refused = await _command(h, PROD_REQUESTER, "staging")
    assert refused.startswith("Not started: you are not allowed to start upgrades") and "slack.requesters" in refused
    # one refused batch refuses the whole request: prod's batch is not created either
    assert (await _command(h, PROD_REQUESTER, "check prod staging")).startswith("Not started:")
    assert (await _command(h, PROD_REQUESTER, "check host03")).startswith("Not started:")
    assert h.runs() == []
    # a group with its own requesters names that list
    stranger = await _command(h, STAGING_APPROVER, "check prod")
    assert stranger == (
        "Not started: you are not allowed to start upgrades of group prod; ask an admin to add you to "
        "groups.prod.requesters."
    )
    reply = await _command(h, PROD_REQUESTER, "check prod")
    assert reply.startswith("Dry run (check only, nothing is changed) of group *prod* queued")
    assert {r.host for r in h.runs()} == {"host01", "host02"}
    assert all(r.requester == PROD_REQUESTER for r in h.runs())


async def test_a_busy_host_in_one_group_refuses_every_group_of_the_request(slack_bot):
    h = await _bot(slack_bot)
    await _command(h, REQUESTER, "host03")
    [busy] = h.runs()
    reply = await _command(h, REQUESTER, "prod staging")
    assert reply.startswith("Not started:") and "host03" in reply and "No run of this request was created" in reply
    assert [r.id for r in h.runs()] == [busy.id]  # prod's batch was checked with it, not created before it


async def test_a_group_channel_takes_only_that_groups_hosts(slack_bot):
    h = await _bot(slack_bot)
    refused = await _command(h, REQUESTER, "check host03", channel=PROD_CHANNEL)
    assert refused.startswith("Not started: in this channel only the hosts of group prod")
    assert f"<#{OPS_CHANNEL}>" in refused and h.runs() == []
    elsewhere = await _command(h, REQUESTER, "check host01", channel="C0GENERAL1")
    assert elsewhere.startswith("Not started: /idm-upgrade is not taken in this channel")
    reply = await _command(h, REQUESTER, "check host01", channel=PROD_CHANNEL)
    assert reply.startswith("Dry run") and f"<#{PROD_CHANNEL}>" in reply
    [run] = h.runs()
    assert run.host == "host01" and run.group is None  # named on its own; its thread is still prod's
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=60, what="the dry run ended")
    assert await h.bot.progress.idle(timeout=60)
    assert any(run.id in m.text for m in h.slack.top_level(PROD_CHANNEL))
    # the dry run's plan names whom an upgrade would ask: prod's approvers, not slack.approvers
    [plan] = [str(m.blocks) for m in h.slack.messages(PROD_CHANNEL) if "An upgrade would ask" in str(m.blocks)]
    assert f"<@{PROD_APPROVER}>" in plan and f"<@{APPROVER}>" not in plan


async def test_status_and_history_of_a_group_show_its_hosts_runs_only(slack_bot):
    h = await _bot(slack_bot)
    await _command(h, REQUESTER, "check prod")
    await _command(h, REQUESTER, "check host03")
    await eventually(lambda: all(not r.state.active for r in h.runs()), timeout=60, what="the dry runs ended")
    history = await _command(h, REQUESTER, "history prod")
    lines = history.splitlines()
    assert len(lines) == 2 and {line.split("` ")[1].split(":")[0] for line in lines} == {"host01", "host02"}
    assert "host03" in await _command(h, REQUESTER, "history staging")
    assert (await _command(h, REQUESTER, "history staging")).count("\n") == 0
    assert await _command(h, REQUESTER, "status staging") == "No upgrade of group staging is running (host03, host04)."
    await _command(h, REQUESTER, "host04")
    [active] = [r for r in h.runs() if r.state.active]
    status = await _command(h, REQUESTER, "status staging")
    assert active.id in status and "host04" in status
    assert await _command(h, REQUESTER, "status prod") == "No upgrade of group prod is running (host02, host01)."
