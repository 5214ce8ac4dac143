"""install: run the installer silently as a background process on the host, and interpret its exit code.

The installer outlives any WinRM command, so it is started detached and polled, with a deadline.
Starting is idempotent on the host (a token per run and attempt): after a crash at any line, the
same installer is found again instead of being started a second time.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from steps.base import CheckResult, Step, StepContext, StepFailed, VerifyResult
from steps.common import read_host, read_script, tail, version_tuple, wait_until, work_path
from steps.facts import HostFacts, InstallFacts, InstallStarted, InstallStatus, Product
from steps.reboot import wait_for_host
from steps.stage import installer_path

SUCCESS, REBOOT_REQUIRED, REBOOT_STARTED, BUSY = 0, 3010, 1641, 1618


async def installed_version(ctx: StepContext) -> Product:
    params = {"ProductNamePattern": ctx.config.connector.product_name}
    return await read_script(ctx, "product", Product, params, retry_safe=True)


class Install(Step):
    id = "install"
    title = "Run the connector installer"

    async def check(self, ctx: StepContext) -> CheckResult:
        product = await installed_version(ctx)
        target = ctx.config.installer.version
        if version_tuple(product.version) == version_tuple(target):
            return CheckResult(False, f"{product.display_name} is already at {target}", {"product": product.dump()})
        return CheckResult(
            True, f"upgrade {product.version} → {target} with the installer", {"product": product.dump()}
        )

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        config = ctx.config.installer
        before = HostFacts.stored(ctx.facts.get("preflight")) or await read_host(ctx)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            token = f"{ctx.run.id}-{attempt}"
            log = work_path(ctx, f"install-{token}.log")
            state_file = work_path(ctx, f"install-{token}.json")
            arguments = config.arguments.format(installer=installer_path(ctx), log=log)
            start = await read_script(
                ctx,
                "install_start",
                InstallStarted,
                {
                    "Installer": installer_path(ctx),
                    "Arguments": arguments,
                    "Log": log,
                    "StateFile": state_file,
                    "Token": token,
                },
            )
            ctx.note(
                f"installer {'already running' if start.already_started else 'started'} "
                f"(pid {start.pid}, attempt {attempt}); log {log}"
            )
            status, finished = await wait_until(
                ctx,
                partial(self._status, ctx, state_file),
                lambda s: s.finished,
                timeout=config.timeout_minutes * 60,
            )
            if not finished:
                raise StepFailed(
                    f"the installer is still running after {config.timeout_minutes:g} minutes "
                    f"(pid {status.pid}). Look at {log} on the host; raise installer.timeout_minutes "
                    "if it is just slow. It was left running; run again to resume waiting for it",
                    {"attempts": attempt, "log_tail": status.log_tail},
                )
            code = status.exit_code
            if code == BUSY and attempt <= config.busy_retries:
                ctx.note(
                    f"exit code 1618: another installation is running; trying again in {config.busy_wait_seconds:g} s"
                )
                await asyncio.sleep(config.busy_wait_seconds)
                continue
            break
        facts = InstallFacts(
            exit_code=code,
            attempts=attempt,
            seconds=round(time.monotonic() - started, 1),
            log=log,
            java_before=before.java,
        )
        if code is None:
            raise StepFailed(
                f"the installer ended without an exit code (was it killed?). Last log lines: {tail(status.log_tail)}",
                facts.dump(),
            )
        if code == BUSY:
            raise StepFailed(
                f"exit code 1618: another installation kept running through {config.busy_retries} retries. "
                "Let it finish (Windows Update?), then run again",
                facts.dump(),
            )
        if code not in (SUCCESS, REBOOT_REQUIRED, REBOOT_STARTED):
            raise StepFailed(
                f"the installer failed with exit code {code}. Last lines of {log}: {tail(status.log_tail)}. "
                "Nothing was rebooted; the previous version should still be installed (Windows Installer rolls back)",
                {**facts.dump(), "log_tail": status.log_tail},
            )
        if code == REBOOT_STARTED:
            ctx.note("exit code 1641: the installer started a reboot itself; waiting for the host to come back")
            await wait_for_host(ctx, before.boot_time)
            facts = facts.model_copy(update={"rebooted_by_installer": True})
        after = await read_host(ctx)
        return facts.model_copy(
            update={
                "java_after": after.java,
                "jre_changed": after.java != before.java,
                "reboot_required": code == REBOOT_REQUIRED or after.pending_reboot.any,
                "pending_reboot_after": after.pending_reboot.reasons,
            }
        ).dump()

    async def _status(self, ctx: StepContext, state_file: str) -> InstallStatus:
        params = {"StateFile": state_file, "Tail": 15}
        return await read_script(ctx, "install_status", InstallStatus, params, retry_safe=True)

    async def verify(self, ctx: StepContext) -> VerifyResult:
        product = await installed_version(ctx)
        target = ctx.config.installer.version
        if version_tuple(product.version) == version_tuple(target):
            return VerifyResult(
                True, f"{product.display_name} {product.version} installed", {"product": product.dump()}
            )
        return VerifyResult(
            False, f"Programs & Features still shows {product.version}, not {target}", {"product": product.dump()}
        )
