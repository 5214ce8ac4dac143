"""The bot's front door over real HTTP (and Socket Mode), with the Slack stand-in: each request acts once, only
from this bot's workspace, app and channel, and a shutdown loses no request it acknowledged.

Issue 16, findings 5 (replay), 6 (workspace, app and channel) and 8 (acknowledged clicks lost on shutdown).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time

import aiohttp
import pytest

from bot.core.config import Secrets
from bot.core.models import ApprovalState
from bot.slack.app import SlackBot
from sandbox.slack_sender import SignedRequest, block_actions_payload, signature_for, slash_command_fields
from sandbox.slack_state import (
    APPROVER,
    GENERAL_CHANNEL,
    GROUP,
    OPS_CHANNEL,
    OUTSIDER,
    REQUESTER,
)
from tests.slack.conftest import SIGNING_SECRET, Harness
from tests.support.waiting import eventually


def audit(h: Harness, event: str) -> list[tuple[str, dict]]:
    rows = h.store.conn.execute("SELECT actor, detail FROM audit WHERE event = ? ORDER BY seq", (event,)).fetchall()
    return [(actor, json.loads(detail)) for actor, detail in rows]


def command_request(h: Harness, user: str, text: str, **changes: str) -> tuple[dict, SignedRequest]:
    fields = {**slash_command_fields(h.slack, user, text), **changes}
    assert h.sender is not None
    return fields, h.sender.build(fields)


def click_request(h: Harness, payload: dict) -> SignedRequest:
    assert h.sender is not None
    return h.sender.build({"payload": json.dumps(payload)})


def resigned(request: SignedRequest, **headers: str) -> SignedRequest:
    """The same body, signed again now (what Slack does when it retries), with extra headers."""
    ts = str(int(time.time()) + 1)
    signed = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature_for(SIGNING_SECRET, ts, request.body)}
    return SignedRequest(request.url, request.body, {**request.headers, **signed, **headers})


async def open_request(h: Harness, gate: str = "STARTTLS"):
    """A run waiting on its `gate` request, delivered: (run, approval, the request's message)."""
    if not h.runs():
        assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the run")

    def delivered():
        for approval in h.store.approvals(run.id):
            if approval.gate == gate and approval.state is ApprovalState.open:
                found = h.slack.latest_button(OPS_CHANNEL, "approve", value=approval.id)
                if (
                    found
                    and h.store.conn.execute(
                        "SELECT 1 FROM outbox WHERE approval_id = ? AND state = 'sent'", (approval.id,)
                    ).fetchone()
                ):
                    return approval, found[0]
        return None

    approval, message = await eventually(delivered, timeout=60, what=f"the {gate} request in the channel")
    assert await h.bot.progress.idle(timeout=30)
    return run, approval, message


PHYSICAL = {"scenario": "physical", "ws1": False}


# -- finding 5: a request acts once --------------------------------------------------------------------


async def test_a_replayed_slash_command_starts_one_run_and_is_audited(slack_bot):
    h = await slack_bot()
    fields, request = command_request(h, REQUESTER, "check host01")
    first = await h.sender.replay(request, sent_payload=fields)
    assert first.status == 200
    [run] = await eventually(h.runs, what="the first copy's run")
    await h.reply(first)
    assert await h.bot.progress.idle(timeout=30)
    channel = [(m.ts, len(m.versions)) for m in h.slack.messages(OPS_CHANNEL)]
    rid = fields["response_url"].rsplit("/", 1)[-1]
    for _ in range(3):
        copy = await h.sender.replay(request, sent_payload=fields)
        assert copy.status == 200 and copy.body == ""  # quiet: the copy's sender learns nothing
    await asyncio.sleep(0.3)  # what a copy wrongly started would need to show
    assert [r.id for r in h.runs()] == [run.id]
    assert len(h.slack.response_urls[rid].posts) == 1  # the original's answer only
    assert await h.bot.progress.idle(timeout=30)
    assert [(m.ts, len(m.versions)) for m in h.slack.messages(OPS_CHANNEL)] == channel
    refused = audit(h, "request.refused")
    assert [(actor, d["reason"], d["kind"], d["user"]) for actor, d in refused] == [
        (REQUESTER, "replay", "command", REQUESTER)
    ] * 3
    assert h.store.verify_audit().ok


async def test_copies_sent_at_the_same_moment_start_one_run(slack_bot):
    h = await slack_bot()
    fields, request = command_request(h, REQUESTER, "check host01")
    results = await asyncio.gather(*(h.sender.replay(request, sent_payload=fields) for _ in range(8)))
    assert {r.status for r in results} == {200}
    await eventually(h.runs, what="a run")
    await h.reply(results[0])
    await asyncio.sleep(0.3)
    assert len(h.runs()) == 1
    # one answer: the seven copies were not handled at all (not even answered "host01 is busy")
    assert len(h.slack.response_urls[fields["response_url"].rsplit("/", 1)[-1]].posts) == 1
    assert len(audit(h, "request.refused")) == 7


async def test_slacks_retry_of_a_received_command_does_not_act_twice(slack_bot):
    h = await slack_bot()
    fields, request = command_request(h, REQUESTER, "check host01")
    assert (await h.sender.replay(request, sent_payload=fields)).status == 200
    await eventually(h.runs, what="the run")
    retry = await h.sender.replay(resigned(request, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"}))
    assert retry.status == 200 and retry.seconds < 1.0
    await asyncio.sleep(0.3)
    assert len(h.runs()) == 1
    assert len(h.slack.response_urls[fields["response_url"].rsplit("/", 1)[-1]].posts) == 1
    [(_, detail)] = audit(h, "request.refused")
    assert detail["reason"] == "retry" and detail["retry_num"] == "1"


async def test_a_replayed_click_records_nothing_twice(slack_bot):
    h = await slack_bot(**PHYSICAL)
    run, approval, message = await open_request(h)
    # an outsider's click: one refusal, however often it is replayed
    payload = block_actions_payload(h.slack, OUTSIDER, "approve", approval.id, message.ts)
    request = click_request(h, payload)
    assert (await h.sender.replay(request, sent_payload=payload)).status == 200
    await eventually(lambda: audit(h, "approval.refused"), what="the refusal")
    for _ in range(3):
        assert (await h.sender.replay(request, sent_payload=payload)).status == 200
    await asyncio.sleep(0.3)
    assert len(audit(h, "approval.refused")) == 1
    # the approver's click: one decision, and the replay of it is refused, not answered "already approved"
    payload = block_actions_payload(h.slack, APPROVER, "approve", approval.id, message.ts)
    request = click_request(h, payload)
    assert (await h.sender.replay(request, sent_payload=payload)).status == 200
    await eventually(lambda: audit(h, "approval.granted"), what="the decision")
    assert (await h.sender.replay(request, sent_payload=payload)).status == 200
    await asyncio.sleep(0.3)
    assert len(audit(h, "approval.granted")) == 1
    assert len(h.slack.response_urls[payload["response_url"].rsplit("/", 1)[-1]].posts) == 1
    assert [d["kind"] for _, d in audit(h, "request.refused")] == ["block_actions"] * 4


async def test_a_replayed_command_over_socket_mode_starts_one_run(slack_bot):
    h = await slack_bot(socket_mode=True)
    fields = slash_command_fields(h.slack, REQUESTER, "check host01")
    for _ in range(3):
        await h.slack.socket_deliver("slash_commands", fields)
    await eventually(h.runs, what="the run")
    await asyncio.sleep(0.3)
    assert len(h.runs()) == 1
    assert len(h.slack.response_urls[fields["response_url"].rsplit("/", 1)[-1]].posts) == 1
    assert len(audit(h, "request.refused")) == 2


async def test_slacks_retry_over_socket_mode_does_not_act_twice(slack_bot):
    h = await slack_bot(socket_mode=True)
    fields = slash_command_fields(h.slack, REQUESTER, "check host01")
    await h.slack.socket_deliver("slash_commands", fields)
    await eventually(h.runs, what="the run")
    ack = await h.slack.socket_deliver("slash_commands", fields, retry_attempt=1)
    assert ack.payload is None  # acked, so Slack stops resending; nothing said
    await asyncio.sleep(0.3)
    assert len(h.runs()) == 1
    [(_, detail)] = audit(h, "request.refused")
    assert detail["reason"] == "retry" and detail["retry_num"] == "1"


# -- finding 6: this workspace, this app, this channel ------------------------------------------------

FOREIGN = {
    "another workspace": ({"team_id": "T0ELSEWHRE"}, "another Slack workspace"),
    "another organization": ({"enterprise_id": "E0ELSEWHRE"}, "another Slack organization"),
    "another app": ({"api_app_id": "A0OTHERAPP"}, "another Slack app"),
    "a direct message": ({"channel_id": "D0DIRECTMS", "channel_name": "directmessage"}, "a direct message"),
    "another channel": ({"channel_id": GENERAL_CHANNEL, "channel_name": "general"}, "this channel"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
async def test_a_command_from_elsewhere_starts_nothing(slack_bot, case):
    h = await slack_bot()
    changes, says = FOREIGN[case]
    fields, request = command_request(h, REQUESTER, "host01", **changes)
    result = await h.sender.replay(request, sent_payload=fields)
    assert result.status == 200
    reply = await h.reply(result)
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].startswith("Not started: ") and says in reply["text"], reply
    await asyncio.sleep(0.3)
    assert h.runs() == []
    assert h.slack.messages(OPS_CHANNEL) == [] and h.slack.messages(GENERAL_CHANNEL) == []
    assert h.host.requests == []


async def test_direct_messages_are_taken_when_configured(slack_bot):
    h = await slack_bot(extra="slack: allow_direct_messages = true")
    fields, request = command_request(h, REQUESTER, "check host01", channel_id="D0DIRECTMS")
    assert (await h.sender.replay(request, sent_payload=fields)).status == 200
    await eventually(h.runs, what="the run from a DM")


async def test_a_configured_app_id_is_the_one_requests_must_carry(slack_bot):
    h = await slack_bot(extra='slack: app_id = "A0OTHERAPP"')
    result = await h.sender.send_slash_command(REQUESTER, "check host01")  # made for the stand-in's app
    assert "another Slack app" in (await h.reply(result))["text"]
    assert h.runs() == []


@pytest.mark.parametrize(
    "where",
    ["another channel", "another message", "another workspace", "another app"],
)
async def test_a_click_not_on_the_requests_message_decides_nothing(slack_bot, where):
    h = await slack_bot(**PHYSICAL)
    run, approval, message = await open_request(h)
    payload = block_actions_payload(h.slack, APPROVER, "approve", approval.id, message.ts)
    if where == "another channel":
        payload["channel"] = {"id": GENERAL_CHANNEL, "name": "general"}
        payload["container"]["channel_id"] = GENERAL_CHANNEL
    elif where == "another message":
        card = h.slack.top_level(OPS_CHANNEL)[0]
        payload["container"]["message_ts"] = card.ts
        payload["message"]["ts"] = card.ts
    elif where == "another workspace":
        payload["team"] = {"id": "T0ELSEWHRE", "domain": "elsewhere"}
        payload["user"]["team_id"] = "T0ELSEWHRE"
    else:
        payload["api_app_id"] = "A0OTHERAPP"
    result = await h.sender.replay(click_request(h, payload), sent_payload=payload)
    assert result.status == 200
    reply = await h.reply(result)
    assert reply["response_type"] == "ephemeral" and reply["text"].startswith("Not accepted: "), reply
    assert h.store.get_approval(approval.id).state is ApprovalState.open
    assert h.store.get_approval(approval.id).decisions == []
    [(actor, detail)] = audit(h, "approval.refused")
    assert actor == APPROVER and detail["approval_id"] == approval.id
    # the same person's click on the request's own message still counts
    assert (await h.sender.click_button(APPROVER, "approve", value=approval.id, message_ts=message.ts)).status == 200
    await eventually(lambda: h.store.get_approval(approval.id).state is not ApprovalState.open, what="the decision")


# -- finding 8: a shutdown loses no acknowledged click -------------------------------------------------


async def click_burst(h: Harness, approval, message, users, count: int):
    """`count` clicks on the open request, from people who may not decide (each is one audited refusal)."""

    async def one(i: int):
        user = users[i % len(users)]
        payload = block_actions_payload(h.slack, user, "approve", approval.id, message.ts)
        try:
            return await h.sender.replay(click_request(h, payload), sent_payload=payload)
        except aiohttp.ClientError:
            return None  # the bot's server is already closed: not acknowledged

    return [asyncio.create_task(one(i)) for i in range(count)]


def refusals_in(path: str) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM audit WHERE event = 'approval.refused'").fetchone()[0]
    finally:
        db.close()


async def console_request(h: Harness):
    """A run waiting on its console confirmation, which people in `slack.requesters` may give: deciding a
    click asks Slack who is in the requesters' user group, so a slow Slack keeps every click's handler busy."""
    run, approval, message = await open_request(h)
    assert (await h.sender.click_button(APPROVER, "approve", value=approval.id, message_ts=message.ts)).status == 200
    return await open_request(h, "STARTTLS console")


BURST = {**PHYSICAL, "extra": f'slack: requesters = ["{REQUESTER}", "{GROUP}"]'}


async def test_stopping_during_a_click_burst_loses_no_acknowledged_click(slack_bot, caplog):
    caplog.set_level(logging.INFO)
    h = await slack_bot(**BURST)
    _run, approval, message = await console_request(h)
    refused_before = refusals_in(h.store.path)
    h.slack.latency = 0.5  # each click's handler waits on usergroups.users.list when the stop begins
    h.slack.response_url_latency = 0.5
    tasks = await click_burst(h, approval, message, [OUTSIDER], 60)
    await eventually(lambda: sum(t.done() for t in tasks) >= 10, what="the first acks")
    stop = asyncio.create_task(h.bot.stop())
    await asyncio.sleep(0.05)
    late = await h.sender.replay(
        click_request(h, block_actions_payload(h.slack, OUTSIDER, "approve", approval.id, message.ts))
    )
    assert late.status == 503  # not acknowledged: Slack would send it again
    results = await asyncio.gather(*tasks)
    await stop
    acked = sum(1 for r in results if r is not None and r.status == 200)
    assert acked >= 10
    assert refusals_in(h.store.path) - refused_before == acked
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or "cannot schedule" in r.getMessage()]
    assert problems == []


async def test_clicks_that_cannot_finish_before_the_stop_are_handled_at_the_next_start(slack_bot, tmp_path, caplog):
    h = await slack_bot(**BURST)
    _run, approval, message = await console_request(h)
    refused_before = refusals_in(h.store.path)
    h.bot.shutdown_grace_seconds = 0.0  # no time at all: every click still running is left for the next start
    h.slack.latency = 1.0
    tasks = await click_burst(h, approval, message, [OUTSIDER], 20)
    await eventually(lambda: sum(t.done() for t in tasks) >= 5, what="the first acks")
    await h.bot.stop()
    results = await asyncio.gather(*tasks)
    acked = sum(1 for r in results if r is not None and r.status == 200)
    db = sqlite3.connect(f"file:{h.store.path}?mode=ro", uri=True)
    left = db.execute("SELECT count(*) FROM slack_requests WHERE state = 'received'").fetchone()[0]
    db.close()
    assert left > 0, "the test did not stop the bot while clicks were in flight"
    assert refusals_in(h.store.path) - refused_before + left >= acked
    # the next start: the same database, the same Slack
    h.slack.latency = 0.0
    env = {
        "SLACK_BOT_TOKEN": "xoxb-sandbox",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "WINRM_USERNAME": h.host.username,
        "WINRM_PASSWORD": h.host.password,
    }
    again = SlackBot(h.bot.config, Secrets.from_env(env), socket_mode=False, api_url=h.slack.api_url)
    await again.start(port=0)
    try:
        await eventually(
            lambda: (
                again.store.conn.execute("SELECT count(*) FROM slack_requests WHERE state = 'received'").fetchone()[0]
                == 0
            ),
            what="the left requests handled",
        )
        # each acknowledged click is refused once (one cancelled between its refusal and its "done" twice)
        assert refusals_in(again.store.path) - refused_before >= acked
        assert again.store.get_approval(approval.id).state is ApprovalState.open
    finally:
        await again.stop()


async def test_until_slack_says_who_the_bot_is_no_request_is_taken(slack_bot):
    """Fail closed: while auth.test fails the bot refuses every request; once Slack answers, it takes them."""
    from bot.slack.app import web_client
    from bot.slack.origin import SlackIdentity, origin_problem

    h = await slack_bot()
    h.slack.server_errors(100, status=500, methods=["auth.test"])
    identity = SlackIdentity(web_client("xoxb-sandbox", h.slack.api_url))
    fields = slash_command_fields(h.slack, REQUESTER, "check host01")
    assert "could not confirm" in (origin_problem("command", fields, await identity.get(), h.bot.config.slack) or "")
    h.slack.clear_faults()
    me = await identity.get()
    assert me is not None and (me.team_id, me.app_id, me.enterprise_id) == ("T0SANDBOX", "A0SANDBOX", None)
    assert origin_problem("command", fields, me, h.bot.config.slack) is None
