"""When the engine checkpoints the audit trail: at the end of every run, every few minutes while a run is
active (here a run that waits for a person), and at start-up for what the last process left."""

from __future__ import annotations

from bot.store import checkpoints
from tests.engine.test_engine import Approver
from tests.support.configs import REQUESTER
from tests.support.waiting import eventually


async def test_a_waiting_run_is_checkpointed_periodically_and_its_end_once(engine_factory):
    watcher = Approver(decisions=[])  # nobody answers: the run waits for its approval
    engine = await engine_factory(watcher, extra="[audit]\ncheckpoint_minutes = 0.005\n")  # every 0.3 s
    await engine.start()
    assert checkpoints.stored(engine.store.conn) == []  # an empty trail: nothing to anchor
    [run] = await engine.submit(["host01"], REQUESTER)

    def periodic():
        return [c for c in checkpoints.stored(engine.store.conn) if c.reason == "while runs are active"]

    [first, *_] = await eventually(periodic, timeout=20, what="a checkpoint while the run waits")
    assert first.run_id == run.id and first.signature is None
    count = len(periodic())
    await eventually(lambda: len(periodic()) == count, timeout=5, what="no new checkpoint while nothing happens")
    await engine.cancel(run.id, REQUESTER)
    await engine.join()
    kept = checkpoints.stored(engine.store.conn)
    ends = [c for c in kept if c.reason == f"end of run {run.id}"]
    assert len(ends) == 1 and ends[0].seq == engine.store.audit_events()[-1].seq
    assert checkpoints.check(engine.store.conn, kept, None).ok
    published = [e for e in watcher.events if e.kind == "audit.checkpoint"]
    assert published and published[-1].data["checkpoint"] == ends[0].model_dump()
    assert published[-1].text.startswith(f"audit checkpoint: {ends[0].count} events, head ")
    await engine.stop()


async def test_start_up_checkpoints_what_the_last_process_left(engine_factory):
    engine = await engine_factory(Approver())
    [run] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    await engine.stop()
    # a later process appended (as `run` in a terminal, or one killed before its run's checkpoint)
    engine.store.set_run_state(run.id, engine.store.get_run(run.id).state, event="run.requested")
    again = await engine_factory(Approver())
    await again.start()
    last = checkpoints.stored(again.store.conn)[-1]
    assert last.reason == "at start-up" and last.seq == again.store.audit_events()[-1].seq
    await again.stop()


async def test_a_fleet_is_checkpointed_at_its_last_end_not_at_each_host(engine_factory):
    """At Slack's pace one checkpoint post per host would hold up every other message of the channel: a run
    of a fleet whose other runs go on gets none; the fleet's last end covers the whole trail."""
    engine = await engine_factory(Approver())
    runs = await engine.submit(["host01", "host02", "host03"], REQUESTER)
    await engine.join()
    ends = [c for c in checkpoints.stored(engine.store.conn) if c.reason.startswith("end of run")]
    assert [c.reason for c in ends] == [f"end of run {runs[-1].id}"]
    assert ends[0].seq == engine.store.audit_events()[-1].seq  # it covers every host's events
    # a run alone (no fleet) still gets its own at its end
    [alone] = await engine.submit(["host01"], REQUESTER)
    await engine.join()
    assert [c.reason for c in checkpoints.stored(engine.store.conn)][-1] == f"end of run {alone.id}"
    await engine.stop()
