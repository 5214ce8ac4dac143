"""The Slack stand-in's Web API methods: each takes the workspace and the request's parameters, returns the body.

Parameters arrive as slack_sdk sends them: a form (JSON-valued fields such as `blocks` as JSON strings), a JSON
body, or the query string (GET methods). Errors are `ApiError(name)`, answered as ``{"ok": false, "error": name}``
with HTTP 200, as Slack does. Validation is light and only where Slack would reject: too many blocks, text over
the section limit, a message over 40,000 characters, missing content, unknown channels, users, messages.

Stand-in choices where Slack's behaviour is not documented: a `thread_ts` that is no message in the channel is
`thread_not_found`; a `thread_ts` naming a reply attaches to that reply's parent, as Slack does.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from sandbox.slack_state import (
    APP_ID,
    BOT_ID,
    BOT_NAME,
    BOT_USER_ID,
    TEAM_DOMAIN,
    TEAM_ID,
    TEAM_NAME,
    Channel,
    Message,
    View,
    Workspace,
)

MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
MAX_FIELDS = 10
HEADER_TEXT_LIMIT = 150
MESSAGE_TEXT_LIMIT = 40_000
MAX_ACTION_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
ID_LIMIT = 255
TRIGGER_TTL_SECONDS = 3.0

Params = dict[str, Any]


class ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, **self.extra}


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def json_field(value: Any, error: str = "invalid_blocks_format") -> Any:
    """A field that may arrive as a JSON string (form posts) or already decoded (JSON bodies)."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else None
        except json.JSONDecodeError as exc:
            raise ApiError(error) from exc
    return value


def _text_of(obj: Any) -> str:
    return obj.get("text", "") if isinstance(obj, dict) else ""


def block_errors(blocks: list[Any], limit: int = MAX_BLOCKS) -> list[str]:
    """Why Slack would refuse these blocks with invalid_blocks (empty when it would accept them); ``limit``:
    50 in a message, 100 in a view (a modal or the Home tab)."""
    errors: list[str] = []
    if len(blocks) > limit:
        errors.append(f"must provide at most {limit} items [json-pointer:/blocks]")
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"missing required field: type {where}]")
            continue
        block_id = block.get("block_id")
        if block_id:
            if block_id in seen:
                errors.append(f"duplicate block_id {where}/block_id]")
            if len(str(block_id)) > ID_LIMIT:
                errors.append(f"must be less than {ID_LIMIT + 1} characters {where}/block_id]")
            seen.add(block_id)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"must provide either text or fields {where}]")
            if len(_text_of(block.get("text"))) > SECTION_TEXT_LIMIT:
                errors.append(f"must be less than {SECTION_TEXT_LIMIT + 1} characters {where}/text/text]")
            fields = block.get("fields") or []
            if len(fields) > MAX_FIELDS:
                errors.append(f"must provide at most {MAX_FIELDS} items {where}/fields]")
            for j, f in enumerate(fields):
                if len(_text_of(f)) > FIELD_TEXT_LIMIT:
                    errors.append(f"must be less than {FIELD_TEXT_LIMIT + 1} characters {where}/fields/{j}/text]")
        elif kind == "header" and len(_text_of(block.get("text"))) > HEADER_TEXT_LIMIT:
            errors.append(f"must be less than {HEADER_TEXT_LIMIT + 1} characters {where}/text/text]")
        elif kind == "context" and len(block.get("elements") or []) > MAX_CONTEXT_ELEMENTS:
            errors.append(f"must provide at most {MAX_CONTEXT_ELEMENTS} items {where}/elements]")
        elif kind == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > MAX_ACTION_ELEMENTS:
                errors.append(f"must provide 1 to {MAX_ACTION_ELEMENTS} items {where}/elements]")
        elements = [*(block.get("elements") or []), block.get("accessory")]
        for j, element in enumerate(e for e in elements if isinstance(e, dict)):
            if element.get("type") != "button":
                continue
            if len(_text_of(element.get("text"))) > BUTTON_TEXT_LIMIT:
                errors.append(f"must be less than {BUTTON_TEXT_LIMIT + 1} characters {where}/elements/{j}/text]")
            if len(str(element.get("value") or "")) > BUTTON_VALUE_LIMIT:
                errors.append(f"must be less than {BUTTON_VALUE_LIMIT + 1} characters {where}/elements/{j}/value]")
            if len(str(element.get("action_id") or "")) > ID_LIMIT:
                errors.append(f"must be less than {ID_LIMIT + 1} characters {where}/elements/{j}/action_id]")
    return errors


