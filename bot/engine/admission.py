"""May this request run, and when? The change board's rules, checked before anything is queued.

One place for Slack and the terminal: the ticket ([change]), the change request behind it (ServiceNow,
through a ``ChangeChecker`` the runtime provides), change freezes and maintenance windows ([freeze],
[windows]). A refusal says which rule and what to do; nothing is created.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bot.core.config import Config
from bot.core.errors import ChangeCheckFailed, ChangeRefused
from bot.core.models import Run, utcnow
from bot.core.windows import freeze_at, window_for

NEXT_WINDOW = "next-window"


class Refused(Exception):
    """The request is not accepted; the message says why and what to do."""


class ChangeChecker(Protocol):
    async def check(self, ticket: str, moment: datetime) -> None:
        """Raise ChangeRefused unless the change ``ticket`` authorizes work at ``moment``."""


@dataclass(frozen=True)
class Request:
    hosts: list[str]
    requester: str
    check_only: bool = False
    ticket: str | None = None
    at: datetime | str | None = None  # an aware datetime, NEXT_WINDOW, or None: now
    group: str | None = None


@dataclass(frozen=True)
class Admitted:
    scheduled_for: datetime | None = None  # None: start now
    notes: list[str] = field(default_factory=list)


class Admission:
    def __init__(self, config: Config, *, changes: ChangeChecker | None = None, clock: Callable[[], datetime] = utcnow):
        self.config, self.changes, self.clock = config, changes, clock

    async def admit(self, request: Request) -> Admitted:
        self.ticket_problem(request)
        scheduled_for = self.when(request)
        if request.ticket and not request.check_only:
            await self.check_change(request.ticket, scheduled_for or self.clock())
        return Admitted(scheduled_for)

    async def check_change(self, ticket: str, moment: datetime) -> None:
        """Refused unless the change ``ticket`` authorizes work at ``moment`` (nothing to check without a
        ChangeChecker: [change.servicenow] is not configured)."""
        if self.changes is None:
            return
        try:
            await self.changes.check(ticket, moment)
        except ChangeRefused as exc:
            raise Refused(f"change {ticket} does not allow this run: {exc}") from None
        except ChangeCheckFailed as exc:
            raise Refused(str(exc)) from None

    async def recheck_change(self, run: Run) -> None:
        """For a scheduled run about to start: its change must still authorize it now (it was checked for
        the scheduled moment at request time; the change board may have moved or closed it since).
        Refused says why; a run without a ticket, or without ServiceNow configured, passes."""
        if run.ticket and not run.check_only:
            await self.check_change(run.ticket, self.clock())

    def ticket_problem(self, request: Request) -> None:
        change = self.config.change
        if change.ticket == "off" or (request.check_only and not request.ticket):
            return
        # the example only where the configured pattern accepts it: a site with INC-style numbers gets the pattern
        sample = "CHG0012345" if re.fullmatch(change.ticket_pattern, "CHG0012345") else "TICKET"
        example = f"`/idm-upgrade host01 ticket:{sample}` (or `--ticket {sample}` at the terminal)"
        if request.ticket is None:
            if change.ticket == "required":
                raise Refused(
                    f'a change ticket is required (change.ticket = "required"); add one matching '
                    f"`{change.ticket_pattern}`, e.g. {example}"
                )
            return
        if not re.fullmatch(change.ticket_pattern, request.ticket):
            raise Refused(
                f"`{request.ticket[:40]}` is not a change ticket: it must match `{change.ticket_pattern}`, "
                f"e.g. {example}"
            )

    def when(self, request: Request) -> datetime | None:
        """None to start now, or the time to schedule the runs for; Refused outside the rules."""
        now = self.clock()
        moment = now if request.at in (None, NEXT_WINDOW) else request.at
        assert not isinstance(moment, str)
        if request.check_only:
            return None  # a dry run changes nothing: no window or freeze keeps it from looking
        if freeze := freeze_at(self.config, moment):
            raise Refused(f"a change freeze is on until {freeze.end.isoformat()}: {freeze.reason}")
        for host in request.hosts:
            window = window_for(self.config, host)
            if window is not None and not window.is_open(moment):
                opening = window.current_or_next(moment)
                raise Refused(
                    f"{host} is outside its maintenance window {window.name}; it next opens "
                    f"{window.describe(opening)}. Ask for `/idm-upgrade {host} at {NEXT_WINDOW}`"
                )
        return None if request.at is None else moment
