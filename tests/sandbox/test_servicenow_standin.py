"""sandbox.servicenow as any HTTP client sees it (plain aiohttp, not the bot's client): the Table API's shape."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import aiohttp
import pytest

from sandbox.servicenow import TABLE_PATH, ServiceNowStandIn

START, END = datetime(2026, 12, 5, 21, 0, tzinfo=UTC), datetime(2026, 12, 6, 1, 0, tzinfo=UTC)


@pytest.fixture
async def snow():
    async with ServiceNowStandIn() as stand_in:
        stand_in.add("CHG0012345", start=START, end=END)
        stand_in.add("CHG0054321", start=START, end=END, approval="requested")
        yield stand_in


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def get(snow: ServiceNowStandIn, params: dict[str, str], headers: dict[str, str] | None = None):
    headers = basic(snow.username, snow.password) if headers is None else headers
    async with (
        aiohttp.ClientSession() as session,
        session.get(snow.url + TABLE_PATH, params=params, headers=headers) as response,
    ):
        return response.status, response.content_type, await response.text()


async def test_a_number_is_answered_with_the_fields_asked_for(snow):
    status, kind, body = await get(
        snow, {"sysparm_query": "number=CHG0012345", "sysparm_fields": "number,state,approval,start_date,end_date"}
    )
    assert status == 200 and kind == "application/json"
    assert json.loads(body) == {
        "result": [
            {
                "number": "CHG0012345",
                "state": "-1",
                "approval": "approved",
                "start_date": "2026-12-05 21:00:00",
                "end_date": "2026-12-06 01:00:00",
            }
        ]
    }


async def test_an_unknown_number_is_an_empty_result_and_other_conditions_are_ignored(snow):
    assert (await get(snow, {"sysparm_query": "number=CHG0000000"}))[2] == '{"result": []}'
    status, _, body = await get(snow, {"sysparm_query": "active=true^number=CHG0054321"})
    assert status == 200 and '"approval": "requested"' in body


async def test_basic_auth_is_checked(snow):
    status, _, body = await get(snow, {"sysparm_query": "number=CHG0012345"}, basic(snow.username, "no"))
    assert status == 401 and "User Not Authenticated" in body and "CHG0012345" not in body
    assert (await get(snow, {}, headers={}))[0] == 401
    assert [r.authorization for r in snow.requests] == [True, False]


async def test_fault_switches(snow):
    snow.fail_status = 500
    assert (await get(snow, {"sysparm_query": "number=CHG0012345"}))[0] == 500
    snow.fail_status, snow.not_json = None, True
    assert (await get(snow, {}))[1] == "text/html"
    snow.not_json = False
    await snow.go_down()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(snow, {})
    await snow.come_back()
    assert (await get(snow, {"sysparm_query": "number=CHG0012345"}))[0] == 200
