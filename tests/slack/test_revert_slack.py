"""Revert to snapshot from Slack: signed clicks on the card's button and the requests, the thread's replies.

No vCenter here: the snapshot is taken by a person and the revert done by hand (the manual path), then the
bot verifies over WinRM. The vCenter path is tested in tests/engine/test_revert.py."""

from __future__ import annotations

from bot.core.models import ApprovalState, RunState
from sandbox.slack_state import OPS_CHANNEL
from tests.support.configs import APPROVER, OUTSIDER, REQUESTER
from tests.support.waiting import eventually


def open_request(h, run_id, gate):
    for approval in h.store.approvals(run_id):
        if approval.gate == gate and approval.state is ApprovalState.open:
            found = h.slack.latest_button(OPS_CHANNEL, "approve", value=approval.id)
            if found is not None:
                return approval, found[0]
    return None


async def test_the_card_button_asks_a_revert_that_an_approver_grants_and_the_thread_shows(slack_bot):
    h = await slack_bot("default", ws1=False)
    h.host.state.installer.installs_version = "19.03.0.2"  # the install changes the host, then the run fails
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    await h.settle(run.id, approver=APPROVER)
    assert h.store.get_run(run.id).state is RunState.failed

    card, _ = await eventually(
        lambda: h.slack.latest_button(OPS_CHANNEL, "revert_run", value=run.id), timeout=60, what="the Revert button"
    )
    # someone who may not ask is refused, ephemerally, and nothing is written
    before = len(h.store.audit_events(run.id))
    refused = await h.sender.click_button(OUTSIDER, "revert_run", value=run.id, message_ts=card.ts)
    assert "only the person who started the run or an approver" in (await h.reply(refused))["text"]
    assert len(h.store.audit_events(run.id)) == before and h.store.get_run(run.id).recovery is None

    clicked = await h.sender.click_button(REQUESTER, "revert_run", value=run.id, message_ts=card.ts)
    assert "approvers decide in the run's thread" in (await h.reply(clicked))["text"]

    approval, message = await eventually(lambda: open_request(h, run.id, "revert"), timeout=60, what="the request")
    assert approval.evidence["requested_by"] == REQUESTER
    own = await h.sender.click_button(REQUESTER, "approve", value=approval.id, message_ts=message.ts)
    assert "Not accepted" in (await h.reply(own))["text"]
    await h.sender.click_button(APPROVER, "approve", value=approval.id, message_ts=message.ts)

    confirm, message = await eventually(
        lambda: open_request(h, run.id, "revert by hand"), timeout=60, what="the confirmation"
    )
    # the person reverts the VM in the vSphere Client: the host is back as it was
    h.host.state.connector.version = "19.03.0.0"
    await h.sender.click_button(REQUESTER, "approve", value=confirm.id, message_ts=message.ts)
    await eventually(lambda: h.store.get_run(run.id).recovery != "revert", timeout=60, what="the revert to end")
    assert await h.bot.progress.idle(timeout=60)

    ended = h.store.get_run(run.id)
    assert ended.state is RunState.failed and "reverted to snapshot" in ended.result
    texts = [m.text for m in h.slack.messages(OPS_CHANNEL)]
    thread = "\n".join(texts)
    assert "Revert to snapshot: asked by" in thread
    assert "Revert to snapshot: verified: connector 19.03.0.0, service Running" in thread
    assert "revert: granted" in thread and "revert by hand: granted" in thread
    card_now = next(m for m in h.slack.messages(OPS_CHANNEL) if m.ts == card.ts)
    assert "reverted to snapshot" in str(card_now.blocks)


def test_the_slash_command_parses_revert_with_one_run_id():
    import pytest

    from bot.slack.parse import CommandError, parse

    assert parse("revert run-1a2b3c4d", ["host01"], 10).run_id == "run-1a2b3c4d"
    assert parse("revert run-1a2b3c4d", ["host01"], 10).verb == "revert"
    with pytest.raises(CommandError, match="`revert` takes one run id"):
        parse("revert", ["host01"], 10)
    with pytest.raises(CommandError, match="is not a run id"):
        parse("revert host01", ["host01"], 10)


async def test_slash_revert_of_a_run_that_offers_none_is_refused_and_changes_nothing(slack_bot):
    h = await slack_bot("already-current", ws1=False)
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    await h.settle(run.id, approver=APPROVER)
    before = len(h.store.audit_events(run.id))
    answer = await h.reply(await h.sender.send_slash_command(REQUESTER, f"revert {run.id}"))
    assert "cannot be reverted" in answer["text"] and "Nothing was changed" in answer["text"]
    assert len(h.store.audit_events(run.id)) == before
