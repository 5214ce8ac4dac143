"""Socket Mode that a stop can always end: connecting is a task, one attempt at a time, with backoff.

slack_sdk's aiohttp `SocketModeClient.connect()` retries forever until it has a connection, logging a
traceback each time, and Bolt's `connect_async()` awaits it: while Slack is unreachable `serve` never got
as far as waiting for SIGTERM. Here `connect()` makes one attempt and raises what failed, and `SocketLink`
retries in a task of its own (one log line per failed attempt, backoff doubling up to a bound), which
`close()` cancels in any state. Once connected, slack_sdk's own monitor keeps the connection (its
reconnects call the same one-attempt `connect()`, and it logs a failure in one line and tries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
# the WebSocket URL's ticket lets anyone holding it receive the app's events while it is valid
_TICKET = re.compile(r"ticket=[^&\s'\"]+")


class OneAttemptClient(SocketModeClient):
    """slack_sdk's client, with `connect()` making one attempt and raising what failed."""

    async def issue_new_wss_url(self) -> str:
        # as slack_sdk's, without its multi-line error log and its wait on a rate limit (SocketLink backs off)
        response = await self.web_client.apps_connections_open(app_token=self.app_token)
        return str(response["url"])

    async def connect(self) -> None:
        old = self.current_session
        # while the old session closes, its receiver must not start a reconnect of its own
        self.auto_reconnect_enabled = False
        try:
            if old is not None:
                with contextlib.suppress(Exception):  # a broken session may fail to close; it is dropped anyway
                    await old.close()
            if self.aiohttp_client_session.closed and not self.closed:
                self.aiohttp_client_session = aiohttp.ClientSession()
            if self.wss_uri is None:
                self.wss_uri = await self.issue_new_wss_url()
            try:
                self.current_session = await self.aiohttp_client_session.ws_connect(
                    self.wss_uri,
                    autoping=False,
                    heartbeat=self.ping_interval,
                    proxy=self.proxy,
                    ssl=self.web_client.ssl if self.web_client.ssl is not None else True,
                )
            except BaseException:
                self.wss_uri = None  # a ticket serves one connection: the next attempt asks for a new URL
                raise
        finally:
            if not self.closed:
                self.auto_reconnect_enabled = self.default_auto_reconnect_enabled
        self.stale = False
        await self.current_session.ping(f"sdk-ping-pong:{time.time()}".encode())
        for task in (self.current_session_monitor, self.message_receiver):
            if task is not None:
                task.cancel()
        self.current_session_monitor = asyncio.ensure_future(self.monitor_current_session())
        self.message_receiver = asyncio.ensure_future(self.receive_messages())


def failure_text(exc: BaseException) -> str:
    """One line saying why an attempt failed, without the WebSocket ticket."""
    if isinstance(exc, SlackApiError):
        text = f"apps.connections.open answered {exc.response.get('error') or exc.response.status_code}"
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return _TICKET.sub("ticket=<redacted>", text)


class SocketLink:
    """Bolt's Socket Mode handler with the one-attempt client, connected by a task that close() ends."""

    def __init__(
        self,
        app: AsyncApp,
        app_token: str,
        web_client: AsyncWebClient,
        *,
        first_retry_seconds: float = FIRST_RETRY_SECONDS,
        max_retry_seconds: float = MAX_RETRY_SECONDS,
        ping_interval: float = 10,
    ):
        self.handler = AsyncSocketModeHandler.__new__(AsyncSocketModeHandler)
        self.handler.app, self.handler.app_token = app, app_token
        # apps.connections.open without slack_sdk's retries: each attempt is one call and one log line, and
        # the retrying (with backoff) is _connect's
        opener = AsyncWebClient(base_url=web_client.base_url, ssl=web_client.ssl, retry_handlers=[])
        self.client = self.handler.client = OneAttemptClient(
            app_token=app_token, logger=app.logger, web_client=opener, ping_interval=ping_interval
        )
        self.client.socket_mode_request_listeners.append(self.handler.handle)  # type: ignore[arg-type]
        self.first_retry_seconds, self.max_retry_seconds = first_retry_seconds, max_retry_seconds
        self.attempts = 0
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._connect(), name="socket-mode-connect")

    async def _connect(self) -> None:
        delay = self.first_retry_seconds
        while True:
            self.attempts += 1
            try:
                await self.client.connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "Socket Mode: connection attempt %d failed (%s); next attempt in %g s",
                    self.attempts,
                    failure_text(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_seconds)
                continue
            log.info("connected to Slack with Socket Mode (attempt %d)", self.attempts)
            self.connected.set()
            return

    async def close(self) -> None:
        """Stop connecting, whatever the state, and close the socket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()
