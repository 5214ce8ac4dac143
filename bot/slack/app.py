"""`idm-upgrade serve`: wiring only. The runtime, the Bolt app, handlers, the threads; HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import Config, Secrets
from bot.engine.approvals import ApprovalPolicy
from bot.runtime import Runtime
from bot.slack.context import SlackContext, SlackGroups, SlackIdentities
from bot.slack.guard import RequestGuard
from bot.slack.intake import SHUTDOWN_GRACE_SECONDS, Intake, TrackedApp
from bot.slack.origin import SlackIdentity
from bot.slack.progress import SlackProgress
from bot.systems.services import Services
from handlers import actions, commands

log = logging.getLogger(__name__)


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
    values = {}
    for name in names:
        value = getattr(secrets, name.lower())
        if value is None:
            raise StartupError(f"{name} is not set in the environment; the Slack app needs it (see README)")
        values[name] = value.get_secret_value()
    return values


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
    ):
        names = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"] + (["SLACK_APP_TOKEN"] if socket_mode else [])
        tokens = require(secrets, *names)
        self.config, self.socket_mode = config, socket_mode
        self.app_token = tokens.get("SLACK_APP_TOKEN")
        self.client = web_client(tokens["SLACK_BOT_TOKEN"], api_url)
        self.policy = ApprovalPolicy(config.slack, SlackGroups(self.client), SlackIdentities(self.client))
        self.runtime = Runtime.build(config, secrets, policy=self.policy, services=services)
        self.store, self.engine, self.services = self.runtime.store, self.runtime.engine, self.runtime.services
        self.progress = SlackProgress(self.store, self.client, config, self.runtime.titles)
        self.engine.progress.sinks.append(self.progress)
        self.guard = RequestGuard(tokens["SLACK_SIGNING_SECRET"])
        self.app = TrackedApp(
            client=self.client, signing_secret=tokens["SLACK_SIGNING_SECRET"], process_before_response=False
        )
        self.intake = self.app.intake = Intake(
            self.store, SlackIdentity(self.client, config.slack.app_id), config.slack
        )
        self.app.use(self.intake.middleware)
        deps = SlackContext(self.engine, config, self.policy, self.progress.titles, self.intake)
        commands.register(self.app, deps)
        actions.register(self.app, deps)
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._slack_ok: tuple[float, bool] = (0.0, False)
        self.url: str | None = None
        self.shutdown_grace_seconds = SHUTDOWN_GRACE_SECONDS
        self._identity: asyncio.Task[object] | None = None

    async def start(self, port: int = 3000, host: str = "127.0.0.1") -> None:
        await self.engine.start()
        self.progress.start()
        await self.progress.catch_up()
        # who the bot is in Slack, asked now so the first request's ack does not wait for it (asked again then
        # if Slack cannot answer now)
        self._identity = asyncio.get_running_loop().create_task(self.intake.identity.get())
        await self.intake.resume(self.app)  # what the last shutdown acknowledged but could not finish
        if self.socket_mode:
            self._socket = AsyncSocketModeHandler(self.app, self.app_token, web_client=self.client)
            await self._socket.connect_async()
            log.info("connected to Slack with Socket Mode")
            return
        web_app = web.Application()
        web_app.router.add_post("/slack/events", self._events)
        web_app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        log.info("serving Slack at %s/slack/events", self.url)

    async def _events(self, request: web.Request) -> web.Response:
        if self.intake.stopping:  # not acknowledged, so Slack may send it again to the next instance
            return web.json_response({"error": "shutting down"}, status=503)
        with self.intake.receiving():
            return await self._receive(request)

    async def _receive(self, request: web.Request) -> web.Response:
        verdict = self.guard.verdict(await request.read(), request.headers)
        if isinstance(verdict, tuple):
            status, error = verdict
            if status == 400:
                log.warning("refused a signed request that is not shaped as Slack sends it")
            return web.json_response({"error": error}, status=status)
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

    async def _health(self, request: web.Request) -> web.Response:
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
        return web.json_response({"ok": healthy, **body}, status=200 if healthy else 503)

    async def stop(self) -> None:
        """Stop taking requests (HTTP answers 503; the socket closes), let the acknowledged ones finish (bounded;
        the rest wait in the inbox for the next start), and only then stop the engine and the store."""
        if self.intake.stopping:
            return  # stopped already (serve's signal, then the caller's cleanup)
        self.intake.stopping = True
        if self._socket is not None:
            await self._socket.close_async()
        await self.intake.drain(self.shutdown_grace_seconds)
        if self._identity is not None:
            self._identity.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.progress.stop()
        await self.runtime.close()
