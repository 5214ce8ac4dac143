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
from bot.engine.timing import NEXT_WINDOW as NEXT_WINDOW  # re-exported: the parser reads it from here
from bot.engine.timing import Timer, Timing, TimingRefused


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
    schedule: str | None = None  # when scheduled: the time in the window's zone (UTC) and the window, in words


class Admission:
    def __init__(self, config: Config, *, changes: ChangeChecker | None = None, clock: Callable[[], datetime] = utcnow):
        self.config, self.changes, self.clock = config, changes, clock
        self.timer = Timer(config)

    async def admit(self, request: Request) -> Admitted:
        self.ticket_problem(request)
        timing = self.timing(request)
        scheduled_for = timing.scheduled_for
        if request.ticket and not request.check_only:
            await self.check_change(request.ticket, scheduled_for or self.clock())
        return Admitted(scheduled_for, schedule=timing.describe)

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
        return self.timing(request).scheduled_for

    def timing(self, request: Request) -> Timing:
        """Freezes and windows (bot.engine.timing); a dry run changes nothing, so neither keeps it from looking."""
        if request.check_only:
            if request.at is not None:
                raise Refused("a dry run changes nothing and starts at once; leave out `at`")
            return Timing(None)
        try:
            return self.timer.decide(request, self.clock())
        except TimingRefused as exc:
            raise Refused(str(exc)) from None
