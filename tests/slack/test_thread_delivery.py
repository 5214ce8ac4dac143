"""When is a run's thread complete? The projection cursor at its last audit event and nothing pending.

These are the product's own answers (Outbox.backlog, SlackProgress.idle, /healthz), so tests and
operators wait for the real condition instead of a proxy such as "the run is final".
"""

from __future__ import annotations

import asyncio
import json

from bot.core.models import RunState
from tests.support.configs import REQUESTER
from tests.support.outbox import outbox


def test_the_backlog_counts_unprojected_events_then_pending_messages(tmp_path):
    store, _, progress = outbox(tmp_path)
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
    assert progress.outbox.backlog(run.id).runs_not_projected == 1  # run.requested is owed to the thread
    assert not progress.outbox.backlog().delivered
    progress.projector.project(run.id)
    owed = progress.outbox.backlog(run.id)
    assert owed.runs_not_projected == 0 and owed.pending_messages == 1  # the card, stored but not sent
    while (entry := progress.outbox.next_pending()) is not None:
        progress.outbox.mark(entry.ids, "sent", "1.0", None)
    assert progress.outbox.backlog(run.id).delivered
    store.set_run_state(run.id, RunState.failed, event="run.failed", result="it broke")
    assert not progress.outbox.backlog().delivered  # final, but its last events are not in the outbox yet
    store.close()


def test_a_terminal_run_owes_no_thread(tmp_path):
    store, _, progress = outbox(tmp_path)
    store.create_runs(["host01"], requester="cli:operator", plan=["alpha"])
    assert progress.outbox.backlog().delivered
    store.close()


async def test_a_run_that_ended_before_its_first_projection_gets_its_thread_at_start(tmp_path):
    """Killed within the projection's coalescing moment, a run can be final with no thread row yet: the
    start-up catch-up goes by the cursor, not by the run's state, so its card and final reply still go out."""
    store, engine, progress = outbox(tmp_path)
    [run] = store.create_runs(["host02"], requester=REQUESTER, plan=["alpha"])
    store.set_run_state(run.id, RunState.failed, event="run.failed", result="preflight refused the host")
    await progress.catch_up()
    kinds = [k for (k,) in store.conn.execute("SELECT kind FROM outbox WHERE run_id = ? ORDER BY id", (run.id,))]
    assert kinds[0] == "card" and "final" in kinds
    assert progress.outbox.backlog(run.id).runs_not_projected == 0
    await engine.stop()
    store.close()


class SlowUpdateClient:
    """chat.update of the card is held until released, as when Slack answers slowly."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.updating = asyncio.Event()
        self.updates: list[str] = []

    async def chat_postMessage(self, **kwargs):
        return {"ts": "1.000"}

    async def chat_update(self, **kwargs):
        self.updating.set()
        await self.release.wait()
        self.updates.append(json.dumps(kwargs))
        return {"ts": kwargs["ts"]}


async def test_events_projected_while_the_card_is_being_updated_get_an_update_of_their_own(tmp_path):
    """A card update renders the card when it is sent. Events projected while one is in flight must queue
    another, or the card keeps the state it had before them (a run shown running after it failed)."""
    client = SlowUpdateClient()
    store, engine, progress = outbox(tmp_path, client=client)
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
    await engine.store.call(progress.projector.project, run.id)
    progress.start()
    await engine.store.call(store.set_run_state, run.id, RunState.running, event="run.started")
    await engine.store.call(progress.projector.project, run.id)
    progress.projector.wake.set()
    await asyncio.wait_for(client.updating.wait(), 30)  # the running card is on its way
    await engine.store.call(store.set_run_state, run.id, RunState.failed, event="run.failed", result="it broke")
    await engine.store.call(progress.projector.project, run.id)
    client.release.set()
    assert await progress.idle(timeout=30)
    assert "failed" in client.updates[-1].lower(), client.updates[-1]
    await progress.stop()
    await engine.stop()
    store.close()
