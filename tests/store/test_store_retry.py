"""Store.retry_run: one transaction, or nothing written (the failed step, the run, run.retried)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.core.models import RunState, StepState
from bot.store.store import HostBusy, NotRetriable, UnknownRecord

PLAN = ["preflight", "install", "verify"]


def failed_at_install(store):
    [run] = store.create_runs(["host01"], requester="U0REQ", plan=PLAN)
    store.set_run_state(run.id, RunState.running, event="run.started")
    store.update_step(run.id, "preflight", StepState.checking, event="step.started")
    store.update_step(run.id, "preflight", StepState.succeeded, event="step.succeeded", reason="ok")
    store.update_step(run.id, "install", StepState.checking, event="step.started")
    store.update_step(run.id, "install", StepState.applying, facts={"product": {"version": "19.03.0.0"}})
    store.update_step(
        run.id, "install", StepState.failed, event="step.failed", reason="exit code 1603", facts={"exit_code": 1603}
    )
    store.request_cancel(run.id, "U0SOMEONE")  # asked while it ran: the new attempt must not inherit it
    store.set_run_state(run.id, RunState.failed, event="run.failed", result="install failed: exit code 1603")
    return store.get_run(run.id)


def test_retry_reopens_the_failed_step_and_queues_the_next_attempt(store):
    run = failed_at_install(store)
    retried = store.retry_run(run.id, "U0REQ", "fixed the MSI")
    assert retried.state is RunState.queued and retried.attempt == 2
    assert retried.result is None and retried.finished_at is None and retried.cancel_requested_by is None
    steps = {s.step: s for s in store.steps(run.id)}
    assert steps["preflight"].state is StepState.succeeded and steps["preflight"].attempts == 1
    install = steps["install"]
    assert install.state is StepState.pending and install.reason is None and install.facts == {}
    assert install.attempts == 1 and install.applied == 1  # kept: how often it was checked and applied
    assert steps["verify"].state is StepState.pending
    [event] = [e for e in store.audit_events(run.id) if e.event == "run.retried"]
    assert event.actor == "U0REQ"
    assert event.detail["why"] == "fixed the MSI" and event.detail["attempt"] == 2
    assert event.detail["from_step"] == "install"
    assert event.detail["previous_result"] == "install failed: exit code 1603"
    assert event.detail["failed_step"]["facts"]["exit_code"] == 1603
    assert event.detail["failed_step"]["reason"] == "exit code 1603"
    # an approval asked now belongs to the new attempt
    approval = store.request_approval(
        run.id,
        "install",
        gate="install",
        timeout=timedelta(minutes=1),
        min_approvals=1,
        evidence={},
        change={"host": "host01"},
    )
    assert approval.attempt == 2
    assert store.verify_audit().ok


def nothing_written(store, run_id, before):
    assert len(store.audit_events()) == before
    run = store.get_run(run_id)
    assert run.attempt == 1
    return run


def test_another_active_run_on_the_host_refuses_it_naming_that_run_and_writes_nothing(store):
    run = failed_at_install(store)
    [other] = store.create_runs(["host01"], requester="U0REQ", plan=PLAN)
    before = len(store.audit_events())
    with pytest.raises(HostBusy) as refused:
        store.retry_run(run.id, "U0REQ", "again")
    assert other.id in str(refused.value)
    assert nothing_written(store, run.id, before).state is RunState.failed
    assert store.step(run.id, "install").state is StepState.failed


@pytest.mark.parametrize("state", [RunState.succeeded, RunState.denied, RunState.cancelled])
def test_a_run_that_did_not_fail_is_not_retried(store, state):
    [run] = store.create_runs(["host01"], requester="U0REQ", plan=PLAN)
    store.set_run_state(run.id, state, event=f"run.{state.value}", result="ended")
    before = len(store.audit_events())
    with pytest.raises(NotRetriable):
        store.retry_run(run.id, "U0REQ", "again")
    assert nothing_written(store, run.id, before).state is state


def test_a_failed_run_with_no_failed_step_or_reverting_or_unknown_is_refused(store):
    [run] = store.create_runs(["host01"], requester="U0REQ", plan=PLAN)
    store.set_run_state(run.id, RunState.failed, event="run.failed", result="failed")
    before = len(store.audit_events())
    with pytest.raises(NotRetriable, match="no failed step"):
        store.retry_run(run.id, "U0REQ", "again")
    store.db.table("runs").update(run.id, {"recovery": "revert"})
    with pytest.raises(NotRetriable, match="being reverted"):
        store.retry_run(run.id, "U0REQ", "again")
    with pytest.raises(UnknownRecord):
        store.retry_run("run-00000000", "U0REQ", "again")
    nothing_written(store, run.id, before)
