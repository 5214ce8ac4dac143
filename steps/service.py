"""service: wait, bounded, until the connector service is Running with start mode Automatic."""

from __future__ import annotations

from functools import partial
from typing import Any

from steps.base import CheckResult, Step, StepContext, StepFailed, VerifyResult
from steps.common import read_script, tail, wait_until
from steps.facts import ServiceState, ServiceStatus

RUNNING, AUTOMATIC = "Running", "Auto"


async def service_status(ctx: StepContext, *, start: bool = False) -> ServiceStatus:
    connector = ctx.config.connector
    params = {"ServiceName": connector.service, "Start": start, "LogPath": connector.log_path, "Tail": 15}
    return await read_script(ctx, "service", ServiceStatus, params, retry_safe=not start)


def healthy(status: ServiceStatus | ServiceState) -> bool:
    return status.state == RUNNING and status.start_mode == AUTOMATIC


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
        name = ctx.config.connector.service
        status = await service_status(ctx)
        if not status.exists:
            raise StepFailed(
                f"the service {name} does not exist after the install; check the installer log", status.dump()
            )
        if status.start_mode == "Disabled":
            raise StepFailed(f"the service {name} is Disabled; set it to Automatic and run again", status.dump())
        if status.state != RUNNING:
            ctx.note(f"{name} is {status.state}: starting it")
            status = await service_status(ctx, start=True)
        timeout = ctx.config.connector.service_timeout_seconds
        status, ok = await wait_until(ctx, partial(service_status, ctx), lambda s: s.state == RUNNING, timeout=timeout)
        if not ok:
            raise StepFailed(
                f"{name} is {status.state} (start mode {status.start_mode}) after {timeout:g} s"
                f"{'; start failed: ' + status.start_error if status.start_error else ''}. "
                f"Last lines of {ctx.config.connector.log_path}: {tail(status.log_tail)}. "
                "Fix the cause on the host (the log says why), then run again",
                {"status": status.dump()},
            )
        return {"status": status.dump()}

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
