"""Maintenance windows: worked days (midnight, the DST days of two zones, UTC, every day), then a property test
against a brute force that walks the wall clock minute by minute, as a person watching it would."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.core.config import DAYS, WindowConfig
from bot.core.windows import MaintenanceWindow, Opening


def window(days, start, end, zone) -> MaintenanceWindow:
    return MaintenanceWindow("w", WindowConfig(days=days, start=start, end=end, timezone=zone))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- worked days -------------------------------------------------------------------------------------------


def test_saturday_night_in_berlin_crosses_midnight():
    w = window(["Sat"], "22:00", "04:00", "Europe/Berlin")
    opening = Opening(utc("2026-12-05T21:00Z"), utc("2026-12-06T03:00Z"))  # CET is UTC+1
    assert w.current_or_next(utc("2026-12-02T10:00Z")) == opening
    assert not w.is_open(utc("2026-12-05T20:59:59Z"))
    assert w.is_open(utc("2026-12-05T21:00Z")) and w.is_open(utc("2026-12-06T02:59:59Z"))
    assert not w.is_open(utc("2026-12-06T03:00Z"))  # the end is not part of the window
    assert w.current_or_next(utc("2026-12-06T01:00Z")) == opening  # inside: the opening it is in
    assert w.next_opening(utc("2026-12-06T01:00Z")).start == utc("2026-12-12T21:00Z")  # the one after
    assert w.describe(opening) == "Sat 2026-12-05 22:00 CET (21:00 UTC) to Sun 04:00 CET (03:00 UTC)"
    assert w.iso(opening.start) == "2026-12-05T22:00+01:00"


@pytest.mark.parametrize(
    ("zone", "day", "start", "end", "opens", "closes"),
    [
        # Berlin, Sun 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        ("Europe/Berlin", "2026-03-29", "02:30", "03:30", "2026-03-29T01:00Z", "2026-03-29T01:30Z"),  # start skipped
        ("Europe/Berlin", "2026-03-29", "01:30", "02:30", "2026-03-29T00:30Z", "2026-03-29T01:00Z"),  # end skipped
        # Berlin, Sun 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00 UTC); 02:00-03:00 happens twice.
        ("Europe/Berlin", "2026-10-25", "02:30", "04:00", "2026-10-25T00:30Z", "2026-10-25T03:00Z"),  # start twice
        ("Europe/Berlin", "2026-10-25", "01:00", "02:30", "2026-10-24T23:00Z", "2026-10-25T00:30Z"),  # end twice
        # New York, Sun 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        ("America/New_York", "2026-03-08", "02:30", "03:30", "2026-03-08T07:00Z", "2026-03-08T07:30Z"),
        ("America/New_York", "2026-03-08", "01:00", "02:15", "2026-03-08T06:00Z", "2026-03-08T07:00Z"),
        # New York, Sun 2026-11-01: 02:00 EDT goes back to 01:00 EST (06:00 UTC); 01:00-02:00 happens twice,
        # and 02:00 is first shown an hour after the first 01:59.
        ("America/New_York", "2026-11-01", "01:30", "02:00", "2026-11-01T05:30Z", "2026-11-01T07:00Z"),
        ("America/New_York", "2026-11-01", "00:30", "01:30", "2026-11-01T04:30Z", "2026-11-01T05:30Z"),
    ],
)
def test_the_daylight_saving_days(zone, day, start, end, opens, closes):
    w = window(["Sun"], start, end, zone)
    opening = w.current_or_next(utc(f"{day}T00:00Z") - timedelta(days=1))
    assert opening == Opening(utc(opens), utc(closes))
    assert w.is_open(opening.start) and not w.is_open(opening.end)
    assert not w.is_open(opening.start - timedelta(seconds=1))


def test_a_time_shown_twice_does_not_open_the_window_twice():
    # Berlin 01:00-02:30 on 2026-10-25 closes at the first 02:30 (CEST); the clock shows 02:00-02:30 again
    # an hour later (CET), and that is not a second opening.
    w = window(["Sun"], "01:00", "02:30", "Europe/Berlin")
    second_time = utc("2026-10-25T02:15+01:00")
    assert second_time.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M %Z") == "02:15 CET"
    assert not w.is_open(second_time)
    assert w.next_opening(second_time).start == utc("2026-11-01T00:00Z")


def test_a_window_inside_the_skipped_hour_has_no_opening_that_day():
    # 02:15-02:45 in Berlin on 2026-03-29: the clock reaches both at 03:00 CEST; nothing is offered for that day.
    w = window(["Sun"], "02:15", "02:45", "Europe/Berlin")
    before = utc("2026-03-28T12:00Z")
    assert w.current_or_next(before) == Opening(utc("2026-04-05T00:15Z"), utc("2026-04-05T00:45Z"))
    assert w.next_opening(before).start == utc("2026-04-05T00:15Z")
    assert not w.is_open(utc("2026-03-29T01:00Z"))


def test_utc_and_every_day():
    w = window(list(DAYS), "06:00", "05:59", "UTC")  # crosses midnight: shut one minute a day
    assert w.is_open(utc("2026-07-01T05:58:59Z")) and not w.is_open(utc("2026-07-01T05:59Z"))
    assert w.current_or_next(utc("2026-07-01T05:59:30Z")) == Opening(utc("2026-07-01T06:00Z"), utc("2026-07-02T05:59Z"))
    w = window(list(DAYS), "09:00", "17:00", "UTC")
    assert w.next_opening(utc("2026-07-04T17:00Z")).start == utc("2026-07-05T09:00Z")  # a Saturday, then Sunday
    assert w.describe(w.current_or_next(utc("2026-07-04T12:00Z"))) == (
        "Sat 2026-07-04 09:00 UTC (09:00 UTC) to Sat 17:00 UTC (17:00 UTC)"
    )


def test_the_utc_date_is_written_when_it_is_not_the_local_one():
    w = window(["Mon"], "02:00", "04:00", "Asia/Kolkata")  # UTC+05:30
    opening = w.current_or_next(utc("2026-12-01T00:00Z"))
    assert (
        w.describe(opening)
        == "Mon 2026-12-07 02:00 IST (Sun 2026-12-06 20:30 UTC) to Mon 04:00 IST (Sun 2026-12-06 22:30 UTC)"
    )
    assert w.iso(opening.start) == "2026-12-07T02:00+05:30"


# -- the property: agree with a person watching the wall clock ------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",  # southern hemisphere: DST from October to April
    "Asia/Kolkata",  # +05:30, no DST
    "Australia/Lord_Howe",  # +10:30, DST of 30 minutes
    "America/St_Johns",  # -03:30 / -02:30
    "America/Santiago",  # changes at midnight: 24:00 back to 23:00, 00:00 on to 01:00
    "Asia/Kathmandu",  # +05:45
]
FIRST, LAST = datetime(2020, 1, 1, tzinfo=UTC), datetime(2035, 12, 31, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _transitions(zone: str) -> list[datetime]:
    """Every instant in 2020-2035 at which the zone's offset changes (to draw instants near them)."""
    tz, found, day = ZoneInfo(zone), [], FIRST
    while day < LAST:
        after = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset():
            low, high = day, after
            while high - low > MINUTE:
                middle = low + (high - low) / 2
                if middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high)
        day = after
    return found


