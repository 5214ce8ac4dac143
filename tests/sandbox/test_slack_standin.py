"""sandbox.slack (the Slack stand-in) against the real clients: slack_sdk's AsyncWebClient, WebhookClient,
SignatureVerifier and SocketModeClient, and slack_bolt's AsyncApp over signed HTTP and over Socket Mode."""

from __future__ import annotations

import json
import re
import time
import urllib.error
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler, AsyncServerErrorRetryHandler
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from sandbox.slack import SlackStandIn
from sandbox.slack_sender import signature_for
from sandbox.slack_state import APPROVER, GROUP, GROUP_MEMBER, OPS_CHANNEL, OUTSIDER, REQUESTER, TEAM_ID
from sandbox.slack_thread import running_slack
from tests.support.waiting import eventually

BOT = "xoxb-sandbox"
APP = "xapp-sandbox"
SECRET = "s3cr3t-signing"
TS = re.compile(r"^\d{10}\.\d{6}$")
SLASH_FIELDS = [
    "token",
    "team_id",
    "team_domain",
    "enterprise_id",
    "enterprise_name",
    "channel_id",
    "channel_name",
    "user_id",
    "user_name",
    "command",
    "text",
    "api_app_id",
    "is_enterprise_install",
    "response_url",
    "trigger_id",
]


@pytest.fixture
async def slack():
    async with SlackStandIn(bot_token=BOT, app_token=APP, signing_secret=SECRET) as stand_in:
        yield stand_in


def client_for(slack: SlackStandIn, token: str = BOT, **kw) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=slack.api_url, **kw)


def approval_blocks(approval_id: str = "ap-1") -> list:
    return [
        SectionBlock(text=MarkdownTextObject(text="*STARTTLS* change needs approval, asked by <@U0REQUESTER>")),
        ActionsBlock(
            block_id=f"decide-{approval_id}",
            elements=[
                ButtonElement(text="Approve", action_id="approve", value=approval_id, style="primary"),
                ButtonElement(text="Deny", action_id="deny", value=approval_id, style="danger"),
            ],
        ),
    ]


class Recorder:
    """A tiny aiohttp app standing in for the bot's /slack/events: records raw requests, answers `reply`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.reply: web.Response | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return self.reply or web.Response(text="")


@pytest.fixture
async def serve():
    """serve(app) -> base URL of an aiohttp app on a free port; all stopped at the end."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


# ----- Web API --------------------------------------------------------------------------------------------


async def test_post_thread_update_ephemeral_with_the_real_client(slack):
    client = client_for(slack)
    auth = await client.auth_test()
    assert auth["team_id"] == TEAM_ID and auth["user_id"] and auth["bot_id"]

    card = await client.chat_postMessage(
        channel=OPS_CHANNEL, text="Upgrade host01", blocks=[HeaderBlock(text="Upgrade host01")], unfurl_links=False
    )
    assert card["channel"] == OPS_CHANNEL and TS.match(card["ts"]) and card["message"]["text"] == "Upgrade host01"
    reply = await client.chat_postMessage(channel=OPS_CHANNEL, thread_ts=card["ts"], text="preflight started")
    final = await client.chat_postMessage(
        channel=OPS_CHANNEL, thread_ts=card["ts"], text="Run succeeded", reply_broadcast=True
    )
    assert float(card["ts"]) < float(reply["ts"]) < float(final["ts"])
    updated = await client.chat_update(channel=OPS_CHANNEL, ts=card["ts"], text="Upgrade host01: succeeded")
    assert updated["message"]["edited"]["ts"]
    await client.chat_postEphemeral(channel=OPS_CHANNEL, user=REQUESTER, text="Started run r1")

    parent = slack.message(OPS_CHANNEL, card["ts"])
    assert parent.text == "Upgrade host01: succeeded" and parent.blocks[0]["type"] == "header"  # blocks kept
    assert [v.text for v in parent.versions] == ["Upgrade host01", "Upgrade host01: succeeded"]
    assert [m.text for m in slack.thread(OPS_CHANNEL, card["ts"])[1:]] == ["preflight started", "Run succeeded"]
    assert slack.message(OPS_CHANNEL, final["ts"]).reply_broadcast
    assert [e.text for e in slack.ephemerals(OPS_CHANNEL, REQUESTER)] == ["Started run r1"]
    assert slack.ephemerals(OPS_CHANNEL, APPROVER) == []

    replies = await client.conversations_replies(channel=OPS_CHANNEL, ts=card["ts"])
    assert [m["ts"] for m in replies["messages"]] == [card["ts"], reply["ts"], final["ts"]]
    history = await client.conversations_history(channel=OPS_CHANNEL)
    assert [m["ts"] for m in history["messages"]] == [final["ts"], card["ts"]]  # the broadcast shows, newest first
    assert history["messages"][1]["reply_count"] == 2