def content(p: Params, *, required: bool = True, current: Message | None = None) -> tuple[str, list[dict]]:
    """(text, blocks) of a post or update; on an update, a field left out keeps the message's value."""
    raw_blocks = json_field(p.get("blocks"))
    if raw_blocks is not None and not isinstance(raw_blocks, list):
        raise ApiError("invalid_blocks_format")
    text = p.get("text")
    if current is not None:
        text = current.text if text is None else text
        raw_blocks = current.blocks if raw_blocks is None else raw_blocks
    text = "" if text is None else str(text)
    blocks = raw_blocks or []
    if errors := block_errors(blocks):
        raise ApiError("invalid_blocks", errors=errors, response_metadata={"messages": errors})
    if len(text) > MESSAGE_TEXT_LIMIT:
        raise ApiError("msg_too_long")
    if required and not text and not blocks and not p.get("attachments"):
        raise ApiError("no_text")
    return text, blocks


def _channel(ws: Workspace, p: Params, key: str = "channel") -> Channel:
    channel = ws.channel(p.get(key))
    if channel is None:
        raise ApiError("channel_not_found")
    return channel


def _message(ws: Workspace, channel: Channel, ts: Any) -> Message:
    message = ws.message(channel.id, str(ts)) if ts else None
    if message is None:
        raise ApiError("message_not_found")
    return message


def auth_test(ws: Workspace, p: Params) -> dict[str, Any]:
    # Slack's documented answer for a bot token: no app_id (bots.info has it); enterprise_id only on Grid.
    return {
        "ok": True,
        "url": f"https://{TEAM_DOMAIN}.slack.com/",
        "team": TEAM_NAME,
        "user": BOT_NAME,
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
        "is_enterprise_install": False,
    }


def bots_info(ws: Workspace, p: Params) -> dict[str, Any]:
    if (p.get("bot") or "") != BOT_ID:
        raise ApiError("bot_not_found")
    return {
        "ok": True,
        "bot": {
            "id": BOT_ID,
            "deleted": False,
            "name": BOT_NAME,
            "updated": 1700000000,
            "app_id": APP_ID,
            "user_id": BOT_USER_ID,
            "icons": {"image_36": "https://a.slack-edge.com/80588/img/plugins/app/bot_36.png"},
        },
    }


