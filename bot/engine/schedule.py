"""When a scheduled run may start, and where a window leaves a reboot: the rules, without the waiting.

A scheduled run that comes due starts at once when its host's window is open (or it has none) and no
freeze covers the moment; otherwise it moves to the first moment both allow. The engine does the waiting
and the writing (bot.engine.engine); this only answers "now, or when, and why".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.core.config import Config
from bot.core.windows import MaintenanceWindow, freeze_at, window_for

# A chain of freezes and closed windows longer than this is a configuration nobody means; give up looking.
MAX_HOPS = 50


@dataclass(frozen=True)
class Later:
    """Not now: start at ``moment`` instead, because ``why``."""

    moment: datetime
    why: str


def when_to_start(config: Config, host: str, now: datetime) -> Later | None:
    """None: the host's run may start at ``now``. Else the first moment the freezes and its window allow."""
    window = window_for(config, host)
    moment, reasons = now, []
    for _ in range(MAX_HOPS):
        if freeze := freeze_at(config, moment):
            reasons.append(f"a change freeze is on until {freeze.end.isoformat()}: {freeze.reason}")
            moment = freeze.end
            continue
        if window is not None and not window.is_open(moment):
            opening = window.current_or_next(moment)
            reasons.append(f"its maintenance window {window.name} is closed; it next opens {window.describe(opening)}")
            moment = opening.start
            continue
        break
    if moment == now:
        return None
    return Later(moment, "; ".join(dict.fromkeys(reasons)))


def last_closing(window: MaintenanceWindow, now: datetime) -> datetime:
    """When ``window`` last closed before ``now`` (it is closed at ``now``)."""
    ends = [o.end for o in _openings_between(window, now - timedelta(days=8), now) if o.end <= now]
    return ends[-1] if ends else now


def _openings_between(window: MaintenanceWindow, since: datetime, until: datetime) -> list:
    found = []
    for opening in window.openings(since):
        if opening.start > until:
            break
        found.append(opening)
    return found
