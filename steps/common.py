"""What the upgrade steps share: the executor, the host's facts, versions, and plain-words formatting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import PureWindowsPath
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from bot.systems.winrm import ScriptResult, WinRMExecutor
from steps.base import StepContext
from steps.facts import Facts, HostFacts

T = TypeVar("T")
F = TypeVar("F", bound=Facts)
GiB = 1024**3


def executor(ctx: StepContext) -> WinRMExecutor:
    return ctx.winrm


def poll_seconds(ctx: StepContext) -> float:
    return ctx.config.winrm.poll_seconds


async def run_script(
    ctx: StepContext, script: str, params: dict[str, Any] | None = None, **kwargs: Any
) -> ScriptResult:
    return await executor(ctx).run(ctx.host, script, params, **kwargs)


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
