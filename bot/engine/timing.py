"""When may a request run: change freezes and maintenance windows, at request time.

A request starts now, ``at next-window`` (the next opening of the hosts' one window; now if it is open) or
``at`` a given time (in the future, within ``MAX_AHEAD``, inside the window). A freeze refuses any of them.
A refusal says what was wrong and, where there is one, offers the exact command that would be accepted:
the earliest time from then on that is in every host's window and in no freeze. Dry runs change nothing
and are not held to any of this (Admission does not ask).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot.core.config import Config, FreezeConfig
from bot.core.windows import MaintenanceWindow, freeze_at, window_for

if TYPE_CHECKING:
    from bot.engine.admission import Request

NEXT_WINDOW = "next-window"
# `at` a moment this little in the past is "now": the person typed it a few seconds ago.
PAST_SLACK = timedelta(seconds=60)
# Further ahead than this is more likely a typo (the year) than a plan; the window and freeze may change.
MAX_AHEAD = timedelta(days=30)
# first_allowed gives up after this many hops between windows and freezes (windows that never overlap).
_HOPS = 60


class TimingRefused(Exception):
    """Not at that time; the message says why and what to ask for instead."""


@dataclass(frozen=True)
class Timing:
    scheduled_for: datetime | None  # None: start now
    describe: str | None = None  # when a scheduled batch starts, in words: zone time (UTC), window
    window: str | None = None  # the window a scheduled batch keeps to, if any


def utc_text(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def iso_text(moment: datetime) -> str:
    """The form `at` takes (minutes unless it has seconds), ``Z`` for UTC."""
    text = moment.isoformat(timespec="minutes" if moment.second == 0 and moment.microsecond == 0 else "seconds")
    return text.replace("+00:00", "Z")


def freeze_text(freeze: FreezeConfig) -> str:
    return (
        f"a change freeze is on until {utc_text(freeze.end)} ({iso_text(freeze.end)}): {freeze.reason}; "
        "no run starts during it"
    )


class Timer:
    def __init__(self, config: Config):
        self.config = config

    def decide(self, request: Request, now: datetime) -> Timing:
        windows = {host: window_for(self.config, host) for host in request.hosts}
        if request.at is None:
            self._check(request, windows, now, now, asked="now")
            return Timing(None)
        if request.at == NEXT_WINDOW:
            return self._next_window(request, windows, now)
        assert isinstance(request.at, datetime)
        at = request.at
        if at < now - PAST_SLACK:
            raise TimingRefused(
                f"{iso_text(at)} is in the past (it is {utc_text(now)} now); ask for a later time, or leave out "
                f"`at` to start now{self._offer(request, windows, now, now)}"
            )
        if at > now + MAX_AHEAD:
            raise TimingRefused(
                f"{iso_text(at)} is more than {MAX_AHEAD.days} days ahead; a run can be scheduled up to "
                f"{utc_text(now + MAX_AHEAD)}. Ask again nearer the time"
            )
        if at <= now:
            self._check(request, windows, now, now, asked="now")
            return Timing(None)
        self._check(request, windows, at, now, asked=iso_text(at))
        return self._timing(at, windows)

    def _next_window(self, request: Request, windows: dict[str, MaintenanceWindow | None], now: datetime) -> Timing:
        bare = [host for host, window in windows.items() if window is None]
        if bare:
            soon = (now + timedelta(hours=1)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
            raise TimingRefused(
                f"{_names(bare)} {'has' if len(bare) == 1 else 'have'} no maintenance window, so there is no "
                f"next window to wait for; ask for a time instead{self._offer(request, windows, soon, now)}"
            )
        named = _by_window(windows)
        if len(named) > 1:
            which = "; ".join(f"{_names(hosts)}: {name}" for name, hosts in named.items())
            raise TimingRefused(
                f"these hosts keep to different maintenance windows ({which}), so there is no one next window; "
                "ask for each window's hosts separately"
            )
        window = _window(windows, next(iter(named.values())))
        if window.is_open(now):
            self._check(request, windows, now, now, asked="now")
            return Timing(None)
        opening = window.next_opening(now)
        if freeze := freeze_at(self.config, opening.start):
            raise TimingRefused(
                f"the next opening of window {window.name}, {window.describe(opening)}, is in a change freeze: "
                f"{freeze_text(freeze)}{self._offer(request, windows, freeze.end, now)}"
            )
        return self._timing(opening.start, windows)

    def _check(
        self,
        request: Request,
        windows: dict[str, MaintenanceWindow | None],
        moment: datetime,
        now: datetime,
        *,
        asked: str,
    ) -> None:
        """Refuse unless ``moment`` is in no freeze and inside every host's window."""
        if freeze := freeze_at(self.config, moment):
            when = "" if asked == "now" else f"{asked} is in a change freeze: "
            raise TimingRefused(f"{when}{freeze_text(freeze)}{self._offer(request, windows, freeze.end, now)}")
        parts = []
        for name, hosts in _by_window(windows).items():
            window = _window(windows, hosts)
            if window.is_open(moment):
                continue
            one = len(hosts) == 1
            parts.append(
                f"{_names(hosts)} {'is' if one else 'are'} outside {'its' if one else 'their'} maintenance window "
                f"{name} ({_shape(window)}); it next opens {window.describe(window.current_or_next(moment))}"
            )
        if not parts:
            return
        at = "" if asked == "now" else f"{asked}: "
        raise TimingRefused(f"{at}{'; '.join(parts)}{self._offer(request, windows, moment, now)}")

    def _offer(
        self,
        request: Request,
        windows: dict[str, MaintenanceWindow | None],
        after: datetime,
        now: datetime,
    ) -> str:
        """The commands that would be accepted for the earliest allowed time from ``after`` on: `at ISO`, and
        `at next-window` when that is what it would choose."""
        moment = self.first_allowed(windows, after)
        if moment is None:
            return ". No time in the next days is inside every host's window; ask for each window's hosts separately"
        if moment > now + MAX_AHEAD:
            return f". The earliest time it may run is {utc_text(moment)}, more than {MAX_AHEAD.days} days ahead"
        named = _by_window(windows)
        bare = any(w is None for w in windows.values())
        # `at` in the window's own offset when there is one window, as its people read the clock
        one = _window(windows, next(iter(named.values()))) if len(named) == 1 else None
        commands = []
        target = _target(request)
        if one is not None and not bare:
            chooses = now if one.is_open(now) else one.next_opening(now).start
            if chooses == moment:  # not when a freeze has the next opening: next-window would be refused
                commands.append(f"`/idm-upgrade {target} at {NEXT_WINDOW}`")
        commands.append(f"`/idm-upgrade {target} at {iso_text(one.local(moment) if one else moment)}`")
        return f". To run at the earliest allowed time ({utc_text(moment)}), ask for {' or '.join(commands)}"

    def first_allowed(self, windows: dict[str, MaintenanceWindow | None], after: datetime) -> datetime | None:
        """The earliest moment from ``after`` on that is in every host's window and in no freeze."""
        moment = after
        for _ in range(_HOPS):
            if freeze := freeze_at(self.config, moment):
                moment = freeze.end
                continue
            closed = [w for w in windows.values() if w is not None and not w.is_open(moment)]
            if not closed:
                return moment
            moment = max(w.current_or_next(moment).start for w in closed)
        return None

    def _timing(self, moment: datetime, windows: dict[str, MaintenanceWindow | None]) -> Timing:
        named = _by_window(windows)
        if len(named) == 1:
            window = _window(windows, next(iter(named.values())))
            return Timing(moment, f"{window.describe_moment(moment)} in window {window.name}", window.name)
        return Timing(moment, utc_text(moment))


def _by_window(windows: dict[str, MaintenanceWindow | None]) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    for host, window in windows.items():
        if window is not None:
            named.setdefault(window.name, []).append(host)
    return named


def _window(windows: dict[str, MaintenanceWindow | None], hosts: list[str]) -> MaintenanceWindow:
    window = windows[hosts[0]]
    assert window is not None  # hosts from _by_window have one
    return window


def _shape(window: MaintenanceWindow) -> str:
    config = window.config
    return f"{', '.join(config.days)} {config.start}-{config.end} {config.timezone}"


def _names(hosts: list[str]) -> str:
    return ", ".join(hosts)


def _target(request: Request) -> str:
    words = [request.group] if request.group else list(request.hosts)
    if request.ticket:
        words.append(f"ticket:{request.ticket}")
    return " ".join(words)
