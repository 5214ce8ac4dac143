"""An approval covers exactly what it showed: the bot as a real HTTP server, the Workspace ONE stand-in.

A directory that appears while the STARTTLS request is open is not covered by the grant: the bot asks
again, showing it, and never writes it unless that new request is granted.
"""

from __future__ import annotations

from bot.core.gates import change_digest
from bot.core.models import ApprovalState, RunState
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.workspace_one import iwa_directory
from tests.support.waiting import eventually


def open_request(h, run_id: str, gate: str, *, besides: frozenset[str] = frozenset()):
    """The open request for ``gate`` once its buttons are in the channel: (approval, message)."""
    for approval in h.store.approvals(run_id):
        if approval.gate == gate and approval.state is ApprovalState.open and approval.id not in besides:
            found = h.slack.latest_button(OPS_CHANNEL, "approve", value=approval.id)
            if found:
                return approval, found[0]
    return None


def iwa_on(ws1) -> set[str]:
    return {i for i in ws1.iwa_ids() if ws1.directories[i]["useStartTls"]}


async def test_a_directory_added_while_the_request_is_open_is_asked_again_and_never_written_unless_granted(
    slack_bot,
):
    h = await slack_bot("physical")
    [shown_id] = iwa_on(h.ws1)
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    first, message = await eventually(lambda: open_request(h, run.id, "STARTTLS"), timeout=60, what="the request")
    assert [d["id"] for d in first.change["directories"]] == [shown_id]
    assert first.digest == change_digest(first.change)

    # a second AD-over-IWA directory appears in the tenant while the approvers read the request
    added = iwa_directory("branch.example.com", domains=["branch.example.com"])
    h.ws1.directories[added["directoryId"]] = added
    assert (await h.sender.click_button(APPROVER, "approve", value=first.id, message_ts=message.ts)).status == 200

    second, _ = await eventually(
        lambda: open_request(h, run.id, "STARTTLS", besides=frozenset({first.id})), timeout=60, what="a new request"
    )
    assert h.store.get_approval(first.id).state is ApprovalState.superseded
    assert sorted(d["id"] for d in second.change["directories"]) == sorted([shown_id, added["directoryId"]])
    assert h.ws1.update_requests == [], "nothing is written on a grant that did not cover the tenant as it is"

    # the grant audited what it covered; the new request shows the new directory by name
    [granted] = [e for e in h.store.audit_events(run.id) if e.event == "approval.granted"]
    assert granted.detail["digest"] == first.digest
    assert [d["id"] for d in granted.detail["change"]["directories"]] == [shown_id]
    [superseded] = [e for e in h.store.audit_events(run.id) if e.event == "approval.superseded"]
    assert superseded.detail["approval_id"] == first.id and "branch.example.com" in superseded.detail["reason"]
    request_text = "\n".join(
        b["text"]["text"]
        for m in h.slack.messages(OPS_CHANNEL)
        if second.id in str(m.blocks)
        for b in m.blocks
        if b.get("type") == "section"
    )
    assert "branch.example.com" in request_text and second.digest[:19] in request_text

    # denying the new request ends the run with neither directory written
    found = h.slack.latest_button(OPS_CHANNEL, "deny", value=second.id)
    assert found is not None
    await h.sender.click_button(APPROVER, "deny", value=second.id, message_ts=found[0].ts)
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=60, what="the run to end")
    assert h.store.get_run(run.id).state is not RunState.succeeded
    assert h.ws1.update_requests == []
    assert iwa_on(h.ws1) == {shown_id, added["directoryId"]}


async def test_a_grant_of_the_directories_as_they_are_changes_exactly_those(slack_bot):
    h = await slack_bot("physical")
    [shown_id] = iwa_on(h.ws1)
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")
    first, message = await eventually(lambda: open_request(h, run.id, "STARTTLS"), timeout=60, what="the request")
    added = iwa_directory("branch.example.com", domains=["branch.example.com"])
    h.ws1.directories[added["directoryId"]] = added
    await h.sender.click_button(APPROVER, "approve", value=first.id, message_ts=message.ts)
    second, message = await eventually(
        lambda: open_request(h, run.id, "STARTTLS", besides=frozenset({first.id})), timeout=60, what="a new request"
    )
    await h.sender.click_button(APPROVER, "approve", value=second.id, message_ts=message.ts)
    await eventually(lambda: iwa_on(h.ws1) == set(), timeout=60, what="both directories changed")
    written = sorted(r.path.rsplit("/", 1)[-1] for r in h.ws1.update_requests)
    assert written == sorted([shown_id, added["directoryId"]])
    await eventually(lambda: h.store.step(run.id, "starttls").state.finished, timeout=60, what="the step")
    assert h.store.step(run.id, "starttls").state.value == "succeeded"