async def test_form_encoded_posts_json_string_blocks_and_token_parameter(slack):
    async with aiohttp.ClientSession() as session:
        form = {"token": BOT, "channel": "idm-ops", "text": "hi", "blocks": json.dumps([{"type": "divider"}])}
        async with session.post(f"{slack.api_url}chat.postMessage", data=form) as response:
            body = await response.json()
    assert body["ok"] and body["channel"] == OPS_CHANNEL
    assert slack.message(OPS_CHANNEL, body["ts"]).blocks[0]["type"] == "divider"
    assert slack.calls[-1].method == "chat.postMessage" and "token" not in slack.calls[-1].params


async def test_directory_methods(slack):
    client = client_for(slack)
    assert (await client.usergroups_users_list(usergroup=GROUP))["users"] == [APPROVER, "U0APPROVER2", GROUP_MEMBER]
    assert (await client.users_info(user=REQUESTER))["user"]["name"] == "requester"
    assert (await client.conversations_info(channel=OPS_CHANNEL))["channel"]["name"] == "idm-ops"
    slack.workspace.add_usergroup("S0CHANGEBRD", [OUTSIDER])
    assert (await client.usergroups_users_list(usergroup="S0CHANGEBRD"))["users"] == [OUTSIDER]
    for call, error in [
        (client.usergroups_users_list(usergroup="S0NOSUCHGRP"), "no_such_subteam"),
        (client.users_info(user="U0NOBODY"), "user_not_found"),
        (client.conversations_info(channel="C0NOWHERE"), "channel_not_found"),
    ]:
        with pytest.raises(SlackApiError) as err:
            await call
        assert err.value.response["error"] == error


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C0NOWHERE", "text": "x"}, "channel_not_found"),
        ({"channel": "", "text": "x"}, "channel_not_found"),
        ({"channel": OPS_CHANNEL}, "no_text"),
        ({"channel": OPS_CHANNEL, "text": "x" * 40_001}, "msg_too_long"),
        ({"channel": OPS_CHANNEL, "text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        (
            {
                "channel": OPS_CHANNEL,
                "text": "x",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}],
            },
            "invalid_blocks",
        ),
        ({"channel": OPS_CHANNEL, "text": "x", "thread_ts": "1.000001"}, "thread_not_found"),
    ],
)
async def test_post_message_rejections(slack, kwargs, error):
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).chat_postMessage(**kwargs)
    assert err.value.response["error"] == error
    assert slack.messages(OPS_CHANNEL) == []


async def test_limits_at_the_edge_are_accepted(slack):
    blocks = [SectionBlock(text="y" * 3000).to_dict()] + [{"type": "divider"}] * 49
    await client_for(slack).chat_postMessage(channel=OPS_CHANNEL, text="x" * 40_000, blocks=blocks)
    assert len(slack.messages(OPS_CHANNEL)[0].blocks) == 50


async def test_auth_and_method_errors(slack):
    with pytest.raises(SlackApiError) as err:
        await client_for(slack, token="xoxb-wrong").auth_test()
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        await client_for(slack, token=APP).chat_postMessage(channel=OPS_CHANNEL, text="x")
    assert err.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).apps_connections_open(app_token=BOT)
    assert err.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).api_call("chat.frobnicate")
    assert err.value.response["error"] == "unknown_method"
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).chat_update(channel=OPS_CHANNEL, ts="1700000000.000100", text="x")
    assert err.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).chat_postEphemeral(channel=OPS_CHANNEL, user="U0NOBODY", text="x")
    assert err.value.response["error"] == "user_not_found"


# ----- faults ---------------------------------------------------------------------------------------------


