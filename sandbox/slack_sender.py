"""The "Slack side" that calls the bot: signed slash commands and block_actions posted exactly as Slack does.

    sender = slack.sender("http://127.0.0.1:3000/slack/events")          # or SlackSender(url, secret, slack)
    result = await sender.send_slash_command(REQUESTER, "host01")        # -> SlackHttpResult(status, body, ...)
    await sender.click(APPROVER, "approve")                              # the newest message with that button
    await sender.click_button(APPROVER, "approve", value, message_ts, channel_id)
    await sender.send_slash_command(REQUESTER, "host01", signature="v0=bad")            # forged
    await sender.send_slash_command(REQUESTER, "host01", timestamp=time.time() - 600)   # stale
    await sender.replay(result.request)                                  # the exact same bytes and headers

Slash commands: application/x-www-form-urlencoded with the fields of field-notes section 6. Interactivity:
one form field `payload` holding the block_actions JSON. Both signed with ``X-Slack-Request-Timestamp`` and
``X-Slack-Signature: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")``. Each request gets a fresh stand-in
response_url and trigger_id. A 200 answer to a slash command is shown the way Slack shows it: its text/blocks
become an ephemeral for the user (or a channel message with ``response_type: in_channel``).

The payload builders are shared with Socket Mode delivery (`SlackStandIn.socket_send_slash_command`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp

from sandbox.slack_state import (
    APP_ID,
    OPS_CHANNEL,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
    Button,
    find_button,
)

if TYPE_CHECKING:
    from sandbox.slack import SlackStandIn


def _user(standin: SlackStandIn, user_id: str) -> dict[str, Any]:
    name = standin.workspace.user_name(user_id)
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}


def slash_command_fields(
    standin: SlackStandIn, user_id: str, text: str, channel_id: str = OPS_CHANNEL, command: str = "/idm-upgrade"
) -> dict[str, str]:
    """A slash command invocation's fields, as Slack posts them (and puts in a Socket Mode payload)."""
    ws = standin.workspace
    channel = ws.channel(channel_id)
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "team_domain": TEAM_DOMAIN,
        "enterprise_id": "",
        "enterprise_name": "",
        "channel_id": channel.id if channel else channel_id,
        "channel_name": channel.name if channel else "privategroup",
        "user_id": user_id,
        "user_name": ws.user_name(user_id),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": standin.new_response_url("slash_commands", channel_id, user_id),
        "trigger_id": ws.new_trigger_id(user_id),
    }


def block_actions_payload(
    standin: SlackStandIn,
    user_id: str,
    action_id: str,
    value: str | None,
    message_ts: str,
    channel_id: str = OPS_CHANNEL,
    *,
    block_id: str | None = None,
) -> dict[str, Any]:
    """A button click on a stored message (or ephemeral). With `value` None, the button's own value is used;
    a value or button no longer in the message is still sent (a stale client), with the block_id it had."""
    ws = standin.workspace
    with ws.lock:
        channel = ws.channel(channel_id)
        if channel is None:
            raise LookupError(f"no channel {channel_id}")
        message = ws.message(channel.id, message_ts)
        ephemeral = next((e for e in ws.ephemerals if e.channel == channel.id and e.ts == message_ts), None)
        if message is None and ephemeral is None:
            raise LookupError(f"no message {message_ts} in {channel.id}")
        source = message if message is not None else ephemeral
        assert source is not None
        button = find_button(source.blocks, action_id, value) or find_button(source.blocks, action_id)
        if button is None:
            for version in reversed(message.versions if message else []):
                button = find_button(version.blocks, action_id, value) or find_button(version.blocks, action_id)
                if button:
                    break
        if value is None:
            if button is None:
                raise LookupError(f"no {action_id!r} button in message {message_ts}")
            value = button.value
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel.id,
            "is_ephemeral": message is None,
        }
        if source.thread_ts:
            container["thread_ts"] = source.thread_ts
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id or (button.block_id if button else None) or "unknown",
            "text": {"type": "plain_text", "text": button.text if button else action_id, "emoji": True},
            "value": value,
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        if button and button.style:
            action["style"] = button.style
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": _user(standin, user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": ws.new_trigger_id(user_id),
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel.id, "name": channel.name},
            "state": {"values": {}},
            "response_url": standin.new_response_url(
                "block_actions", channel.id, user_id, message_ts=message_ts, message_is_ephemeral=message is None
            ),
            "actions": [action],
        }
        if message is not None:
            payload["message"] = ws.to_api(message)
        return payload


