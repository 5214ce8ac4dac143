"""reboot: only when needed, after approval, the way Ansible's win_reboot does it.

Needed when the JRE changed, the installer asked (3010), or Windows reports a pending reboot after
the install. Issued once per run: the host keeps a marker per token, so a crash and resume never
reboots twice. Then: wait for a new boot time (bounded), and re-check the service and JAVA_HOME.
"""

from __future__ import annotations

from typing import Any

from bot.core.gates import REBOOT
from bot.systems.winrm import HostUnreachable
from steps.base import CheckResult, Step, StepContext, StepFailed, VerifyResult
from steps.common import boot_time, executor, read_host, run_script, version_tuple
from steps.service import healthy


def reasons_for_reboot(install: dict[str, Any], now: dict[str, Any]) -> list[str]:
    reasons = []
    if install.get("jre_changed"):
        reasons.append(f"the JRE changed ({install['java_before']['version']} → {install['java_after']['version']})")
    if install.get("exit_code") == 3010:
        reasons.append("the installer exited 3010 (reboot required)")
    if now["pendingReboot"]["any"]:
        reasons.append(f"Windows reports a pending reboot ({', '.join(now['pendingReboot']['reasons'])})")
    return reasons


class Reboot(Step):
    id = "reboot"
    title = "Reboot the server (if needed)"
    gate = REBOOT

    async def check(self, ctx: StepContext) -> CheckResult:
        before = ctx.facts.get("preflight", {}).get("bootTime")
        try:
            now = await read_host(ctx)
        except HostUnreachable:
            if not (ctx.resumed_after_apply and before):
                raise
            # The bot stopped after issuing the reboot: the server may be down now. Wait for it, bounded.
            ctx.note("resuming while the server reboots: waiting for it to come back")
            await executor(ctx).wait_for_reboot(ctx.host, boot_time(before), ctx.config.reboot.timeout_seconds)
            now = await read_host(ctx)
        install = ctx.facts.get("install", {})
        facts = {"host": now}
        if before and boot_time(now["bootTime"]) != boot_time(before):
            return CheckResult(False, f"the server already restarted (boot time {now['bootTime']})", facts)
        reasons = reasons_for_reboot(install, now)
        if not reasons:
            return CheckResult(False, "no reboot needed: the JRE did not change and nothing is pending", facts)
        return CheckResult(True, "; ".join(reasons), {**facts, "reasons": reasons})

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        now = check.facts["host"]
        return {
            "what_changes": f"restart {ctx.host} now; the connector is unavailable until it is back "
            f"(up to {ctx.config.reboot.timeout_seconds:g} s)",
            "why": check.facts["reasons"],
            "verified_so_far": {
                "connector_version": now["connector"]["version"],
                "service": f"{now['service']['state']} ({now['service']['startMode']})",
                "java_home": now["java"]["home"],
            },
        }

    def when_denied(self, ctx: StepContext) -> str:
        return (
            f"The connector {ctx.config.installer.version} IS INSTALLED but {ctx.host} has NOT been rebooted: "
            "the reboot is still pending and the connector keeps the old JRE until then. "
            "Reboot the server in a maintenance window"
        )

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        config = ctx.config
        params = {
            "DelaySeconds": config.reboot.delay_seconds,
            "Reason": f"idm-upgrade {ctx.run.id}: connector upgrade to {config.installer.version} (approved)",
            "Token": ctx.run.id,
            "MarkerDirectory": config.installer.work_dir,
        }
        try:
            issued = (await run_script(ctx, "reboot", params, ends_connection=True)).data
        except HostUnreachable:
            # The connection dropping while shutdown runs means it worked (win_reboot counts it so).
            issued = {"issued": True, "connectionDropped": True}
        before = issued.get("bootTime") or ctx.facts["reboot"]["host"]["bootTime"]
        if issued.get("alreadyRebooted"):
            return {"reboot": issued}
        ctx.note(
            "reboot "
            + ("already scheduled by this run; waiting" if issued.get("alreadyScheduled") else "issued")
            + f"; waiting up to {config.reboot.timeout_seconds:g} s for the server to come back"
        )
        back = await executor(ctx).wait_for_reboot(ctx.host, boot_time(before), config.reboot.timeout_seconds)
        return {"reboot": issued, "boot_time_before": before, "boot_time_after": back.isoformat()}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        now = await read_host(ctx)
        facts = {"after_reboot": now}
        if not healthy(now["service"]):
            raise StepFailed(
                f"after the reboot {ctx.config.connector.service} is {now['service']['state']} "
                f"({now['service']['startMode']}); check connector.log on the host",
                facts,
            )
        before = (ctx.facts.get("install", {}).get("java_before")) or ctx.facts.get("preflight", {}).get("java", {})
        if not now["java"]["version"]:
            raise StepFailed(f"after the reboot JAVA_HOME ({now['java']['home']}) does not point at a JRE", facts)
        if version_tuple(now["java"]["version"]) < version_tuple(before.get("version")):
            raise StepFailed(
                f"after the reboot JAVA_HOME points at JRE {now['java']['version']}, older than the "
                f"{before.get('version')} the connector used before the upgrade",
                facts,
            )
        changed = now["java"]["home"] != before.get("home")
        facts["jre_changed_at_boot"] = changed
        return VerifyResult(
            True,
            f"back up; {ctx.config.connector.service} Running; JAVA_HOME {now['java']['home']} "
            f"(JRE {now['java']['version']}{', was ' + str(before.get('version')) if changed else ', unchanged'})",
            facts,
        )
