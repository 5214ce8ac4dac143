"""The engine with test steps on a real SQLite file: gates, policy, batches, cancel, concurrency."""

from __future__ import annotations

import asyncio
import io

import pytest

from bot.core.models import ApprovalState, RunState, StepState
from bot.engine.approvals import ApprovalPolicy, StaticGroups
from bot.engine.engine import Engine
from bot.store.store import HostBusy, Store
from bot.terminal.view import TerminalSink
from tests.support.configs import APPROVER, APPROVER2, GROUP, GROUP_MEMBER, OUTSIDER, REQUESTER
from tests.support.fake_steps import FileHost, gated_plan


class Approver:
    """A progress sink that answers each approval request like a person clicking a button."""

    def __init__(self, decisions: list[tuple[str, str]] | None = None):
        self.engine: Engine | None = None
        self.decisions = decisions if decisions is not None else [(APPROVER, "approve")]
        self.events = []
        self.replies = []

    async def deliver(self, event):
        self.events.append(event)
        if event.kind == "approval.requested" and self.engine:
            for user, decision in self.decisions:
                self.replies.append(await self.engine.decide(event.data["approval_id"], user, decision))


@pytest.fixture
def engine_factory(tmp_path, make_config):
    engines = []

    async def make(
        approver: Approver | None = None, fail: dict | None = None, groups=None, engine_kwargs=None, **config_kwargs
    ):
        config = make_config(**config_kwargs)
        store = Store(config.database.path)
        sinks = [approver] if approver else []
        engine = Engine(
            store,
            config,
            gated_plan(tmp_path, **(fail or {})),
            policy=ApprovalPolicy(config.slack, StaticGroups(groups or {GROUP: {GROUP_MEMBER}})),
            sinks=sinks,
            approval_poll_seconds=0.05,
            **(engine_kwargs or {}),
        )
        if approver:
            approver.engine = engine
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.store.close()


def events_of(store: Store, run_id: str) -> list[str]:
    return [e.event for e in store.audit_events(run_id)]


async def test_gates_granted_run_succeeds(engine_factory, tmp_path):
    approver = Approver()
    engine = await engine_factory(approver)
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    run = engine.store.get_run(run.id)
    assert run.state is RunState.succeeded
    assert [s.state for s in engine.store.steps(run.id)] == [StepState.succeeded] * 4
    assert FileHost(tmp_path, "host01").applies() == ["alpha", "bravo", "charlie", "delta"]
    events = events_of(engine.store, run.id)
    assert events.count("approval.requested") == 2 and events.count("approval.granted") == 2
    assert events[0] == "run.requested" and events[1] == "run.started" and events[-1] == "run.succeeded"
    gates = [a.gate for a in engine.store.approvals(run.id)]
    assert gates == ["STARTTLS", "reboot"]
    assert engine.store.verify_audit().ok
    await engine.stop()


async def test_denied_gate_ends_the_run_denied_and_changes_nothing_more(engine_factory, tmp_path):
    """A person refusing a gate is not a failure: the run ends `denied` (run.denied), the step shows it."""
    approver = Approver([(APPROVER, "deny")])
    engine = await engine_factory(approver)
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    run = engine.store.get_run(run.id)
    assert run.state is RunState.denied and not run.state.active
    assert run.result.startswith("STARTTLS approval denied by U0APPROVER1")
    assert FileHost(tmp_path, "host01").applies() == ["alpha"]  # bravo's apply never ran
    states = {s.step: s.state for s in engine.store.steps(run.id)}
    assert states == {
        "alpha": StepState.succeeded,
        "bravo": StepState.denied,
        "charlie": StepState.pending,
        "delta": StepState.pending,
    }
    assert events_of(engine.store, run.id)[-2:] == ["approval.denied", "run.denied"]
    assert engine.store.audit_events(run.id)[-1].actor == APPROVER  # the person who refused ended it
    assert engine.store.verify_audit().ok
    await engine.stop()


async def test_unanswered_gate_expires(engine_factory, tmp_path):
    engine = await engine_factory(Approver([]), slack="approval_timeout_minutes = 0.005")  # 0.3 s
    [run] = await engine.submit(["host01"], REQUESTER)
    await asyncio.wait_for(engine.join(), 10)
    run = engine.store.get_run(run.id)
    assert run.state is RunState.failed and "expired" in run.result
    assert [a.state for a in engine.store.approvals(run.id)] == [ApprovalState.expired]
    assert "approval.expired" in events_of(engine.store, run.id)
    assert FileHost(tmp_path, "host01").applies() == ["alpha"]
    await engine.stop()


