"""A Slack stand-in: the Web API, response_url endpoints and Socket Mode, served by aiohttp on 127.0.0.1.

Real slack_sdk and slack_bolt talk to it unmodified::

    async with SlackStandIn(bot_token="xoxb-sandbox", app_token="xapp-sandbox", signing_secret=SECRET) as slack:
        client = AsyncWebClient(token="xoxb-sandbox", base_url=slack.api_url)     # api_url ends with "/"
        sender = slack.sender("http://127.0.0.1:3000/slack/events")               # signed HTTP to the bot
        await sender.send_slash_command(REQUESTER, "host01")
        await slack.socket_send_slash_command(REQUESTER, "host01")                # or over Socket Mode
        print(slack.render_channel(OPS_CHANNEL))

Modules: `slack_state` (the workspace: users, groups, channels, messages, ephemerals), `slack_api` (the Web API
methods), `slack_faults` (fault switches and the call log), `slack_response` (response_url and ack answers),
`slack_socket` (the Socket Mode WebSocket), `slack_sender` (signed slash commands and clicks), `slack_render`
(channels and threads as text), `slack_thread` (the stand-in in a background thread, for synchronous code).

Routes: ``POST|GET /api/<method>`` (form, JSON or query parameters; ``Authorization: Bearer`` or a `token`
parameter), ``POST /response/<id>`` (response_url), ``GET /socket-mode?ticket=...`` (WebSocket).

Tokens: every method wants the bot token, except `apps.connections.open`, which wants the app-level token.
A missing token is `not_authed`, a wrong one `invalid_auth`, the other kind `not_allowed_token_type`.

Faults (thread-safe; set them from any thread at any time):

- ``rate_limit(count, retry_after=1, methods=None)``: the next `count` calls (of `methods`, default all)
  answer HTTP 429 with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``.
- ``server_errors(count, status=500, methods=None)``: the next `count` calls answer `status`.
- ``pace_limit(per_second=1.0, burst=3, methods=("chat.postMessage",))``: Slack's per-channel pace as a
  token bucket per (method, channel); over it: 429 with Retry-After. ``pace_limit(None)`` turns it off.
- ``latency = seconds``: every API answer is that late.
- ``await down(seconds=None)``: stop listening (connections refused, open ones cut, WebSockets too) and
  listen again on the same port after `seconds` (or at ``await up()``).
- ``clear_faults()``.

Records: ``calls`` (every API call: `Call(time, method, params, status, error)`, time from time.monotonic()),
``calls_to(...)``, ``max_calls_in_window(...)``, ``ratelimited_count``, ``server_error_count``; the workspace
state (``workspace``, ``messages()``, ``thread()``, ``ephemerals()``, ``response_urls``); Socket Mode's
``socket.envelopes`` / ``socket.acks`` / ``socket.connections_opened``.

response_url (see `slack_response`): up to ``response_url_max_uses`` (5) successful uses within
``response_url_ttl`` (1800 s) seconds; both are attributes a test may change.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from sandbox.slack_api import ALL_METHODS, METHODS, ApiError
from sandbox.slack_faults import ApiFaults, Call
from sandbox.slack_render import RenderedMessage, channel_messages, render_channel, render_thread
from sandbox.slack_response import post_to_response_url, show_command_answer
from sandbox.slack_sender import (
    SlackSender,
    block_actions_payload,
    slash_command_fields,
    view_submission_payload,
)
from sandbox.slack_socket import SocketAck, SocketModeHub
from sandbox.slack_state import (
    OPS_CHANNEL,
    Button,
    Channel,
    Ephemeral,
    Message,
    ResponseUrl,
    User,
    Workspace,
    find_button,
)

__all__ = ["Call", "SlackSender", "SlackStandIn", "SocketAck"]


class SlackStandIn:
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-sandbox",
        app_token: str = "xapp-sandbox",
        signing_secret: str = "sandbox-signing-secret",
        host: str = "127.0.0.1",
        port: int = 0,
        users: Iterable[User] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        channels: Iterable[Channel] | None = None,
    ) -> None:
        self.bot_token, self.app_token, self.signing_secret = bot_token, app_token, signing_secret
        self.host, self.port = host, port
        self.workspace = Workspace(users, usergroups, channels)
        self.socket = SocketModeHub()
        self.faults = ApiFaults()
        self.response_url_ttl = 1800.0
        self.response_url_max_uses = 5
        self.response_url_latency = 0.0  # seconds before a response_url post is answered (a slow Slack)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._up_task: asyncio.Task[None] | None = None

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> SlackStandIn:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response)
        app.router.add_get("/socket-mode", self.socket.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()
        return self

    async def stop(self) -> None:
        if self._up_task is not None:
            self._up_task.cancel()
        await self.socket.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None

    async def __aenter__(self) -> SlackStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        """The base_url for slack_sdk clients (with the trailing slash they need)."""
        return f"{self.url}api/"

    @property
    def is_up(self) -> bool:
        return self._site is not None

    async def _listen(self) -> None:
        assert self._runner is not None, "start() first"
        if self._site is None:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
            self._site = site
            if self.port == 0:
                self.port = self._runner.addresses[0][1]

    async def down(self, seconds: float | None = None) -> None:
        """Stop listening now (open connections and WebSockets are cut); listen again after `seconds`."""
        if self._up_task is not None:
            self._up_task.cancel()
            self._up_task = None
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
            self.socket.cut_all()
            server = self._runner.server if self._runner is not None else None
            for connection in server.connections if server is not None else []:
                if connection.transport is not None:
                    connection.transport.abort()
        if seconds is not None:
            self._up_task = asyncio.get_running_loop().create_task(self._up_after(seconds))

    async def _up_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._up_task = None
        await self._listen()

    async def up(self) -> None:
        if self._up_task is not None:
            self._up_task.cancel()
            self._up_task = None
        await self._listen()

    # ----- faults and records (see ApiFaults) ------------------------------------------------------------

    def rate_limit(self, count: int, retry_after: int = 1, methods: Iterable[str] | None = None) -> None:
        self.faults.rate_limit(count, retry_after, methods)

    def server_errors(self, count: int, status: int = 500, methods: Iterable[str] | None = None) -> None:
        self.faults.server_errors(count, status, methods)

    def pace_limit(
        self, per_second: float | None = 1.0, burst: int = 3, methods: Iterable[str] = ("chat.postMessage",)
    ) -> None:
        self.faults.pace_limit(per_second, burst, methods)

    def real_pace(self, on: bool = True) -> None:
        """Answer 429 (Retry-After) beyond Slack's real pace (ApiFaults.real_pace)."""
        self.faults.real_pace(on)

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def latency(self) -> float:
        return self.faults.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.faults.latency = seconds

    @property
    def ratelimited_count(self) -> int:
        return self.faults.ratelimited_count

    @property
    def server_error_count(self) -> int:
        return self.faults.server_error_count

    @property
    def calls(self) -> list[Call]:
        return self.faults.calls

    def calls_to(self, method: str | None = None, channel: str | None = None, *, ok: bool | None = None) -> list[Call]:
        return self.faults.calls_to(method, channel, ok=ok)

    def max_calls_in_window(
        self,
        method: str = "chat.postMessage",
        channel: str | None = None,
        window: float = 1.0,
        *,
        ok: bool | None = True,
    ) -> int:
        return self.faults.max_calls_in_window(method, channel, window, ok=ok)

    def clear_calls(self) -> None:
        self.faults.clear_calls()

    # ----- the Web API -----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        params: dict[str, Any] = dict(request.query)
        bad_json = False
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    decoded = json.loads(await request.read() or b"{}")
                    params.update(decoded if isinstance(decoded, dict) else {})
                except ValueError:
                    bad_json = True
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        token = params.pop("token", None) or token
        status, body, headers = self._answer(method, params, token, bad_json)
        self.faults.record(
            Call(time.monotonic(), method, params, status, None if body.get("ok") else body.get("error"))
        )
        return web.json_response(body, status=status, headers=headers)

    def _answer(
        self, method: str, params: dict[str, Any], token: str | None, bad_json: bool
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        fault = self.faults.take(method, params)
        if fault is not None:
            return fault
        if method not in ALL_METHODS:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, {}
        wanted, other = self.bot_token, self.app_token
        if method == "apps.connections.open":
            wanted, other = other, wanted
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != wanted:
            return 200, {"ok": False, "error": "not_allowed_token_type" if token == other else "invalid_auth"}, {}
        if bad_json:
            return 200, {"ok": False, "error": "invalid_json"}, {}
        if method == "apps.connections.open":
            ticket = self.socket.issue_ticket()
            return 200, {"ok": True, "url": f"ws://{self.host}:{self.port}/socket-mode?ticket={ticket}"}, {}
        try:
            with self.workspace.lock:
                return 200, METHODS[method](self.workspace, params), {}
        except ApiError as exc:
            return 200, exc.body(), {}

    # ----- response_url ----------------------------------------------------------------------------

    def new_response_url(
        self,
        kind: str,
        channel: str | None,
        user: str,
        *,
        message_ts: str | None = None,
        message_is_ephemeral: bool = False,
    ) -> str:
        rid = secrets.token_urlsafe(12)
        url = f"{self.url}response/{rid}"
        record = ResponseUrl(rid, url, kind, channel, user, message_ts, message_is_ephemeral)
        with self.workspace.lock:
            self.workspace.response_urls[rid] = record
        return url

    @property
    def response_urls(self) -> dict[str, ResponseUrl]:
        return self.workspace.response_urls

    async def _response(self, request: web.Request) -> web.StreamResponse:
        if self.response_url_latency > 0:
            await asyncio.sleep(self.response_url_latency)
        status, answer = post_to_response_url(
            self.workspace,
            request.match_info["id"],
            await request.read(),
            ttl=self.response_url_ttl,
            max_uses=self.response_url_max_uses,
        )
        return web.json_response(answer, status=status)

    def show_command_answer(self, channel: str, user: str, answer: dict[str, Any] | None) -> None:
        """Show a slash command's ack body as Slack does: ephemeral to the user, or in the channel."""
        show_command_answer(self.workspace, channel, user, answer)

    # ----- the Slack side: HTTP sender and Socket Mode -----------------------------------------------

    def sender(self, bot_url: str, signing_secret: str | None = None) -> SlackSender:
        return SlackSender(bot_url, signing_secret or self.signing_secret, self)

    async def wait_socket_connected(self, timeout: float = 5.0) -> None:
        await self.socket.wait_connected(timeout)

    async def socket_deliver(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        timeout: float = 3.0,
        accepts_response_payload: bool = True,
        retry_attempt: int | None = None,
    ) -> SocketAck:
        return await self.socket.deliver(
            kind,
            payload,
            timeout=timeout,
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
        )

    async def socket_send_slash_command(
        self,
        user_id: str,
        text: str,
        channel_id: str = OPS_CHANNEL,
        command: str = "/idm-upgrade",
        *,
        timeout: float = 3.0,
    ) -> SocketAck:
        payload = slash_command_fields(self, user_id, text, channel_id, command)
        ack = await self.socket_deliver("slash_commands", payload, timeout=timeout)
        self.show_command_answer(channel_id, user_id, ack.payload)
        return ack

    async def socket_click_button(
        self,
        user_id: str,
        action_id: str,
        value: str | None = None,
        message_ts: str | None = None,
        channel_id: str = OPS_CHANNEL,
        *,
        block_id: str | None = None,
        timeout: float = 3.0,
    ) -> SocketAck:
        if message_ts is None:
            found = self.latest_button(channel_id, action_id, value=value)
            if found is None:
                raise LookupError(f"no message with a {action_id!r} button in {channel_id}")
            message_ts = found[0].ts
        payload = block_actions_payload(self, user_id, action_id, value, message_ts, channel_id, block_id=block_id)
        return await self.socket_deliver("interactive", payload, timeout=timeout)

    async def socket_submit_view(
        self, user_id: str, view_id: str, values: dict[str, dict[str, Any]] | None = None, *, timeout: float = 3.0
    ) -> SocketAck:
        payload = view_submission_payload(self, user_id, view_id, values)
        return await self.socket_deliver("interactive", payload, timeout=timeout)

    async def socket_disconnect(self, reason: str = "refresh_requested") -> int:
        return await self.socket.disconnect(reason)

    # ----- reading the workspace -------------------------------------------------------------------

    def messages(self, channel: str = OPS_CHANNEL) -> list[Message]:
        """Every live message in the channel, replies included, in ts order."""
        return [m for m in self.workspace.all_messages(self._cid(channel)) if not m.deleted]

    def top_level(self, channel: str = OPS_CHANNEL) -> list[Message]:
        return [m for m in self.workspace.top_level(self._cid(channel)) if not m.deleted]

    def message(self, channel: str, ts: str) -> Message | None:
        return self.workspace.message(self._cid(channel), ts)

    def thread(self, channel: str, ts: str) -> list[Message]:
        """[parent, *replies] of the thread `ts` (a parent's or a reply's ts)."""
        cid = self._cid(channel)
        with self.workspace.lock:
            parent = self.workspace.message(cid, ts)
            if parent is None:
                return []
            if parent.thread_ts:
                parent = self.workspace.message(cid, parent.thread_ts) or parent
            return [parent, *self.workspace.replies(cid, parent.ts)]

    def ephemerals(self, channel: str | None = None, user: str | None = None) -> list[Ephemeral]:
        return self.workspace.ephemerals_for(self._cid(channel) if channel else None, user)

    def latest_button(
        self, channel: str, action_id: str, *, value: str | None = None, thread_ts: str | None = None
    ) -> tuple[Message, Button] | None:
        """The newest message (in `thread_ts`'s thread, if given) whose current blocks have the button."""
        for message in reversed(self.messages(channel)):
            if thread_ts and thread_ts not in (message.ts, message.thread_ts):
                continue
            button = find_button(message.blocks, action_id, value)
            if button is not None:
                return message, button
        return None

    def post_as_user(
        self, user_id: str, text: str, channel: str = OPS_CHANNEL, thread_ts: str | None = None
    ) -> Message:
        """A person writes in the channel (or a thread), e.g. to check the bot ignores chatter."""
        return self.workspace.post(self._cid(channel), user_id, text, [], thread_ts=thread_ts, via="user")

    def render_channel(self, channel: str = OPS_CHANNEL, *, viewer: str | None = None, show_ts: bool = False) -> str:
        return render_channel(self.workspace, channel, viewer=viewer, show_ts=show_ts)

    def channel_messages(self, channel: str = OPS_CHANNEL) -> list[RenderedMessage]:
        """The channel as `render_channel` draws it, message by message."""
        return channel_messages(self.workspace, channel)

    def render_thread(self, channel: str, ts: str, *, viewer: str | None = None, show_ts: bool = False) -> str:
        return render_thread(self.workspace, channel, ts, viewer=viewer, show_ts=show_ts)

    def _cid(self, channel: str) -> str:
        found = self.workspace.channel(channel)
        return found.id if found else channel
