"""service: wait, bounded, until the connector service is Running with start mode Automatic."""

from __future__ import annotations

from typing import Any

from steps.base import CheckResult, Step, StepContext, StepFailed, VerifyResult
from steps.common import run_script, tail, wait_until

RUNNING, AUTOMATIC = "Running", "Auto"


async def service_status(ctx: StepContext, *, start: bool = False) -> dict[str, Any]:
    connector = ctx.config.connector
    params = {"ServiceName": connector.service, "Start": start, "LogPath": connector.log_path, "Tail": 15}
    return (await run_script(ctx, "service", params, retry_safe=not start)).data


def healthy(status: dict[str, Any]) -> bool:
    return status.get("state") == RUNNING and status.get("startMode") == AUTOMATIC


class Service(Step):
    id = "service"
    title = "Connector service running"

    async def check(self, ctx: StepContext) -> CheckResult:
        status = await service_status(ctx)
        # Always confirmed by waiting and verifying: "already running" is the answer we want, not a skip.
        return CheckResult(True, f"confirm {ctx.config.connector.service} is Running (Automatic)", {"before": status})

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        name = ctx.config.connector.service
        status = await service_status(ctx)
        if not status["exists"]:
            raise StepFailed(f"the service {name} does not exist after the install; check the installer log", status)
        if status["startMode"] == "Disabled":
            raise StepFailed(f"the service {name} is Disabled; set it to Automatic and run again", status)
        if status["state"] != RUNNING:
            ctx.note(f"{name} is {status['state']}: starting it")
            status = await service_status(ctx, start=True)
        timeout = ctx.config.connector.service_timeout_seconds
        status, ok = await wait_until(
            ctx, lambda: service_status(ctx), lambda s: s.get("state") == RUNNING, timeout=timeout
        )
        if not ok:
            raise StepFailed(
                f"{name} is {status.get('state')} (start mode {status.get('startMode')}) after {timeout:g} s"
                f"{'; start failed: ' + status['startError'] if status.get('startError') else ''}. "
                f"Last lines of {ctx.config.connector.log_path}: {tail(status.get('logTail'))}. "
                "Fix the cause on the host (the log says why), then run again",
                {"status": status},
            )
        return {"status": status}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        status = await service_status(ctx)
        if healthy(status):
            return VerifyResult(True, f"{ctx.config.connector.service} is Running (Automatic)", {"after": status})
        return VerifyResult(
            False,
            f"{ctx.config.connector.service} is {status.get('state')} with start mode {status.get('startMode')}; "
            "expected Running and Automatic (Set-Service -StartupType Automatic)",
            {"after": status},
        )