async def test_cancel_while_waiting_for_approval(engine_factory, tmp_path):
    approver = Approver([])
    engine = await engine_factory(approver)
    [run] = await engine.submit(["host01"], REQUESTER)
    for _ in range(200):
        if engine.store.get_run(run.id).state is RunState.waiting_approval:
            break
        await asyncio.sleep(0.01)
    reply = await engine.cancel(run.id, REQUESTER)
    assert reply.ok
    await asyncio.wait_for(engine.join(), 5)
    run = engine.store.get_run(run.id)
    # the cause, then what the run had changed by then
    assert run.state is RunState.cancelled and run.result == f"cancelled by {REQUESTER}\nChanged: alpha applied"
    assert [a.state for a in engine.store.approvals(run.id)] == [ApprovalState.cancelled]
    assert events_of(engine.store, run.id)[-1] == "run.cancelled"
    # a click on the cancelled request changes nothing
    approval_id = engine.store.approvals(run.id)[0].id
    late = await engine.decide(approval_id, APPROVER, "approve")
    assert not late.ok and "already cancelled" in late.message
    assert FileHost(tmp_path, "host01").applies() == ["alpha"]
    await engine.stop()


async def test_cancel_refused_for_outsider(engine_factory):
    engine = await engine_factory(Approver([]))
    [run] = await engine.submit(["host01"], REQUESTER)
    reply = await engine.cancel(run.id, OUTSIDER)
    assert not reply.ok and "only the person who started the run" in reply.message
    assert engine.store.get_run(run.id).cancel_requested_by is None
    assert (await engine.cancel("run-nope", REQUESTER)).ok is False
    await engine.cancel(run.id, REQUESTER)
    await engine.join()
    await engine.stop()


async def test_self_approval_refused_by_default_and_audited(engine_factory):
    approver = Approver([(REQUESTER, "approve"), (APPROVER, "approve")])
    engine = await engine_factory(approver, approvers=[REQUESTER, APPROVER])
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    assert engine.store.get_run(run.id).state is RunState.succeeded
    refusals = [e for e in engine.store.audit_events(run.id) if e.event == "approval.refused"]
    assert len(refusals) == 2 and all(e.actor == REQUESTER for e in refusals)
    assert "approving your own run is not allowed" in refusals[0].detail["reason"]
    for approval in engine.store.approvals(run.id):
        assert approval.approvers == [APPROVER]
    assert "approving your own run" in approver.replies[0].message and not approver.replies[0].ok
    await engine.stop()


async def test_self_approval_allowed_when_configured(engine_factory):
    approver = Approver([(REQUESTER, "approve")])
    engine = await engine_factory(approver, approvers=[REQUESTER], slack="allow_self_approval = true")
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    assert engine.store.get_run(run.id).state is RunState.succeeded
    assert all(a.approvers == [REQUESTER] for a in engine.store.approvals(run.id))
    await engine.stop()


async def test_min_approvals_two_needs_two_different_people(engine_factory):
    approver = Approver([(APPROVER, "approve"), (APPROVER, "approve"), (GROUP_MEMBER, "approve")])
    engine = await engine_factory(approver, approvers=[APPROVER, GROUP], slack="min_approvals = 2")
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    assert engine.store.get_run(run.id).state is RunState.succeeded
    messages = [r.message for r in approver.replies[:3]]
    assert "1 of 2" in messages[0]
    assert "already approved" in messages[1] and not approver.replies[1].ok
    assert "approved for host01" in messages[2]
    for approval in engine.store.approvals(run.id):
        assert approval.approvers == [APPROVER, GROUP_MEMBER]
    grants = [e for e in engine.store.audit_events(run.id) if e.event == "approval.granted"]
    assert [(e.actor, e.detail["gate_open"]) for e in grants[:2]] == [(APPROVER, False), (GROUP_MEMBER, True)]
    await engine.stop()


