"""The outbox at Slack's real pace, through real slack_sdk against the Slack stand-in: approval requests
ahead of older posts, pending card edits coalesced into one chat.update, edits paced on their own budget
(slack.updates_per_minute) apart from the channel's posts, and the stand-in's 429 beyond the real pace."""

from __future__ import annotations

import json
from datetime import timedelta

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import SlackStandIn
from sandbox.slack_state import OPS_CHANNEL
from tests.support.configs import REQUESTER
from tests.support.outbox import outbox
from tests.support.waiting import eventually


def client_of(slack: SlackStandIn) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-sandbox", base_url=slack.api_url)


async def test_the_stand_in_answers_429_beyond_slacks_real_pace():
    async with SlackStandIn() as slack:
        client = client_of(slack)
        client.retry_handlers.clear()  # see the 429 itself, not slack_sdk's retry of it
        slack.real_pace()
        await client.chat_postMessage(channel=OPS_CHANNEL, text="one")
        try:
            await client.chat_postMessage(channel=OPS_CHANNEL, text="two, at once")
            raise AssertionError("a second post in the same second was accepted")
        except SlackApiError as exc:
            assert exc.response.status_code == 429 and int(exc.response.headers["Retry-After"]) >= 1
        # chat.update: Tier 3, one budget for the workspace
        ts = slack.top_level(OPS_CHANNEL)[0].ts
        await client.chat_update(channel=OPS_CHANNEL, ts=ts, text="edited")
        try:
            await client.chat_update(channel=OPS_CHANNEL, ts=ts, text="edited again at once")
            raise AssertionError("a second edit within 1.2 s was accepted")
        except SlackApiError as exc:
            assert exc.response.status_code == 429
        slack.real_pace(False)  # off: the stand-in takes calls as fast as they come
        await client.chat_update(channel=OPS_CHANNEL, ts=ts, text="edited once more")


async def test_an_approval_request_goes_before_older_pending_posts_and_edits_have_their_own_budget(tmp_path):
    async with SlackStandIn() as slack:
        slack.real_pace()
        # posts at 1 a second; edits 600 a minute (ten a second) on their own budget
        store, engine, progress = outbox(
            tmp_path, client_of(slack), "messages_per_second = 1\nupdates_per_minute = 600"
        )
        [busy] = store.create_runs(["host01"], requester=REQUESTER, plan=["alpha"])
        [waiting] = store.create_runs(["host02"], requester=REQUESTER, plan=["alpha"])
        progress.projector.project(busy.id)  # each run's card
        progress.projector.project(waiting.id)
        progress.start()
        try:
            await eventually(lambda: len(slack.top_level(OPS_CHANNEL)) == 2, timeout=30, what="both cards")
            approval = store.request_approval(
                waiting.id,
                "alpha",
                gate="install",
                timeout=timedelta(minutes=60),
                min_approvals=1,
                evidence={"kind": "approval"},
                change={"host": "host02"},
            )
            with store.transaction() as conn:
                for i in range(8):  # older posts, pending in the same channel
                    progress.outbox.insert(conn, busy.id, OPS_CHANNEL, "reply", {"text": f"busy {i}"}, None)
                progress.outbox.insert(conn, waiting.id, OPS_CHANNEL, "approval", None, approval.id)
                for _ in range(5):  # and edits of the busy card
                    progress.outbox.insert(conn, busy.id, OPS_CHANNEL, "card_update", None, None)
            progress.projector.wake.set()
            await eventually(lambda: progress.outbox.backlog().pending_messages == 0, timeout=60, what="the outbox")
        finally:
            await progress.stop()
            await engine.stop()
        posts = [c for c in slack.calls if c.method == "chat.postMessage" and c.ok][2:]
        first = json.dumps(posts[0].params.get("blocks"))
        assert f"decide-{approval.id}" in first, [p.params.get("text") for p in posts]  # ahead of 8 older posts
        edits = [c for c in slack.calls if c.method == "chat.update" and c.ok]
        assert len(edits) == 1  # the five pending edits of one card: one chat.update of its latest state
        # on its own budget: the edit did not wait for the eight posts queued before it (8 s at 1 a second)
        assert edits[0].time < posts[-1].time
        assert slack.faults.ratelimited_count == 0  # the bot kept to the pace: Slack never had to refuse
        store.close()
