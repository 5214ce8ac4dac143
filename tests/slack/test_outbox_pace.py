"""The pace: Slack never sees two calls for a channel closer together than 1 / messages_per_second,
however long each call takes to reach it (the interval counts from when Slack answered the last one)."""

from __future__ import annotations

import asyncio
import itertools
import time

from bot.config import load_config
from bot.engine import Engine
from bot.progress import SlackProgress
from bot.store import Store
from tests.support.configs import REQUESTER, write_config
from tests.support.fake_steps import gated_plan

PACE = 10.0
MESSAGES = 12


class SlowThenFastSlack:
    """Each call reaches 'Slack' after a delay that alternates 80 ms and 0 (a loaded network, a busy server)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self._delays = itertools.cycle([0.08, 0.0])
        self._ts = itertools.count(1)

    async def chat_postMessage(self, **kwargs):
        await asyncio.sleep(next(self._delays))
        self.arrivals.append(time.monotonic())
        return {"ts": f"{next(self._ts)}.000100"}


async def test_calls_reach_slack_no_closer_than_the_pace(tmp_path):
    config = load_config(str(write_config(tmp_path, slack=f"messages_per_second = {PACE}")))
    store = Store(config.database.path)
    engine = Engine(store, config, gated_plan(tmp_path))
    slack = SlowThenFastSlack()
    progress = SlackProgress(engine, client=slack, config=config)
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
    with store.transaction() as conn:
        for i in range(MESSAGES):
            progress._insert(conn, run.id, "reply", {"text": f"line {i}"}, None)
    progress.start()
    try:
        for _ in range(200):
            if progress.delivered == MESSAGES:
                break
            await asyncio.sleep(0.05)
        assert progress.delivered == MESSAGES
    finally:
        await progress.stop()
        await engine.stop()
        store.close()
    gaps = [b - a for a, b in itertools.pairwise(slack.arrivals)]
    assert min(gaps) >= 1 / PACE, [round(g, 3) for g in gaps]
    # so no one-second window holds more than PACE calls
    assert all(sum(1 for t in slack.arrivals if start <= t < start + 1) <= PACE for start in slack.arrivals)