def view_submission_payload(
    standin: SlackStandIn, user_id: str, view_id: str, values: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A modal's submission. `values`: {block_id: {action_id: "typed text" or a full state value dict}}."""
    ws = standin.workspace
    with ws.lock:
        view = ws.views.get(view_id)
        if view is None:
            raise LookupError(f"no view {view_id}")
        state = {
            block: {
                action: v if isinstance(v, dict) else {"type": "plain_text_input", "value": v}
                for action, v in actions.items()
            }
            for block, actions in (values or {}).items()
        }
        body = view.to_api()
        body["state"] = {"values": state}
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "user": _user(standin, user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "trigger_id": ws.new_trigger_id(user_id),
            "view": body,
            "response_urls": [],
            "enterprise": None,
            "is_enterprise_install": False,
        }


def signature_for(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SignedRequest:
    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def timestamp(self) -> str:
        return self.headers["X-Slack-Request-Timestamp"]


@dataclass
class SlackHttpResult:
    status: int
    body: str
    headers: dict[str, str]
    request: SignedRequest
    seconds: float  # from sending to the whole answer read
    sent_payload: dict[str, Any] = field(default_factory=dict)  # the fields or the decoded `payload`

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def answer_body(body: str, content_type: str) -> dict[str, Any] | None:
    """What Slack makes of an ack's body: JSON as is, plain text as {"text": ...}, empty as nothing."""
    if not body.strip():
        return None
    if "json" in content_type:
        try:
            decoded = json.loads(body)
        except json.JSONDecodeError:
            return {"text": body}
        return decoded if isinstance(decoded, dict) else None
    return {"text": body}


class SlackSender:
    """Posts signed requests to the bot's Slack endpoint (HTTP mode), as Slack would."""

    def __init__(self, bot_url: str, signing_secret: str, standin: SlackStandIn, *, timeout: float = 10.0) -> None:
        self.bot_url = bot_url
        self.signing_secret = signing_secret
        self.standin = standin
        self.timeout = timeout
        self.sent: list[SlackHttpResult] = []

    def sign(self, body: bytes, timestamp: str) -> str:
        return signature_for(self.signing_secret, timestamp, body)

    def build(
        self, fields: dict[str, str], *, signature: str | None = None, timestamp: float | str | None = None
    ) -> SignedRequest:
        body = urlencode(fields).encode()
        ts = str(int(float(timestamp))) if timestamp is not None else str(int(time.time()))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature if signature is not None else self.sign(body, ts),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        return SignedRequest(self.bot_url, body, headers)

    async def replay(self, request: SignedRequest, *, sent_payload: dict[str, Any] | None = None) -> SlackHttpResult:
        """POST `request` as it is: the same bytes and headers (a replayed or duplicated delivery)."""
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(request.url, data=request.body, headers=request.headers) as response,
        ):
            body = await response.text()
            headers = dict(response.headers)
            status = response.status
        result = SlackHttpResult(status, body, headers, request, time.monotonic() - started, sent_payload or {})
        self.sent.append(result)
        return result

    async def send_slash_command(
        self,
        user_id: str,
        text: str,
        channel_id: str = OPS_CHANNEL,
        command: str = "/idm-upgrade",
        *,
        signature: str | None = None,
        timestamp: float | str | None = None,
    ) -> SlackHttpResult:
        fields = slash_command_fields(self.standin, user_id, text, channel_id, command)
        result = await self.replay(self.build(fields, signature=signature, timestamp=timestamp), sent_payload=fields)
        if result.status == 200:
            answer = answer_body(result.body, result.headers.get("Content-Type", ""))
            self.standin.show_command_answer(channel_id, user_id, answer)
        return result

    async def click_button(
        self,
        user_id: str,
        action_id: str,
        value: str | None = None,
        message_ts: str | None = None,
        channel_id: str = OPS_CHANNEL,
        *,
        block_id: str | None = None,
        signature: str | None = None,
        timestamp: float | str | None = None,
    ) -> SlackHttpResult:
        """Click `action_id` on the message `message_ts` (default: the newest message that has the button)."""
        if message_ts is None:
            found = self.standin.latest_button(channel_id, action_id, value=value)
            if found is None:
                raise LookupError(f"no message with a {action_id!r} button in {channel_id}")
            message_ts = found[0].ts
        payload = block_actions_payload(
            self.standin, user_id, action_id, value, message_ts, channel_id, block_id=block_id
        )
        request = self.build({"payload": json.dumps(payload)}, signature=signature, timestamp=timestamp)
        return await self.replay(request, sent_payload=payload)

    async def click(self, user_id: str, action_id: str, *, channel_id: str = OPS_CHANNEL, **kw: Any) -> SlackHttpResult:
        """Click the newest `action_id` button in the channel (threads included)."""
        return await self.click_button(user_id, action_id, channel_id=channel_id, **kw)

    async def submit_view(
        self,
        user_id: str,
        view_id: str,
        values: dict[str, dict[str, Any]] | None = None,
        *,
        signature: str | None = None,
        timestamp: float | str | None = None,
    ) -> SlackHttpResult:
        payload = view_submission_payload(self.standin, user_id, view_id, values)
        request = self.build({"payload": json.dumps(payload)}, signature=signature, timestamp=timestamp)
        return await self.replay(request, sent_payload=payload)


__all__ = [
    "Button",
    "SignedRequest",
    "SlackHttpResult",
    "SlackSender",
    "answer_body",
    "block_actions_payload",
    "signature_for",
    "slash_command_fields",
    "view_submission_payload",
]
