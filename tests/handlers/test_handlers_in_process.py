"""The handlers in process, the way bolt-python tests itself: a signed AsyncBoltRequest passed to
``app.async_dispatch``, and a mock Web API (an aiohttp server on 127.0.0.1) that counts every call.

No bot process, no host, no stand-ins: parsing, authorization and the ephemeral answers in milliseconds.
The engine behind the handlers is real (its store in a temporary directory, a plan of fake steps).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.config import load_config
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import Engine
from bot.slack.context import SlackContext
from bot.store.store import Store
from handlers import actions, commands
from tests.support.configs import APPROVER, APPROVER2, OUTSIDER, REQUESTER, write_config
from tests.support.fake_steps import gated_plan
from tests.support.waiting import eventually

SECRET = "in-process-signing-secret"


@dataclass
class MockSlack:
    """Web API methods answer ok; response_url posts are kept. Every call is counted."""

    api_calls: list[str] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def api(self, request: web.Request) -> web.Response:
        self.api_calls.append(request.match_info["method"])
        return web.json_response({"ok": True, "ts": "1.000", "channel": "C0OPSCHANL"})

    async def respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.Response(text="ok")

    def texts(self) -> list[str]:
        return [r.get("text", "") for r in self.responses]

    def posted(self) -> list[str]:
        """Calls that would show something in a channel (Bolt's own auth.test is not one)."""
        return [call for call in self.api_calls if call.startswith(("chat.", "views."))]


@pytest.fixture
async def handlers(tmp_path):
    mock = MockSlack()
    server = web.Application()
    server.router.add_post("/api/{method}", mock.api)
    server.router.add_post("/response", mock.respond)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    mock.url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    made: list[tuple[Engine, Store]] = []

    async def build(slack: str = "") -> tuple[AsyncApp, Engine, MockSlack]:
        config = load_config(str(write_config(tmp_path, slack=slack)))
        store = Store(config.database.path)
        policy = ApprovalPolicy(config.slack)
        engine = Engine(store, config, gated_plan(tmp_path), policy=policy, approval_poll_seconds=0.05)
        made.append((engine, store))
        client = AsyncWebClient(token="xoxb-test", base_url=mock.url + "/api/")
        # process_before_response: dispatch returns once the listener is done, so the answer is there
        app = AsyncApp(client=client, signing_secret=SECRET, process_before_response=True)
        deps = SlackContext(engine, config, policy, {sid: s.title for sid, s in engine.steps.items()})
        commands.register(app, deps)
        actions.register(app, deps)
        await engine.start()
        return app, engine, mock

    yield build
    for engine, store in made:
        await engine.stop()
        store.close()
    await runner.cleanup()


def signed(body: str, *, secret: str = SECRET, age: int = 0) -> AsyncBoltRequest:
    timestamp = str(int(time.time()) - age)
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    headers = {
        "content-type": ["application/x-www-form-urlencoded"],
        "x-slack-request-timestamp": [timestamp],
        "x-slack-signature": [signature],
    }
    return AsyncBoltRequest(body=body, headers=headers)


def slash(mock: MockSlack, user: str, text: str, **kwargs: Any) -> AsyncBoltRequest:
    body = urlencode(
        {
            "command": "/idm-upgrade",
            "text": text,
            "user_id": user,
            "team_id": "T0TEAM0001",
            "channel_id": "C0OPSCHANL",
            "response_url": f"{mock.url}/response",
            "trigger_id": "1.2.3",
        }
    )
    return signed(body, **kwargs)


def click(mock: MockSlack, user: str, action_id: str, value: str) -> AsyncBoltRequest:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "team_id": "T0TEAM0001"},
        "team": {"id": "T0TEAM0001"},
        "channel": {"id": "C0OPSCHANL"},
        "container": {"type": "message", "message_ts": "1.000", "channel_id": "C0OPSCHANL"},
        "response_url": f"{mock.url}/response",
        "actions": [{"type": "button", "action_id": action_id, "value": value, "block_id": "b", "action_ts": "1"}],
        "trigger_id": "1.2.3",
    }
    return signed(urlencode({"payload": json.dumps(payload)}))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hostXX", "Unknown host"),
        ("host01;whoami", "is not a host name"),
        ("", "Which host?"),
        ("help", "Usage:"),
        ("cancel run-zzz", "run"),
    ],
)
async def test_malformed_or_unknown_text_is_answered_ephemerally_and_queues_nothing(handlers, text, says):
    app, engine, mock = await handlers()
    response = await app.async_dispatch(slash(mock, REQUESTER, text))
    assert response.status == 200
    [answer] = mock.responses
    assert answer["response_type"] == "ephemeral" and says in answer["text"], answer
    assert engine.store.runs() == []
    assert mock.posted() == []  # nothing posted in the channel


