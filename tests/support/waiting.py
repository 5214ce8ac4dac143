"""Wait, bounded, for the condition a test is about, instead of a fixed sleep or a fixed number of polls.

A loaded machine (CI on two busy cores) can take many times longer than an idle one; a fixed sleep or a
loop count sized for the idle case then asserts too early. These poll the real condition until a
generous deadline and fail with an AssertionError that says what did not happen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], T | Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` (sync or async) until it returns something truthy; return that value.

    Raises AssertionError(f"not within {timeout} s: {what}") if it does not within `timeout` seconds.
    The predicate is always tried once more at the deadline, so a slow last poll is not lost.
    """
    stop = time.monotonic() + timeout
    while True:
        last = time.monotonic() >= stop
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if last:
            raise AssertionError(f"not within {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """The blocking twin of eventually(), for tests that are not async (threads, subprocesses)."""
    stop = time.monotonic() + timeout
    while True:
        last = time.monotonic() >= stop
        value = predicate()
        if value:
            return value
        if last:
            raise AssertionError(f"not within {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)
