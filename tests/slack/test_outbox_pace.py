"""The pace: Slack never sees two calls for a channel closer together than 1 / messages_per_second,
however long each call takes to reach it (the interval counts from when Slack answered the last one)."""

from __future__ import annotations

import asyncio
import itertools
import time

from tests.support.configs import REQUESTER
from tests.support.outbox import outbox

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
    slack = SlowThenFastSlack()
    store, engine, progress = outbox(tmp_path, slack, f"messages_per_second = {PACE}")
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
    with store.transaction() as conn:
        for i in range(MESSAGES):
            progress.outbox.insert(conn, run.id, progress.projector.channel, "reply", {"text": f"line {i}"}, None)
    progress.start()
    try:
        for _ in range(200):
            if progress.deliverer.delivered == MESSAGES:
                break
            await asyncio.sleep(0.05)
        assert progress.deliverer.delivered == MESSAGES
    finally:
        await progress.stop()
        await engine.stop()
        store.close()
    gaps = [b - a for a, b in itertools.pairwise(slack.arrivals)]
    assert min(gaps) >= 1 / PACE, [round(g, 3) for g in gaps]
    # so no one-second window holds more than PACE calls
    assert all(sum(1 for t in slack.arrivals if start <= t < start + 1) <= PACE for start in slack.arrivals)


class RecordingSlack:
    def __init__(self) -> None:
        self.posts: list[dict] = []

    async def chat_postMessage(self, **kwargs):
        self.posts.append(kwargs)
        return {"ts": f"{len(self.posts)}.000100"}


async def deliver_all(tmp_path, merge_backlog_seconds: float) -> tuple[RecordingSlack, list[tuple]]:
    slack = RecordingSlack()
    store, engine, progress = outbox(tmp_path, slack, "messages_per_second = 10")
    progress.deliverer.merge_backlog_seconds = merge_backlog_seconds
    [a] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
    [b] = store.create_runs(["host02"], requester=REQUESTER, plan=["alpha"])
    with store.transaction() as conn:  # two threads' replies, interleaved as a fleet makes them
        for run, text in [(a, "a1"), (a, "a2"), (b, "b1"), (a, "a3"), (b, "b2"), (b, "b3")]:
            progress.outbox.insert(
                conn, run.id, progress.projector.channel, "reply", {"text": text, "blocks": [{"type": "section"}]}, None
            )
    progress.start()
    try:
        for _ in range(100):
            if not progress.outbox.next_pending():
                break
            await asyncio.sleep(0.05)
    finally:
        await progress.stop()
        await engine.stop()
    rows = store.conn.execute("SELECT run_id, state, slack_ts FROM outbox ORDER BY id").fetchall()
    store.close()
    return slack, rows


async def test_a_long_backlog_sends_each_threads_pending_replies_as_one_message(tmp_path):
    slack, rows = await deliver_all(tmp_path, merge_backlog_seconds=0.0)
    assert [p["text"] for p in slack.posts] == ["a1\na2\na3", "b1\nb2\nb3"]  # each thread in its own order
    assert [len(p["blocks"]) for p in slack.posts] == [3, 3]  # every reply's content is there
    assert {state for _, state, _ in rows} == {"sent"}


async def test_without_a_backlog_each_reply_is_its_own_message(tmp_path):
    slack, rows = await deliver_all(tmp_path, merge_backlog_seconds=30.0)
    assert [p["text"] for p in slack.posts] == ["a1", "a2", "b1", "a3", "b2", "b3"]  # as stored
    assert len({ts for _, _, ts in rows}) == 6
