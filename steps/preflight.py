"""preflight: read the host once and refuse, with the reason and what to do, when it is unfit."""

from __future__ import annotations

from typing import Any

from bot.core.gates import PENDING_REBOOT, Gate
from steps.base import CheckResult, PlannedStep, Step, StepContext, StepFailed, VerifyResult
from steps.common import GiB, read_host, versus_target
from steps.facts import HostFacts


class Preflight(Step):
    id = "preflight"
    title = "Preflight checks"
    read_only = True

    async def check(self, ctx: StepContext) -> CheckResult:
        host = await read_host(ctx)
        facts = host.dump()
        config = ctx.config
        target = config.installer.version
        connector = host.connector
        if not connector.installed:
            raise StepFailed(
                f"no connector installed: Programs & Features has no entry like '{config.connector.product_name}'. "
                "This tool upgrades an existing connector; install it by hand, or fix connector.product_name",
                facts,
            )
        current = connector.version
        if versus_target(current, target) > 0:
            raise StepFailed(
                f"the connector is {current}, newer than the target {target}: nothing to upgrade. "
                "If that is unexpected, check installer.version",
                facts,
            )
        if versus_target(current, target) == 0:
            return CheckResult(
                True,
                f"the connector is already at {target}",
                facts,
                skip_rest=f"nothing to do: the connector is already at {target}",
            )
        free = host.disk.free_bytes or 0
        minimum = config.preflight.min_free_disk_gb
        if free < minimum * GiB:
            raise StepFailed(
                f"only {free / GiB:.1f} GB free on C:, below preflight.min_free_disk_gb = {minimum:g}. "
                "Free disk space on the host, then run again",
                facts,
            )
        pending = host.pending_reboot
        if pending.any and config.preflight.pending_reboot == "refuse":
            raise StepFailed(
                f"a reboot is already pending ({', '.join(pending.reasons)}). Reboot the server first, "
                "or set preflight.pending_reboot = 'ask' to let an approver decide",
                facts,
            )
        return CheckResult(True, self._summary(host, target), facts)

    def gate_for(self, ctx: StepContext, check: CheckResult) -> Gate | None:
        host = HostFacts.stored(check.facts)
        if host and host.pending_reboot.any and not ctx.run.check_only and not check.skip_rest:
            return PENDING_REBOOT
        return None

    async def plan(self, ctx: StepContext) -> PlannedStep:
        # It has just run (the dry run's only real step): what it read, and the approval an upgrade would ask.
        host = HostFacts.stored(ctx.facts.get(self.id))
        if host is None:
            return PlannedStep(True, "read the host")
        pending = host.pending_reboot.any and ctx.config.preflight.pending_reboot == "ask"
        target = ctx.config.installer.version
        if versus_target(host.connector.version, target) == 0:
            return PlannedStep(True, f"the connector is already at {target}")
        return PlannedStep(True, self._summary(host, target), gate=PENDING_REBOOT.name if pending else None)

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        host = HostFacts.model_validate(check.facts)
        reasons = ", ".join(host.pending_reboot.reasons)
        return {
            "what_changes": f"go on upgrading although a reboot is already pending on {ctx.host} ({reasons})",
            "facts": check.facts,
        }

    def change(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        host = HostFacts.model_validate(check.facts)
        return {"host": ctx.host, "upgrade_with_pending_reboot": sorted(host.pending_reboot.reasons)}

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        return {}  # preflight only reads; the approval (if any) is the decision

    async def verify(self, ctx: StepContext) -> VerifyResult:
        host = HostFacts.stored(ctx.facts.get(self.id))
        return VerifyResult(True, self._summary(host, ctx.config.installer.version) if host else "host fit")

    @staticmethod
    def _summary(host: HostFacts, target: str) -> str:
        machine = "VMware virtual machine" if host.machine.virtual else "physical server"
        return (
            f"connector {host.connector.version} → {target}; service {host.service.state} "
            f"({host.service.start_mode}); JRE {host.java.version} at {host.java.home}; "
            f"{(host.disk.free_bytes or 0) / GiB:.1f} GB free; {machine}"
        )
