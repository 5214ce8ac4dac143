"""What the upgrade steps share: the executor, the host's facts, versions, and plain-words formatting."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from bot.systems.winrm import ExecutorError, ScriptResult
from steps.base import StepContext, StepFailed
from steps.facts import Facts, HostFacts

T = TypeVar("T")
F = TypeVar("F", bound=Facts)
GiB = 1024**3
# A log line the scripts return (install_status, service: the last lines of a log) is cut to this many
# characters on the host, so a log of megabyte-long lines still makes a small reply.
LOG_LINE_CHARS = 2000
log = logging.getLogger(__name__)


def poll_seconds(ctx: StepContext) -> float:
    return ctx.config.winrm.poll_seconds


async def run_script(
    ctx: StepContext, script: str, params: dict[str, Any] | None = None, **kwargs: Any
) -> ScriptResult:
    return await ctx.winrm.run(ctx.host, script, params, **kwargs)


async def read_script(
    ctx: StepContext, script: str, model: type[F], params: dict[str, Any] | None = None, **kwargs: Any
) -> F:
    """Run the script and read its JSON document as ``model`` (a bad document is a BadOutput error)."""
    return model.from_script(ctx.host, script, (await run_script(ctx, script, params, **kwargs)).data)


async def read_host(ctx: StepContext) -> HostFacts:
    """One preflight round trip: every fact DESIGN.md lists (versions, service, JRE, disk, reboot, boot time)."""
    connector = ctx.config.connector
    params = {"ServiceName": connector.service, "ProductNamePattern": connector.product_name, "Drive": "C:"}
    return await read_script(ctx, "preflight", HostFacts, params, retry_safe=True)


def version_tuple(version: str | None) -> tuple[int, ...]:
    """'19.03.0.1' -> (19, 3, 0, 1); missing parts count as 0 so 19.03 == 19.03.0.0."""
    if not version:
        return ()
    parts = [int(p) if p.isdigit() else 0 for p in version.strip().split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def version_parts(version: str | None) -> tuple[int, ...]:
    """The leading dotted numbers of a DisplayVersion: '19.03.0.1 Build 123' -> (19, 3, 0, 1)."""
    match = re.match(r"\s*\d+(?:\.\d+)*", version or "")
    return tuple(int(part) for part in match.group().strip().split(".")) if match else ()


def versus_target(installed: str | None, target: str) -> int:
    """-1 older than the target, 0 the target, 1 newer. Only as many parts as the target has are compared
    (missing ones count as 0), so '19.03.0.1 Build 123' and '19.03.0.1.5' are 19.03.0.1 and '19.03' is
    19.03.0.0. Unlike version_tuple, which compares every part (JRE versions)."""
    want = version_parts(target)
    have = (version_parts(installed) + (0,) * len(want))[: len(want)]
    return (have > want) - (have < want)


def installer_file_name(url: str) -> str:
    path = unquote(urlsplit(url).path) or url
    name = PureWindowsPath(path.replace("/", "\\")).name
    return name or "connector-installer.exe"


def work_path(ctx: StepContext, name: str) -> str:
    return str(PureWindowsPath(ctx.config.installer.work_dir) / name)


def tail(lines: list[str] | None, count: int = 10) -> str:
    lines = [line for line in (lines or []) if line.strip()]
    return " | ".join(lines[-count:]) if lines else "(no log lines)"


OUTAGE_BACKOFF_MAX_SECONDS = 30.0  # the longest pause between two polls of a host that does not answer


async def wait_until(
    ctx: StepContext,
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    ride_out: str | None = None,
) -> tuple[T, bool]:
    """Re-read the host until ``done`` or ``timeout``; every wait is bounded. Returns (last, done).

    ``ride_out`` (what is being waited for, e.g. "the installer"): a host that cannot be reached (refused or
    dropped connections, no answer in time, a WinRM service error) is polled on, with a backoff bounded by
    OUTAGE_BACKOFF_MAX_SECONDS, until ``timeout``; the step's notes say when contact was lost and when it
    came back. Without it, the read's error ends the wait.
    """
    stop_at = time.monotonic() + timeout
    lost_at: float | None = None
    failures = 0
    while True:
        try:
            value = await read()
        except ExecutorError as exc:
            if ride_out is None or not exc.retryable:
                raise
            now = time.monotonic()
            failures += 1
            if lost_at is None:
                lost_at = now
                message = (
                    f"lost contact with {ctx.host} at {clock()} ({exc.args[0].split(': ', 1)[-1]}); "
                    f"{ride_out} keeps running on the host, polling on until the deadline "
                    f"({_duration(stop_at - now)} left)"
                )
                log.warning("%s: %s", ctx.run.id, message)
                ctx.note(message)
            if now >= stop_at:
                raise StepFailed(
                    f"lost contact with {ctx.host} for {_duration(now - lost_at)} and the deadline of {timeout / 60:g} min "
                    f"for {ride_out} passed ({exc.args[0].split(': ', 1)[-1]}). It may still be running on the host: "
                    "check the host, then run again to resume waiting for it"
                ) from None
            pause = min(poll_seconds(ctx) * 2 ** min(failures, 10), OUTAGE_BACKOFF_MAX_SECONDS)
            await asyncio.sleep(min(pause, max(0.0, stop_at - now)))
            continue
        if lost_at is not None:
            message = (
                f"{ctx.host} answers again at {clock()}, after {_duration(time.monotonic() - lost_at)} without contact"
            )
            log.warning("%s: %s", ctx.run.id, message)
            ctx.note(message)
            lost_at, failures = None, 0
        if done(value):
            return value, True
        if time.monotonic() >= stop_at:
            return value, False
        await asyncio.sleep(min(poll_seconds(ctx), max(0.0, stop_at - time.monotonic())))


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S UTC")
