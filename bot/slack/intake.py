"""Every Slack request between Bolt's parsing and the listeners (a Bolt middleware), and the shutdown that
loses none of them.

- origin: a request from another workspace, organization, app or channel gets an ephemeral refusal from its
  listener (``context["refusal"]``) and changes nothing (bot.slack.origin);
- once only: each request is admitted once (bot.store.inbox); a replayed or retried copy is answered 200 with
  an empty body (Slack stops resending; nobody is told twice), does nothing and is audited;
- no acknowledged request is lost: Bolt (``process_before_response=False``) acks and then runs the listener as
  a task of its own, which the store's thread must outlive. Each listener registers itself (``handling``)
  before it acks; ``drain`` waits for them, bounded. What is still unfinished then is cancelled and stays
  ``received`` in the inbox with its body, and ``resume`` handles it at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.core.config import SlackConfig
from bot.slack.origin import SlackIdentity, origin_problem
from bot.store.inbox import Inbox
from bot.store.store import Store

log = logging.getLogger(__name__)

# How long a shutdown waits for acknowledged requests to finish before it leaves them for the next start.
SHUTDOWN_GRACE_SECONDS = 20.0
# What people send (a Home tab's clicks are block_actions too), and the events the bot subscribes to
# (app_home_opened): each checked for its origin and taken once. Anything else passes untouched.
KINDS = ("command", "block_actions", "view_submission", "event_callback")
_RESUMED = "idm_upgrade_resumed"  # context key: a request handled again at start-up, admitted long ago


def request_kind(body: dict[str, Any]) -> str | None:
    if isinstance(body.get("command"), str):
        return "command"
    kind = body.get("type")
    return kind if kind in KINDS else None


def request_user(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else body.get("user_id")
    if user_id is None and isinstance(body.get("event"), dict):  # an event (app_home_opened): its person
        user_id = body["event"].get("user")
    return user_id if isinstance(user_id, str) else None


def request_key(body: dict[str, Any]) -> str:
    """The identity of one request: Slack gives every command and click a fresh trigger_id; a copy keeps it."""
    trigger = body.get("trigger_id")
    if isinstance(trigger, str) and trigger:
        return f"trigger:{trigger}"
    return "body:" + hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class Intake:
    def __init__(
        self, store: Store, identity: SlackIdentity, slack: SlackConfig, group_channels: frozenset[str] = frozenset()
    ):
        self.store, self.identity, self.slack = store, identity, slack
        self.group_channels = group_channels  # [groups.NAME] channel: /idm-upgrade is taken there too
        self.inbox = Inbox(store)
        self.stopping = False
        self._receiving = 0  # requests between arrival and their ack
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- the middleware --------------------------------------------------------------------------

    async def middleware(
        self, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[None]]
    ) -> BoltResponse:
        """Bolt's global middleware: runs before the listeners (which run when this has called ``next``)."""
        body = req.body if isinstance(req.body, dict) else {}
        kind = request_kind(body)
        if kind is None or req.context.get(_RESUMED):
            await next()
            return resp
        if self.stopping:
            return BoltResponse(status=503, body="shutting down; Slack may send this again")
        problem = origin_problem(kind, body, await self.identity.get(), self.slack, self.group_channels)
        if problem is not None:
            log.info("refused a %s from %s: %s", kind, request_user(body), problem)
            req.context["refusal"] = problem
            await next()
            return resp
        key = request_key(body)
        retries = req.headers.get("x-slack-retry-num") or []
        retry = retries[0] if retries else None
        stored = {k: v for k, v in body.items() if k != "token"}  # not the legacy verification token
        if not await self.store.call(self.inbox.admit, key, kind, request_user(body), stored, retry=retry):
            log.warning("refused a repeated %s from %s (%s)", kind, request_user(body), "retry" if retry else "replay")
            return BoltResponse(status=200, body="")
        req.context["request_key"] = key
        await next()
        return resp

    async def dispatch(self, app: AsyncApp, req: AsyncBoltRequest) -> BoltResponse:
        """Bolt's dispatch, counted until the ack (by then the listener has registered itself)."""
        with self.receiving():
            response = await AsyncApp.async_dispatch(app, req)
            key = req.context.get("request_key")
            if key and response.status != 200:  # no listener took it: nothing is owed
                await self.store.call(self.inbox.done, key)
            return response

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Counts a request from its arrival to its ack (the HTTP endpoint, every Bolt dispatch)."""
        self._receiving += 1
        try:
            yield
        finally:
            self._receiving -= 1

    # -- shutdown and the next start -------------------------------------------------------------

    async def drain(self, timeout: float = SHUTDOWN_GRACE_SECONDS) -> int:
        """Stop taking requests, wait up to ``timeout`` s for the acknowledged ones; returns how many were left
        for the next start (cancelled here, still ``received`` in the inbox)."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._receiving or self._handlers) and loop.time() < deadline:
            if self._handlers:
                await asyncio.wait(set(self._handlers), timeout=min(0.05, deadline - loop.time()))
            else:
                await asyncio.sleep(0.01)
        left = list(self._handlers)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if left:
            log.warning(
                "%d acknowledged Slack requests did not finish in %s s; the next start handles them", len(left), timeout
            )
        return len(left)

    async def resume(self, app: AsyncApp) -> int:
        """Handle the requests a shutdown left unfinished, through the same listeners. Dispatched as Socket
        Mode requests: their signature was checked when they arrived, and their ack goes nowhere now."""
        unfinished = await self.store.call(self.inbox.unfinished)
        for item in unfinished:
            log.info("handling a %s acknowledged before the last shutdown", item.kind)
            request = AsyncBoltRequest(
                body=item.body, mode="socket_mode", context={_RESUMED: True, "request_key": item.key}
            )
            await self.dispatch(app, request)
        return len(unfinished)


class TrackedApp(AsyncApp):
    """The Bolt app whose every dispatch (HTTP or Socket Mode) goes through ``Intake.dispatch``."""

    intake: Intake

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        return await self.intake.dispatch(self, req)


class Handling:
    """``async with deps.handling(context) as handled:`` around a listener's body, entered before its ack.

    ``await handled.done()`` once the request's effect is written (before answering the person), so a shutdown
    that cancels the answer does not make the next start do it again. Leaving the block marks it done too,
    unless a shutdown cancelled it. Without an intake (the in-process handler tests) it does nothing."""

    def __init__(self, intake: Intake | None, context: AsyncBoltContext):
        self.intake, self.context = intake, context
        self.task = asyncio.current_task()
        self._done = False

    async def __aenter__(self) -> Handling:
        if self.intake is not None and self.task is not None:
            self.intake._handlers.add(self.task)
        return self

    async def done(self) -> None:
        key = self.context.get("request_key")
        if self.intake is not None and key and not self._done:
            await self.intake.store.call(self.intake.inbox.done, key)
        self._done = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            # Cancelled by a shutdown: not done, the next start handles it. Failed: done (it would fail again).
            if exc_type is None or issubclass(exc_type, Exception):
                await self.done()
        finally:
            if self.intake is not None and self.task is not None:
                self.intake._handlers.discard(self.task)
