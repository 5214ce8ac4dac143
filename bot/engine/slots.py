"""winrm.max_parallel: how many runs work on hosts at once, and which goes next."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class SlotPool:
    """winrm.max_parallel slots for runs. A run that is under way is served before one that has not
    started: a fleet is upgraded max_parallel hosts at a time, not all of it in lockstep with every
    host half-upgraded at once (what the fleet benchmark showed with one plain semaphore per step)."""

    def __init__(self, size: int):
        self.free = size
        self._waiting: dict[bool, deque[asyncio.Future]] = {True: deque(), False: deque()}

    async def acquire(self, under_way: bool) -> None:
        if self.free > 0 and not self._waiting[True] and (under_way or not self._waiting[False]):
            self.free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting[under_way].append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed over just as the waiter was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting[under_way].remove(turn)
            raise

    def release(self) -> None:
        for queue in (self._waiting[True], self._waiting[False]):
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the slot passes straight to the waiter
                    return
        self.free += 1


class Slot:
    """A run's hold on a SlotPool slot, from its first step to its end; given back while a person decides."""

    def __init__(self, pool: SlotPool, *, under_way: bool = False):
        self.pool, self.under_way, self.held = pool, under_way, False

    async def __aenter__(self) -> Slot:
        await self.pool.acquire(self.under_way)
        self.held = self.under_way = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.held:
            self.pool.release()
            self.held = False

    @contextlib.asynccontextmanager
    async def released(self) -> AsyncIterator[None]:
        self.pool.release()
        self.held = False
        yield  # a decision that ends the run raises here: the run does not take a slot back just to end
        await self.pool.acquire(under_way=True)
        self.held = True