def chat_post_message(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = _channel(ws, p)
    if not channel.bot_is_member:
        raise ApiError("not_in_channel")
    text, blocks = content(p)
    thread_ts = p.get("thread_ts") or None
    if thread_ts:
        parent = ws.message(channel.id, str(thread_ts))
        if parent is None:
            raise ApiError("thread_not_found")
        thread_ts = parent.thread_ts or parent.ts
    message = ws.post(
        channel.id,
        BOT_USER_ID,
        text,
        blocks,
        thread_ts=thread_ts,
        reply_broadcast=as_bool(p.get("reply_broadcast", False)),
    )
    return {"ok": True, "channel": channel.id, "ts": message.ts, "message": ws.to_api(message)}


def chat_update(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = _channel(ws, p)
    message = _message(ws, channel, p.get("ts"))
    if message.user != BOT_USER_ID:
        raise ApiError("cant_update_message")
    text, blocks = content(p, current=message)
    ws.edit(message, text, blocks)
    return {"ok": True, "channel": channel.id, "ts": message.ts, "text": text, "message": ws.to_api(message)}


def chat_post_ephemeral(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = _channel(ws, p)
    user = p.get("user")
    if user not in ws.users:
        raise ApiError("user_not_found")
    if user not in channel.members:
        raise ApiError("user_not_in_channel")
    text, blocks = content(p)
    item = ws.ephemeral(channel.id, user, text, blocks, thread_ts=p.get("thread_ts") or None)
    return {"ok": True, "message_ts": item.ts}


def chat_delete(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = _channel(ws, p)
    message = _message(ws, channel, p.get("ts"))
    if message.user != BOT_USER_ID:
        raise ApiError("cant_delete_message")
    message.deleted = True
    return {"ok": True, "channel": channel.id, "ts": message.ts}


def chat_get_permalink(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = _channel(ws, p)
    message = _message(ws, channel, p.get("message_ts"))
    link = f"https://{TEAM_DOMAIN}.slack.com/archives/{channel.id}/p{message.ts.replace('.', '')}"
    if message.thread_ts:
        link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
    return {"ok": True, "channel": channel.id, "permalink": link}


def conversations_info(ws: Workspace, p: Params) -> dict[str, Any]:
    return {"ok": True, "channel": _channel(ws, p).to_api()}


def conversations_history(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = _channel(ws, p)
    limit = int(p.get("limit") or 100)
    oldest, latest = float(p.get("oldest") or 0), float(p.get("latest") or "inf")
    inclusive = as_bool(p.get("inclusive", False))
    shown = [
        m
        for m in ws.all_messages(channel.id)
        if not m.deleted
        and (not m.is_reply or m.reply_broadcast)
        and (oldest <= float(m.ts) <= latest if inclusive else oldest < float(m.ts) < latest)
    ]
    shown.reverse()
    return {"ok": True, "messages": [ws.to_api(m) for m in shown[:limit]], "has_more": len(shown) > limit}


def conversations_replies(ws: Workspace, p: Params) -> dict[str, Any]:
    channel = _channel(ws, p)
    parent = ws.message(channel.id, str(p.get("ts") or ""))
    if parent is None:
        raise ApiError("thread_not_found")
    if parent.thread_ts:
        parent = ws.message(channel.id, parent.thread_ts) or parent
    thread = [parent, *ws.replies(channel.id, parent.ts)]
    return {"ok": True, "messages": [ws.to_api(m) for m in thread], "has_more": False}


def users_info(ws: Workspace, p: Params) -> dict[str, Any]:
    user = ws.users.get(p.get("user") or "")
    if user is None:
        raise ApiError("user_not_found")
    return {"ok": True, "user": user.to_api()}


def usergroups_users_list(ws: Workspace, p: Params) -> dict[str, Any]:
    group = p.get("usergroup") or ""
    if group not in ws.usergroups:
        raise ApiError("no_such_subteam")
    return {"ok": True, "users": list(ws.usergroups[group])}


def usergroups_list(ws: Workspace, p: Params) -> dict[str, Any]:
    groups = [
        {"id": gid, "team_id": TEAM_ID, "handle": gid.lower(), "name": gid, "user_count": len(members)}
        | ({"users": list(members)} if as_bool(p.get("include_users", False)) else {})
        for gid, members in ws.usergroups.items()
    ]
    return {"ok": True, "usergroups": groups}


def _take_trigger(ws: Workspace, p: Params) -> str:
    trigger_id = p.get("trigger_id") or ""
    issued = ws.triggers.pop(trigger_id, None)
    if issued is None:
        raise ApiError("invalid_trigger_id")
    if time.monotonic() - issued[0] > TRIGGER_TTL_SECONDS:
        raise ApiError("expired_trigger_id")
    return issued[1]


def _view_param(p: Params) -> dict[str, Any]:
    view = json_field(p.get("view"), "invalid_arguments")
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        raise ApiError("invalid_arguments")
    if errors := block_errors(view.get("blocks") or [], MAX_VIEW_BLOCKS):
        raise ApiError("invalid_arguments", response_metadata={"messages": errors})
    return copy.deepcopy(view)


def _new_view(ws: Workspace, user: str, body: dict[str, Any], root: str | None, previous: str | None) -> View:
    view_id = "V0" + secrets.token_hex(5).upper()
    view = View(view_id, body["type"], user, body, root or view_id, previous, body.get("external_id"))
    ws.views[view_id] = view
    return view


def views_open(ws: Workspace, p: Params) -> dict[str, Any]:
    user = _take_trigger(ws, p)
    return {"ok": True, "view": _new_view(ws, user, _view_param(p), None, None).to_api()}


def views_push(ws: Workspace, p: Params) -> dict[str, Any]:
    user = _take_trigger(ws, p)
    body = _view_param(p)
    stack = [v for v in ws.views.values() if v.user == user and v.type == "modal"]
    root = stack[-1].root_view_id if stack else None
    return {"ok": True, "view": _new_view(ws, user, body, root, stack[-1].id if stack else None).to_api()}


def views_update(ws: Workspace, p: Params) -> dict[str, Any]:
    body = _view_param(p)
    view = ws.views.get(p.get("view_id") or "") or next(
        (v for v in ws.views.values() if p.get("external_id") and v.external_id == p.get("external_id")), None
    )
    if view is None:
        raise ApiError("not_found")
    if p.get("hash") and p.get("hash") != view.hash:
        raise ApiError("hash_conflict")
    view.view, view.hash = body, f"{int(time.time())}.{secrets.token_hex(4)}"
    return {"ok": True, "view": view.to_api()}


def views_publish(ws: Workspace, p: Params) -> dict[str, Any]:
    user = p.get("user_id") or ""
    if user not in ws.users:
        raise ApiError("user_not_found")
    body = _view_param(p)
    if body["type"] != "home":
        raise ApiError("invalid_arguments")
    view = ws.views.get(ws.home_views.get(user, ""))
    if view is None:
        view = _new_view(ws, user, body, None, None)
        ws.home_views[user] = view.id
    view.view = body
    return {"ok": True, "view": view.to_api()}


METHODS: dict[str, Callable[[Workspace, Params], dict[str, Any]]] = {
    "auth.test": auth_test,
    "bots.info": bots_info,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.postEphemeral": chat_post_ephemeral,
    "chat.delete": chat_delete,
    "chat.getPermalink": chat_get_permalink,
    "conversations.info": conversations_info,
    "conversations.history": conversations_history,
    "conversations.replies": conversations_replies,
    "users.info": users_info,
    "usergroups.users.list": usergroups_users_list,
    "usergroups.list": usergroups_list,
    "views.open": views_open,
    "views.push": views_push,
    "views.update": views_update,
    "views.publish": views_publish,
}
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})  # answered by the stand-in itself (it knows its URL)
ALL_METHODS = frozenset(METHODS) | APP_TOKEN_METHODS
