"""How much text the bot keeps: every string it stores (a step's reason and facts, a run's result, an
approval's evidence, an audit event's detail) is at most STORED_TEXT_CHARS characters.

Host output reaches these through a step's words ("Last lines of the log: …"); one run with six 1 MB log
lines once made a 42 MB database. A longer string keeps its head (what happened) and its tail (what to
do), with a note of how much was cut between.
"""

from __future__ import annotations

from typing import Any

STORED_TEXT_CHARS = 16 * 1024


def cap_text(text: str, limit: int = STORED_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    head, tail = limit * 3 // 4, limit // 4
    return f"{text[:head]} … ({len(text) - head - tail} characters cut) … {text[-tail:]}"


def cap_strings(value: Any, limit: int = STORED_TEXT_CHARS) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, numbers) with every string in it capped; keys are kept."""
    if isinstance(value, str):
        return cap_text(value, limit)
    if isinstance(value, dict):
        return {key: cap_strings(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [cap_strings(item, limit) for item in value]
    return value
