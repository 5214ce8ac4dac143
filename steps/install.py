"""install: run the installer silently as a background process on the host, and interpret its exit code.

The installer outlives any WinRM command, so it is started detached and polled, with a deadline.
Starting is idempotent on the host (a token per run and attempt): after a crash at any line, the
same installer is found again instead of being started a second time. The exit code is cross-checked
with the MSI log's status (steps/install_outcome.py), and the connector service's logon account is
compared before and after: IWA needs the domain account, and an installer may reset it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from functools import partial
from typing import Any

from bot.core.gates import INSTALL, Gate
from bot.core.models import StepRecord, StepState
from steps.base import CheckResult, PlannedStep, Step, StepContext, StepFailed, VerifyResult
from steps.common import LOG_LINE_CHARS, read_host, read_script, versus_target, wait_until, work_path
from steps.facts import HostFacts, InstallFacts, InstallStarted, InstallStatus, Product
from steps.install_outcome import ExitCode, account_changed, exit_code
from steps.reboot import wait_for_host
from steps.stage import installer_path

SUCCESS, REBOOT_REQUIRED, REBOOT_STARTED, BUSY = 0, 3010, 1641, 1618


async def installed_version(ctx: StepContext) -> Product:
    params = {"ProductNamePattern": ctx.config.connector.product_name}
    return await read_script(ctx, "product", Product, params, retry_safe=True)


class Install(Step):
    id = "install"
    title = "Run the connector installer"
    changes_host = True

    async def check(self, ctx: StepContext) -> CheckResult:
        product = await installed_version(ctx)
        target = ctx.config.installer.version
        if product.installed and versus_target(product.version, target) == 0:
            return CheckResult(False, f"{product.display_name} is already at {target}", {"product": product.dump()})
        return CheckResult(
            True, f"upgrade {product.version} → {target} with the installer", {"product": product.dump()}
        )

    async def plan(self, ctx: StepContext) -> PlannedStep:
        check = await self.check(ctx)  # reads Programs & Features
        if not check.needed:
            return PlannedStep(False, check.reason)
        product = Product.model_validate(check.facts["product"])
        service = ctx.config.connector.service
        changes = [
            f"connector {product.version or 'not installed'} → {ctx.config.installer.version}",
            f"{service} stops and restarts while the installer runs (up to "
            f"{ctx.config.installer.timeout_minutes:g} min)",
        ]
        gate = self.gate_for(ctx, check)
        return PlannedStep(True, check.reason, changes, gate.name if gate else None)

    def gate_for(self, ctx: StepContext, check: CheckResult) -> Gate | None:
        # The connector is down while the installer runs: that downtime is approved like the reboot's.
        return INSTALL if ctx.config.policy.approve_install else None

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        installer, service = ctx.config.installer, ctx.config.connector.service
        product = Product.model_validate(check.facts["product"])
        return {
            "what_changes": f"run the connector installer {installer.version} (sha256 {installer.sha256}, "
            f"staged at {installer_path(ctx)}) on {ctx.host}: the {service} service stops and restarts, so the "
            f"connector is unavailable while it runs (up to {installer.timeout_minutes:g} min); "
            f"version {product.version or 'not installed'} → {installer.version}",
            "why": check.reason,
            # in words, as every front end shows it (Slack, the terminal's prompt)
            "verified_so_far": f"connector version {product.version or 'not installed'}; installer downloaded "
            "and its SHA-256 checked (stage step)",
        }

    def change(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        # This installer over this version on this host: another build, or a version that moved while
        # people decided, is another change and is asked again.
        installer = ctx.config.installer
        product = Product.model_validate(check.facts["product"])
        return {
            "host": ctx.host,
            "installer": {"version": installer.version, "sha256": installer.sha256},
            "from_version": product.version,
            "service_restarts": ctx.config.connector.service,
        }

    def changed(self, record: StepRecord) -> str | None:
        if not record.applied:
            return None
        code = record.facts.get("exit_code")
        if record.state is StepState.succeeded:
            return "connector upgraded by the installer" + (f" (exit code {code})" if code is not None else "")
        if code is not None:
            return f"the installer ran and failed (exit code {code})"
        return "the installer was started"

    def unchanged(self, record: StepRecord) -> str | None:
        if record.applied or record.state in (StepState.succeeded, StepState.skipped):
            return None
        version = (record.facts.get("product") or {}).get("version") or (record.facts.get("denied") or {}).get(
            "from_version"
        )
        return (
            f"the connector (still {version}; the installer did not run)"
            if version
            else "the connector (the installer did not run)"
        )

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        config = ctx.config.installer
        service = ctx.config.connector.service
        before = HostFacts.stored(ctx.facts.get("preflight")) or await read_host(ctx)
        started = time.monotonic()
        status, decided, attempt, log, state_file = await self._run_installer(ctx)
        code = decided.code
        facts = InstallFacts(
            exit_code=code,
            attempts=attempt,
            seconds=round(time.monotonic() - started, 1),
            log=log,
            java_before=before.java,
            setup_exit_code=status.exit_code,
            msi_status=status.msi_status,
            exit_code_note=decided.note or None,
            service_account_before=status.start_name_before,
        )
        why = f" ({decided.note})" if decided.note else ""
        # One line of cause; the log's last lines go in the facts, shown once, in the step's reply.
        if code is None:
            raise StepFailed(
                f"the installer ended without an exit code (was it killed?); its log on the host: {log}",
                {**facts.dump(), "log_tail": status.log_tail},
            )
        if code == BUSY:
            raise StepFailed(
                f"exit code 1618: another installation kept running through {config.busy_retries} retries. "
                "Let it finish (Windows Update?), then run again",
                facts.dump(),
            )
        if code not in (SUCCESS, REBOOT_REQUIRED, REBOOT_STARTED):
            previous = (ctx.record.facts.get("product") or {}).get("version") or "the previous version"
            raise StepFailed(
                f"the installer failed with exit code {code}{why}; Windows Installer rolls back, so {previous} "
                f"should still be installed, and nothing was rebooted. Its log on the host: {log}",
                {**facts.dump(), "log_tail": status.log_tail},
            )
        if code == REBOOT_STARTED:
            ctx.note("exit code 1641: the installer started a reboot itself; waiting for the host to come back")
            # The installer restarted the host after it started (host clock): a boot before that is a clock step.
            launched = datetime.fromisoformat(status.started_at.replace("Z", "+00:00")) if status.started_at else None
            await wait_for_host(ctx, before.boot_time, requested_at=launched)
            facts = facts.model_copy(update={"rebooted_by_installer": True})
            status = await self._status(ctx, state_file)  # the service's account, after that boot
        facts = facts.model_copy(update={"service_account_after": status.start_name})
        if account_changed(status.start_name_before, status.start_name):
            raise StepFailed(
                f"the installer changed the account {service} runs as from {status.start_name_before} to "
                f"{status.start_name}; Integrated Windows Authentication needs the domain account. The connector "
                f"is upgraded (exit code {code}), but set the account back: services.msc → {service} → Properties → Log On "
                f"→ This account: {status.start_name_before} (with its password), restart the service, then run "
                "again",
                facts.dump(),
            )
        after = await read_host(ctx)
        return facts.model_copy(
            update={
                "java_after": after.java,
                "jre_changed": after.java != before.java,
                "reboot_required": code == REBOOT_REQUIRED or after.pending_reboot.any,
                "pending_reboot_after": after.pending_reboot.reasons,
            }
        ).dump()

    async def _run_installer(self, ctx: StepContext) -> tuple[InstallStatus, ExitCode, int, str, str]:
        """Start the installer (again after 1618, up to busy_retries) and wait for it: (last status, the
        exit code that counts, attempts, log, state file)."""
        config = ctx.config.installer
        service = ctx.config.connector.service
        attempt = 0
        while True:
            attempt += 1
            # A retried run (attempt 2…) starts the installer anew: its first attempt's state file says done.
            token = f"{ctx.run.id}-{attempt}" if ctx.run.attempt == 1 else f"{ctx.run.id}-a{ctx.run.attempt}-{attempt}"
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
                    "ServiceName": service,
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
                ride_out="the installer",
            )
            if not finished:
                raise StepFailed(
                    f"the installer is still running after {config.timeout_minutes:g} minutes "
                    f"(pid {status.pid}). Look at {log} on the host; raise installer.timeout_minutes "
                    "if it is just slow. It was left running; run again to resume waiting for it",
                    {"attempts": attempt, "log_tail": status.log_tail},
                )
            if status.launch_error:
                raise StepFailed(
                    f"the installer could not be started: {status.launch_error}. Nothing was installed; "
                    f"check that {installer_path(ctx)} may run on {ctx.host} (AppLocker, antivirus, the WinRM "
                    "account's rights), then run again",
                    {"attempts": attempt, "log": log, "launch_error": status.launch_error},
                )
            decided = exit_code(status)
            code = decided.code
            if decided.note:
                ctx.note(decided.note)
            if code == BUSY and attempt <= config.busy_retries:
                ctx.note(
                    f"exit code 1618: another installation is running; trying again in {config.busy_wait_seconds:g} s"
                )
                await asyncio.sleep(config.busy_wait_seconds)
                continue
            return status, decided, attempt, log, state_file

    async def _status(self, ctx: StepContext, state_file: str) -> InstallStatus:
        params = {
            "StateFile": state_file,
            "Tail": 15,
            "LineChars": LOG_LINE_CHARS,
            "ServiceName": ctx.config.connector.service,
        }
        return await read_script(ctx, "install_status", InstallStatus, params, retry_safe=True)

    async def verify(self, ctx: StepContext) -> VerifyResult:
        product = await installed_version(ctx)
        target = ctx.config.installer.version
        if product.installed and versus_target(product.version, target) == 0:
            return VerifyResult(
                True, f"{product.display_name} {product.version} installed", {"product": product.dump()}
            )
        return VerifyResult(
            False, f"Programs & Features still shows {product.version}, not {target}", {"product": product.dump()}
        )