async def test_429_retry_after_is_honoured_by_the_retry_handler(slack):
    slack.rate_limit(1, retry_after=1, methods=["chat.postMessage"])
    client = client_for(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)])
    started = time.monotonic()
    await client.chat_postMessage(channel=OPS_CHANNEL, text="after the limit")
    assert time.monotonic() - started >= 1.0
    assert [(c.status, c.error) for c in slack.calls_to("chat.postMessage")] == [(429, "ratelimited"), (200, None)]
    assert slack.ratelimited_count == 1 and len(slack.messages(OPS_CHANNEL)) == 1

    slack.rate_limit(1, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).auth_test()  # no retry handler: the caller sees the 429
    assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "7"


async def test_5xx_then_recovery(slack):
    slack.server_errors(1, status=503)
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).chat_postMessage(channel=OPS_CHANNEL, text="x")
    assert err.value.response.status_code == 503
    slack.server_errors(1, status=500)
    client = client_for(slack, retry_handlers=[AsyncServerErrorRetryHandler(max_retry_count=1)])
    assert (await client.chat_postMessage(channel=OPS_CHANNEL, text="x"))["ok"]
    assert slack.server_error_count == 2 and len(slack.messages(OPS_CHANNEL)) == 1


async def test_down_refuses_connections_then_listens_on_the_same_port(slack):
    port, client = slack.port, client_for(slack)
    await slack.down()
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.auth_test()
    await slack.up()
    assert slack.port == port and (await client.auth_test())["ok"]

    await slack.down(0.3)
    assert not slack.is_up
    await eventually(lambda: slack.is_up, what="the stand-in listening again after its 0.3 s outage")
    assert slack.is_up and (await client.chat_postMessage(channel=OPS_CHANNEL, text="back"))["ok"]


async def test_pace_limit_and_rate_measurement(slack):
    slack.pace_limit(per_second=1.0, burst=2)
    client = client_for(slack)
    for _ in range(2):
        await client.chat_postMessage(channel=OPS_CHANNEL, text="burst")
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=OPS_CHANNEL, text="too fast")
    assert err.value.response.status_code == 429
    await client.chat_postMessage(channel="C0GENERAL1", text="another channel has its own budget")
    assert slack.max_calls_in_window("chat.postMessage", OPS_CHANNEL) == 2
    assert len(slack.calls_to("chat.postMessage", OPS_CHANNEL)) == 3
    slack.clear_faults()
    await client.chat_postMessage(channel=OPS_CHANNEL, text="fine again")


# ----- response_url ---------------------------------------------------------------------------------------


async def test_response_url_ephemeral_in_channel_replace_and_use_limit(slack):
    posted = await client_for(slack).chat_postMessage(channel=OPS_CHANNEL, text="approve?", blocks=approval_blocks())
    url = slack.new_response_url("block_actions", OPS_CHANNEL, APPROVER, message_ts=posted["ts"])
    hook = AsyncWebhookClient(url)
    assert (await hook.send(text="only you", response_type="ephemeral")).status_code == 200
    assert (await hook.send(text="everyone", response_type="in_channel")).status_code == 200
    assert (await hook.send(text="Approved by <@U0APPROVER1>", replace_original=True)).status_code == 200
    assert [e.text for e in slack.ephemerals(OPS_CHANNEL, APPROVER)] == ["only you"]
    assert [m.text for m in slack.top_level(OPS_CHANNEL)] == ["Approved by <@U0APPROVER1>", "everyone"]
    assert slack.message(OPS_CHANNEL, posted["ts"]).edited
    assert (await hook.send(text="4")).status_code == 200
    assert (await hook.send(text="5")).status_code == 200
    sixth = await hook.send(text="6")
    assert sixth.status_code == 404 and json.loads(sixth.body)["error"] == "used_url"

    slack.response_url_ttl = 0
    late = await AsyncWebhookClient(slack.new_response_url("slash_commands", OPS_CHANNEL, REQUESTER)).send(text="x")
    assert late.status_code == 404 and json.loads(late.body)["error"] == "expired_url"


# ----- the signed sender ----------------------------------------------------------------------------------


