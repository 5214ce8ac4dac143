"""Reading the checkpoints back from Slack, the witness the bot posted them to (`audit verify --checkpoints slack`).

Only the bot's own messages count (a member could paste a checkpoint-shaped line), and a message the bot
edited after posting is refused: the point of this copy is that it is as it was posted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.store.checkpoints import MARKER, Checkpoint, from_message_text

PAGE = 200


class WitnessError(Exception):
    """Slack could not be read; the message says what to do."""


def read_checkpoints(token: str, channel: str, api_url: str | None = None) -> tuple[list[Checkpoint], list[str]]:
    """Every checkpoint the bot posted in the channel (top level and threads), and notes on what was refused."""
    base = api_url or os.environ.get("SLACK_API_URL") or "https://slack.com/api/"
    client = WebClient(token=token, base_url=base if base.endswith("/") else base + "/")
    try:
        me = client.auth_test()
        ours = {me.get("user_id"), me.get("bot_id")} - {None}
        found: list[Checkpoint] = []
        notes: list[str] = []
        for message in _channel_messages(client, channel):
            if MARKER not in (message.get("text") or ""):
                continue
            author = message.get("bot_id") or message.get("user")
            if author not in ours and message.get("user") not in ours:
                notes.append(f"message {message.get('ts')} carries a checkpoint but was not posted by the bot: ignored")
                continue
            if message.get("edited"):
                notes.append(f"message {message.get('ts')} was edited after it was posted: its checkpoint is ignored")
                continue
            checkpoint = from_message_text(message.get("text") or "")
            if checkpoint is None:
                notes.append(f"message {message.get('ts')} has a checkpoint line that does not parse: ignored")
                continue
            found.append(checkpoint)
        return found, notes
    except SlackApiError as exc:
        error = exc.response.get("error", "") if exc.response is not None else ""
        hint = " (the app needs channels:history, or groups:history for a private channel)" if "scope" in error else ""
        raise WitnessError(f"Slack refused to show channel {channel}: {error}{hint}") from None
    except OSError as exc:
        raise WitnessError(f"cannot reach Slack at {base}: {exc}") from None


def _channel_messages(client: WebClient, channel: str) -> Iterator[dict[str, Any]]:
    for message in _pages(client.conversations_history, channel=channel):
        yield message
        if message.get("reply_count"):
            for reply in _pages(client.conversations_replies, channel=channel, ts=message["ts"]):
                if reply.get("ts") != message["ts"]:
                    yield reply


def _pages(method: Any, **params: Any) -> Iterator[dict[str, Any]]:
    """Slack's cursor pagination; where no cursor is given but there is more, page by time (``latest``)."""
    cursor, latest = None, None
    while True:
        extra: dict[str, str] = {"cursor": cursor} if cursor else ({"latest": latest} if latest else {})
        response = method(limit=PAGE, **params, **extra)
        messages = response.get("messages") or []
        yield from messages
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if cursor:
            continue
        if not response.get("has_more") or not messages:
            return
        oldest = min(m["ts"] for m in messages)
        if oldest == latest:
            return
        latest = oldest
