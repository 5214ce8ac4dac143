"""A batch from Slack: cards in the batch's order, later hosts say which run turned STARTTLS off, one recap."""

from __future__ import annotations

from bot.core.models import RunState
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from tests.support.waiting import eventually


async def test_a_batch_posts_in_order_names_the_starttls_run_and_ends_with_one_recap(slack_bot):
    h = await slack_bot("default", hosts=3)
    response = await h.sender.send_slash_command(REQUESTER, "host01 host02 host03")
    assert response.status == 200
    runs = await eventually(lambda: len(h.runs()) == 3 and h.runs(), what="the batch's three runs")
    runs = sorted(runs, key=lambda r: r.batch_position)
    for run in runs:
        await h.settle(run.id, approver=APPROVER)
    assert [h.store.get_run(r.id).state for r in runs] == [RunState.succeeded] * 3
    assert [r.host for r in runs] == ["host01", "host02", "host03"]
    top = h.slack.top_level(OPS_CHANNEL)
    cards = [m for m in top if m.thread_ts is None and "Connector upgrade" in m.text]
    # posted in the batch's order (they came out host01, host03, host02)
    assert [next(r.host for r in runs if r.id in c.text) for c in cards] == ["host01", "host02", "host03"]
    first = runs[0]
    for later in runs[1:]:
        reason = h.store.step(later.id, "starttls").reason
        assert reason == f"STARTTLS already off: turned off by {first.id} (host01) earlier in this batch (tenant-wide)"
    # one recap, at the top of the channel, after every card
    recaps = [m for m in top if m.thread_ts is None and "Batch recap" in m.text]
    assert len(recaps) == 1, [m.text for m in top]
    assert top.index(recaps[0]) > max(top.index(c) for c in cards)
    [recap] = [b["text"]["text"] for b in recaps[0].blocks if b["type"] == "section"]
    assert recap.startswith("✅ *Batch of 3 hosts ended*: 3 of 3 succeeded")
    lines = {line.strip("`").split()[0]: line.strip("`") for line in recap.splitlines()[1:]}
    assert list(lines) == ["host01", "host02", "host03"]
    for run in runs:
        assert lines[run.host].endswith(f"succeeded ({run.id})") and "failed=0" in lines[run.host]
    # host01 turned STARTTLS off, the others found it off: one change fewer, one skip more
    assert "ok=3   changed=6   skipped=0" in lines["host01"]
    assert "ok=3   changed=5   skipped=1" in lines["host02"]
    print(h.slack.render_channel(OPS_CHANNEL))
