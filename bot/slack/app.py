"""`idm-upgrade serve`: wiring only. The runtime, the Bolt app, handlers, the threads; HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config, Secrets
from bot.core.models import utcnow
from bot.core.needs import serve_refusals
from bot.engine.approvals import ApprovalPolicy
from bot.runtime import Runtime
from bot.slack.context import SlackContext, SlackGroups, SlackIdentities
from bot.slack.door import (
    MAX_BODY_BYTES,
    MAX_FIELD_BYTES,
    MAX_HEADERS,
    AcceptErrorFilter,
    BadRequestFilter,
    ConnectionGate,
    GuardedSite,
    descriptor_share,
    stranger_cap,
)
from bot.slack.guard import RequestGuard
from bot.slack.home_tab import HomeTab
from bot.slack.intake import SHUTDOWN_GRACE_SECONDS, Intake, TrackedApp
from bot.slack.origin import SlackIdentity
from bot.slack.progress import SlackProgress
from bot.slack.socket import SocketLink
from bot.systems.services import Services
from handlers import actions, commands, home, home_actions, home_submit, retry, revert

log = logging.getLogger(__name__)

HEALTH_CACHE_SECONDS = 1.0
LISTEN_BACKLOG = 1024


class StartupError(ValueError):
    """Something the bot needs to start is missing; the message names it."""


def web_client(token: str, api_url: str | None = None) -> AsyncWebClient:
    base = api_url or os.environ.get("SLACK_API_URL") or "https://slack.com/api/"
    return AsyncWebClient(
        token=token,
        base_url=base if base.endswith("/") else base + "/",
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def require(secrets: Secrets, *names: str) -> dict[str, str]:
    """The named secrets' values; StartupError naming every missing one in one line."""
    missing = [name for name in names if getattr(secrets, name.lower()) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise StartupError(f"{', '.join(missing)} {verb} not set in the environment (see README, Secrets)")
    return {name: getattr(secrets, name.lower()).get_secret_value() for name in names}


class SlackBot:
    """The Slack front end: the runtime, the Bolt app and its listeners, the threads, HTTP or Socket Mode."""

    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        *,
        socket_mode: bool,
        api_url: str | None = None,
        services: Services | None = None,
        clock: Callable[[], datetime] = utcnow,  # admission's clock (windows, freezes); tests set it
    ):
        # everything missing at once, as check-config says it, not one variable per attempt
        refusals = serve_refusals(config, secrets, socket_mode=socket_mode)
        if refusals:
            raise StartupError("; ".join(refusals))
        names = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"] + (["SLACK_APP_TOKEN"] if socket_mode else [])
        tokens = require(secrets, *names)
        self.config, self.socket_mode = config, socket_mode
        self.app_token = tokens.get("SLACK_APP_TOKEN", "")
        self.client = web_client(tokens["SLACK_BOT_TOKEN"], api_url)
        self.policy = ApprovalPolicy(
            config.slack, SlackGroups(self.client), SlackIdentities(self.client), host_groups=config.groups
        )
        self.runtime = Runtime.build(config, secrets, policy=self.policy, services=services, clock=clock)
        self.store, self.engine, self.services = self.runtime.store, self.runtime.engine, self.runtime.services
        self.progress = SlackProgress(
            self.store,
            self.client,
            config,
            self.runtime.titles,
            self.runtime.engine.read_only_steps,
            offers=self.runtime.engine.offers,
        )
        self.engine.progress.sinks.append(self.progress)
        self.home = HomeTab(self.store, self.client, config, clock=clock)
        self.engine.progress.sinks.append(self.home)
        self.guard = RequestGuard(tokens["SLACK_SIGNING_SECRET"])
        self.app = TrackedApp(
            client=self.client, signing_secret=tokens["SLACK_SIGNING_SECRET"], process_before_response=False
        )
        group_channels = frozenset(g.channel for g in config.groups.values() if g.channel)
        self.intake = self.app.intake = Intake(
            self.store, SlackIdentity(self.client, config.slack.app_id), config.slack, group_channels
        )
        self.app.use(self.intake.middleware)
        deps = SlackContext(self.engine, config, self.policy, self.progress.titles, self.intake, home=self.home)
        commands.register(self.app, deps)
        retry.register(self.app, deps)  # before actions: its catch-all answers any button not registered first
        revert.register(self.app, deps)  # before actions: its catch-all answers any button left
        for listeners in (home, home_actions, home_submit):  # before actions too
            listeners.register(self.app, deps)
        actions.register(self.app, deps)
        self._runner: web.AppRunner | None = None
        self._socket: SocketLink | None = None
        self._slack_ok: tuple[float, bool] = (0.0, False)
        self.url: str | None = None
        self.shutdown_grace_seconds = SHUTDOWN_GRACE_SECONDS
        self._identity: asyncio.Task[object] | None = None
        # The HTTP front door's limits (bot/slack/door.py); tests shorten the timeouts.
        self.header_timeout_seconds = config.http.header_timeout_seconds
        self.body_timeout_seconds = config.http.body_timeout_seconds
        self.max_connections = config.http.max_connections
        self.max_body_bytes = MAX_BODY_BYTES
        self.gate: ConnectionGate | None = None
        self._accept_errors = AcceptErrorFilter()
        self._bad_requests = BadRequestFilter()
        self._health_check: asyncio.Task[tuple[int, dict[str, object]]] | None = None
        self._health_at = 0.0
        self.health_checks = 0

    async def start(self, port: int = 3000, host: str | None = None) -> None:
        """Socket Mode, or HTTP on `host` (default `http.bind`, 127.0.0.1 unless configured) and `port`."""
        await self.engine.start()
        self.progress.start()
        self.home.start()
        await self.progress.catch_up()
        # who the bot is in Slack, asked now so the first request's ack does not wait for it (asked again then
        # if Slack cannot answer now)
        self._identity = asyncio.get_running_loop().create_task(self.intake.identity.get())
        await self.intake.resume(self.app)  # what the last shutdown acknowledged but could not finish
        if self.socket_mode:
            # connecting is a task a stop can cancel: Slack may be unreachable for as long as it likes
            self._socket = SocketLink(self.app, self.app_token, self.client)
            self._socket.start()
            return
        host = host or self.config.http.bind
        # client_max_size: aiohttp's own limit, were anything to call request.read()/post() (nothing does).
        web_app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._door])
        web_app.router.add_post("/slack/events", self._events)
        web_app.router.add_get("/healthz", self._health)
        # keepalive_timeout: a kept-alive (Slack's) connection idle, or stuck in its next request's headers, is
        # closed after the header timeout; lingering_time = 0: what was refused is not read on.
        # max_headers, max_field_size: what a stranger's unfinished headers may hold in memory (Slack sends about
        # ten short headers; a proxy adds a few): 32 of 4 KiB, not aiohttp's 128 of 8 KiB.
        self._runner = web.AppRunner(
            web_app,
            access_log=None,
            keepalive_timeout=self.header_timeout_seconds,
            lingering_time=0,
            max_headers=MAX_HEADERS,
            max_field_size=MAX_FIELD_BYTES,
        )
        await self._runner.setup()
        self.gate = ConnectionGate(stranger_cap(self.max_connections), self.header_timeout_seconds)
        logging.getLogger("asyncio").addFilter(self._accept_errors)
        logging.getLogger("aiohttp.server").addFilter(self._bad_requests)
        # backlog: connections the kernel queues before the bot accepts them; under a flood of strangers a signed
        # request's connection must not be dropped at the door (aiohttp's default is 128)
        # (and, as asyncio accepts up to a backlog's worth at once, held to the cap's share of the descriptors)
        site = GuardedSite(self._runner, host, port, self.gate, backlog=min(LISTEN_BACKLOG, descriptor_share()))
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
        log.info("serving Slack at %s/slack/events", self.url)

    @web.middleware
    async def _door(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every request: its headers are in (the header timeout stops); a stranger's connection closes after the
        answer (one request per connection until a signed one proves it Slack's)."""
        gate = self.gate
        assert gate is not None
        gate.headers_read(request.protocol)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            if gate.is_stranger(request.protocol):
                exc.force_close()
            raise
        if gate.is_stranger(request.protocol):
            response.force_close()
        return response

    async def _events(self, request: web.Request) -> web.Response:
        if self.intake.stopping:  # not acknowledged, so Slack may send it again to the next instance
            return web.json_response({"error": "shutting down"}, status=503)
        with self.intake.receiving():
            return await self._receive(request)

    async def _receive(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        raw, signer = body
        verdict = self.guard.verdict(raw, request.headers, signer)
        if isinstance(verdict, tuple):
            status, error = verdict
            if status == 400:
                log.warning("refused a signed request that is not shaped as Slack sends it")
            return web.json_response({"error": error}, status=status)
        assert self.gate is not None
        self.gate.trust(request.protocol)
        try:
            bolt_request = AsyncBoltRequest(
                body=verdict,
                query=request.query_string,
                headers={k: request.headers.getall(k) for k in request.headers},
            )
            return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))
        except Exception as exc:  # signed but not a shape Slack sends
            log.warning("refused a malformed Slack request (%s)", type(exc).__name__)
            return web.json_response({"error": "malformed request"}, status=400)

    async def _read_body(self, request: web.Request) -> tuple[bytes, hmac.HMAC] | web.Response:
        """The body, read as it arrives into its HMAC, within the body timeout and size limit; or the refusal.

        Nothing here parses it: the signature is compared (guard.verdict) before anything reads the form."""
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            return web.json_response({"error": "request body too large"}, status=413)
        refused = self.guard.precheck(request.headers)
        if refused is not None:  # no Slack signature: the body is not read at all
            return web.json_response({"error": refused[1]}, status=refused[0])
        signer = self.guard.signer(request.headers)
        raw = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                while chunk := await request.content.readany():
                    if len(raw) + len(chunk) > self.max_body_bytes:  # chunked, or more than it declared
                        return web.json_response({"error": "request body too large"}, status=413)
                    signer.update(chunk)
                    raw += chunk
        except TimeoutError:
            return web.json_response({"error": "request body timed out"}, status=408)
        except (ConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            return web.json_response({"error": "request body incomplete"}, status=400)
        return bytes(raw), signer

    async def _health(self, request: web.Request) -> web.Response:
        """GET /healthz, open to anyone: so a flood of it costs neither the store's thread nor Slack's rate limit
        (auth.test), one check runs at a time and its answer serves every request for HEALTH_CACHE_SECONDS."""
        task = self._health_check
        if task is None or (task.done() and time.monotonic() - self._health_at >= HEALTH_CACHE_SECONDS):
            self._health_at = time.monotonic()
            task = self._health_check = asyncio.get_running_loop().create_task(self._check_health())
        status, body = await asyncio.shield(task)
        return web.json_response(body, status=status)

    async def _check_health(self) -> tuple[int, dict[str, object]]:
        self.health_checks += 1
        backlog: dict[str, int] | None = None
        try:
            owed = await self.store.call(self.progress.outbox.backlog)
            backlog = {"runs_not_projected": owed.runs_not_projected, "pending_messages": owed.pending_messages}
            database = "ok"
        except Exception as exc:
            database = f"error: {type(exc).__name__}"
        checked, ok = self._slack_ok
        if time.monotonic() - checked > 30:
            try:
                ok = bool((await self.client.auth_test()).get("ok"))
            except Exception:
                ok = False
            self._slack_ok = (time.monotonic(), ok)
        # a backlog is not unhealthy (Slack may be slow); it tells whether every thread has caught up
        body = {"database": database, "slack": "ok" if ok else "unreachable", "threads": backlog}
        healthy = database == "ok" and ok
        return 200 if healthy else 503, {"ok": healthy, **body}

    async def stop(self) -> None:
        """Stop taking requests (HTTP answers 503; the socket closes), let the acknowledged ones finish (bounded;
        the rest wait in the inbox for the next start), and only then stop the engine and the store."""
        if self.intake.stopping:
            return  # stopped already (serve's signal, then the caller's cleanup)
        self.intake.stopping = True
        if self._socket is not None:
            await self._socket.close()
        await self.intake.drain(self.shutdown_grace_seconds)
        if self._identity is not None:
            self._identity.cancel()
        if self._health_check is not None:
            self._health_check.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            logging.getLogger("asyncio").removeFilter(self._accept_errors)
            logging.getLogger("aiohttp.server").removeFilter(self._bad_requests)
        await self.progress.stop()
        await self.home.stop()
        await self.runtime.close()