TRANSITIONS = {zone: _transitions(zone) for zone in ZONES}


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def brute_force(config: WindowConfig, moment: datetime) -> list[Opening]:
    """The openings from a while before ``moment`` to the first one that starts after it, found by watching
    the wall clock each minute: closed, it opens when the clock first shows a listed day's start (it had
    never shown that day and time or later before); open, it closes when the clock first shows the end."""
    tz = ZoneInfo(config.timezone)
    start, end = time.fromisoformat(config.start), time.fromisoformat(config.end)
    listed = {DAYS.index(day) for day in config.days}
    crosses = end <= start
    # Three days back: longer than any opening lasts, so the watch is in step with the clock by ``moment``.
    now = moment.replace(second=0, microsecond=0) - timedelta(days=3)
    highest = _wall(now - MINUTE, tz)  # the latest the clock has shown
    opened: tuple[datetime, datetime] | None = None  # (when, the wall time it closes at)
    found: list[Opening] = []
    while not found or found[-1].start <= moment:
        shows = _wall(now, tz)
        if opened is not None and shows >= opened[1]:
            found.append(Opening(opened[0], now))
            opened = None
        if opened is None:
            for day in (shows.date() - timedelta(days=1), shows.date()):
                starts_at = datetime.combine(day, start)
                if day.weekday() in listed and highest < starts_at <= shows:
                    closes_at = datetime.combine(day + timedelta(days=1) if crosses else day, end)
                    if shows < closes_at:  # reached together (both in a skipped hour): no opening
                        opened = (now, closes_at)
        highest = max(highest, shows)
        now += MINUTE
    return found


def _instant(draw_zone: str):
    near = (
        st.sampled_from(TRANSITIONS[draw_zone]).flatmap(
            lambda t: st.integers(-3 * 86400, 3 * 86400).map(lambda s: t + timedelta(seconds=s))
        )
        if TRANSITIONS[draw_zone]
        else st.nothing()
    )
    anywhere = st.integers(int(FIRST.timestamp()), int(LAST.timestamp())).map(lambda s: datetime.fromtimestamp(s, UTC))
    return st.one_of(anywhere, near)


# Start and end: anywhere in the day, or near the small hours in which zones change their clocks.
CLOCK = st.one_of(st.integers(0, 1439), st.integers(-90, 270).map(lambda m: m % 1440)).map(
    lambda m: f"{m // 60:02d}:{m % 60:02d}"
)


@st.composite
def cases(draw):
    zone = draw(st.sampled_from(ZONES))
    start = draw(CLOCK)
    end = draw(CLOCK.filter(lambda e: e != start))
    days = sorted(draw(st.sets(st.sampled_from(DAYS), min_size=1)), key=DAYS.index)
    return WindowConfig(days=days, start=start, end=end, timezone=zone), draw(_instant(zone))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(  # both ends in Lord Howe's skipped half hour (02:00-02:30 on 2026-10-04): no opening that day
    (WindowConfig(days=["Sun"], start="02:05", end="02:25", timezone="Australia/Lord_Howe"), utc("2026-10-03T12:00Z"))
)
def test_agrees_with_watching_the_clock_minute_by_minute(case):
    config, moment = case
    w = MaintenanceWindow("w", config)
    seen = brute_force(config, moment)
    current_or_next = next(o for o in seen if o.end > moment)
    assert w.is_open(moment) == current_or_next.contains(moment)
    assert w.current_or_next(moment) == current_or_next
    assert w.next_opening(moment) == next(o for o in seen if o.start > moment)


def test_the_brute_force_sees_the_skipped_hour_as_a_person_does():
    # The watch itself, on a day worked out by hand: Berlin 2026-03-29, 02:30-03:30 opens at the jump.
    config = WindowConfig(days=["Sun"], start="02:30", end="03:30", timezone="Europe/Berlin")
    assert brute_force(config, utc("2026-03-29T00:00Z"))[-1] == Opening(
        utc("2026-03-29T01:00Z"), utc("2026-03-29T01:30Z")
    )
    assert date(2026, 3, 29).weekday() == DAYS.index("Sun")