async def test_a_forged_or_stale_request_is_refused_before_any_listener(handlers):
    app, engine, mock = await handlers()
    forged = await app.async_dispatch(slash(mock, REQUESTER, "host01", secret="not-the-secret"))
    stale = await app.async_dispatch(slash(mock, REQUESTER, "host01", age=600))
    assert forged.status == 401 and stale.status == 401
    assert mock.responses == [] and mock.api_calls == [] and engine.store.runs() == []  # not even auth.test


async def test_a_user_who_may_not_start_runs_is_refused_and_nothing_is_queued(handlers):
    app, engine, mock = await handlers(slack=f'requesters = ["{REQUESTER}"]')
    await app.async_dispatch(slash(mock, OUTSIDER, "host01"))
    assert mock.texts() == [
        "Not started: you are not allowed to start upgrades; ask an admin to add you to slack.requesters."
    ]
    assert engine.store.runs() == []


async def test_a_requester_queues_a_run_and_is_told_where_to_follow_it(handlers):
    app, engine, mock = await handlers(slack=f'requesters = ["{REQUESTER}"]')
    await app.async_dispatch(slash(mock, REQUESTER, "host01"))
    [run] = engine.store.runs()
    [text] = mock.texts()
    assert text.startswith("Upgrade queued: ") and run.id in text and "<#C0OPSCHANL>" in text


async def test_clicks_are_authorized_refusals_audited_and_unknown_buttons_answered(handlers):
    app, engine, mock = await handlers(slack=f'requesters = ["{REQUESTER}", "{APPROVER2}"]')
    await app.async_dispatch(slash(mock, APPROVER2, "host01"))  # an approver starts the run
    [run] = engine.store.runs()
    approvals = await eventually(lambda: [a for a in engine.store.approvals(run.id) if a.state.value == "open"])
    approval = approvals[0]
    mock.responses.clear()
    await app.async_dispatch(click(mock, OUTSIDER, "approve", approval.id))
    await app.async_dispatch(click(mock, APPROVER2, "approve", approval.id))  # approving one's own run
    await app.async_dispatch(click(mock, APPROVER, "approve", "not-an-approval-id"))
    await app.async_dispatch(click(mock, APPROVER, "some_old_button", "x"))
    outsider, own, junk, unknown = mock.texts()
    assert "not an approver" in outsider
    assert "approving your own run is not allowed" in own
    assert junk == "This button does not belong to an idm-upgrade request."
    assert "not one idm-upgrade knows" in unknown
    refused = [e.actor for e in engine.store.audit_events(run.id) if e.event == "approval.refused"]
    assert refused == [OUTSIDER, APPROVER2]
    assert engine.store.get_approval(approval.id).state.value == "open"
    await app.async_dispatch(click(mock, APPROVER, "approve", approval.id))
    assert engine.store.get_approval(approval.id).state.value == "granted"
    assert mock.posted() == []  # the handlers answer people; the thread is the outbox's business
    await asyncio.wait_for(engine.cancel(run.id, APPROVER), 10)