async def test_outsider_click_refused_audited_and_request_stays_open(engine_factory):
    approver = Approver([(OUTSIDER, "approve"), (OUTSIDER, "deny")])
    engine = await engine_factory(approver)
    [run] = await engine.submit(["host01"], REQUESTER)
    for _ in range(200):
        if approver.replies[1:]:
            break
        await asyncio.sleep(0.01)
    [approval] = engine.store.approvals(run.id)
    assert approval.state is ApprovalState.open and approval.decisions == []
    refused = [e for e in engine.store.audit_events(run.id) if e.event == "approval.refused"]
    assert [e.actor for e in refused] == [OUTSIDER, OUTSIDER]
    assert "not an approver" in approver.replies[0].message
    # a real approver can still decide; a second decision afterwards changes nothing
    assert (await engine.decide(approval.id, APPROVER, "deny")).ok
    second = await engine.decide(approval.id, APPROVER2, "approve")
    assert not second.ok and "already denied" in second.message
    await engine.join()
    assert engine.store.get_approval(approval.id).state is ApprovalState.denied
    assert engine.store.get_run(run.id).state is RunState.denied
    await engine.stop()


async def test_batch_runs_hosts_in_order_and_stops_at_first_failure(engine_factory, tmp_path):
    # charlie fails on every host: host01 fails, host02 and host03 never start.
    approver = Approver()
    engine = await engine_factory(approver, fail={"charlie": "apply"})
    runs = await engine.submit(["host01", "host02", "host03"], REQUESTER)
    await engine.join()
    states = [engine.store.get_run(r.id).state for r in runs]
    assert states == [RunState.failed, RunState.cancelled, RunState.cancelled]
    assert "host01 before it in the batch ended failed" in engine.store.get_run(runs[1].id).result
    assert FileHost(tmp_path, "host02").applies() == []
    assert "exit_code" in engine.store.step(runs[0].id, "charlie").facts
    await engine.stop()


async def test_a_check_batch_checks_every_host_although_one_fails(engine_factory, tmp_path):
    # A dry run changes nothing: host01's refusal is no reason to leave host02 and host03 unchecked.
    engine = await engine_factory(Approver(), fail={"alpha": "check"})
    runs = await engine.submit(["host01", "host02", "host03"], REQUESTER, check_only=True)
    await engine.join()
    assert [engine.store.get_run(r.id).state for r in runs] == [RunState.failed] * 3
    await engine.stop()


async def test_batch_succeeds_host_after_host(engine_factory, tmp_path):
    engine = await engine_factory(Approver())
    runs = await engine.submit(["host01", "host02"], REQUESTER)
    await engine.join()
    assert [engine.store.get_run(r.id).state for r in runs] == [RunState.succeeded] * 2
    # one host after another: host02 started only after host01 finished
    first, second = (engine.store.get_run(r.id) for r in runs)
    started_2 = next(e for e in engine.store.audit_events(second.id) if e.event == "run.started")
    assert started_2.at >= first.finished_at.isoformat()
    await engine.stop()


async def test_second_run_for_busy_host_is_refused(engine_factory):
    engine = await engine_factory(Approver([]))
    [run] = await engine.submit(["host01"], REQUESTER)
    with pytest.raises(HostBusy) as refused:
        await engine.submit(["host02", "host01"], REQUESTER)
    assert run.id in str(refused.value)
    assert engine.store.active_host_run("host02") is None  # all or nothing
    await engine.cancel(run.id, REQUESTER)
    await engine.join()
    [again] = await engine.submit(["host01"], REQUESTER)  # free again once the first ended
    await engine.cancel(again.id, REQUESTER)
    await engine.join()
    await engine.stop()


async def test_check_failure_and_skip(engine_factory, tmp_path):
    FileHost(tmp_path, "host01").set("alpha", True)  # alpha already done on the host
    engine = await engine_factory(Approver(), fail={"charlie": "check"})
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    steps = {s.step: s for s in engine.store.steps(run.id)}
    assert steps["alpha"].state is StepState.skipped and steps["alpha"].reason == "alpha already done"
    assert steps["charlie"].state is StepState.failed and "unfit" in steps["charlie"].reason
    assert engine.store.get_run(run.id).state is RunState.failed
    await engine.stop()


async def test_max_parallel_bounds_steps_across_hosts(engine_factory, tmp_path):
    """Three single-host batches with max_parallel = 2: never more than two steps at once."""
    in_flight, peak = 0, 0
    engine = await engine_factory(Approver(), winrm="max_parallel = 2")
    for step in engine.steps.values():
        original = step.check

        async def counted(ctx, original=original):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            return await original(ctx)

        step.check = counted
    for host in ("host01", "host02", "host03"):
        await engine.submit([host], REQUESTER)
    await engine.join()
    assert peak == 2
    assert all(r.state is RunState.succeeded for r in engine.store.runs())
    await engine.stop()


