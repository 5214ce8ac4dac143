"""A channel as a person sees it, as plain text: for tests and for the `idm-upgrade sandbox` terminal view.

    #idm-ops
    idm-upgrade: Connector upgrade: host01 (edited)
        State: running
        [Cancel run]
      ↳ idm-upgrade: preflight: succeeded
      ↳ idm-upgrade: STARTTLS approval needed
            [Approve] [Deny]
      ↳ idm-upgrade: Run succeeded (also sent to the channel)
    idm-upgrade replied to a thread: Run succeeded

Top-level messages in ts order, each with its latest content (blocks flattened when it has any, else its text),
"(edited)" when chat.update or a response_url changed it; its thread replies below, marked "↳"; a reply sent
with reply_broadcast also appears in the channel at its own place. Mentions are shown by name (<@U…> → @name).
With `viewer=USER` that user's ephemerals are shown too, marked "(only visible to you)".
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from sandbox.slack_state import BOT_USER_ID, Ephemeral, Message, Workspace

_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")
CONTINUATION = "    "
REPLY = "  ↳ "
REPLY_CONTINUATION = "        "


def readable(text: str, ws: Workspace | None = None) -> str:
    """Slack mrkdwn references made readable: users, channels, groups, special mentions and links."""

    def swap(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("@"):
            return "@" + (label or (ws.user_name(target[1:]) if ws else target[1:]))
        if target.startswith("#"):
            channel = ws.channel(target[1:]) if ws else None
            return "#" + (label or (channel.name if channel else target[1:]))
        if target.startswith("!subteam^"):
            return label or "@" + target.removeprefix("!subteam^")
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!"):
            return "@" + target[1:]
        return label or target

    return html.unescape(_LINK.sub(swap, text))


def _text(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return "" if obj is None else str(obj)


def _element(element: dict[str, Any]) -> str:
    kind = element.get("type")
    if kind == "button":
        return f"[{_text(element.get('text'))}]"
    if kind in ("static_select", "external_select", "users_select", "conversations_select", "channels_select"):
        return f"[{_text(element.get('placeholder')) or 'Select'} ▾]"
    if kind == "overflow":
        return "[…]"
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    if kind in ("mrkdwn", "plain_text"):
        return _text(element)
    if kind in ("datepicker", "timepicker", "checkboxes", "radio_buttons", "plain_text_input"):
        return f"[{kind}]"
    return f"[{kind}]"


def _rich_text(elements: list[Any]) -> str:
    parts: list[str] = []
    for element in elements or []:
        if not isinstance(element, dict):
            continue
        if "elements" in element:
            parts.append(_rich_text(element["elements"]))
        elif element.get("type") == "text":
            parts.append(element.get("text", ""))
        elif element.get("type") == "user":
            parts.append(f"<@{element.get('user_id')}>")
        elif element.get("type") == "link":
            parts.append(element.get("text") or element.get("url", ""))
        elif element.get("type") == "emoji":
            parts.append(f":{element.get('name')}:")
    return "".join(parts)


def flatten_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    """Block Kit as lines of text: header, section text and fields, context, buttons as [Label], dividers."""
    lines: list[str] = []
    for block in blocks or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in ("section", "header"):
            if block.get("text"):
                lines.extend(_text(block["text"]).splitlines() or [""])
            lines.extend(_text(f).replace("\n", " ") for f in block.get("fields") or [])
            if isinstance(block.get("accessory"), dict):
                lines.append(_element(block["accessory"]))
        elif kind == "context":
            lines.append("  ".join(_element(e) for e in block.get("elements") or [] if isinstance(e, dict)))
        elif kind == "actions":
            lines.append(" ".join(_element(e) for e in block.get("elements") or [] if isinstance(e, dict)))
        elif kind == "divider":
            lines.append("---")
        elif kind == "image":
            lines.append(_element(block))
        elif kind == "rich_text":
            lines.extend(_rich_text(block.get("elements") or []).splitlines())
        elif kind == "input":
            lines.append(f"{_text(block.get('label'))}: {_element(block.get('element') or {})}")
        elif kind:
            lines.append(f"[{kind}]")
    return lines


def content_lines(text: str, blocks: list[dict[str, Any]], ws: Workspace | None = None) -> list[str]:
    lines = flatten_blocks(blocks) if blocks else []
    if not any(line.strip() for line in lines):
        lines = text.splitlines()
    return [readable(line, ws) for line in lines] or [""]


def _entry(
    ws: Workspace,
    item: Message | Ephemeral,
    lead: str,
    cont: str,
    *,
    author: str,
    marks: list[str],
    show_ts: bool,
) -> list[str]:
    lines = content_lines(item.text, item.blocks, ws)
    stamp = f"[{item.ts}] " if show_ts else ""
    suffix = "".join(f" ({m})" for m in marks)
    return [f"{lead}{stamp}{author}{lines[0]}{suffix}", *(f"{cont}{line}" for line in lines[1:])]


def _message_marks(message: Message, in_thread: bool) -> list[str]:
    marks = ["edited"] if message.edited else []
    if in_thread and message.reply_broadcast:
        marks.append("also sent to the channel")
    return marks


@dataclass(frozen=True)
class RenderedMessage:
    """One message as drawn: `key` names it (its ts; a broadcast copy and a deleted parent get their own),
    `thread` is the ts of the thread it belongs to (its own for a top-level message), `lines` as shown."""

    key: str
    thread: str
    lines: list[str]


def _thread_entries(
    ws: Workspace, channel: str, parent: Message, viewer: str | None, show_ts: bool
) -> list[RenderedMessage]:
    items: list[Message | Ephemeral] = [*ws.replies(channel, parent.ts)]
    if viewer:
        items += [e for e in ws.ephemerals_for(channel, viewer) if e.thread_ts == parent.ts]
    entries: list[RenderedMessage] = []
    for item in sorted(items, key=lambda i: float(i.ts)):
        if isinstance(item, Ephemeral):
            marks = ["only visible to you"]
            author = f"{ws.user_name(BOT_USER_ID)}: "
        else:
            marks = _message_marks(item, in_thread=True)
            author = f"{ws.user_name(item.user)}: "
        lines = _entry(ws, item, REPLY, REPLY_CONTINUATION, author=author, marks=marks, show_ts=show_ts)
        entries.append(RenderedMessage(item.ts, parent.ts, lines))
    return entries


def _thread_lines(ws: Workspace, channel: str, parent: Message, viewer: str | None, show_ts: bool) -> list[str]:
    return [line for e in _thread_entries(ws, channel, parent, viewer, show_ts) for line in e.lines]


def channel_messages(
    ws: Workspace, channel_ref: str, *, viewer: str | None = None, show_ts: bool = False
) -> list[RenderedMessage]:
    """The channel as `render_channel` draws it, message by message (without the channel's name)."""
    with ws.lock:
        channel = ws.channel(channel_ref)
        if channel is None:
            raise KeyError(f"no channel {channel_ref!r}")
        items: list[Message | Ephemeral] = [
            m for m in ws.all_messages(channel.id) if not m.is_reply or (m.reply_broadcast and not m.deleted)
        ]
        if viewer:
            items += [e for e in ws.ephemerals_for(channel.id, viewer) if not e.thread_ts]
        entries: list[RenderedMessage] = []
        for item in sorted(items, key=lambda i: float(i.ts)):
            if isinstance(item, Ephemeral):
                lines = _entry(
                    ws,
                    item,
                    "",
                    CONTINUATION,
                    author=f"{ws.user_name(BOT_USER_ID)}: ",
                    marks=["only visible to you"],
                    show_ts=show_ts,
                )
                entries.append(RenderedMessage(item.ts, item.ts, lines))
                continue
            if item.is_reply:  # a broadcast reply, shown where it was posted
                marks = ["edited"] if item.edited else []
                author = f"{ws.user_name(item.user)} replied to a thread: "
                lines = _entry(ws, item, "", CONTINUATION, author=author, marks=marks, show_ts=show_ts)
                entries.append(RenderedMessage(f"{item.ts} in the channel", item.thread_ts or item.ts, lines))
                continue
            thread = _thread_entries(ws, channel.id, item, viewer, show_ts)
            if item.deleted:
                if thread:
                    entries += [RenderedMessage(item.ts, item.ts, ["(message deleted)"]), *thread]
                continue
            author = f"{ws.user_name(item.user)}: "
            marks = _message_marks(item, in_thread=False)
            lines = _entry(ws, item, "", CONTINUATION, author=author, marks=marks, show_ts=show_ts)
            entries += [RenderedMessage(item.ts, item.ts, lines), *thread]
        return entries


def render_channel(ws: Workspace, channel_ref: str, *, viewer: str | None = None, show_ts: bool = False) -> str:
    """The channel as `viewer` (or anyone, when None) sees it: messages, threads, broadcasts, ephemerals."""
    with ws.lock:
        channel = ws.channel(channel_ref)
        if channel is None:
            raise KeyError(f"no channel {channel_ref!r}")
        entries = channel_messages(ws, channel_ref, viewer=viewer, show_ts=show_ts)
        lines = [f"#{channel.name}", *(line for e in entries for line in e.lines)]
        return "\n".join(lines) + "\n"


def render_thread(ws: Workspace, channel_ref: str, ts: str, *, viewer: str | None = None, show_ts: bool = False) -> str:
    """One thread: the parent message and its replies, in the channel format."""
    with ws.lock:
        channel = ws.channel(channel_ref)
        if channel is None:
            raise KeyError(f"no channel {channel_ref!r}")
        parent = ws.message(channel.id, ts)
        if parent is None:
            raise KeyError(f"no message {ts} in {channel.id}")
        if parent.thread_ts:
            parent = ws.message(channel.id, parent.thread_ts) or parent
        author = f"{ws.user_name(parent.user)}: "
        marks = _message_marks(parent, in_thread=False)
        lines = _entry(ws, parent, "", CONTINUATION, author=author, marks=marks, show_ts=show_ts)
        lines += _thread_lines(ws, channel.id, parent, viewer, show_ts)
        return "\n".join(lines) + "\n"
