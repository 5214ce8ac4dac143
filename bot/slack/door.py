"""The HTTP front door's limits: what a stranger (anyone who has not sent a signed request) may hold, and for how long.

Issue 17: `serve --http` let 300 connections of almost 1 MiB each add 360 MiB, and 1,100 half-sent header lines
use every file descriptor, so Slack's own requests and a run's WinRM connections failed. What aiohttp's server
offers is used where it exists; the rest is the minimum of our own:

- **a header timeout**: aiohttp (up to 3.14) times out neither the request line nor the headers of a first
  request (newer versions start `keepalive_timeout` at the connection's start; the pin allows older ones), so
  `ConnectionGate` closes a connection whose first request has not reached a handler within
  `http.header_timeout_seconds`. Later requests on a kept-alive connection (only Slack's: a stranger's is closed
  after its answer) are covered by aiohttp's own `keepalive_timeout`, which closes a connection idle or stuck
  in its headers.
- **a body timeout and size limit**: the handler streams the body itself (`SlackBot._receive`) under
  `http.body_timeout_seconds`, refuses a declared Content-Length over `MAX_BODY_BYTES` before reading a byte,
  and stops reading a chunked or lying body the moment it passes the limit (413). aiohttp's `client_max_size`
  guards `request.read()`/`post()` as well, though nothing here calls them; `lingering_time = 0` so aiohttp
  does not read on (for 10 s by default) what was refused.
- **a cap on strangers' connections**: aiohttp has none. `ConnectionGate` counts the connections that have not
  carried a signed request; when a new one would pass `http.max_connections`, the oldest stranger is closed.
  Refusing the newest instead would let a patient stranger hold the cap forever and lock Slack out; evicting
  the oldest keeps the newest (a Slack request completes within milliseconds). A connection younger than
  `NEWCOMER_GRACE_SECONDS` is never closed for room, or a burst of strangers (they come back together when
  closed together) would evict a signed request between its connect and its signature check: the cap may then
  be passed by the connections of the last half second; the oldest go as soon as they are old enough. The cap is also held to a quarter of the process's descriptor limit,
  so the bot's own outgoing work (Slack's Web API, WinRM, Workspace ONE, vCenter, SQLite) always has
  descriptors left: those are the only resource they share with inbound connections (docs/ARCHITECTURE.md).
- **accept errors logged at a rate**: when descriptors run out anyway (other processes, a lower limit), asyncio
  logs `socket.accept() out of system resource` with a traceback at every retry and retries the accept each
  second by itself, so the server serves again as soon as descriptors are free. `AcceptErrorFilter` lets one
  line through per `ACCEPT_ERROR_LOG_INTERVAL_SECONDS`, with the count of those it held back. aiohttp likewise
  logs every request it cannot parse as an ERROR with a traceback; `BadRequestFilter` makes that a warning, as
  rarely.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

# Slack's payloads are a few KiB. The largest, a block_actions payload, carries the message clicked: ours are capped
# (a 3,500-character text, sections of 2,900: bot/slack/messages.py), but percent-encoded non-ASCII text can take
# 9 bytes a character; 128 KiB holds that with room, and 256 strangers hold at most 32 MiB of bodies.
MAX_BODY_BYTES = 128 * 1024
# What a request's headers may be (aiohttp's max_headers and max_field_size; its defaults are 128 and 8190).
MAX_HEADERS, MAX_FIELD_BYTES = 32, 4096
ACCEPT_ERROR_LOG_INTERVAL_SECONDS = 60.0
# A connection this young is not closed to make room (a signed request is verified within milliseconds of its
# connect; under load, within a few hundred).
NEWCOMER_GRACE_SECONDS = 0.5
# The share of the process's descriptors strangers may hold at most (the rest are the bot's own work's).
STRANGER_SHARE_OF_DESCRIPTORS = 4
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_MESSAGE = "socket.accept() out of system resource"


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (as systemd's LimitNOFILE would); (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def descriptor_share() -> int:
    """A quarter of the process's descriptor limit: the most strangers may hold."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(1, soft // STRANGER_SHARE_OF_DESCRIPTORS)