async def test_sender_signs_like_slack_and_sends_every_field(slack, serve):
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/slack/events", recorder.handle)
    base = await serve(app)
    sender = slack.sender(f"{base}/slack/events")
    verifier = SignatureVerifier(SECRET)

    await sender.send_slash_command(REQUESTER, "host01")
    headers, body = recorder.requests[-1]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert verifier.is_valid_request(body, headers)
    fields = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    assert sorted(fields) == sorted(SLASH_FIELDS)
    assert fields["user_name"] == "requester" and fields["channel_name"] == "idm-ops" and fields["text"] == "host01"
    assert fields["response_url"].startswith(slack.url + "response/")

    await sender.send_slash_command(REQUESTER, "host01", signature="v0=bad")
    assert not verifier.is_valid_request(*reversed(recorder.requests[-1]))
    stale = await sender.send_slash_command(REQUESTER, "host01", timestamp=time.time() - 600)
    assert not verifier.is_valid_request(*reversed(recorder.requests[-1]))
    request = stale.request  # correctly signed, only too old
    assert request.headers["X-Slack-Signature"] == signature_for(SECRET, request.timestamp, request.body)
    replayed = await sender.replay(stale.request)
    assert recorder.requests[-1] == recorder.requests[-2] and replayed.request == stale.request

    posted = await client_for(slack).chat_postMessage(channel=OPS_CHANNEL, text="approve?", blocks=approval_blocks())
    await client_for(slack).chat_postMessage(channel=OPS_CHANNEL, thread_ts=posted["ts"], text="noise")
    await sender.click(APPROVER, "approve")
    headers, body = recorder.requests[-1]
    assert verifier.is_valid_request(body, headers)
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions" and payload["user"]["id"] == APPROVER
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": OPS_CHANNEL,
        "is_ephemeral": False,
    }
    assert payload["message"]["ts"] == posted["ts"] and payload["message"]["blocks"][1]["block_id"] == "decide-ap-1"
    action = payload["actions"][0]
    assert (action["action_id"], action["value"], action["block_id"], action["type"]) == (
        "approve",
        "ap-1",
        "decide-ap-1",
        "button",
    )
    assert payload["channel"] == {"id": OPS_CHANNEL, "name": "idm-ops"} and payload["team"]["id"] == TEAM_ID
    assert {"api_app_id", "token", "trigger_id", "response_url"} <= set(payload)


async def _bolt_app(slack: SlackStandIn) -> AsyncApp:
    app = AsyncApp(client=client_for(slack), signing_secret=SECRET)

    @app.command("/idm-upgrade")
    async def command(ack, body, client):
        await ack(f"Starting {body['text']}")
        card = await client.chat_postMessage(channel=body["channel_id"], text=f"Upgrade {body['text']}")
        await client.chat_postMessage(
            channel=body["channel_id"], thread_ts=card["ts"], text="approve?", blocks=approval_blocks()
        )

    @app.action("approve")
    async def approve(ack, body, respond):
        await ack()
        await respond(text=f"Approved by <@{body['user']['id']}>", replace_original=True)

    return app


async def test_bolt_over_signed_http_accepts_valid_and_rejects_forged_and_stale(slack, serve):
    app = await _bolt_app(slack)
    sender = slack.sender(await serve(app.web_app()) + "/slack/events")

    assert (await sender.send_slash_command(OUTSIDER, "host01", signature="v0=bad")).status == 401
    assert (await sender.send_slash_command(OUTSIDER, "host01", timestamp=int(time.time()) - 600)).status == 401
    assert slack.messages(OPS_CHANNEL) == [] and slack.ephemerals() == []

    result = await sender.send_slash_command(REQUESTER, "host01")
    assert result.status == 200
    assert [e.text for e in slack.ephemerals(OPS_CHANNEL, REQUESTER)] == ["Starting host01"]  # the ack, shown
    await eventually(lambda: slack.latest_button(OPS_CHANNEL, "approve"), what="the app posted its approve button")
    message, button = slack.latest_button(OPS_CHANNEL, "approve")
    assert button.value == "ap-1" and message.thread_ts
    assert (await sender.click(APPROVER, "approve")).status == 200
    await eventually(lambda: slack.message(OPS_CHANNEL, message.ts).edited, what="the click replaced the message")
    assert slack.message(OPS_CHANNEL, message.ts).text == "Approved by <@U0APPROVER1>"


# ----- Socket Mode ----------------------------------------------------------------------------------------


