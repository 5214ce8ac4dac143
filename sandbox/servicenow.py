"""A ServiceNow Table API stand-in for change requests: aiohttp on 127.0.0.1, the instance's path and fields.

Real aiohttp (bot.systems.servicenow) talks to it unmodified::

    async with ServiceNowStandIn() as snow:
        snow.add("CHG0012345", start=now - timedelta(hours=1), end=now + timedelta(hours=3))
        config, secrets = snow.config(), snow.secrets()
        ...
        snow.requests                      # (path, query, status) of every request

What it serves: ``GET /api/now/table/change_request`` with HTTP Basic (401 with ServiceNow's error body
otherwise). ``sysparm_query`` is read for ``number=…`` (conditions joined by ``^``; others are ignored),
``sysparm_fields`` picks the fields. Answer: ``{"result": [...]}``, an empty list when no change has the
number; dates ``YYYY-MM-DD HH:MM:SS`` in UTC, ``state`` and ``approval`` as raw values (``-1`` is
Implement, ``-2`` Scheduled, ``3`` Closed, as out of the box).

Switches: ``fail_status = 500`` (any status: every request answers it), ``not_json = True`` (an HTML page,
as an instance behind a login portal answers), ``await go_down()`` / ``await come_back()`` (the port stops
accepting connections, then accepts again), ``delay_seconds`` (client timeouts).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from bot.core.config import Secrets, ServiceNowConfig

TABLE_PATH = "/api/now/table/change_request"  # the instance's own path, not the client's default
DEFAULT_USERNAME = "idm-upgrade-bot"
IMPLEMENT, SCHEDULED, CLOSED = "-1", "-2", "3"


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    status: int
    authorization: bool


class ServiceNowStandIn:
    def __init__(self, *, username: str = DEFAULT_USERNAME, password: str = "sandbox-snow-password", port: int = 0):
        self.host, self.port = "127.0.0.1", port
        self.username, self.password = username, password
        self.changes: dict[str, dict[str, str]] = {}
        self.requests: list[Seen] = []
        self.fail_status: int | None = None
        self.not_json = False
        self.delay_seconds = 0.0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # ----- changes ---------------------------------------------------------------------------------

    def add(
        self,
        number: str,
        *,
        start: datetime,
        end: datetime,
        state: str = IMPLEMENT,
        approval: str = "approved",
        short_description: str = "Upgrade the VMware Identity Manager connectors to 19.03.0.1",
    ) -> dict[str, str]:
        row = {
            "number": number,
            "state": state,
            "approval": approval,
            "start_date": _stamp(start),
            "end_date": _stamp(end),
            "short_description": short_description,
            "sys_id": binascii.hexlify(number.encode()).decode()[:32].ljust(32, "0"),
        }
        self.changes[number] = row
        return row

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> ServiceNowStandIn:
        app = web.Application()
        app.router.add_get(TABLE_PATH, self._table)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.come_back()
        return self

    async def come_back(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def go_down(self) -> None:
        """Stop listening (connections are refused) and keep the port, for come_back()."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            await self._runner.server.shutdown(0.1)  # and drop kept-alive connections, as a dead instance does

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ServiceNowStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config(self, **overrides: Any) -> ServiceNowConfig:
        return ServiceNowConfig(**{"url": self.url, "timeout_seconds": 5, **overrides})

    def secrets(self, **overrides: Any) -> Secrets:
        values: dict[str, Any] = {
            "servicenow_username": SecretStr(self.username),
            "servicenow_password": SecretStr(self.password),
        }
        return Secrets(**{**values, **overrides})

    def environment(self) -> dict[str, str]:
        return {"SERVICENOW_USERNAME": self.username, "SERVICENOW_PASSWORD": self.password}

    # ----- the API ---------------------------------------------------------------------------------

    async def _table(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        self.requests.append(
            Seen(request.path, dict(request.query), response.status, "Authorization" in request.headers)
        )
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if not self._authorized(request.headers.get("Authorization", "")):
            return web.json_response(
                {
                    "error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
                    "status": "failure",
                },
                status=401,
            )
        if self.fail_status is not None:
            return web.json_response(
                {"error": {"message": "Internal error", "detail": None}, "status": "failure"},
                status=self.fail_status,
            )
        if self.not_json:
            return web.Response(text="<html><body>Instance hibernating</body></html>", content_type="text/html")
        numbers = [
            part.split("=", 1)[1]
            for part in request.query.get("sysparm_query", "").split("^")
            if part.startswith("number=")
        ]
        rows = [self.changes[n] for n in numbers if n in self.changes]
        fields = [f for f in request.query.get("sysparm_fields", "").split(",") if f]
        if fields:
            rows = [{f: row.get(f, "") for f in fields} for row in rows]
        return web.json_response({"result": rows})

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        same_user = hmac.compare_digest(user.encode(), self.username.encode())
        return same_user & hmac.compare_digest(password.encode(), self.password.encode())


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
