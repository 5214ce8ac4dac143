"""Slack end to end: signed requests to the bot's HTTP endpoint (or Socket Mode), the stand-in as Slack."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import yaml

from bot.core.gates import gate_named
from bot.core.models import RunState
from sandbox.slack_state import APPROVER, GROUP, OPS_CHANNEL, OUTSIDER, REQUESTER
from tests.support.waiting import eventually

RUN_ID = re.compile(r"run-[0-9a-f]{8}")
ROOT = Path(__file__).resolve().parents[2]
SCOPE_OF = {
    "auth.test": None,
    "bots.info": "users:read",
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "usergroups.users.list": "usergroups:read",
    "users.info": "users:read",
    # `audit verify --checkpoints slack` reads the checkpoints back from the channel and its threads
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    # check-config --probe: is the bot a member of slack.channel
    "conversations.info": "channels:read",
    # the App Home: views need no scope; a card's permalink neither
    "views.publish": None,
    "views.open": None,
    "chat.getPermalink": None,
}
# conversations.* in a private channel need groups:history (groups:read for conversations.info) instead.
# Not a method's scope: it adds profile.email to users.info, which identifies one person's accounts.
EXTRA_SCOPES = {"users:read.email", "groups:history", "groups:read"}


def test_manifest_is_valid_and_asks_for_what_the_bot_uses():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    # the App Home: its tab, and the event that says someone opened it
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/idm-upgrade"
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == {"commands"} | {s for s in SCOPE_OF.values() if s} | EXTRA_SCOPES


def checklist_matches_audit(harness, run_id: str) -> None:
    """The card's checklist says for each step what the audit trail says."""
    [card] = [m for m in harness.slack.top_level(OPS_CHANNEL) if run_id in m.text]
    text = "\n".join(b["text"]["text"] for b in card.blocks if b.get("type") == "section")
    events = harness.store.audit_events(run_id)
    for step in harness.store.steps(run_id):
        title = harness.bot.progress.titles[step.step]
        line = next(line for line in text.splitlines() if title in line)
        last = [e.event for e in events if e.step == step.step and e.event.startswith("step.")][-1]
        mark = {"step.succeeded": "✅", "step.skipped": "⏭️", "step.failed": "❌"}[last]
        assert line.startswith(mark), (line, last)


async def test_upgrade_from_slack_end_to_end(slack_bot, tmp_path):
    h = await slack_bot("default")
    response = await h.sender.send_slash_command(REQUESTER, "host01")
    assert response.status == 200 and response.seconds < 1.0
    [run] = await eventually(h.runs, what="the slash command created a run")  # created after the ack
    await h.settle(run.id, approver=APPROVER)
    run = h.store.get_run(run.id)
    assert run.state is RunState.succeeded, run.result
    await h.reply(response)
    # the requester got an ephemeral ack naming the run; nothing else went to them
    assert any(run.id in text for text in h.ephemeral_texts(REQUESTER))
    # one card, updated in place, showing the final state in words
    cards = h.slack.top_level(OPS_CHANNEL)
    card = next(m for m in cards if m.thread_ts is None and "Connector upgrade" in m.text)
    assert "succeeded" in card.text and card.edited
    thread = h.slack.thread(OPS_CHANNEL, card.ts)[1:]
    texts = [m.text for m in thread]
    for title in ("Preflight checks", "Download the installer", "Run the connector installer", "Reboot the server"):
        assert any(t.startswith(title) for t in texts), title
    # approvals carried their evidence; decided requests lost their buttons
    reboot = next(m for m in thread if "*reboot approval needed*" in str(m.blocks))
    assert reboot.edited and reboot.text == "reboot: granted"
    assert not any(b["type"] == "actions" for b in reboot.blocks)
    assert "approved by <@U0APPROVER1>" in str(reboot.blocks)
    # the final result is also broadcast to the channel
    assert thread[-2].reply_broadcast and "succeeded" in thread[-2].text
    # and after it, the audit checkpoint of the run's end
    assert "Audit checkpoint" in thread[-1].text and not thread[-1].reply_broadcast
    checklist_matches_audit(h, run.id)
    assert h.store.verify_audit().ok
    # every Web API method the bot used is covered by the scopes manifest.yml asks for
    used = {call.method for call in h.slack.calls}
    assert used <= set(SCOPE_OF), used - set(SCOPE_OF)
    transcript = h.slack.render_channel(OPS_CHANNEL)
    (tmp_path / "slack-transcript.txt").write_text(transcript)
    print(transcript)
    assert "Connector upgrade: host01" in transcript


async def test_socket_mode_end_to_end(slack_bot):
    h = await slack_bot("physical", socket_mode=True)
    ack = await h.slack.socket_send_slash_command(REQUESTER, "host01")
    assert ack.envelope_id
    [run] = await eventually(h.runs, what="the Socket Mode slash command created a run")
    await h.settle(run.id, approver=APPROVER, socket=True)
    assert h.store.get_run(run.id).state is RunState.succeeded
    assert h.host.state.connector.version == "19.03.0.1"


async def test_forged_and_stale_requests_are_rejected_and_change_nothing(slack_bot):
    h = await slack_bot("default")
    forged = await h.sender.send_slash_command(REQUESTER, "host01", signature="v0=" + "0" * 64)
    stale = await h.sender.send_slash_command(REQUESTER, "host01", timestamp=int(time.time()) - 600)
    assert forged.status == 401 and stale.status == 401
    assert h.runs() == [] and h.host.requests == [] and h.slack.messages(OPS_CHANNEL) == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hostXX", "Unknown host"),
        ("host01;whoami", "is not a host name"),
        ("$(x)", "is not a host name"),
        (" ".join(f"h{i}" for i in range(200)), "200 hosts in one request"),
        ("", "Which host?"),
        ("hοst01", "is not a host name"),
    ],
)
async def test_bad_command_text_gets_an_ephemeral_error_and_touches_nothing(slack_bot, text, says):
    h = await slack_bot("default", ws1=False)
    response = await h.sender.send_slash_command(REQUESTER, text)
    assert response.status == 200
    await h.reply(response)  # the reply is the last thing the bot does with the command
    assert h.runs() == [] and h.host.requests == []
    assert h.slack.messages(OPS_CHANNEL) == []


