"""Text from outside the bot, made safe for Slack mrkdwn.

In mrkdwn Slack reads ``<...>`` as a link, a mention or a command (``<!channel>``, ``<@U…>``,
``<https://x|label>``), and ``&`` starts an entity. A directory name, a log line or a host's output put in
a message as it is could ping the channel or plant a disguised link in an approval request, so every
outside string goes through ``escape`` before it joins a message; the bot's own mentions are added
around the escaped pieces, never escaped themselves.
"""

from __future__ import annotations

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_TABLE = str.maketrans(_ENTITIES)
_LONGEST = max(len(e) for e in _ENTITIES.values())


def escape(value: object) -> str:
    """``&``, ``<``, ``>`` as Slack's entities (its "Escaping text" rule); anything else as it is."""
    return str(value).translate(_TABLE)


def safe_cut(text: str, end: int) -> str:
    """``text[:end]``, backed off so it does not end inside an entity (``&am``) or one of our ``<…>``."""
    head = text[:end]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:] and len(head) - amp < _LONGEST:
        head = head[:amp]
    if head.rfind("<") > head.rfind(">"):  # half a mention or link would show as raw text
        head = head[: head.rfind("<")]
    return head