async def test_socket_mode_with_bolts_async_socket_mode_handler(slack):
    app = await _bolt_app(slack)
    handler = AsyncSocketModeHandler(app, app_token=APP, web_client=client_for(slack))
    await handler.connect_async()
    try:
        await slack.wait_socket_connected(30)
        ack = await slack.socket_send_slash_command(REQUESTER, "host02")
        assert ack.payload == {"text": "Starting host02"} and ack.seconds < 3
        assert [e.text for e in slack.ephemerals(OPS_CHANNEL, REQUESTER)] == ["Starting host02"]
        envelope = slack.socket.envelopes[-1]
        assert envelope["type"] == "slash_commands" and envelope["accepts_response_payload"] is True
        assert sorted(envelope["payload"]) == sorted(SLASH_FIELDS)

        await eventually(lambda: slack.latest_button(OPS_CHANNEL, "approve"), what="the app posted its approve button")
        message, _ = slack.latest_button(OPS_CHANNEL, "approve")
        ack = await slack.socket_click_button(APPROVER, "approve")
        assert ack.envelope_id == slack.socket.envelopes[-1]["envelope_id"]
        assert slack.socket.envelopes[-1]["type"] == "interactive"
        await eventually(lambda: slack.message(OPS_CHANNEL, message.ts).edited, what="the click replaced the message")
        assert slack.message(OPS_CHANNEL, message.ts).text == "Approved by <@U0APPROVER1>"

        assert await slack.socket_disconnect() == 1  # Slack recycles the connection: the client comes back
        await eventually(
            lambda: slack.socket.connections_opened == 2 and len(slack.socket.connections) == 1,
            what="the Socket Mode client reconnected",
        )
        assert slack.socket.connections_opened == 2
        assert (await slack.socket_send_slash_command(REQUESTER, "host03")).payload == {"text": "Starting host03"}
        assert len(slack.calls_to("apps.connections.open")) == 2
    finally:
        await handler.close_async()


async def test_socket_mode_client_hello_ack_and_unacked_timeout(slack):
    client = SocketModeClient(app_token=APP, web_client=client_for(slack), auto_reconnect_enabled=False)
    seen: list[dict] = []
    acking = True

    async def listener(c: SocketModeClient, message: dict, raw: str | None) -> None:
        seen.append(message)

    async def on_request(c: SocketModeClient, req: SocketModeRequest) -> None:
        if acking:
            await c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    client.message_listeners.append(listener)
    client.socket_mode_request_listeners.append(on_request)
    await client.connect()
    try:
        ack = await slack.socket_send_slash_command(REQUESTER, "status")
        assert ack.payload is None and ack.message == {"envelope_id": ack.envelope_id}
        assert seen[0]["type"] == "hello" and seen[1]["payload"]["text"] == "status"
        acking = False
        with pytest.raises(TimeoutError):
            await slack.socket_send_slash_command(REQUESTER, "status", timeout=0.3)
    finally:
        await client.close()


async def test_socket_mode_client_comes_back_after_an_outage(slack):
    client = SocketModeClient(app_token=APP, web_client=client_for(slack), ping_interval=0.2)
    client.socket_mode_request_listeners.append(
        lambda c, req: c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
    )
    await client.connect()
    try:
        await slack.wait_socket_connected(30)
        await slack.down(0.5)
        assert slack.socket.connections == []  # the outage cut the WebSocket
        await eventually(
            lambda: slack.socket.connections_opened >= 2 and slack.socket.connections,
            what="the Socket Mode client came back after the outage",
        )
        ack = await slack.socket_send_slash_command(REQUESTER, "status")
        assert ack.message == {"envelope_id": ack.envelope_id} and slack.socket.connections_opened >= 2
    finally:
        await client.close()