async def test_approval_refusals_double_clicks_and_finished_runs(slack_bot):
    h = await slack_bot("physical", ws1=False, extra=f'slack: requesters = ["{REQUESTER}", "{OUTSIDER}"]')
    await h.sender.send_slash_command(REQUESTER, "host01")
    [run] = await eventually(h.runs, what="the slash command created a run")

    def starttls_request_delivered():
        approvals = h.store.approvals(run.id)
        return approvals and h.slack.latest_button(OPS_CHANNEL, "approve", value=approvals[0].id)

    # the STARTTLS request (no Workspace ONE here: approval, then console)
    await eventually(starttls_request_delivered, timeout=60, what="the STARTTLS request's buttons in the channel")
    [approval] = h.store.approvals(run.id)
    message, _ = h.slack.latest_button(OPS_CHANNEL, "approve", value=approval.id)
    for clicked in [
        await h.sender.click_button(REQUESTER, "approve", value=approval.id, message_ts=message.ts),
        await h.sender.click_button(OUTSIDER, "approve", value=approval.id, message_ts=message.ts),
    ]:
        await h.reply(clicked)  # each click is decided after its ack, then answered
    assert any(t.startswith("Not accepted:") for t in h.ephemeral_texts(REQUESTER))
    assert any("not an approver" in t for t in h.ephemeral_texts(OUTSIDER))
    refused = [e for e in h.store.audit_events(run.id) if e.event == "approval.refused"]
    assert {e.actor for e in refused} == {REQUESTER, OUTSIDER}
    assert h.store.get_approval(approval.id).state.value == "open"
    # double click by an approver counts once
    for clicked in [
        await h.sender.click_button(APPROVER, "approve", value=approval.id, message_ts=message.ts),
        await h.sender.click_button(APPROVER, "approve", value=approval.id, message_ts=message.ts),
    ]:
        await h.reply(clicked)
    assert [d.user for d in h.store.get_approval(approval.id).decisions] == [APPROVER]
    await h.settle(run.id, approver=APPROVER)
    assert h.store.get_run(run.id).state is RunState.succeeded
    # a click on a finished run's old button changes nothing
    before = len(h.store.audit_events())
    late = await h.sender.click_button(APPROVER, "approve", value=approval.id, message_ts=message.ts)
    # its answer says the click was handled; the short settle then gives a wrong change the moment to show
    await h.reply(late)
    await asyncio.sleep(0.2)
    assert len(h.store.audit_events()) == before
    assert any("already granted" in t for t in h.ephemeral_texts(APPROVER))


async def test_status_history_help_and_cancel(slack_bot):
    h = await slack_bot("physical", ws1=False)
    await h.sender.send_slash_command(REQUESTER, "host01")
    [run] = await eventually(h.runs, what="the slash command created a run")
    answered = [await h.sender.send_slash_command(REQUESTER, "status")]
    answered.append(await h.sender.send_slash_command(REQUESTER, f"cancel {run.id}"))
    await eventually(lambda: not h.store.get_run(run.id).state.active, timeout=60, what="the cancelled run ended")
    answered.append(await h.sender.send_slash_command(REQUESTER, "history host01"))
    answered.append(await h.sender.send_slash_command(REQUESTER, "help"))
    for result in answered:
        await h.reply(result)
    texts = "\n".join(h.ephemeral_texts(REQUESTER))
    assert run.id in texts and "Usage:" in texts and "Cancel" in texts
    assert h.store.get_run(run.id).state is RunState.cancelled


async def test_approval_requests_mention_who_decides(slack_bot):
    """An approval request notifies the approver users (<@U…>) and groups (<!subteam^S…>); a confirmation
    the requesters and approvers. A name written as text would notify nobody."""
    h = await slack_bot("physical", ws1=False, extra=f'slack: approvers = ["{APPROVER}", "{GROUP}"]')
    await h.sender.send_slash_command(REQUESTER, "host01")
    [run] = await eventually(h.runs, what="the slash command created a run")

    def posted(gate: str):
        """(request, its Slack message as first posted: the post is what notifies), once delivered."""
        request = next((a for a in h.store.approvals(run.id) if a.gate == gate), None)
        found = request and h.slack.latest_button(OPS_CHANNEL, gate_named(gate).button, value=request.id)
        return found and (request, found[0])

    request, message = await eventually(lambda: posted("STARTTLS"), what="the STARTTLS request in Slack")
    shown = message.versions[0].blocks[0]["text"]["text"]
    assert f"*Approvers:* <@{APPROVER}> <!subteam^{GROUP}>" in shown
    assert f"<@{REQUESTER}>" in shown  # the requester, as before ("Asked by")
    # the fallback text is what a notification shows: the mentions are there too
    assert message.versions[0].text == f"STARTTLS approval needed for host01 (<@{APPROVER}> <!subteam^{GROUP}>)"
    await h.sender.click_button(APPROVER, "approve", value=request.id, message_ts=message.ts)
    _, console = await eventually(lambda: posted("STARTTLS console"), what="the console confirmation in Slack")
    shown = console.versions[0].blocks[0]["text"]["text"]
    assert f"*Who may confirm:* <@{REQUESTER}> <@{APPROVER}> <!subteam^{GROUP}>" in shown
