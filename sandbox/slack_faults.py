"""Faults the Slack stand-in's Web API can serve, and its log of calls.

Set from any thread while the server's loop reads them: every counter is consumed under one lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

Answer = tuple[int, dict[str, Any], dict[str, str]]  # HTTP status, JSON body, extra headers


class Call(NamedTuple):
    time: float  # time.monotonic() when the call arrived
    method: str
    params: dict[str, Any]  # without the token
    status: int
    error: str | None  # None when ok

    @property
    def channel(self) -> str | None:
        return self.params.get("channel")

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class ApiFaults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency = 0.0  # seconds added before every API answer
        self.ratelimited_count = 0  # 429s served (injected or pace)
        self.server_error_count = 0  # 5xx served
        self._calls: list[Call] = []
        self._rate_limited = 0
        self._retry_after = 1
        self._rate_methods: frozenset[str] | None = None
        self._server_errors = 0
        self._server_status = 500
        self._server_methods: frozenset[str] | None = None
        self._pace: tuple[float, int, frozenset[str]] | None = None
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (method, channel) -> (tokens, at)
        self._real: dict[str, tuple[float, int, bool]] = {}  # method -> (per second, burst, per channel)

    def rate_limit(self, count: int, retry_after: int = 1, methods: Iterable[str] | None = None) -> None:
        with self.lock:
            self._rate_limited, self._retry_after = count, int(retry_after)
            self._rate_methods = frozenset(methods) if methods is not None else None

    def server_errors(self, count: int, status: int = 500, methods: Iterable[str] | None = None) -> None:
        with self.lock:
            self._server_errors, self._server_status = count, status
            self._server_methods = frozenset(methods) if methods is not None else None

    def pace_limit(
        self, per_second: float | None = 1.0, burst: int = 3, methods: Iterable[str] = ("chat.postMessage",)
    ) -> None:
        with self.lock:
            self._pace = (per_second, burst, frozenset(methods)) if per_second else None
            self._buckets.clear()

    def real_pace(self, on: bool = True) -> None:
        """Slack's own limits, answered 429 with Retry-After beyond them: chat.postMessage about 1 a second
        per channel, chat.update Tier 3 (50 a minute, per workspace), no burst allowance assumed."""
        with self.lock:
            self._real = {"chat.postMessage": (1.0, 1, True), "chat.update": (50.0 / 60.0, 1, False)} if on else {}
            self._buckets.clear()

    def clear(self) -> None:
        with self.lock:
            self._rate_limited = self._server_errors = 0
            self._pace = None
            self._real = {}
            self.latency = 0.0

    def take(self, method: str, params: dict[str, Any]) -> Answer | None:
        """The fault this call meets, if any (consuming it), else None."""
        with self.lock:
            if self._rate_limited > 0 and (self._rate_methods is None or method in self._rate_methods):
                self._rate_limited -= 1
                return self._ratelimited(self._retry_after)
            if self._server_errors > 0 and (self._server_methods is None or method in self._server_methods):
                self._server_errors -= 1
                self.server_error_count += 1
                error = "service_unavailable" if self._server_status == 503 else "fatal_error"
                return self._server_status, {"ok": False, "error": error}, {}
            rule: tuple[float, int, bool] | None = self._real.get(method)
            if rule is None and self._pace is not None and method in self._pace[2]:
                rule = (self._pace[0], self._pace[1], True)
            if rule is not None:
                per_second, burst, per_channel = rule
                key = (method, str(params.get("channel")) if per_channel else "*")
                now = time.monotonic()
                tokens, at = self._buckets.get(key, (float(burst), now))
                tokens = min(float(burst), tokens + (now - at) * per_second)
                if tokens < 1.0:
                    self._buckets[key] = (tokens, now)
                    return self._ratelimited(max(1, math.ceil((1.0 - tokens) / per_second)))
                self._buckets[key] = (tokens - 1.0, now)
        return None

    def _ratelimited(self, retry_after: int) -> Answer:
        self.ratelimited_count += 1
        return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}

    # ----- the call log ------------------------------------------------------------------------------

    def record(self, call: Call) -> None:
        with self.lock:
            self._calls.append(call)

    @property
    def calls(self) -> list[Call]:
        with self.lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self.lock:
            self._calls.clear()

    def calls_to(self, method: str | None = None, channel: str | None = None, *, ok: bool | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if (method is None or c.method == method)
            and (channel is None or c.channel == channel)
            and (ok is None or c.ok == ok)
        ]

    def max_calls_in_window(
        self,
        method: str = "chat.postMessage",
        channel: str | None = None,
        window: float = 1.0,
        *,
        ok: bool | None = True,
    ) -> int:
        """The most calls (successful ones by default; ok=None: all) that arrived within any `window` seconds."""
        times = [c.time for c in self.calls_to(method, channel, ok=ok)]
        best, first = 0, 0
        for last, t in enumerate(times):
            while t - times[first] >= window:
                first += 1
            best = max(best, last - first + 1)
        return best
