"""response_url answers and slash command acks, shown the way Slack shows them.

A response_url takes JSON ``{text, blocks, response_type, replace_original, delete_original, thread_ts}``:
ephemeral to the user by default; ``in_channel`` posts in the channel (in the clicked message's thread, if it
was in one); replace/delete_original act on the clicked message (for a slash command's URL: on the last
ephemeral posted through it). Up to `max_uses` successful uses within `ttl` seconds, then 404
``used_url`` / ``expired_url``; a body that is not a JSON object is 400 ``invalid_payload``; content Slack
would refuse (no text, invalid blocks) is 400 with the Web API's error name.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sandbox.slack_api import ApiError, as_bool, content
from sandbox.slack_state import BOT_USER_ID, Ephemeral, Message, ResponsePost, ResponseUrl, Workspace


def post_to_response_url(
    ws: Workspace, rid: str, raw: bytes, *, ttl: float, max_uses: int
) -> tuple[int, dict[str, Any]]:
    """Apply one POST to the response_url `rid`; (HTTP status, JSON answer)."""
    with ws.lock:
        record = ws.response_urls.get(rid)
        if record is None:
            return 404, {"ok": False, "error": "invalid_url"}
        now = time.monotonic()
        status, outcome, body = 200, "", None
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            status, outcome = 400, "invalid_payload"
        if status == 200 and now - record.created > ttl:
            status, outcome = 404, "expired_url"
        elif status == 200 and record.uses >= max_uses:
            status, outcome = 404, "used_url"
        elif status == 200:
            try:
                outcome = _respond(ws, record, body or {})
            except ApiError as exc:
                status, outcome = 400, exc.error
        record.posts.append(ResponsePost(now, body, status, outcome))
    return status, ({"ok": True} if status == 200 else {"ok": False, "error": outcome})


def _original(ws: Workspace, record: ResponseUrl) -> Message | Ephemeral | None:
    if record.message_ts is None or record.channel is None:
        return None
    if record.message_is_ephemeral:
        return next((e for e in ws.ephemerals_for(record.channel) if e.ts == record.message_ts), None)
    return ws.message(record.channel, record.message_ts)


def _respond(ws: Workspace, record: ResponseUrl, body: dict[str, Any]) -> str:
    original = _original(ws, record)
    if as_bool(body.get("delete_original", False)):
        if original is None:
            raise ApiError("message_not_found")
        original.deleted = True
        return "deleted"
    text, blocks = content(body)
    if as_bool(body.get("replace_original", False)):
        if original is None:
            raise ApiError("message_not_found")
        if isinstance(original, Message):
            ws.edit(original, text, blocks, via="response_url")
        else:
            original.text, original.blocks, original.replaced = text, blocks, original.replaced + 1
        return "replaced"
    channel = record.channel or ""
    thread_ts = body.get("thread_ts") or (original.thread_ts if original is not None else None)
    if body.get("response_type") == "in_channel":
        ws.post(channel, BOT_USER_ID, text, blocks, thread_ts=thread_ts, via="response_url")
        return "in_channel"
    item = ws.ephemeral(channel, record.user, text, blocks, thread_ts=thread_ts, source="response_url")
    if record.kind == "slash_commands":  # a later replace/delete_original acts on this answer
        record.message_ts, record.message_is_ephemeral = item.ts, True
    return "ephemeral"


def show_command_answer(ws: Workspace, channel: str, user: str, answer: dict[str, Any] | None) -> None:
    """A slash command's ack body as Slack shows it: ephemeral to the user, or in the channel."""
    if not answer or not (answer.get("text") or answer.get("blocks")):
        return
    text, blocks = str(answer.get("text") or ""), list(answer.get("blocks") or [])
    if answer.get("response_type") == "in_channel":
        ws.post(channel, BOT_USER_ID, text, blocks, via="command_answer")
    else:
        ws.ephemeral(channel, user, text, blocks, source="ack")
