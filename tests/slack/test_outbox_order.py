"""The outbox: each thread in its own order, and a thread waiting for a person ahead of the others."""

from __future__ import annotations

import asyncio
import json

from bot.core.models import RunState, StepState
from tests.support.configs import REQUESTER
from tests.support.outbox import outbox


def test_a_thread_with_a_pending_approval_is_delivered_first(tmp_path):
    store, engine, progress = outbox(tmp_path)
    [busy] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
    [waiting] = store.create_runs(["host02"], requester=REQUESTER, plan=["alpha"])
    with store.transaction() as conn:
        for i in range(5):
            progress.outbox.insert(conn, busy.id, progress.projector.channel, "reply", {"text": f"busy {i}"}, None)
        progress.outbox.insert(
            conn, waiting.id, progress.projector.channel, "reply", {"text": "waiting: started"}, None
        )
        progress.outbox.insert(conn, waiting.id, progress.projector.channel, "approval", None, "apr-00000000")
    order = []
    while (entry := progress.outbox.next_pending()) is not None:
        order.append((entry.run_id, entry.kind, json.loads(entry.payload).get("text")))
        progress.outbox.mark(entry.ids, "sent", "1.0", None)
    # the waiting thread first, still in its own order; then the busy one, in order
    assert order[:2] == [(waiting.id, "reply", "waiting: started"), (waiting.id, "approval", None)]
    assert [text for _, _, text in order[2:]] == [f"busy {i}" for i in range(5)]
    store.close()


async def test_a_burst_of_events_is_projected_in_one_transaction_and_a_note_keeps_its_place(tmp_path):
    from bot.core.models import StepState
    from bot.engine.events import ProgressEvent

    store, engine, progress = outbox(tmp_path)
    projections = []
    original = progress.projector.project
    progress.projector.project = lambda run_id: projections.append(run_id) or original(run_id)
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha", "bravo"])
    for step in ("alpha", "bravo"):  # four audit events, as the engine writes them, each published
        store.update_step(run.id, step, StepState.checking, event="step.started", detail={"attempt": 1})
        await progress.deliver(ProgressEvent("step.started", run.id, "host01", "", step))
        store.update_step(run.id, step, StepState.succeeded, event="step.succeeded", reason=f"{step} done")
        await progress.deliver(ProgressEvent("step.finished", run.id, "host01", "", step))
    await asyncio.wait_for(progress.projector._task, 5)  # projected a moment after the burst
    assert projections == [run.id]  # one transaction for the burst, not one per event
    await progress.deliver(ProgressEvent("step.note", run.id, "host01", "waiting for the host", "bravo"))
    texts = [json.loads(p).get("text", "") for (p,) in store.conn.execute("SELECT payload FROM outbox ORDER BY id")]
    replies = [t for t in texts if t]
    assert replies[-1].endswith("waiting for the host")  # the note after both steps' results
    assert [t.split(":")[0] for t in replies[:2]] == ["Step alpha", "Step bravo"]
    await engine.stop()
    store.close()


def test_a_first_start_gets_no_reply_but_a_restart_does(tmp_path):
    """The card shows a step in progress; the thread hears of a start only when it is a second attempt."""
    from bot.core.models import StepState

    store, engine, progress = outbox(tmp_path)
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
    store.set_run_state(run.id, RunState.running, event="run.started")
    store.update_step(run.id, "alpha", StepState.checking, event="step.started")
    progress.projector.project(run.id)
    store.update_step(run.id, "alpha", StepState.checking, event="step.started")  # after a restart
    progress.projector.project(run.id)
    rows = store.conn.execute("SELECT kind, payload FROM outbox WHERE run_id = ? ORDER BY id", (run.id,)).fetchall()
    replies = [json.loads(payload)["text"] for kind, payload in rows if kind == "reply"]
    assert replies == ["Step alpha: started"]  # one line, for the second attempt only
    assert [kind for kind, _ in rows].count("card") == 1
    store.close()


def test_a_batch_recap_is_queued_once_after_the_last_end_of_the_batch(tmp_path):
    """Derived from the store when the batch's last end is projected, in that transaction: never before the
    other runs ended and were projected, never twice (projecting again, or a restart's catch-up). Each run
    with its full thread (fleet_progress "threads"): a fleet's runs that never started get no card nor final."""
    store, engine, progress = outbox(tmp_path, slack='fleet_progress = "threads"')
    projector = progress.projector
    first, second = store.create_runs(["host01", "host02"], requester=REQUESTER, plan=["alpha"])

    def recaps() -> list[tuple[str, str]]:
        return store.conn.execute("SELECT thread_key, payload FROM outbox WHERE kind = 'recap'").fetchall()

    for run in (first, second):
        projector.project(run.id)
    store.update_step(first.id, "alpha", StepState.failed, event="step.failed", reason="boom")
    store.set_run_state(first.id, RunState.failed, event="run.failed", result="alpha failed: boom")
    projector.project(first.id)
    assert recaps() == []  # host02 has not ended yet
    store.set_run_state(second.id, RunState.cancelled, event="run.cancelled", result="not started")
    projector.project(second.id)
    for run in (first, second):  # again, as a restart's catch-up would: nothing new, no second recap
        projector.project(run.id)
    [(batch_id, payload)] = recaps()
    assert batch_id == first.batch_id
    text = json.loads(payload)["blocks"][0]["text"]["text"]
    assert text.startswith("❌ *Batch of 2 hosts ended*: 0 of 2 succeeded")
    assert f"failed=1   failed ({first.id})" in text and f"skipped=1   failed=0   cancelled ({second.id})" in text
    kinds = [k for (k,) in store.conn.execute("SELECT kind FROM outbox ORDER BY id")]
    assert kinds[-1] == "recap" and kinds.count("final") == 2  # after both ends
    store.close()
