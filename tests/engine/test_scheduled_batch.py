"""A scheduled batch is not started when it is submitted (the engine starts it when it is due:
tests/engine/test_scheduled.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.core.models import RunState, StepState, utcnow
from tests.engine.test_engine import Approver
from tests.support.configs import REQUESTER
from tests.support.fake_steps import FileHost


async def test_a_scheduled_batch_waits_untouched(engine_factory, tmp_path):
    # approves at once: only the schedule holds the run; the batch's task naps 0.02 s between looks
    engine = await engine_factory(Approver(), engine_kwargs={"schedule_poll_seconds": 0.02})
    due = utcnow() + timedelta(days=1)
    runs = await engine.submit(["host01", "host02"], REQUESTER, scheduled_for=due)
    for _ in range(10):  # the batch's task has looked at the clock several times
        await asyncio.sleep(0.02)
    for run in runs:
        stored = engine.store.get_run(run.id)
        assert stored.state is RunState.scheduled and stored.scheduled_for == due
        assert {s.state for s in engine.store.steps(run.id)} == {StepState.pending}
        assert FileHost(tmp_path, run.host).applies() == []
    await engine.stop()  # the batch is still waiting for its time; it resumes at the next start
