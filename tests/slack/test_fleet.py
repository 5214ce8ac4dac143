"""A fleet (a request of several hosts) in Slack: one fleet card updated in place, lean host threads, and
the outbox's pace at Slack's real limits (real slack_sdk against the stand-in)."""

from __future__ import annotations

from bot.core.models import RunState
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from tests.support.waiting import eventually


def _fleet_cards(h):
    return [m for m in h.slack.top_level(OPS_CHANNEL) if m.thread_ts is None and m.text.startswith("Fleet of")]


async def test_a_three_host_request_gets_one_fleet_card_updated_in_place_and_lean_threads(slack_bot):
    h = await slack_bot("default", hosts=3)
    response = await h.sender.send_slash_command(REQUESTER, "host01 host02 host03")
    assert response.status == 200
    runs = await eventually(lambda: len(h.runs()) == 3 and h.runs(), what="the fleet's three runs")
    runs = sorted(runs, key=lambda r: r.batch_position)
    for run in runs:
        await h.settle(run.id, approver=APPROVER)
    pending = h.store.conn.execute("SELECT id, run_id, kind, thread_key FROM outbox WHERE state = 'pending'").fetchall()
    assert pending == []
    [card] = _fleet_cards(h)  # one fleet card, edited in place (not one per change)
    assert "3 succeeded" in card.text
    body = "\n".join(b["text"]["text"] for b in card.blocks if b["type"] == "section")
    for run in runs:
        assert f"`{run.host}` 19.03.0.0 → 19.03.0.1 · succeeded · `{run.id}`" in body
    edits = [c for c in h.slack.calls if c.method == "chat.update" and c.params.get("ts") == card.ts and c.ok]
    assert len(edits) >= 2  # updated in place as the hosts moved
    for run in runs:  # each host's thread: its approval requests and its result, no step-by-step replies
        [host_card] = [m for m in h.slack.top_level(OPS_CHANNEL) if run.id in m.text and "Connector upgrade" in m.text]
        replies = h.slack.thread(OPS_CHANNEL, host_card.ts)[1:]
        texts = [m.text for m in replies]
        assert any(f"{run.host}: succeeded" in t for t in texts), texts  # the result
        assert any(t.startswith("install: ") for t in texts), texts  # its approval request (decided)
        assert not any(": done" in t or ": started" in t or ": skipped" in t for t in texts), texts
        assert h.store.get_run(run.id).state is RunState.succeeded


async def test_a_single_host_request_keeps_its_full_thread_and_gets_no_fleet_card(slack_bot):
    h = await slack_bot("physical", extra="policy: approve_install = false")
    response = await h.sender.send_slash_command(REQUESTER, "host01")
    assert response.status == 200
    [run] = await eventually(h.runs, what="the run")
    await h.settle(run.id, approver=APPROVER)
    assert h.store.conn.execute("SELECT fleet_id FROM runs WHERE id = ?", (run.id,)).fetchone() == (None,)
    assert _fleet_cards(h) == []
    [card] = [m for m in h.slack.top_level(OPS_CHANNEL) if "Connector upgrade" in m.text]
    texts = [m.text for m in h.slack.thread(OPS_CHANNEL, card.ts)[1:]]
    assert any(t.startswith("Preflight checks: done") for t in texts), texts  # step by step, as before
