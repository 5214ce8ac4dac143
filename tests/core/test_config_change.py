"""[change], [windows.NAME], [[freeze]] and [groups.NAME]: what is accepted, and one line per mistake."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest

from bot.core.config import ConfigError, parse_config
from tests.core.test_config import MINIMAL

BASE = tomllib.loads(MINIMAL)


def config(**sections):
    data = {**BASE, "hosts": {**BASE["hosts"], "host02": {"address": "10.0.0.2"}, "host03": {"address": "10.0.0.3"}}}
    data.update(sections)
    return parse_config(data)


def problems(**sections) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(**sections)
    return caught.value.problems


WEEKEND = {"days": ["Sat", "Sun"], "start": "22:00", "end": "04:00", "timezone": "Europe/Berlin"}


def test_groups_windows_freeze_and_tickets_are_read():
    c = config(
        change={"ticket": "required", "servicenow": {"url": "https://snow.example.com/"}},
        windows={"weekend": WEEKEND},
        freeze=[{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-04T00:00:00+01:00", "reason": "year end"}],
        groups={"prod": {"hosts": ["host02", "host01"], "channel": "C0PRODCHAN", "window": "weekend"}},
    )
    assert c.change.servicenow and c.change.servicenow.url == "https://snow.example.com"
    assert c.group_of("host01") == "prod" and c.group_of("host03") is None
    assert c.window_of("host01") == "weekend" and c.window_of("host03") is None
    assert c.channel_of("host02") == "C0PRODCHAN" and c.channel_of("host03") == c.slack.channel
    assert c.freeze[0].covers(datetime(2026, 12, 24, tzinfo=UTC))
    assert not c.freeze[0].covers(datetime(2027, 1, 3, 23, 0, tzinfo=UTC))  # 2027-01-04T00:00+01:00 is the end


def test_a_hosts_own_window_wins_over_its_groups():
    c = config(
        windows={"weekend": WEEKEND, "night": {**WEEKEND, "days": ["Wed"]}},
        hosts={**BASE["hosts"], "host02": {"address": "10.0.0.2", "window": "night"}},
        groups={"prod": {"hosts": ["host01", "host02"], "window": "weekend"}},
    )
    assert c.window_of("host02") == "night" and c.window_of("host01") == "weekend"


@pytest.mark.parametrize(
    ("sections", "says"),
    [
        (
            {"windows": {"w": {**WEEKEND, "timezone": "Europe/Atlantis"}}},
            "windows.w.timezone: 'Europe/Atlantis' is not",
        ),
        ({"windows": {"w": {**WEEKEND, "start": "24:00"}}}, "windows.w.start: '24:00' is not a time of day"),
        ({"windows": {"w": {**WEEKEND, "days": ["Saturday"]}}}, "windows.w.days.0"),
        ({"windows": {"w": {**WEEKEND, "end": "22:00"}}}, "start and end are the same time"),
        ({"windows": {"w": {**WEEKEND, "days": []}}}, "windows.w.days"),
        (
            {"freeze": [{"start": "2026-12-20T00:00:00", "end": "2027-01-04T00:00:00+01:00", "reason": "x"}]},
            "freeze.0.start",
        ),
        (
            {"freeze": [{"start": "2027-01-04T00:00:00Z", "end": "2026-12-20T00:00:00Z", "reason": "x"}]},
            "end must be after start",
        ),
        ({"freeze": [{"start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z"}]}, "freeze.0.reason: required"),
        ({"change": {"ticket": "sometimes"}}, "change.ticket"),
        ({"change": {"ticket_pattern": "^CHG[0-9{7}$"}}, "change.ticket_pattern: is not a regular expression"),
        ({"change": {"servicenow": {"url": "https://snow.example.com"}}}, 'ticket = "off"'),
        ({"change": {"ticket": "required", "servicenow": {"url": "https://snow.example.com/api/now"}}}, "no /api path"),
        ({"groups": {"prod": {"hosts": ["host09"]}}}, "groups.prod.hosts: 'host09' is not a configured host"),
        ({"groups": {"host01": {"hosts": ["host02"]}}}, "groups.host01: a host has that name too"),
        ({"groups": {"check": {"hosts": ["host02"]}}}, "groups.check: a group name must be"),
        ({"groups": {"prod": {"hosts": ["host01"], "window": "nope"}}}, "groups.prod.window: no [windows.nope]"),
        ({"groups": {"prod": {"hosts": ["host01"], "approvers": []}}}, "nobody could approve"),
        ({"groups": {"prod": {"hosts": ["host01"], "channel": "#prod"}}}, "is not a Slack channel ID"),
        ({"groups": {"a": {"hosts": ["host01"]}, "b": {"hosts": ["host01"]}}}, "'host01' is already in group 'a'"),
        ({"hosts": {"host01": {"address": "10.0.0.1", "window": "nope"}}}, "hosts.host01.window: no [windows.nope]"),
    ],
)
def test_each_mistake_is_one_line_naming_its_key(sections, says):
    found = problems(**sections)
    assert any(says in line for line in found), found


def test_several_cross_reference_mistakes_are_each_their_own_line():
    found = problems(groups={"prod": {"hosts": ["host09"], "window": "nope"}})
    assert "groups.prod.window: no [windows.nope] is configured" in found
    assert "groups.prod.hosts: 'host09' is not a configured host" in found
