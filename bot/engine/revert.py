"""Revert an ended run's VM to its snapshot (issue 20), as Ansible's win_reboot reads: named timeouts,
every wait bounded, each event written before the action it describes.

The run is already back in ``running`` with ``recovery = "revert"`` (``Store.begin_revert``, audited as
``revert.requested``). Then:

1. the ``revert`` approval (``bot.core.gates.REVERT``), bound to {host, vm, snapshot id and name, run}; the
   asker may not grant it (``ApprovalPolicy.may_decide`` with the request's ``requested_by``);
2. at apply time the snapshot is looked up again: another id under that name supersedes the grant and a new
   request shows it; none at all fails the revert, nothing reverted;
3. ``revert.started`` → RevertToSnapshot_Task (``vcenter.revert_timeout_seconds``) → ``revert.reverted``
   → PowerOnVM_Task when the VM came back off → ``revert.powered_on``; without vCenter, or for a snapshot a
   person took, a person reverts and powers on by hand and confirms (``REVERT_BY_HAND``);
4. WinRM answers again (within ``reboot.timeout_seconds``, the bound a reboot gets) and the connector is at
   the version preflight saw before the run, its service Running → ``revert.verified``;
5. the run ends as it had ended (failed or denied), its result saying what was reverted and verified.
   Any failure: ``revert.failed`` with the cause, the run ends as it had. Denied or expired: nothing reverted.

A crash anywhere resumes here (``Engine._drive`` hands a reverting run to ``drive``), from the events
already recorded since the last ``revert.requested``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.core.errors import ExternalSystemError
from bot.core.gates import REVERT, REVERT_BY_HAND, Gate, change_digest
from bot.core.models import Approval, ApprovalState, Run, RunState, StepRecord
from bot.engine import recovery
from steps.base import StepContext

if TYPE_CHECKING:
    from bot.engine.engine import Engine
    from bot.engine.slots import Slot

REVERT_STEP = "revert"  # what a revert's requests are filed under (no step of the plan)
HostReader = Callable[[StepContext], Awaitable[dict[str, Any]]]


class RevertFailed(Exception):
    """The revert could not be done or verified; the message is the cause people read."""


def progress(store: Any, run_id: str) -> tuple[set[str], dict[str, Any]]:
    """The revert.* events since the run's last revert.requested, and that request's detail (store thread)."""
    events = store.audit_events(run_id)
    start = max((i for i, e in enumerate(events) if e.event == "revert.requested"), default=None)
    if start is None:
        return set(), {}
    asked = events[start]
    return {e.event for e in events[start + 1 :]}, {**asked.detail, "asker": asked.actor, "seq": asked.seq}


async def drive(engine: Engine, run: Run, slot: Slot) -> None:
    store = engine.store
    records = await engine._db(store.steps, run.id)
    done, asked = await engine._db(progress, store, run.id)
    snapshot = recovery.snapshot_taken(records) or {}
    before = _version_before(records)
    original = run.result or ""
    vcenter = engine.services.vcenter if engine.services is not None else None
    by_hand = vcenter is None or bool(snapshot.get("manual")) or not snapshot.get("id")
    vm = snapshot.get("vm") or engine.config.hosts[run.host].vm_name or run.host
    try:
        if not snapshot:
            raise RevertFailed("the run has no snapshot to revert to")
        if "revert.started" not in done:
            granted = await _granted(engine, run, slot, snapshot, vm, asked, by_hand)
            if granted is None:
                return
            snapshot = {**snapshot, "id": granted.change.get("snapshot_id"), "name": granted.change["snapshot_name"]}
            await engine._db(
                store.revert_event, run.id, "revert.started", {"snapshot": snapshot, "vm": vm, "by_hand": by_hand}
            )
            engine._publish("revert.started", run, f"reverting VM {vm} to snapshot '{snapshot['name']}'")
        else:
            snapshot = (await engine._db(_started_snapshot, store, run.id)) or snapshot
        if by_hand:
            if "revert.reverted" not in done:
                person = await _confirmed(engine, run, slot, snapshot, vm, asked)
                if person is None:
                    return
                await engine._db(store.revert_event, run.id, "revert.reverted", {"snapshot": snapshot, "by": person})
        else:
            assert vcenter is not None
            if "revert.reverted" not in done:
                # Reverting again to the same snapshot (after a crash before revert.reverted was written) is
                # safe: the disk comes back to the same state whatever happened since.
                power = await vcenter.revert_to_snapshot(vm, snapshot["id"], host=run.host)
                await engine._db(
                    store.revert_event, run.id, "revert.reverted", {"snapshot": snapshot, "power_state": power.state}
                )
                engine._publish("revert.reverted", run, f"VM {vm} reverted to '{snapshot['name']}' ({power.state})")
            if "revert.powered_on" not in done:
                power = await vcenter.power_state(vm, host=run.host)
                if not power.on:  # a snapshot without memory comes back powered off
                    power = await vcenter.power_on(vm, host=run.host)
                await engine._db(store.revert_event, run.id, "revert.powered_on", {"power_state": power.state})
        now = await _host_back(engine, run, records)
        problems = []
        if before is not None and now.get("version") != before:
            problems.append(f"the connector is at {now.get('version')}, not {before} as before the run")
        if now.get("service") != "Running":
            problems.append(f"the connector service is {now.get('service')}, not Running")
        if problems:
            raise RevertFailed(f"after the revert to snapshot '{snapshot['name']}': {'; '.join(problems)}")
        verified = f"connector {now.get('version')} (as before the run), service Running"
        await engine._db(store.revert_event, run.id, "revert.verified", {"snapshot": snapshot, "host": now})
        result = f"reverted to snapshot '{snapshot['name']}'" + (f" ({snapshot['id']})" if snapshot.get("id") else "")
        await _end(engine, run, f"{result}; verified: {verified}\n{original}", reverted=True)
    except asyncio.CancelledError:
        raise
    except (RevertFailed, ExternalSystemError) as exc:
        cause = str(exc)
        await _end(engine, run, f"revert failed: {cause}\n{original}", reverted=False, failed=cause)


def _version_before(records: list[StepRecord]) -> str | None:
    preflight = next((r.facts for r in records if r.step == "preflight"), {})
    return (preflight.get("connector") or {}).get("version")


def _started_snapshot(store: Any, run_id: str) -> dict[str, Any]:
    started = [e for e in store.audit_events(run_id) if e.event == "revert.started"]
    return dict(started[-1].detail.get("snapshot") or {}) if started else {}


async def _end(engine: Engine, run: Run, result: str, *, reverted: bool, failed: str | None = None) -> None:
    done = await engine._db(engine.store.end_revert, run.id, result=result, reverted=reverted, failed=failed)
    if done is not None:
        await engine._ended(done, f"{done.state.label}: {result}")
    engine._wakeups.pop(run.id, None)


async def _granted(
    engine: Engine, run: Run, slot: Slot, snapshot: dict[str, Any], vm: str, asked: dict[str, Any], by_hand: bool
) -> Approval | None:
    """The revert approval, granted for the snapshot as it is now; None when it was denied or expired."""
    vcenter = engine.services.vcenter if engine.services is not None else None
    current = dict(snapshot)
    for _ in range(3):  # MAX_REQUESTS_PER_GATE: the snapshot keeps changing under its name
        change = {
            "host": run.host,
            "vm": vm,
            "snapshot_id": current.get("id"),
            "snapshot_name": current["name"],
            "run": run.id,
            # which revert this is (the seq of its revert.requested): a grant covers only the revert it was asked for
            "revert_request": asked.get("seq"),
        }
        shown = f"'{current['name']}'" + (f" ({current['id']})" if current.get("id") else "")
        evidence = {
            "what_changes": f"revert VM {vm} of {run.host} to snapshot {shown}"
            + (" by hand (a person reverts it and powers it on)" if by_hand else " with vCenter, then power it on")
            + ": everything on the server since the snapshot is undone",
            "why": f"asked by {asked.get('asker')}"
            + (f": {asked['why']}" if asked.get("why") else "")
            + f"; the run ended {run.ended_as.value if run.ended_as else '?'}",
        }
        approval = await _ask(engine, run, slot, REVERT, change, evidence, asked, f"revert to snapshot {shown}")
        if approval.state is not ApprovalState.granted:
            await _not_granted(engine, run, approval, "nothing was reverted")
            return None
        if by_hand or vcenter is None:
            return approval
        found = await vcenter.find_snapshot(vm, current["name"], host=run.host)
        if found is None:
            raise RevertFailed(f"snapshot '{current['name']}' is no longer on VM {vm}; nothing was reverted")
        if found.id == approval.change.get("snapshot_id"):
            return approval
        # Not the snapshot the approvers saw: their grant does not cover it; they are asked again.
        why = f"the snapshot under that name is now {found.id}, not {approval.change.get('snapshot_id')}"
        await engine._db(engine.store.supersede_approval, approval.id, digest=change_digest(change), why=why)
        engine._publish("approval.superseded", run, f"revert request superseded: {why}; asking again")
        current = {**current, "id": found.id}
    raise RevertFailed("the snapshot changed 3 times while people decided; nothing was reverted")


async def _confirmed(
    engine: Engine, run: Run, slot: Slot, snapshot: dict[str, Any], vm: str, asked: dict[str, Any]
) -> str | None:
    change = {
        "host": run.host,
        "vm": vm,
        "snapshot_name": snapshot["name"],
        "run": run.id,
        "by_hand": True,
        "revert_request": asked.get("seq"),
    }
    evidence = {
        "what_to_do": f"in the vSphere Client, revert VM {vm} to snapshot '{snapshot['name']}', power it on, "
        "then click Reverted and powered on",
        "why": "the bot has no vCenter for this snapshot",
    }
    approval = await _ask(engine, run, slot, REVERT_BY_HAND, change, evidence, asked, "revert the VM by hand")
    if approval.state is not ApprovalState.granted:
        await _not_granted(engine, run, approval, "the revert was not confirmed")
        return None
    return next((d.user for d in approval.decisions if d.decision == "approve"), "a person")


async def _not_granted(engine: Engine, run: Run, approval: Approval, what: str) -> None:
    if approval.state is ApprovalState.denied:
        deny = next((d for d in reversed(approval.decisions) if d.decision == "deny"), None)
        who = deny.user if deny else "an approver"
        text = f"{approval.gate} request denied by {who}: {what}"
    else:
        text = f"{approval.gate} request {approval.state.value}: {what}"
    await _end(engine, run, f"{text}\n{run.result or ''}", reverted=False)


async def _ask(
    engine: Engine,
    run: Run,
    slot: Slot,
    gate: Gate,
    change: dict[str, Any],
    evidence: dict[str, Any],
    asked: dict[str, Any],
    reason: str,
) -> Approval:
    """The request for ``gate`` bound to ``change`` (one already asked for it is reused), decided."""
    store, digest = engine.store, change_digest(change)
    mine = [
        a
        for a in await engine._db(store.approvals, run.id, REVERT_STEP)
        if a.gate == gate.name and a.change.get("revert_request") == change["revert_request"]
    ]
    latest = mine[-1] if mine else None
    if latest is not None and latest.state in (ApprovalState.open, ApprovalState.granted) and latest.digest != digest:
        why = "it showed another snapshot than the one found now"
        await engine._db(store.supersede_approval, latest.id, digest=digest, why=why)
        latest = None
    if latest is None or latest.state not in (ApprovalState.open, ApprovalState.granted):
        kind = gate.kind.value
        latest = await engine._db(
            store.request_approval,
            run.id,
            REVERT_STEP,
            gate=gate.name,
            timeout=timedelta(minutes=engine.config.slack.approval_timeout_minutes),
            min_approvals=engine.config.slack.min_approvals if kind == "approval" else 1,
            evidence={**evidence, "requested_by": asked.get("asker") or run.requester, "host": run.host, "kind": kind},
            change=change,
        )
    if latest.state is ApprovalState.open:
        engine.announce_request(run, REVERT_STEP, gate, latest, f"{gate.name} {gate.kind.value} needed: {reason}")
        async with slot.released():  # nobody's host waits on a person's decision
            # a revert cannot be cancelled (Engine.cancel refuses): an approver denies its request instead
            latest = await engine.await_decision(run, REVERT_STEP, latest.id, cancellable=False)
    if latest.state is ApprovalState.granted:
        await engine._db(store.set_run_state, run.id, RunState.running)
    return latest


async def _host_back(engine: Engine, run: Run, records: list[StepRecord]) -> dict[str, Any]:
    """The connector as the host reports it once WinRM answers again, within reboot.timeout_seconds."""
    reader: HostReader | None = engine.revert_reader
    if reader is None:
        raise RevertFailed("this engine was built without a host reader; the revert cannot be verified")
    record = next(r for r in records if r.step == "preflight")
    ctx = StepContext(
        run=run, config=engine.config, record=record, facts={r.step: r.facts for r in records}, services=engine.services
    )
    timeout = engine.config.reboot.timeout_seconds
    ends = time.monotonic() + timeout
    while True:
        try:
            return await reader(ctx)
        except ExternalSystemError as exc:
            left = ends - time.monotonic()
            if left <= 0:
                raise RevertFailed(
                    f"{run.host} did not answer over WinRM within {timeout:g} s after the revert "
                    f"(reboot.timeout_seconds): {exc}"
                ) from None
            await asyncio.sleep(min(engine.config.winrm.poll_seconds, left))
