"""bot.systems.servicenow (real aiohttp client) against sandbox.servicenow (real aiohttp server) on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import tomllib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from bot.core.config import Config, Secrets, parse_config
from bot.core.errors import ChangeCheckFailed, ChangeRefused
from bot.core.models import Run, RunState
from bot.engine.admission import Admission, Refused, Request
from bot.systems.servicenow import FIELDS, ServiceNowChanges
from sandbox.servicenow import CLOSED, SCHEDULED, ServiceNowStandIn
from tests.support.configs import config_toml

NOW = datetime(2026, 12, 5, 22, 30, tzinfo=UTC)
TICKET = "CHG0012345"


@pytest.fixture
async def snow():
    async with ServiceNowStandIn() as stand_in:
        stand_in.add(TICKET, start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=3))
        yield stand_in


@pytest.fixture
async def make_client():
    clients: list[ServiceNowChanges] = []

    def make(stand_in: ServiceNowStandIn, *, secrets: Secrets | None = None, **overrides) -> ServiceNowChanges:
        client = ServiceNowChanges(stand_in.config(**overrides), secrets or stand_in.secrets())
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def refusal(client: ServiceNowChanges, moment: datetime = NOW, ticket: str = TICKET) -> str:
    with pytest.raises(ChangeRefused) as caught:
        await client.check(ticket, moment)
    return str(caught.value)


async def failure(client: ServiceNowChanges, moment: datetime = NOW) -> str:
    with pytest.raises(ChangeCheckFailed) as caught:
        await client.check(TICKET, moment)
    return str(caught.value)


async def test_an_approved_change_in_implement_inside_its_dates_passes(snow, make_client):
    await make_client(snow).check(TICKET, NOW)
    (seen,) = snow.requests
    assert seen.path == "/api/now/table/change_request" and seen.status == 200 and seen.authorization
    assert seen.query["sysparm_query"] == f"number={TICKET}"
    assert seen.query["sysparm_fields"].split(",") == list(FIELDS)
    assert seen.query["sysparm_display_value"] == "false"


async def test_the_planned_dates_are_inclusive(snow, make_client):
    client = make_client(snow)
    await client.check(TICKET, NOW - timedelta(hours=1))
    await client.check(TICKET, NOW + timedelta(hours=3))


async def test_an_unknown_number_is_not_found(snow, make_client):
    assert await refusal(make_client(snow), ticket="CHG0099999") == "ServiceNow has no change request CHG0099999"


async def test_not_approved_names_the_approval_value(snow, make_client):
    snow.add(TICKET, start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=3), approval="requested")
    reason = await refusal(make_client(snow))
    assert "not approved" in reason and "'requested'" in reason
    assert "Implement" not in reason and "planned" not in reason  # only the condition that failed


async def test_not_in_implement_names_the_state(snow, make_client):
    snow.add(TICKET, start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=3), state=SCHEDULED)
    reason = await refusal(make_client(snow))
    assert "not in the Implement state" in reason and "'-2'" in reason and "'-1'" in reason
    assert "approved" not in reason


async def test_before_the_planned_start_shows_both_dates(snow, make_client):
    reason = await refusal(make_client(snow), NOW - timedelta(hours=2))
    assert "2026-12-05 20:30 UTC is before its planned start 2026-12-05 21:30 UTC" in reason
    assert "planned end 2026-12-06 01:30 UTC" in reason


async def test_after_the_planned_end_shows_both_dates(snow, make_client):
    reason = await refusal(make_client(snow), NOW + timedelta(hours=4))
    assert "2026-12-06 02:30 UTC is after its planned end 2026-12-06 01:30 UTC" in reason
    assert "planned start 2026-12-05 21:30 UTC" in reason


async def test_every_failing_condition_is_named(snow, make_client):
    snow.add(TICKET, start=NOW, end=NOW + timedelta(hours=1), state=CLOSED, approval="rejected")
    reason = await refusal(make_client(snow), NOW + timedelta(hours=2))
    assert "'rejected'" in reason and "'3'" in reason and "after its planned end" in reason


async def test_missing_planned_dates_refuse(snow, make_client):
    snow.changes[TICKET]["start_date"] = ""
    assert "no planned start and end" in await refusal(make_client(snow))


async def test_customized_states_and_approvals_are_configurable(snow, make_client):
    snow.add(TICKET, start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=3), state="42", approval="ok")
    await make_client(snow, implement_states=["42"], approved_values=["ok", "approved"]).check(TICKET, NOW)


async def test_a_number_that_would_extend_the_encoded_query_is_not_sent(snow, make_client):
    reason = await refusal(make_client(snow), ticket="CHG1^ORnumberISNOTEMPTY")
    assert "not a change number" in reason and snow.requests == []


async def test_wrong_credentials_are_a_credentials_error_without_the_password(snow, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-4711"
    client = make_client(snow, secrets=snow.secrets(servicenow_password=SecretStr(wrong)))
    message = await failure(client)
    assert "refused the bot's credentials (HTTP 401)" in message and "SERVICENOW_USERNAME" in message
    assert "nothing was started" in message
    assert wrong not in message and wrong not in caplog.text and snow.password not in caplog.text


async def test_a_500_is_a_clear_error(snow, make_client):
    snow.fail_status = 500
    message = await failure(make_client(snow))
    assert message.startswith(f"ServiceNow at {snow.url} did not answer the change lookup for {TICKET}")
    assert "HTTP 500" in message and "nothing was started" in message


async def test_an_answer_that_is_not_json_is_a_clear_error(snow, make_client):
    snow.not_json = True
    message = await failure(make_client(snow))
    assert "not the Table API's JSON" in message and "nothing was started" in message


async def test_the_stand_in_down_is_a_clear_error(snow, make_client):
    client = make_client(snow)
    await snow.go_down()
    message = await failure(client)
    assert message.startswith(f"ServiceNow at {snow.url} did not answer") and "nothing was started" in message
    assert snow.password not in message
    await snow.come_back()
    await client.check(TICKET, NOW)


async def test_nothing_listening_is_a_clear_error(make_client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stand_in = ServiceNowStandIn(port=port)  # never started: the port refuses connections
    message = await failure(make_client(stand_in))
    assert f"127.0.0.1:{port} did not answer" in message


async def test_a_slow_instance_times_out_with_a_clear_error(snow, make_client):
    snow.delay_seconds = 2
    message = await failure(make_client(snow, timeout_seconds=0.2))
    assert "within 0.2 s" in message and "nothing was started" in message


async def test_missing_credentials_refuse_to_build(snow):
    with pytest.raises(ValueError, match="SERVICENOW_PASSWORD"):
        ServiceNowChanges(snow.config(), snow.secrets(servicenow_password=None))


def _config(snow: ServiceNowStandIn, tmp_path) -> Config:
    extra = f'[change]\nticket = "required"\n[change.servicenow]\nurl = "{snow.url}"\n'
    return parse_config(tomllib.loads(config_toml(tmp_path / "db", hosts=1, extra=extra)))


async def test_admission_words_a_refusal_and_an_outage(snow, make_client, tmp_path):
    admission = Admission(_config(snow, tmp_path), changes=make_client(snow), clock=lambda: NOW + timedelta(hours=4))
    with pytest.raises(Refused, match=f"change {TICKET} does not allow this run: .*after its planned end"):
        await admission.admit(Request(["host01"], "U1", ticket=TICKET))
    await snow.go_down()
    with pytest.raises(Refused, match=r"did not answer.*nothing was started"):
        await admission.admit(Request(["host01"], "U1", ticket=TICKET))


async def test_recheck_change_checks_a_scheduled_run_at_its_start(snow, make_client, tmp_path):
    moments = iter([NOW, NOW + timedelta(hours=4)])
    admission = Admission(_config(snow, tmp_path), changes=make_client(snow), clock=lambda: next(moments))
    run = Run(
        id="run-1",
        host="host01",
        requester="U1",
        state=RunState.scheduled,
        batch_id="b",
        plan=[],
        created_at=NOW,
        updated_at=NOW,
        ticket=TICKET,
    )
    await admission.recheck_change(run)  # inside the change's dates
    with pytest.raises(Refused, match="after its planned end"):
        await admission.recheck_change(run)
