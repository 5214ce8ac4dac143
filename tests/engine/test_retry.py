"""Retry from the failed step, with the real steps against a simulated host (pywinrm over 127.0.0.1).

A run that failed at the installer (exit 1603) is tried again once the fault is cleared: it resumes at the
install step's check, asks the install approval again (a grant covers the attempt it was given in), starts a
new installer, and succeeds; the steps that succeeded before are not applied again. Every refusal writes nothing.
"""

from __future__ import annotations

from bot.core.models import ApprovalState, RunState, StepState
from tests.engine.test_engine import Approver
from tests.support.configs import APPROVER, GROUP_MEMBER, REQUESTER
from tests.support.fake_steps import FileHost

STRANGER = "U0STRANGER1"


def counts(store, run_id):
    return {r.step: (r.state, r.attempts, r.applied) for r in store.steps(run_id)}


async def test_a_failed_install_retried_after_the_fault_is_cleared_succeeds_from_its_step(upgrade):
    seen = {}

    async def retry(engine, host, clicker, run):
        store = engine.store
        assert run.state is RunState.failed and run.attempt == 1
        seen["before"] = counts(store, run.id)
        seen["asked_before"] = [a["gate"] for a in clicker.asked]
        seen["installs_before"] = host.state.installs_started
        events_before = len(store.audit_events())

        # a stranger, and another run active on the host: refused, nothing written
        refused = await engine.retry(run.id, STRANGER, "why not")
        assert not refused.ok and "approver" in refused.message
        [other] = store.create_runs(["host01"], requester=REQUESTER, plan=["preflight"])
        busy = await engine.retry(run.id, REQUESTER, "fixed")
        assert not busy.ok and other.id in busy.message and "unchanged" in busy.message
        store.set_run_state(other.id, RunState.cancelled, event="run.cancelled", result="test: out of the way")
        store.db.table("runs").update(run.id, {"recovery": "revert"})  # as the revert part marks a run it reverts
        reverting = await engine.retry(run.id, REQUESTER, "fixed")
        assert not reverting.ok and "being reverted" in reverting.message
        store.db.table("runs").update(run.id, {"recovery": None})
        assert len(store.audit_events()) == events_before + 2  # other's run.requested and run.cancelled only
        assert store.get_run(run.id).state is RunState.failed

        host.state.installer.exit_code = 0  # the cause on the host is fixed
        reply = await engine.retry(run.id, REQUESTER, "freed the MSI mutex")
        assert reply.ok, reply.message
        assert "attempt 2" in reply.message and "Run the connector installer" in reply.message

    engine, host, clicker, run = await upgrade("install-fails-1603", then=retry)
    store = engine.store
    assert run.state is RunState.succeeded, run.result
    assert run.attempt == 2
    after = counts(store, run.id)
    before = seen["before"]
    assert before["install"][0] is StepState.failed
    # every step that succeeded (or was skipped) before: not checked or applied again
    for step, (state, attempts, applied) in before.items():
        if state in (StepState.succeeded, StepState.skipped):
            assert after[step] == (state, attempts, applied), step
    assert after["install"][0] is StepState.succeeded
    assert after["install"][1] == before["install"][1] + 1  # checked again, as a new attempt
    assert after["install"][2] == before["install"][2] + 1
    assert host.state.installs_started == seen["installs_before"] + 1  # a new installer, not the failed one's record

    # the install approval was asked again, and each request belongs to its attempt
    asked_after = [a["gate"] for a in clicker.asked][len(seen["asked_before"]) :]
    assert "install" in asked_after
    installs = [a for a in store.approvals(run.id, "install")]
    assert [a.attempt for a in installs] == [1, 2]
    assert all(a.state is ApprovalState.granted for a in installs)

    [retried] = [e for e in store.audit_events(run.id) if e.event == "run.retried"]
    assert retried.actor == REQUESTER
    assert retried.detail["why"] == "freed the MSI mutex"
    assert retried.detail["attempt"] == 2 and retried.detail["from_step"] == "install"
    assert "1603" in retried.detail["previous_result"]
    assert retried.detail["failed_step"]["facts"]["exit_code"] == 1603  # the failed attempt stays readable
    started = [e for e in store.audit_events(run.id) if e.event == "step.started" and e.step == "install"]
    assert started[-1].detail.get("retried") is True
    assert store.verify_audit().ok


async def test_retrying_a_denied_a_succeeded_or_an_unknown_run_is_refused_and_writes_nothing(upgrade):
    async def refuse(engine, host, clicker, run):
        store = engine.store
        assert run.state is RunState.denied
        events = len(store.audit_events())
        denied = await engine.retry(run.id, REQUESTER, "again")
        assert not denied.ok and "a person refused" in denied.message and "new run" in denied.message
        unknown = await engine.retry("run-00000000", REQUESTER)
        assert not unknown.ok and "There is no run" in unknown.message
        assert len(store.audit_events()) == events
        assert store.get_run(run.id).state is RunState.denied and store.get_run(run.id).attempt == 1

    *_, run = await upgrade("default", decision={"install": "deny"}, then=refuse)
    assert run.state is RunState.denied


async def test_retrying_a_succeeded_run_is_refused(upgrade):
    async def refuse(engine, host, clicker, run):
        assert run.state is RunState.succeeded
        events = len(engine.store.audit_events())
        reply = await engine.retry(run.id, APPROVER, "again")
        assert not reply.ok and "only a failed run can be retried" in reply.message
        assert len(engine.store.audit_events()) == events

    await upgrade("default", then=refuse)


async def test_only_the_retried_run_goes_on_the_rest_of_its_batch_stays_cancelled(engine_factory, tmp_path):
    engine = await engine_factory(Approver(), fail={"charlie": "apply"})
    first, second = await engine.submit(["host01", "host02"], REQUESTER)
    await engine.join()
    store = engine.store
    assert store.get_run(first.id).state is RunState.failed
    assert store.get_run(second.id).state is RunState.cancelled

    engine.steps["charlie"].fail = None  # the cause is fixed
    reply = await engine.retry(first.id, GROUP_MEMBER, "fixed")  # an approver, by their user group
    assert reply.ok and "stays cancelled (host02)" in reply.message, reply.message
    await engine.join()
    assert store.get_run(first.id).state is RunState.succeeded and store.get_run(first.id).attempt == 2
    assert store.get_run(second.id).state is RunState.cancelled
    assert FileHost(tmp_path, "host02").applies() == []
    # alpha, bravo once; charlie's failed apply and its new one; delta once
    assert FileHost(tmp_path, "host01").applies() == ["alpha", "bravo", "charlie", "charlie", "delta"]
    # bravo's STARTTLS, granted in attempt 1, is not asked again (bravo succeeded); delta's reboot, first
    # reached in attempt 2, is asked in it
    assert [(a.gate, a.attempt) for a in store.approvals(first.id)] == [("STARTTLS", 1), ("reboot", 2)]