async def test_modal_open_and_submit_through_bolt(slack, serve):
    app = AsyncApp(client=client_for(slack), signing_secret=SECRET)
    reasons: list[str] = []

    @app.action("deny")
    async def deny(ack, body, client):
        await ack()
        await client.views_open(
            trigger_id=body["trigger_id"],
            view={
                "type": "modal",
                "callback_id": "deny_reason",
                "private_metadata": body["actions"][0]["value"],
                "title": {"type": "plain_text", "text": "Deny"},
                "submit": {"type": "plain_text", "text": "Deny"},
                "blocks": [
                    {
                        "type": "input",
                        "block_id": "reason",
                        "label": {"type": "plain_text", "text": "Why?"},
                        "element": {"type": "plain_text_input", "action_id": "text"},
                    }
                ],
            },
        )

    @app.view("deny_reason")
    async def submitted(ack, view):
        await ack()
        reasons.append(f"{view['private_metadata']}: {view['state']['values']['reason']['text']['value']}")

    sender = slack.sender(await serve(app.web_app()) + "/slack/events")
    await client_for(slack).chat_postMessage(channel=OPS_CHANNEL, text="approve?", blocks=approval_blocks("ap-9"))
    assert (await sender.click(APPROVER, "deny")).status == 200
    await eventually(lambda: slack.workspace.views, what="the app opened its modal")
    (view_id,) = slack.workspace.views
    assert (await sender.submit_view(APPROVER, view_id, {"reason": {"text": "change freeze"}})).status == 200
    await eventually(lambda: reasons, what="the submission handled")  # Bolt runs the listener on after its ack
    assert reasons == ["ap-9: change freeze"]


async def test_clicks_on_ephemerals_and_delete_original(slack, serve):
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/slack/events", recorder.handle)
    sender = slack.sender(await serve(app) + "/slack/events")
    client = client_for(slack)
    posted = await client.chat_postEphemeral(
        channel=OPS_CHANNEL, user=APPROVER, text="confirm?", blocks=approval_blocks("ap-2")
    )
    await sender.click_button(APPROVER, "approve", message_ts=posted["message_ts"])
    payload = json.loads(parse_qs(recorder.requests[-1][1].decode())["payload"][0])
    assert payload["container"]["is_ephemeral"] is True and "message" not in payload
    assert payload["actions"][0]["value"] == "ap-2"
    hook = AsyncWebhookClient(payload["response_url"])
    assert (await hook.send_dict({"delete_original": True})).status_code == 200
    assert slack.ephemerals(OPS_CHANNEL, APPROVER) == []

    card = await client.chat_postMessage(channel=OPS_CHANNEL, text="approve?", blocks=approval_blocks("ap-3"))
    await client.chat_update(channel=OPS_CHANNEL, ts=card["ts"], text="Approved", blocks=[])
    with pytest.raises(LookupError):
        await sender.click(OUTSIDER, "approve")  # no message shows the button any more
    await sender.click_button(OUTSIDER, "approve", message_ts=card["ts"])  # a stale client still can
    payload = json.loads(parse_qs(recorder.requests[-1][1].decode())["payload"][0])
    assert payload["actions"][0]["value"] == "ap-3" and payload["actions"][0]["block_id"] == "decide-ap-3"


async def test_unknown_ticket_is_refused(slack):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"ws://127.0.0.1:{slack.port}/socket-mode?ticket=forged")


# ----- rendering and the threaded runner ------------------------------------------------------------------


async def test_render_channel_and_thread(slack):
    client = client_for(slack)
    card = await client.chat_postMessage(
        channel=OPS_CHANNEL,
        text="Upgrade host01",
        blocks=[
            HeaderBlock(text="Connector upgrade: host01"),
            SectionBlock(text="State: *running*", fields=[MarkdownTextObject(text="*Requester*\n<@U0REQUESTER>")]),
            ContextBlock(elements=[MarkdownTextObject(text="run r1")]),
        ],
    )
    await client.chat_postMessage(channel=OPS_CHANNEL, thread_ts=card["ts"], text="preflight: succeeded\nOS 2016")
    await client.chat_postMessage(channel=OPS_CHANNEL, thread_ts=card["ts"], text="x", blocks=approval_blocks())
    await client.chat_update(channel=OPS_CHANNEL, ts=card["ts"], text="Upgrade host01")
    await client.chat_postEphemeral(channel=OPS_CHANNEL, user=REQUESTER, text="Started run r1")
    await client.chat_postMessage(channel=OPS_CHANNEL, thread_ts=card["ts"], text="Run succeeded", reply_broadcast=True)
    expected = (
        "#idm-ops\n"
        "idm-upgrade: Connector upgrade: host01 (edited)\n"
        "    State: *running*\n"
        "    *Requester* @requester\n"
        "    run r1\n"
        "  ↳ idm-upgrade: preflight: succeeded\n"
        "        OS 2016\n"
        "  ↳ idm-upgrade: *STARTTLS* change needs approval, asked by @requester\n"
        "        [Approve] [Deny]\n"
        "  ↳ idm-upgrade: Run succeeded (also sent to the channel)\n"
        "idm-upgrade replied to a thread: Run succeeded\n"
    )
    assert slack.render_channel(OPS_CHANNEL) == expected
    as_requester = slack.render_channel("#idm-ops", viewer=REQUESTER)
    assert "idm-upgrade: Started run r1 (only visible to you)" in as_requester
    thread = slack.render_thread(OPS_CHANNEL, card["ts"])
    assert thread.splitlines()[0] == "idm-upgrade: Connector upgrade: host01 (edited)"
    assert thread.splitlines()[-1] == "  ↳ idm-upgrade: Run succeeded (also sent to the channel)"


