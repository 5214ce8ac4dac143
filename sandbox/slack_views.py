"""The Slack stand-in's App Home and modals, from Slack's side: the `app_home_opened` event, a click on a
button of a person's Home view, a modal's submission and what Slack does with the app's answer to it.

    await open_home(sender, REQUESTER)                         # signed event_callback to the Events URL
    await open_home_socket(slack, REQUESTER)                   # the same over Socket Mode
    await click_home(sender, REQUESTER, "home_check", "host01")
    result = await submit_modal(sender, REQUESTER, view_id)    # applies response_action (clear/update/errors)

A Home click is a block_actions payload whose container is the view (``type: "view"``): no channel, no message
and no response_url, as Slack sends it. The views themselves (views.publish/open/update) are in `slack_api`.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from sandbox.slack_render import flatten_blocks, readable
from sandbox.slack_sender import SignedRequest, SlackHttpResult, _user, answer_body, view_submission_payload
from sandbox.slack_state import APP_ID, TEAM_DOMAIN, TEAM_ID, VERIFICATION_TOKEN, View, find_button

if TYPE_CHECKING:
    from sandbox.slack import SlackStandIn
    from sandbox.slack_sender import SlackSender


def home_of(standin: SlackStandIn, user: str) -> View | None:
    ws = standin.workspace
    with ws.lock:
        return ws.views.get(ws.home_views.get(user, ""))


def modals_of(standin: SlackStandIn, user: str) -> list[View]:
    ws = standin.workspace
    with ws.lock:
        return [v for v in ws.views.values() if v.user == user and v.type == "modal"]


def home_opened_event(user: str) -> dict[str, Any]:
    """The Events API envelope of `app_home_opened` (the Home tab, opened by `user`)."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": {
            "type": "app_home_opened",
            "user": user,
            "channel": "D0" + secrets.token_hex(4).upper(),
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        },
        "type": "event_callback",
        "event_id": "Ev0" + secrets.token_hex(5).upper(),
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": user, "is_bot": False, "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
    }


def home_click_payload(standin: SlackStandIn, user: str, action_id: str, value: str | None = None) -> dict[str, Any]:
    """A click on the button `action_id` (with `value`, if given) of `user`'s published Home view."""
    view = home_of(standin, user)
    if view is None:
        raise LookupError(f"{user} has no published Home view")
    button = find_button(view.view.get("blocks") or [], action_id, value)
    if button is None:
        raise LookupError(f"no {action_id!r} button (value {value!r}) on the Home of {user}")
    return {
        "type": "block_actions",
        "user": _user(standin, user),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "view", "view_id": view.id},
        "trigger_id": standin.workspace.new_trigger_id(user),
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": view.to_api(),
        "actions": [
            {
                "action_id": action_id,
                "block_id": button.block_id or "unknown",
                "text": {"type": "plain_text", "text": button.text, "emoji": True},
                "value": button.value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def _signed_json(sender: SlackSender, body: dict[str, Any]) -> SignedRequest:
    raw = json.dumps(body).encode()
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sender.sign(raw, ts),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }
    return SignedRequest(sender.bot_url, raw, headers)


async def open_home(sender: SlackSender, user: str, *, body: dict[str, Any] | None = None) -> SlackHttpResult:
    """Slack tells the bot `user` opened its Home tab (signed JSON to the Events URL)."""
    event = body or home_opened_event(user)
    return await sender.replay(_signed_json(sender, event), sent_payload=event)


async def open_home_socket(standin: SlackStandIn, user: str) -> Any:
    return await standin.socket_deliver("events_api", home_opened_event(user))


async def click_home(sender: SlackSender, user: str, action_id: str, value: str | None = None) -> SlackHttpResult:
    payload = home_click_payload(sender.standin, user, action_id, value)
    request = sender.build({"payload": json.dumps(payload)})
    return await sender.replay(request, sent_payload=payload)


def apply_view_answer(standin: SlackStandIn, view_id: str, answer: dict[str, Any] | None) -> dict[str, str]:
    """What Slack does with the app's ack of a submission: none or `clear` closes the modal, `update` replaces
    it, `errors` keeps it open and shows them (returned)."""
    ws = standin.workspace
    action = (answer or {}).get("response_action")
    with ws.lock:
        view = ws.views.get(view_id)
        if view is None:
            return {}
        if action == "errors":
            return dict(answer.get("errors") or {}) if answer else {}
        if action == "update" and isinstance((answer or {}).get("view"), dict):
            view.view = dict(answer["view"])  # type: ignore[index]
            return {}
        if action in (None, "clear"):
            root = view.root_view_id
            for other in [v for v in ws.views.values() if v.root_view_id == root and v.type == "modal"]:
                del ws.views[other.id]
        return {}


async def submit_modal(
    sender: SlackSender, user: str, view_id: str, values: dict[str, dict[str, Any]] | None = None
) -> tuple[SlackHttpResult, dict[str, str]]:
    """Submit the modal as `user`; Slack then acts on the ack: (the HTTP result, the errors shown, if any)."""
    payload = view_submission_payload(sender.standin, user, view_id, values)
    result = await sender.replay(sender.build({"payload": json.dumps(payload)}), sent_payload=payload)
    errors: dict[str, str] = {}
    if result.status == 200:
        errors = apply_view_answer(
            sender.standin, view_id, answer_body(result.body, result.headers.get("Content-Type", ""))
        )
    return result, errors


def render_home(standin: SlackStandIn, user: str) -> str:
    """`user`'s published Home tab as text, as the sandbox prints it (``--home``)."""
    view = home_of(standin, user)
    if view is None:
        return f"(no Home published for {user})"
    name = standin.workspace.user_name(user)
    lines = [f"App Home of @{name} (idm-upgrade)"]
    lines += [f"    {readable(line, standin.workspace)}" for line in flatten_blocks(view.view.get("blocks") or [])]
    return "\n".join(lines)
