"""The Slack stand-in served from an event loop in a daemon thread, for synchronous code and tools.

with running_slack(signing_secret=SECRET) as slack:
    WebClient(token="xoxb-sandbox", base_url=slack.api_url).chat_postMessage(...)
    slack.standin.rate_limit(3)                 # fault switches and reads are safe from any thread
    slack.down(5)                               # coroutines go through the loop: down, up, call(...)
    slack.call(slack.standin.socket_send_slash_command(REQUESTER, "host01"))
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from sandbox.slack import SlackStandIn


class RunningSlack:
    """A stand-in served from an event loop in a daemon thread, for synchronous code.

    Fault switches and reads (`standin.calls`, `standin.render_channel(...)`) are safe from any thread;
    coroutines (`down`, Socket Mode delivery) go through `call`.
    """

    def __init__(self, standin: SlackStandIn, loop: asyncio.AbstractEventLoop) -> None:
        self.standin = standin
        self.loop = loop

    @property
    def api_url(self) -> str:
        return self.standin.api_url

    @property
    def url(self) -> str:
        return self.standin.url

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def down(self, seconds: float | None = None) -> None:
        self.call(self.standin.down(seconds))

    def up(self) -> None:
        self.call(self.standin.up())

    def render_channel(self, channel: str | None = None, **kw: Any) -> str:
        return self.standin.render_channel(channel, **kw) if channel else self.standin.render_channel(**kw)


@contextlib.contextmanager
def running_slack(**kwargs: Any) -> Iterator[RunningSlack]:
    """``with running_slack(signing_secret=S) as slack: WebClient(base_url=slack.api_url) ...``"""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="slack-standin", daemon=True)
    thread.start()
    standin = SlackStandIn(**kwargs)
    try:
        asyncio.run_coroutine_threadsafe(standin.start(), loop).result(30)
        yield RunningSlack(standin, loop)
    finally:
        asyncio.run_coroutine_threadsafe(standin.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
