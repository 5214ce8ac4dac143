"""snapshot: before anything changes, a VM snapshot, by vCenter (pyvmomi) or by a person who confirms.

Physical servers are skipped. The snapshot is named with the run id, so a resumed run finds it instead
of taking a second one, and the run's final summary says which snapshot to revert to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.core.gates import SNAPSHOT, Gate
from bot.core.models import StepRecord, StepState
from steps.base import CheckResult, PlannedStep, Step, StepContext, StepFailed, VerifyResult
from steps.facts import HostFacts, Machine

if TYPE_CHECKING:
    from bot.systems.vcenter import Snapshot as VMSnapshot  # pyVmomi is optional


def snapshot_name(ctx: StepContext) -> str:
    return f"idm-upgrade {ctx.run.id} before connector {ctx.config.installer.version}"


def vm_name(ctx: StepContext) -> str:
    return ctx.config.hosts[ctx.host].vm_name or ctx.host


class Snapshot(Step):
    id = "snapshot"
    title = "Snapshot the virtual machine"

    async def check(self, ctx: StepContext) -> CheckResult:
        preflight = HostFacts.stored(ctx.facts.get("preflight"))
        machine = preflight.machine if preflight else Machine()
        if not machine.virtual:
            return CheckResult(False, f"physical server ({machine.manufacturer} {machine.model}): no VM snapshot")
        vcenter = ctx.vcenter
        if vcenter is None:
            return CheckResult(True, f"take a snapshot of VM {vm_name(ctx)} by hand, then confirm", {"manual": True})
        existing = await vcenter.find_snapshot(vm_name(ctx), snapshot_name(ctx), host=ctx.host)
        if existing:
            return CheckResult(False, f"snapshot '{existing.name}' already taken", {"snapshot": _facts(existing)})
        return CheckResult(True, f"snapshot VM {vm_name(ctx)} in vCenter", {"vm": vm_name(ctx)})

    async def plan(self, ctx: StepContext) -> PlannedStep:
        check = await self.check(ctx)  # looks the snapshot up in vCenter, takes none
        if not check.needed:
            return PlannedStep(False, check.reason)
        who = "by a person, who confirms" if check.facts.get("manual") else "by vCenter"
        changes = [
            f"VM {vm_name(ctx)}: a snapshot named 'idm-upgrade RUN before connector "
            f"{ctx.config.installer.version}' (the upgrade run's id), {who}"
        ]
        gate = self.gate_for(ctx, check)
        return PlannedStep(True, check.reason, changes, gate.name if gate else None)

    def gate_for(self, ctx: StepContext, check: CheckResult) -> Gate | None:
        return SNAPSHOT if check.facts.get("manual") else None

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        return {
            "what_to_do": f"take a snapshot of VM {vm_name(ctx)} (without memory) named '{snapshot_name(ctx)}', "
            "then click Snapshot taken",
            "why": "the vendor procedure: snapshot a virtual connector before upgrading it",
        }

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        vcenter = ctx.vcenter
        if vcenter is None:
            return {"manual": True, "snapshot": {"name": snapshot_name(ctx), "taken_by": "a person (confirmed)"}}
        taken = await vcenter.take_snapshot(
            vm_name(ctx),
            snapshot_name(ctx),
            f"Taken by idm-upgrade before upgrading the connector; run {ctx.run.id}",
            deadline=ctx.config.vcenter.snapshot_timeout_seconds,
            host=ctx.host,
        )
        return {"snapshot": _facts(taken)}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        vcenter = ctx.vcenter
        if vcenter is None:
            return VerifyResult(True, f"a person confirmed the snapshot of VM {vm_name(ctx)}")
        found = await vcenter.find_snapshot(vm_name(ctx), snapshot_name(ctx), host=ctx.host)
        if found is None:
            raise StepFailed(f"no snapshot named '{snapshot_name(ctx)}' on VM {vm_name(ctx)} after taking it")
        return VerifyResult(
            True, f"snapshot '{found.name}' ({found.id}) is on VM {vm_name(ctx)}", {"snapshot": _facts(found)}
        )

    def changed(self, record: StepRecord) -> str | None:
        snapshot = record.facts.get("snapshot")
        if snapshot and record.state in (StepState.succeeded, StepState.skipped):
            return f"snapshot '{snapshot['name']}' taken" + (" (by a person)" if record.facts.get("manual") else "")
        return None

    def closing_note(self, record: StepRecord, host_changed: bool) -> str | None:
        snapshot = record.facts.get("snapshot")
        if not (snapshot and record.state in (StepState.succeeded, StepState.skipped)):
            return None
        if host_changed:
            return f"If something is wrong, revert the VM to snapshot '{snapshot['name']}'"
        # Nothing on the host changed: a revert would undo nothing, and an old snapshot slows the VM down.
        return f"Nothing on the host needs a revert; delete snapshot '{snapshot['name']}' once you no longer need it"


def _facts(snapshot: VMSnapshot) -> dict[str, Any]:
    return {"name": snapshot.name, "id": snapshot.id, "vm": snapshot.vm, "quiesced": snapshot.quiesced}
