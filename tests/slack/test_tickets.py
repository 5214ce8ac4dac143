"""Change tickets through Slack: signed /idm-upgrade requests into Bolt, the stand-in as Slack (and as ServiceNow)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.models import RunState
from bot.store import audit
from sandbox.servicenow import ServiceNowStandIn
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from tests.support.waiting import eventually

TICKET = "CHG0012345"
REQUIRED = '[change]\nticket = "required"\n'


def section_text(message) -> str:
    return "\n".join(b["text"]["text"] for b in message.blocks if b.get("type") == "section")


async def refused(h, text: str) -> str:
    """The ephemeral answer to a request that must start nothing; checks that nothing was created."""
    events_before = len(h.store.audit_events())
    reply = await h.reply(await h.sender.send_slash_command(REQUESTER, text))
    assert reply["response_type"] == "ephemeral" and reply["text"].startswith("Not started: "), reply
    # the reply is sent after admission decided: by now a run would exist
    assert h.runs() == [] and len(h.store.audit_events()) == events_before
    assert h.slack.top_level(OPS_CHANNEL) == [] and h.host.requests == []
    return reply["text"]


async def test_required_and_missing_shows_the_pattern_and_queues_nothing(slack_bot):
    h = await slack_bot(tables=REQUIRED)
    text = await refused(h, "host01")
    assert "a change ticket is required" in text and "^CHG[0-9]{7}$" in text and "ticket:CHG0012345" in text


@pytest.mark.parametrize("ticket", ["CHG12", "INC0012345", "CHG0012345x"])
async def test_a_malformed_ticket_shows_the_pattern_and_queues_nothing(slack_bot, ticket):
    h = await slack_bot(tables=REQUIRED)
    text = await refused(h, f"host01 ticket:{ticket}")
    assert f"`{ticket}` is not a change ticket" in text and "^CHG[0-9]{7}$" in text
    assert "e.g. `/idm-upgrade host01 ticket:CHG0012345`" in text


async def test_a_malformed_ticket_is_refused_when_optional_too(slack_bot):
    h = await slack_bot(tables='[change]\nticket = "optional"\n')
    assert "is not a change ticket" in await refused(h, "host01 ticket:CHG1")


async def test_the_example_follows_a_site_pattern(slack_bot):
    h = await slack_bot(tables='[change]\nticket = "required"\nticket_pattern = "^INC[0-9]{6}$"\n')
    text = await refused(h, "host01")
    assert "`^INC[0-9]{6}$`" in text and "CHG0012345" not in text and "ticket:TICKET" in text


async def test_optional_and_missing_starts_the_run_without_a_ticket(slack_bot):
    h = await slack_bot(tables='[change]\nticket = "optional"\n')
    reply = await h.reply(await h.sender.send_slash_command(REQUESTER, "check host01"))
    [run] = h.runs()
    assert run.id in reply["text"] and run.ticket is None
    requested = next(e for e in h.store.audit_events(run.id) if e.event == "run.requested")
    assert "ticket" not in requested.detail


async def test_ticket_text_is_escaped_on_its_way_to_slack(slack_bot):
    # a permissive pattern lets markup through the parser: Slack must still show it as text
    h = await slack_bot(tables='[change]\nticket = "optional"\nticket_pattern = ".+"\n')
    await h.reply(await h.sender.send_slash_command(REQUESTER, "check host01 ticket:<!channel>"))
    [run] = h.runs()
    assert run.ticket == "<!channel>"
    [card] = await eventually(lambda: h.slack.top_level(OPS_CHANNEL), what="the card")
    assert "&lt;!channel&gt;" in section_text(card) and "<!channel>" not in section_text(card)
    status = await h.reply(await h.sender.send_slash_command(REQUESTER, f"status {run.id}"))
    assert "&lt;!channel&gt;" in status["text"] and "<!channel>" not in status["text"]


async def test_the_ticket_reaches_card_approvals_audit_csv_status_and_history(slack_bot):
    h = await slack_bot(tables=REQUIRED)
    reply = await h.reply(await h.sender.send_slash_command(REQUESTER, f"host01 ticket:{TICKET}"))
    [run] = h.runs()
    assert run.id in reply["text"] and run.ticket == TICKET
    status = await h.reply(await h.sender.send_slash_command(REQUESTER, f"status {run.id}"))
    assert f"ticket {TICKET}" in status["text"]
    await h.settle(run.id, approver=APPROVER)
    assert h.store.get_run(run.id).state is RunState.succeeded
    [card] = [m for m in h.slack.top_level(OPS_CHANNEL) if run.id in m.text]
    assert f"*Change ticket:* {TICKET}" in section_text(card)
    requests = [m for m in h.slack.thread(OPS_CHANNEL, card.ts) if "needed* for" in section_text(m)]
    assert len(requests) >= 3  # STARTTLS, install, reboot
    assert all(f"*Change ticket:* {TICKET}" in section_text(m) for m in requests)
    requested = next(e for e in h.store.audit_events(run.id) if e.event == "run.requested")
    assert requested.detail["ticket"] == TICKET
    out = io.StringIO()
    audit.export_csv(h.store.conn, out, run.id)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows and {row["ticket"] for row in rows} == {TICKET}
    assert json.loads(rows[0]["detail"])["ticket"] == TICKET
    history = await h.reply(await h.sender.send_slash_command(REQUESTER, "history host01"))
    assert run.id in history["text"] and f"ticket {TICKET}" in history["text"]


NOW = datetime.now(UTC)


@pytest.fixture
async def snow():
    async with ServiceNowStandIn() as stand_in:
        yield stand_in


async def test_servicenow_refusal_is_ephemeral_names_the_reason_and_queues_nothing(slack_bot, snow):
    snow.add(TICKET, start=NOW - timedelta(hours=1), end=NOW + timedelta(days=1), approval="requested")
    h = await slack_bot(servicenow=snow)
    text = await refused(h, f"host01 ticket:{TICKET}")
    assert f"change {TICKET} does not allow this run" in text and "not approved" in text and "'requested'" in text
    assert [r.query["sysparm_query"] for r in snow.requests] == [f"number={TICKET}"]


async def test_servicenow_down_is_a_clear_refusal(slack_bot, snow):
    snow.add(TICKET, start=NOW - timedelta(hours=1), end=NOW + timedelta(days=1))
    h = await slack_bot(servicenow=snow)
    await snow.go_down()
    text = await refused(h, f"host01 ticket:{TICKET}")
    assert f"ServiceNow at {snow.url} did not answer" in text and "nothing was started" in text
    assert snow.password not in text


async def test_an_approved_change_in_implement_and_in_its_dates_starts_the_run(slack_bot, snow):
    snow.add(TICKET, start=NOW - timedelta(hours=1), end=NOW + timedelta(days=1))
    h = await slack_bot(servicenow=snow)
    reply = await h.reply(await h.sender.send_slash_command(REQUESTER, f"host01 ticket:{TICKET}"))
    [run] = h.runs()
    assert run.id in reply["text"] and run.ticket == TICKET
    assert [r.status for r in snow.requests] == [200]