def stranger_cap(configured: int) -> int:
    """`http.max_connections`, held to a quarter of the descriptor limit so outgoing work keeps descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = descriptor_share()
    if configured > ceiling:
        log.warning(
            "http.max_connections = %d is more than a quarter of the descriptor limit (%d); using %d "
            "(raise LimitNOFILE to allow more)",
            configured,
            soft,
            ceiling,
        )
    return min(configured, ceiling)


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, seen by the gate: it only passes every event through."""

    __slots__ = ("gate", "handler", "since", "timer", "transport")

    def __init__(self, handler: Any, gate: ConnectionGate):
        self.handler, self.gate = handler, gate
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.since = 0.0  # the loop's time when it connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.gate._opened(self)
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate._closed(self)
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class ConnectionGate:
    """Connections that have not carried a signed request: at most `limit`, the oldest closed first, and none
    left waiting for its first request's headers longer than `header_timeout` seconds."""

    def __init__(self, limit: int, header_timeout: float, grace: float = NEWCOMER_GRACE_SECONDS):
        self.limit, self.header_timeout, self.grace = limit, header_timeout, grace
        self._strangers: dict[object, _Connection] = {}  # aiohttp's handler → connection, oldest first
        self.evicted = 0  # closed to make room for a newer one
        self.timed_out = 0  # closed in their headers
        self._trimming: asyncio.TimerHandle | None = None

    def factory(self, server: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Connection(server(), self)

    @property
    def strangers(self) -> int:
        return len(self._strangers)

    def headers_read(self, handler: object) -> None:
        """The request's headers are in (a handler runs): the body has a timeout of its own."""
        connection = self._strangers.get(handler)
        if connection is not None and connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None

    def trust(self, handler: object) -> None:
        """A signed request came on this connection: it is Slack's (or the reverse proxy's) and no longer counts."""
        connection = self._strangers.pop(handler, None)
        if connection is not None and connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None

    def is_stranger(self, handler: object) -> bool:
        return handler in self._strangers

    def close(self) -> None:
        if self._trimming is not None:
            self._trimming.cancel()
            self._trimming = None
        for connection in list(self._strangers.values()):
            self._drop(connection)

    def _opened(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        connection.since = now = loop.time()
        while len(self._strangers) >= self.limit:
            oldest = next(iter(self._strangers.values()))
            if now - oldest.since < self.grace:
                break  # every stranger is a newcomer: over the cap until they are old enough to go
            self._drop(oldest)
            self.evicted += 1
        connection.timer = loop.call_later(self.header_timeout, self._late, connection)
        self._strangers[connection.handler] = connection
        if len(self._strangers) > self.limit and self._trimming is None:
            # over the cap by newcomers: back to it once they are old enough, new arrivals or not (when
            # descriptors ran out, nothing new arrives to make room)
            self._trimming = loop.call_later(self.grace, self._trim)

    def _trim(self) -> None:
        self._trimming = None
        now = asyncio.get_running_loop().time()
        while len(self._strangers) > self.limit:
            oldest = next(iter(self._strangers.values()))
            if now - oldest.since < self.grace:
                self._trimming = asyncio.get_running_loop().call_later(self.grace - (now - oldest.since), self._trim)
                return
            self._drop(oldest)
            self.evicted += 1

    def _late(self, connection: _Connection) -> None:
        connection.timer = None
        if connection.handler in self._strangers:
            self.timed_out += 1
            self._drop(connection)

    def _closed(self, connection: _Connection) -> None:
        self._strangers.pop(connection.handler, None)
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None

    def _drop(self, connection: _Connection) -> None:
        self._closed(connection)
        if connection.transport is not None:
            connection.transport.abort()  # no flush: a stranger that does not read must not keep it open


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, with each connection's protocol seen by a ConnectionGate."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate, *, backlog: int = 128):
        super().__init__(runner, host, port, backlog=backlog)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner (what TCPSite.start does first)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.gate.factory(server), self._host, self._port, backlog=self._backlog
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        self.gate.close()


class RateLimitedLog(logging.Filter):
    """A logging filter: the records it `matches` at most one line per `interval` seconds, on one line, without
    the traceback, saying how many were held back; every other record passes untouched."""

    level = logging.ERROR

    def __init__(
        self, interval: float = ACCEPT_ERROR_LOG_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        super().__init__()
        self.interval, self._clock = interval, clock
        self._last: float | None = None
        self.suppressed = 0

    def matches(self, record: logging.LogRecord) -> bool:
        raise NotImplementedError

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.matches(record):
            return True
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return False
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        first_line = message.splitlines()[0] if message else ""
        detail = " ".join(str(exc).split())[:300] if exc is not None else ""  # one line, whatever a stranger sent
        held = "" if self._last is None else f"; {self.suppressed} more held back in the last {now - self._last:.0f} s"
        record.msg = f"{first_line}: {detail or 'no detail'} (at most one line per {self.interval:.0f} s{held})"
        record.args, record.exc_info, record.exc_text = (), None, None
        record.levelno, record.levelname = self.level, logging.getLevelName(self.level)
        self._last, self.suppressed = now, 0
        return True


class AcceptErrorFilter(RateLimitedLog):
    """On the 'asyncio' logger: out-of-descriptors errors (asyncio's accept retry, each second)."""

    def matches(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES:
            return True
        return record.getMessage().startswith(ACCEPT_MESSAGE)


class BadRequestFilter(RateLimitedLog):
    """On the 'aiohttp.server' logger: a request aiohttp could not parse (bad chunking, a header too long, not
    HTTP at all) is logged as an error with a traceback each time; it is a stranger's doing, not the bot's, so
    a warning at most once per interval. Exceptions from the bot's own handlers (500s) pass untouched."""

    level = logging.WARNING

    def matches(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return isinstance(exc, HttpProcessingError)
