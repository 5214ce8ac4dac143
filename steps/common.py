"""What the upgrade steps share: the executor, the host's facts, versions, and plain-words formatting."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import PureWindowsPath
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from bot.systems.winrm import ScriptResult
from steps.base import StepContext
from steps.facts import Facts, HostFacts

T = TypeVar("T")
F = TypeVar("F", bound=Facts)
GiB = 1024**3


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


async def wait_until(
    ctx: StepContext,
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
) -> tuple[T, bool]:
    """Re-read the host until ``done`` or ``timeout``; every wait is bounded. Returns (last, done)."""
    stop_at = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value, True
        if time.monotonic() >= stop_at:
            return value, False
        await asyncio.sleep(min(poll_seconds(ctx), max(0.0, stop_at - time.monotonic())))
