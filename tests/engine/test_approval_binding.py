"""The engine binds each grant to the change it showed, across a person's thinking time and a restart.

The step here (ItemsStep) turns off "items" listed in a JSON file (its host); what it would change is read
at check time, so a test can add an item while a request is open or while the bot is down.
"""

from __future__ import annotations

import pytest

from bot.core.gates import change_digest
from bot.core.models import ApprovalState, RunState
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import MAX_REQUESTS_PER_GATE, Engine
from bot.store.store import Store
from tests.support.configs import APPROVER, REQUESTER
from tests.support.fake_steps import FileHost, ItemsStep
from tests.support.waiting import eventually


class Clicks:
    """A progress sink: on each request, run ``before`` (the world moving), then approve."""

    def __init__(self, before=None, decide: bool = True):
        self.engine: Engine | None = None
        self.before, self.decide, self.requests = before, decide, 0

    async def deliver(self, event):
        if event.kind == "approval.requested" and self.engine:
            self.requests += 1
            if self.before:
                self.before(self.requests)
            if self.decide:
                await self.engine.decide(event.data["approval_id"], APPROVER, "approve")


@pytest.fixture
def make_engine(tmp_path, make_config):
    made = []

    def make(sink=None) -> Engine:
        config = make_config()
        store = Store(config.database.path)
        engine = Engine(
            store,
            config,
            {"items": ItemsStep(tmp_path)},
            policy=ApprovalPolicy(config.slack),
            sinks=[sink] if sink else [],
            approval_poll_seconds=0.05,
        )
        if sink:
            sink.engine = engine
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.store.close()


def set_items(tmp_path, **items: bool) -> None:
    FileHost(tmp_path, "host01").set("items", items)


async def test_an_item_added_while_people_decide_is_asked_again(make_engine, tmp_path):
    set_items(tmp_path, a=True)
    sink = Clicks(before=lambda n: n == 1 and set_items(tmp_path, a=True, b=True))
    engine = make_engine(sink)
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    assert engine.store.get_run(run.id).state is RunState.succeeded
    first, second = engine.store.approvals(run.id)
    assert first.change == {"items": ["a"]} and first.state is ApprovalState.superseded
    assert second.change == {"items": ["a", "b"]} and second.state is ApprovalState.granted
    assert FileHost(tmp_path, "host01").applies() == ["a", "b"]  # applied once, with the second grant
    await engine.stop()


async def granted_while_down(make_engine, tmp_path):
    """A run whose request for item a was granted while the bot was down (by another process)."""
    set_items(tmp_path, a=True)
    first_engine = make_engine(Clicks(decide=False))
    [run] = await first_engine.submit(["host01"], REQUESTER)
    [asked] = await eventually(lambda: first_engine.store.approvals(run.id), what="the request")
    await first_engine.stop()
    first_engine.store.record_decision(asked.id, APPROVER, "approve")
    return run, asked


async def test_a_grant_from_before_a_restart_covers_only_the_change_it_showed(make_engine, tmp_path):
    run, asked = await granted_while_down(make_engine, tmp_path)
    set_items(tmp_path, a=True, b=True)  # the world moved before the bot came back

    sink = Clicks(decide=False)
    engine = make_engine(sink)
    await engine.start()
    second = await eventually(
        lambda: next((a for a in engine.store.approvals(run.id) if a.state is ApprovalState.open), None),
        what="a new request after the restart",
    )
    assert engine.store.get_approval(asked.id).state is ApprovalState.superseded
    assert second.change == {"items": ["a", "b"]} and second.digest == change_digest({"items": ["a", "b"]})
    assert FileHost(tmp_path, "host01").applies() == [], "the old grant changed nothing"
    events = [e for e in engine.store.audit_events(run.id) if e.event == "approval.superseded"]
    assert [e.detail["approval_id"] for e in events] == [asked.id]
    await engine.stop()


async def test_a_grant_from_before_a_restart_is_used_when_nothing_moved(make_engine, tmp_path):
    run, asked = await granted_while_down(make_engine, tmp_path)

    engine = make_engine(Clicks(decide=False))
    await engine.start()
    await engine.join()
    assert engine.store.get_run(run.id).state is RunState.succeeded
    assert [a.id for a in engine.store.approvals(run.id)] == [asked.id]
    assert FileHost(tmp_path, "host01").applies() == ["a"]
    await engine.stop()


async def test_a_change_that_keeps_moving_fails_the_step_without_changing_anything(make_engine, tmp_path):
    set_items(tmp_path, a=True)
    # every time a person is asked, one more item appears before they decide
    sink = Clicks(before=lambda n: set_items(tmp_path, **{chr(ord("a") + i): True for i in range(n + 1)}))
    engine = make_engine(sink)
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    run = engine.store.get_run(run.id)
    assert run.state is RunState.failed and "moved" in (run.result or "")
    assert sink.requests == MAX_REQUESTS_PER_GATE
    assert FileHost(tmp_path, "host01").applies() == []
    await engine.stop()