async def test_a_fleet_is_upgraded_max_parallel_hosts_at_a_time(engine_factory):
    """Six single-host runs, max_parallel = 2, approvals answered at once: a host that has started is
    finished before another host is started, so at most two hosts are ever part-way through (plus any
    that wait on a person), never the whole fleet in lockstep."""
    approver = Approver()
    engine = await engine_factory(approver, winrm="max_parallel = 2", hosts=6)
    mid_upgrade: list[int] = []
    for step in engine.steps.values():
        original = step.check

        async def observed(ctx, original=original):
            runs = engine.store.runs()
            started = [
                r for r in runs if r.state.active and any(s.state.value != "pending" for s in engine.store.steps(r.id))
            ]
            mid_upgrade.append(len(started))
            await asyncio.sleep(0.02)
            return await original(ctx)

        step.check = observed
    runs = [(await engine.submit([f"host{i:02d}"], REQUESTER))[0] for i in range(1, 7)]
    await engine.join()
    assert all(engine.store.get_run(r.id).state is RunState.succeeded for r in runs)
    # two working, and two more let in while the first two waited on a person: never the whole fleet
    assert max(mid_upgrade) <= 4, mid_upgrade
    # and the first two hosts finished before the last two began
    ended = {r.host: engine.store.get_run(r.id).finished_at for r in runs}
    first_started = {r.host: engine.store.steps(r.id)[0].started_at for r in runs}
    assert max(ended["host01"], ended["host02"]) <= min(first_started["host05"], first_started["host06"])
    await engine.stop()


async def test_slow_sink_never_blocks_the_engine(engine_factory):
    class SlowSink:
        async def deliver(self, event):
            await asyncio.sleep(0.5)

    approver = Approver()
    engine = await engine_factory(approver)
    engine.progress.sinks.insert(0, SlowSink())  # every event waits 0.5 s in this sink
    [run] = await engine.submit(["host01"], REQUESTER)
    # approvals are answered through the same (slow) sinks, so the run needs them delivered; but the
    # steps between gates do not wait: the run is far past run.started while the sink is still behind.
    for _ in range(300):
        if engine.store.step(run.id, "alpha").state is StepState.succeeded:
            break
        await asyncio.sleep(0.01)
    assert engine.store.step(run.id, "alpha").state is StepState.succeeded
    assert len(approver.events) <= 2  # the sink has delivered almost nothing yet
    await engine.cancel(run.id, REQUESTER)
    await asyncio.wait_for(engine.join(), 30)
    await engine.stop()


async def test_refused_requester_policy(make_config):
    config = make_config(slack=f'requesters = ["{GROUP}"]')
    policy = ApprovalPolicy(config.slack, StaticGroups({GROUP: {GROUP_MEMBER}}))
    assert (await policy.may_request(GROUP_MEMBER)).allowed
    verdict = await policy.may_request(OUTSIDER)
    assert not verdict.allowed and "slack.requesters" in verdict.reason


async def test_terminal_sink_reports_each_step(engine_factory):
    out = io.StringIO()
    engine = await engine_factory(Approver())
    engine.progress.sinks.append(TerminalSink(out))
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"[{run.id} host01] queued by {REQUESTER}: upgrade"
    assert f"[{run.id} host01 bravo] STARTTLS approval needed: bravo will be set" in lines
    assert lines[-2] == f"[{run.id} host01] succeeded: all steps done"
    assert lines[-1].startswith(f"[{run.id} host01] audit checkpoint: ") and "events, head" in lines[-1]
    await engine.stop()


async def test_confirmations_are_open_to_the_requester_and_approvers_only(make_config):
    from bot.core.models import Run

    config = make_config()
    policy = ApprovalPolicy(config.slack, StaticGroups({GROUP: {GROUP_MEMBER}}))
    run = Run.model_construct(requester=REQUESTER, host="host01")  # the policy reads its host group
    assert (await policy.may_decide(REQUESTER, run, "approve", "snapshot")).allowed
    assert (await policy.may_decide(GROUP_MEMBER, run, "approve", "STARTTLS console")).allowed
    refused = await policy.may_decide(OUTSIDER, run, "approve", "snapshot")
    assert not refused.allowed and "may confirm" in refused.reason
    assert not (await policy.may_decide(REQUESTER, run, "approve", "reboot")).allowed  # an approval stays one
