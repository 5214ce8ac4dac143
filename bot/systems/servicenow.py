"""ServiceNow change requests, read through the Table API (aiohttp): does change CHG… authorize a run now?

One call per check: ``GET {url}{table_path}?sysparm_query=number=CHG…&sysparm_fields=…`` with HTTP Basic
(SERVICENOW_USERNAME / SERVICENOW_PASSWORD) and ``sysparm_display_value=false``, so ``state`` and
``approval`` come as raw values (``-1`` is Implement out of the box; ``[change.servicenow]
implement_states`` / ``approved_values`` follow an instance's customizations) and the dates as
``YYYY-MM-DD HH:MM:SS`` in UTC. The answer is ``{"result": [...]}``, an empty list when no change has
that number.

``check`` raises ChangeRefused naming every condition that failed (not found, not approved, not in
Implement, before its planned start or after its planned end), or ChangeCheckFailed when ServiceNow could not
be asked (credentials refused, no answer, a 5xx, something that is not the Table API's JSON). Neither
carries the password or the Authorization header. Logging: one DEBUG line per request (path, status).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.core.config import Secrets, ServiceNowConfig
from bot.core.errors import ChangeCheckFailed, ChangeRefused

log = logging.getLogger(__name__)

FIELDS = ("number", "state", "approval", "start_date", "end_date", "short_description")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# sysparm_query is an encoded query: ^ joins conditions. A ticket is a plain number, so anything else is
# refused here rather than sent, whatever change.ticket_pattern allows.
_NUMBER = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class ServiceNowChanges:
    """A ChangeChecker (bot.engine.admission) for one instance. Call ``close()`` when done.

    A session passed in is used as is and left open on close; otherwise the client opens its own on first use.
    """

    def __init__(
        self, config: ServiceNowConfig, secrets: Secrets, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        username, password = secrets.servicenow_username, secrets.servicenow_password
        missing = [
            name
            for name, value in (("SERVICENOW_USERNAME", username), ("SERVICENOW_PASSWORD", password))
            if value is None or not value.get_secret_value()
        ]
        if missing:
            raise ValueError(f"ServiceNow credentials missing: set {' and '.join(missing)} in the environment")
        assert username is not None and password is not None
        self.config = config
        credentials = f"{username.get_secret_value()}:{password.get_secret_value()}"
        self._basic = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        self._session, self._own_session = session, session is None

    @property
    def where(self) -> str:
        return f"ServiceNow at {self.config.url}"

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds))
        return self._session

    async def fetch(self, ticket: str) -> dict[str, Any] | None:
        """The change request's fields (raw values), or None when ServiceNow has no change with that number."""
        if not _NUMBER.match(ticket):
            raise ChangeRefused(f"`{ticket[:40]}` is not a change number ServiceNow could look up")
        params = {
            "sysparm_query": f"number={ticket}",
            "sysparm_fields": ",".join(FIELDS),
            "sysparm_display_value": "false",
            "sysparm_limit": "1",
        }
        headers = {"Authorization": self._basic, "Accept": "application/json"}
        path = self.config.table_path
        unanswered = f"{self.where} did not answer the change lookup for {ticket}"
        try:
            async with self._http().get(
                self.config.url + path,
                params=params,
                headers=headers,
                ssl=self.config.verify_tls,  # False: the instance's certificate is not checked
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
            ) as response:
                status = response.status
                body = await response.read()
        except TimeoutError:
            raise ChangeCheckFailed(
                f"{unanswered} within {self.config.timeout_seconds:g} s; nothing was started. Try again later, or "
                "raise change.servicenow.timeout_seconds"
            ) from None
        except aiohttp.ClientError as exc:
            raise ChangeCheckFailed(
                f"{unanswered} ({type(exc).__name__}: {_reason(exc)}); nothing was started. Check "
                "change.servicenow.url and that the instance is reachable from the bot"
            ) from None
        log.debug("servicenow GET %s -> %s", path, status)
        if status in (401, 403):
            raise ChangeCheckFailed(
                f"{self.where} refused the bot's credentials (HTTP {status}) when looking up {ticket}; nothing was "
                "started. Check SERVICENOW_USERNAME / SERVICENOW_PASSWORD and that the account may read "
                "change_request"
            )
        if status != 200:
            raise ChangeCheckFailed(f"{unanswered}: it answered HTTP {status}; nothing was started. Try again later")
        try:
            result = json.loads(body)["result"]
            if not isinstance(result, list) or not all(isinstance(row, dict) for row in result):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ChangeCheckFailed(
                f"{unanswered}: the answer is not the Table API's JSON; nothing was started. Check "
                "change.servicenow.url and table_path"
            ) from None
        # an instance may ignore sysparm_query for a field it does not know: take only the exact number
        return next((row for row in result if row.get("number") == ticket), None)

    async def check(self, ticket: str, moment: datetime) -> None:
        change = await self.fetch(ticket)
        if change is None:
            raise ChangeRefused(f"ServiceNow has no change request {ticket}")
        problems = []
        approval = str(change.get("approval") or "")
        if approval not in self.config.approved_values:
            problems.append(
                f"it is not approved (approval is {approval or 'empty'!r}; wanted "
                f"{' or '.join(map(repr, self.config.approved_values))})"
            )
        state = str(change.get("state") or "")
        if state not in self.config.implement_states:
            problems.append(
                f"it is not in the Implement state (state is {state or 'empty'!r}; wanted "
                f"{' or '.join(map(repr, self.config.implement_states))})"
            )
        start, end = _date(change.get("start_date")), _date(change.get("end_date"))
        if start is None or end is None:
            problems.append("it has no planned start and end dates")
        elif moment < start:
            problems.append(f"{_when(moment)} is before its planned start {_when(start)} (planned end {_when(end)})")
        elif moment > end:
            problems.append(f"{_when(moment)} is after its planned end {_when(end)} (planned start {_when(start)})")
        if problems:
            raise ChangeRefused("; ".join(problems))


def _date(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    # connection errors name host and port, never the Authorization header; keep the line short
    text = str(exc) or type(exc).__name__
    return text[:160]
