"""WinRM hosts served from an event loop in a daemon thread, for synchronous tests and tools.

    with running_host("physical") as h:
        winrm.Session(h.endpoint, auth=(h.username, h.password), transport="basic").run_ps(...)
        h.begin_reboot()

The server objects live in the background loop; these handles reach them with thread-safe calls.
Host state may be read or changed from the test thread while no command is running on that host.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from sandbox.faults import Faults
from sandbox.host import HostState, scenario
from sandbox.ps_handlers import Handler
from sandbox.winrm_server import ConcurrencyGauge, RequestRecord, WinRMHostServer, start_hosts

TEST_TIME_SCALE = 0.01  # a 45 s simulated install takes 0.45 s, a 30 s reboot 0.3 s


class _LoopThread:
    """An event loop in a daemon thread, for driving servers from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="winrm-sandbox", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class RunningHost:
    """A synchronous handle on a server running in a background loop."""

    def __init__(self, server: WinRMHostServer, loop: _LoopThread) -> None:
        self.server = server
        self._loop = loop

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def username(self) -> str:
        return self.server.username

    @property
    def password(self) -> str:
        return self.server.password

    @property
    def state(self) -> HostState:
        """The live state; change it only while no command runs (the server thread reads it)."""
        return self.server.state

    @property
    def faults(self) -> Faults:
        return self.server.faults

    @property
    def handlers(self) -> dict[str, Handler]:
        return self.server.handlers

    @property
    def installer_url(self) -> str:
        return self.server.installer_url

    @property
    def installer_sha256(self) -> str:
        return self.server.installer_sha256

    @property
    def requests(self) -> list[RequestRecord]:
        return self.server.requests

    @property
    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def clear_requests(self) -> None:
        self.server.clear_requests()

    def begin_reboot(self) -> None:
        """Returns once the host is down."""
        self._loop.call(self.server.begin_reboot())

    def power_off(self) -> None:
        self._loop.call(self.server.power_off())

    def power_on(self) -> None:
        self._loop.call(self.server.power_on())

    def refuse_connections(self) -> None:
        self._loop.call(self.server.refuse_connections())

    def accept_connections(self) -> None:
        self._loop.call(self.server.accept_connections())

    def wait_online(self, timeout: float) -> bool:
        """True once the host listens again; False if it did not within `timeout` seconds."""
        try:
            self._loop.call(asyncio.wait_for(self.server.wait_online(), timeout), timeout=timeout + 5)
        except TimeoutError:
            return False
        return True


class Fleet:
    """Hosts served from one background loop, with the fleet-wide in-flight gauge."""

    def __init__(self, hosts: list[RunningHost], gauge: ConcurrencyGauge) -> None:
        self.hosts = hosts
        self.gauge = gauge

    def __iter__(self) -> Iterator[RunningHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> RunningHost:
        return self.hosts[index]


@contextlib.contextmanager
def running_fleet(
    n: int,
    scenario_name: str = "default",
    *,
    time_scale: float = TEST_TIME_SCALE,
    **server_kwargs: Any,
) -> Iterator[Fleet]:
    """n hosts of one scenario in a daemon thread's event loop; all stopped on exit."""
    loop = _LoopThread()
    gauge = ConcurrencyGauge()
    servers: list[WinRMHostServer] = []
    try:
        servers = loop.call(start_hosts(n, scenario_name, fleet_gauge=gauge, time_scale=time_scale, **server_kwargs))
        yield Fleet([RunningHost(server, loop) for server in servers], gauge)
    finally:
        for server in servers:
            loop.call(server.stop())
        loop.close()


@contextlib.contextmanager
def running_host(
    scenario_name: str = "default",
    *,
    state: HostState | None = None,
    time_scale: float = TEST_TIME_SCALE,
    **server_kwargs: Any,
) -> Iterator[RunningHost]:
    """One host in a daemon thread's event loop: `with running_host("physical") as h: ...h.endpoint`.

    `state` replaces the scenario's state (e.g. a scenario tweaked by the test); `server_kwargs` go to
    WinRMHostServer (username, password, handlers, ...).
    """
    loop = _LoopThread()
    server: WinRMHostServer | None = None
    try:
        server = WinRMHostServer(state or scenario(scenario_name), time_scale=time_scale, **server_kwargs)
        loop.call(server.start())
        yield RunningHost(server, loop)
    finally:
        if server is not None:
            loop.call(server.stop())
        loop.close()
