"""Admission at request time: freezes, maintenance windows, `at next-window` and `at TIME`, by a set clock."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.config import parse_config
from bot.engine.admission import NEXT_WINDOW, Admission, Admitted, Refused, Request
from tests.support.configs import REQUESTER, config_toml

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # a Wednesday
OPENS = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)  # Sat 22:00 in Berlin (CET)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def config(tmp_path, *, freeze=(), host02_window=None, groups=None):
    """host01 keeps to `weekend` (Sat 22:00-04:00 Berlin), host02 to none (or `host02_window`), host03 to none."""
    data = tomllib.loads(config_toml(tmp_path / "bot.db"))
    data["windows"] = {
        "weekend": {"days": ["Sat"], "start": "22:00", "end": "04:00", "timezone": "Europe/Berlin"},
        "nightly": {"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "01:00", "end": "03:00", "timezone": "UTC"},
    }
    data["hosts"]["host01"]["window"] = "weekend"
    if host02_window:
        data["hosts"]["host02"]["window"] = host02_window
    data["freeze"] = [dict(zip(("start", "end", "reason"), f, strict=True)) for f in freeze]
    if groups:
        data["groups"] = groups
    return parse_config(data)


async def admit(cfg, hosts, at=None, *, now=NOW, check_only=False, group=None, ticket=None) -> Admitted:
    admission = Admission(cfg, clock=lambda: now)
    return await admission.admit(Request(hosts, REQUESTER, check_only, ticket, at, group))


async def refusal(cfg, hosts, at=None, **kwargs) -> str:
    with pytest.raises(Refused) as caught:
        await admit(cfg, hosts, at, **kwargs)
    return str(caught.value)


async def test_outside_the_window_names_the_next_opening_in_both_zones_and_both_commands(tmp_path):
    text = await refusal(config(tmp_path), ["host01"])
    assert text == (
        "host01 is outside its maintenance window weekend (Sat 22:00-04:00 Europe/Berlin); it next opens "
        "Sat 2026-12-05 22:00 CET (21:00 UTC) to Sun 04:00 CET (03:00 UTC). To run at the earliest allowed time (2026-12-05 21:00 UTC), "
        "ask for `/idm-upgrade host01 at next-window` or `/idm-upgrade host01 at 2026-12-05T22:00+01:00`"
    )


async def test_inside_the_window_starts_now(tmp_path):
    assert await admit(config(tmp_path), ["host01"], now=OPENS + timedelta(hours=1)) == Admitted(None)
    assert await admit(config(tmp_path), ["host02"]) == Admitted(None)  # no window: any time


async def test_the_offered_commands_name_the_group_and_keep_the_ticket(tmp_path):
    cfg = config(tmp_path, groups={"prod": {"hosts": ["host01"]}})
    text = await refusal(cfg, ["host01"], group="prod", ticket="CHG0012345")
    assert "`/idm-upgrade prod ticket:CHG0012345 at next-window`" in text
    assert "`/idm-upgrade prod ticket:CHG0012345 at 2026-12-05T22:00+01:00`" in text


async def test_a_batch_with_a_host_without_a_window_is_offered_the_time_only(tmp_path):
    text = await refusal(config(tmp_path), ["host01", "host02"])
    assert text.startswith("host01 is outside its maintenance window weekend")
    assert "ask for `/idm-upgrade host01 host02 at 2026-12-05T22:00+01:00`" in text and NEXT_WINDOW not in text


async def test_at_next_window_schedules_for_the_opening(tmp_path):
    admitted = await admit(config(tmp_path), ["host01"], NEXT_WINDOW)
    assert admitted.scheduled_for == OPENS
    assert admitted.schedule == "Sat 2026-12-05 22:00 CET (21:00 UTC) in window weekend"


async def test_at_next_window_while_it_is_open_starts_now(tmp_path):
    assert await admit(config(tmp_path), ["host01"], NEXT_WINDOW, now=OPENS) == Admitted(None)


async def test_at_next_window_needs_one_window_for_every_host(tmp_path):
    text = await refusal(config(tmp_path), ["host01", "host02"], NEXT_WINDOW)
    assert text == (
        "host02 has no maintenance window, so there is no next window to wait for; ask for a time instead. To run "
        "at the earliest allowed time (2026-12-05 21:00 UTC), ask for `/idm-upgrade host01 host02 at "
        "2026-12-05T22:00+01:00`"
    )
    assert (await refusal(config(tmp_path), ["host02", "host03"], NEXT_WINDOW)).endswith(
        "host02, host03 have no maintenance window, so there is no next window to wait for; ask for a time instead. "
        "To run at the earliest allowed time (2026-12-02 11:00 UTC), ask for `/idm-upgrade host02 host03 at "
        "2026-12-02T11:00Z`"
    )
    text = await refusal(config(tmp_path, host02_window="nightly"), ["host01", "host02"], NEXT_WINDOW)
    assert text == (
        "these hosts keep to different maintenance windows (host01: weekend; host02: nightly), so there is no "
        "one next window; ask for each window's hosts separately"
    )


async def test_at_a_time_inside_the_window_is_scheduled(tmp_path):
    admitted = await admit(config(tmp_path), ["host01"], utc("2026-12-06T01:30+01:00"))
    assert admitted.scheduled_for == utc("2026-12-06T00:30Z")
    assert admitted.schedule == "Sun 2026-12-06 01:30 CET (00:30 UTC) in window weekend"
    admitted = await admit(config(tmp_path), ["host02"], utc("2026-12-02T12:00Z"))  # no window
    assert admitted.scheduled_for == utc("2026-12-02T12:00Z") and admitted.schedule == "2026-12-02 12:00 UTC"


async def test_at_a_time_outside_the_window_is_offered_the_opening_after_it(tmp_path):
    text = await refusal(config(tmp_path), ["host01"], utc("2026-12-06T05:00+01:00"))
    assert text.startswith("2026-12-06T05:00+01:00: host01 is outside its maintenance window weekend")
    assert "it next opens Sat 2026-12-12 22:00 CET (21:00 UTC)" in text
    assert "`/idm-upgrade host01 at 2026-12-12T22:00+01:00`" in text


async def test_at_a_time_in_the_past_or_too_far_ahead_is_refused(tmp_path):
    cfg = config(tmp_path)
    text = await refusal(cfg, ["host02"], NOW - timedelta(minutes=2))
    assert text.startswith("2026-12-02T09:58Z is in the past (it is 2026-12-02 10:00 UTC now); ask for a later time")
    # a few seconds ago is now: started at once, not scheduled
    assert await admit(cfg, ["host02"], NOW - timedelta(seconds=30)) == Admitted(None)
    text = await refusal(cfg, ["host02"], NOW + timedelta(days=31))
    assert text == (
        "2027-01-02T10:00Z is more than 30 days ahead; a run can be scheduled up to 2027-01-01 10:00 UTC. "
        "Ask again nearer the time"
    )


FREEZE = ("2026-12-01T00:00+01:00", "2026-12-04T00:00+01:00", "year-end close")


async def test_a_freeze_refuses_with_its_end_in_utc_and_its_own_offset(tmp_path):
    cfg = config(tmp_path, freeze=[FREEZE])
    text = await refusal(cfg, ["host02"])
    assert text == (
        "a change freeze is on until 2026-12-03 23:00 UTC (2026-12-04T00:00+01:00): year-end close; no run starts "
        "during it. To run at the earliest allowed time (2026-12-03 23:00 UTC), ask for `/idm-upgrade host02 at 2026-12-04T00:00+01:00`"
    )
    # a window's host: offered the first opening after the freeze
    assert "ask for `/idm-upgrade host01 at next-window` or `/idm-upgrade host01 at 2026-12-05T22:00+01:00`" in (
        await refusal(cfg, ["host01"])
    )


async def test_a_scheduled_time_in_a_freeze_is_refused(tmp_path):
    cfg = config(tmp_path, freeze=[FREEZE])
    text = await refusal(cfg, ["host02"], utc("2026-12-03T12:00Z"))
    assert text.startswith("2026-12-03T12:00Z is in a change freeze: a change freeze is on until 2026-12-03 23:00 UTC")
    # the window's next opening in a freeze: refused, with the first opening after the freeze
    cfg = config(tmp_path, freeze=[("2026-12-05T00:00Z", "2026-12-07T00:00Z", "data centre move")])
    text = await refusal(cfg, ["host01"], NEXT_WINDOW)
    assert text.startswith(
        "the next opening of window weekend, Sat 2026-12-05 22:00 CET (21:00 UTC) to Sun 04:00 CET (03:00 UTC), "
        "is in a change freeze: a change freeze is on until 2026-12-07 00:00 UTC (2026-12-07T00:00Z): data centre move"
    )
    assert text.endswith("ask for `/idm-upgrade host01 at 2026-12-12T22:00+01:00`")


async def test_a_dry_run_ignores_windows_and_freezes_but_does_not_take_a_time(tmp_path):
    cfg = config(tmp_path, freeze=[FREEZE])
    assert await admit(cfg, ["host01", "host02"], check_only=True) == Admitted(None)
    assert "a dry run changes nothing and starts at once; leave out `at`" in (
        await refusal(cfg, ["host01"], NEXT_WINDOW, check_only=True)
    )
