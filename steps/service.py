"""service: wait, bounded, until the connector service is Running with start mode Automatic.

The waiting lives here once (`wait_for_running`); the reboot step uses it too, because a real server
answers WinRM before its services run: right after a boot the connector is Start Pending (a delayed
auto-start service begins about 120 s after boot).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from steps.base import CheckResult, Step, StepContext, StepFailed, VerifyResult
from steps.common import LOG_LINE_CHARS, read_script, wait_until
from steps.facts import ServiceState, ServiceStatus

RUNNING, AUTOMATIC = "Running", "Auto"


async def service_status(ctx: StepContext, *, start: bool = False) -> ServiceStatus:
    connector = ctx.config.connector
    params = {
        "ServiceName": connector.service,
        "Start": start,
        "LogPath": connector.log_path,
        "Tail": 15,
        "LineChars": LOG_LINE_CHARS,
    }
    return await read_script(ctx, "service", ServiceStatus, params, retry_safe=not start)


def healthy(status: ServiceStatus | ServiceState) -> bool:
    return status.state == RUNNING and status.start_mode == AUTOMATIC


@dataclass(frozen=True)
class ServiceWait:
    """How the service was when first read, and once it was Running."""

    first: ServiceStatus
    last: ServiceStatus
    seconds: float

    def dump(self) -> dict[str, Any]:
        return {"first": self.first.dump(), "status": self.last.dump(), "waited_seconds": round(self.seconds, 1)}


async def wait_for_running(ctx: StepContext, after: str, *, start: bool) -> ServiceWait:
    """Wait until the connector service is Running, bounded by connector.service_timeout_seconds.

    ``after`` says what just happened ("the install", "the reboot") for the messages. ``start``: start a
    Stopped service (service.ps1 starts it without blocking; the polling here is the only wait). Without
    it the service is left to Windows, as after a boot, where it is Stopped or Start Pending for a while.
    """
    name, began = ctx.config.connector.service, time.monotonic()
    first = status = await service_status(ctx)
    if not status.exists:
        raise StepFailed(
            f"after {after} the service {name} does not exist; check the installer log", {"status": status.dump()}
        )
    if status.start_mode == "Disabled":
        raise StepFailed(
            f"the service {name} is Disabled; set it to Automatic and run again", {"status": status.dump()}
        )
    if start and status.state == "Stopped":
        ctx.note(f"{name} is Stopped: starting it")
        status = await service_status(ctx, start=True)
    if status.state != RUNNING:
        ctx.note(f"{name} is {status.state} after {after}: waiting for it to be Running")
        timeout = ctx.config.connector.service_timeout_seconds
        status, ok = await wait_until(ctx, partial(service_status, ctx), lambda s: s.state == RUNNING, timeout=timeout)
        if not ok:
            start_error = status.start_error or first.start_error
            raise StepFailed(
                f"{name} is {status.state} (start mode {status.start_mode}) {timeout:g} s after {after}"
                f"{'; start failed: ' + start_error if start_error else ''}. "
                f"Fix the cause on the host ({ctx.config.connector.log_path} says why), then run again",
                {"status": status.dump(), "first": first.dump(), "log_tail": status.log_tail},
            )
    return ServiceWait(first, status, time.monotonic() - began)


class Service(Step):
    id = "service"
    title = "Connector service running"

    async def check(self, ctx: StepContext) -> CheckResult:
        status = await service_status(ctx)
        # Always confirmed by waiting and verifying: "already running" is the answer we want, not a skip.
        return CheckResult(
            True, f"confirm {ctx.config.connector.service} is Running (Automatic)", {"before": status.dump()}
        )

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        waited = await wait_for_running(ctx, "the install", start=True)
        return {"status": waited.last.dump()}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        status = await service_status(ctx)
        if healthy(status):
            return VerifyResult(
                True, f"{ctx.config.connector.service} is Running (Automatic)", {"after": status.dump()}
            )
        return VerifyResult(
            False,
            f"{ctx.config.connector.service} is {status.state} with start mode {status.start_mode}; "
            "expected Running and Automatic (Set-Service -StartupType Automatic)",
            {"after": status.dump()},
        )
