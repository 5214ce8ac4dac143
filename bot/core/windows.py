"""Maintenance windows in their own time zone, and change freezes.

A window ``days = ["Sat"], start = "22:00", end = "04:00"`` opens the first time the wall clock of its zone
reaches 22:00 on a Saturday and closes the first time it then reaches 04:00 (on Sunday: ``end`` not after
``start`` means the window crosses midnight). "First reaches" settles the two awkward days of daylight
saving time: a start inside the hour that is skipped opens when the clock jumps past it, and a time that
happens twice (the hour repeated in autumn) counts the first time it happens. When start and end both fall
in the skipped hour the clock reaches them at the same instant: that day's opening has no length, and
there is none that day (it is not offered as "the next opening").

Every instant here is timezone-aware; what is returned is in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.core.config import DAYS, Config, FreezeConfig, WindowConfig


@dataclass(frozen=True)
class Opening:
    """One opening of a window: from ``start`` (inclusive) to ``end`` (exclusive), both UTC."""

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def first_reaching(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock in ``zone`` shows ``day`` ``clock`` or later."""
    wanted = datetime.combine(day, clock)
    early = wanted.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(early, zone) == wanted:
        return early  # the time exists; when it happens twice, fold=0 is the first time
    # Skipped (the clock jumps over it): the answer is the jump. fold=0 and fold=1 apply the offsets from
    # either side of the jump, so they land on either side of it; halve the distance, in whole seconds
    # (zones change offset on whole seconds).
    ends = sorted(int(wanted.replace(tzinfo=zone, fold=f).timestamp()) for f in (0, 1))
    low, high = ends
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= wanted:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


class MaintenanceWindow:
    def __init__(self, name: str, config: WindowConfig):
        self.name, self.config = name, config
        self.zone = ZoneInfo(config.timezone)
        self.start, self.end = _clock(config.start), _clock(config.end)
        self.weekdays = frozenset(DAYS.index(day) for day in config.days)
        self.crosses_midnight = self.end <= self.start

    def openings(self, since: datetime) -> Iterator[Opening]:
        """Every opening that has not ended at ``since``, in order (an endless iterator)."""
        day = since.astimezone(self.zone).date() - timedelta(days=2)
        while True:
            if day.weekday() in self.weekdays:
                start = first_reaching(day, self.start, self.zone)
                end_day = day + timedelta(days=1) if self.crosses_midnight else day
                opening = Opening(start, first_reaching(end_day, self.end, self.zone))
                if opening.end > since and opening.end > opening.start:  # an empty one is no opening
                    yield opening
            day += timedelta(days=1)

    def current_or_next(self, moment: datetime) -> Opening:
        """The opening ``moment`` is in, else the next one."""
        return next(self.openings(moment))

    def is_open(self, moment: datetime) -> bool:
        return self.current_or_next(moment).contains(moment)

    def next_opening(self, moment: datetime) -> Opening:
        """The next opening that starts after ``moment`` (not the one it may be in)."""
        return next(o for o in self.openings(moment) if o.start > moment)

    def local(self, moment: datetime) -> datetime:
        """``moment`` in the window's zone (its own offset, as a person there reads the clock)."""
        return moment.astimezone(self.zone)

    def iso(self, moment: datetime) -> str:
        """``2026-12-05T22:00+01:00``: the form `at` takes, in the window's offset."""
        return self.local(moment).isoformat(timespec="minutes")

    def describe(self, opening: Opening) -> str:
        """``Sat 2026-12-05 22:00 CET (21:00 UTC) to Sun 04:00 CET (03:00 UTC)``; the UTC date is written
        out when it is not the local one (Asia/Kolkata's 02:00 is the day before in UTC)."""
        return f"{self.describe_moment(opening.start)} to {self.describe_moment(opening.end, short=True)}"

    def describe_moment(self, moment: datetime, *, short: bool = False) -> str:
        local, utc = self.local(moment), moment.astimezone(UTC)
        day = f"{local:%a}" if short else f"{local:%a %Y-%m-%d}"
        utc_day = "" if utc.date() == local.date() else f"{utc:%a %Y-%m-%d} "
        return f"{day} {local:%H:%M} {local.tzname()} ({utc_day}{utc:%H:%M} UTC)"


def describe_moment(moment: datetime, window: MaintenanceWindow | None) -> str:
    """``Sat 2026-12-05 22:00 CET (21:00 UTC)`` in ``window``'s zone; with no window, or one kept in UTC,
    ``Sat 2026-12-05 21:00 UTC`` (once, not twice)."""
    if window is None or window.local(moment).tzname() == "UTC":
        return f"{moment.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC"
    return window.describe_moment(moment)


def window_for(config: Config, host: str) -> MaintenanceWindow | None:
    name = config.window_of(host)
    return MaintenanceWindow(name, config.windows[name]) if name else None


def freeze_at(config: Config, moment: datetime) -> FreezeConfig | None:
    """The change freeze that covers ``moment``, if any."""
    return next((f for f in config.freeze if f.covers(moment)), None)