def test_running_in_a_thread_for_synchronous_code():
    with running_slack(bot_token=BOT) as slack:
        client = WebClient(token=BOT, base_url=slack.api_url)
        posted = client.chat_postMessage(channel=OPS_CHANNEL, text="from a thread")
        assert slack.standin.message(OPS_CHANNEL, posted["ts"]).text == "from a thread"
        slack.standin.rate_limit(1, retry_after=3)
        with pytest.raises(SlackApiError):
            client.auth_test()
        slack.down()
        with pytest.raises(urllib.error.URLError):
            client.auth_test()
        slack.up()
        assert client.auth_test()["ok"]
        assert "from a thread" in slack.standin.render_channel()


def _home(blocks: int) -> dict:
    return {"type": "home", "blocks": [{"type": "divider"} for _ in range(blocks)]}


async def test_views_publish_validates_like_slack(slack):
    client = client_for(slack)
    answer = await client.views_publish(user_id=REQUESTER, view=_home(100))  # a view holds 100 blocks
    assert answer["view"]["type"] == "home" and len(answer["view"]["blocks"]) == 100
    again = await client.views_publish(user_id=REQUESTER, view=_home(1))  # the same Home view, replaced
    assert again["view"]["id"] == answer["view"]["id"] and len(again["view"]["blocks"]) == 1
    for user, view, error in [
        (REQUESTER, _home(101), "invalid_arguments"),
        ("U0NOBODY00", _home(1), "user_not_found"),
        (REQUESTER, {"type": "modal", "blocks": []}, "invalid_arguments"),
    ]:
        with pytest.raises(SlackApiError) as refused:
            await client.views_publish(user_id=user, view=view)
        assert refused.value.response["error"] == error


async def test_views_open_needs_a_fresh_trigger_and_home_clicks_carry_the_view(slack, serve):
    from sandbox.slack_views import apply_view_answer, home_click_payload

    client = client_for(slack)
    home = {"type": "home", "blocks": [approval_blocks("ap-1")[-1].to_dict()]}
    await client.views_publish(user_id=APPROVER, view=home)
    click = home_click_payload(slack, APPROVER, "approve")
    assert click["container"]["type"] == "view" and "channel" not in click and "response_url" not in click
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Sure?"}, "blocks": []}
    stale = slack.workspace.new_trigger_id(APPROVER)
    issued, user = slack.workspace.triggers[stale]
    slack.workspace.triggers[stale] = (issued - 4, user)  # Slack's trigger_ids last 3 s
    for trigger, error in [(stale, "expired_trigger_id"), ("1.2.nope", "invalid_trigger_id")]:
        with pytest.raises(SlackApiError) as refused:
            await client.views_open(trigger_id=trigger, view=modal)
        assert refused.value.response["error"] == error
    opened = await client.views_open(trigger_id=click["trigger_id"], view=modal)
    with pytest.raises(SlackApiError):  # each trigger opens one view
        await client.views_open(trigger_id=click["trigger_id"], view=modal)
    view_id = opened["view"]["id"]
    assert apply_view_answer(slack, view_id, {"response_action": "errors", "errors": {"b": "no"}}) == {"b": "no"}
    assert view_id in slack.workspace.views
    apply_view_answer(slack, view_id, None)  # an empty ack closes the modal
    assert view_id not in slack.workspace.views
