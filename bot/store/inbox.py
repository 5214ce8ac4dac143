"""The Slack requests the bot accepted (``slack_requests``): each one's identity, and the work it still owes.

Slack's signature proves only that a request came from Slack within 5 minutes; a captured request can be sent
again inside that window, and Slack itself resends what it thinks failed (``X-Slack-Retry-Num``). So each
request is admitted once: check-and-insert in one ``BEGIN IMMEDIATE`` transaction, so two copies sent at the
same moment cannot both pass. A second copy is refused, and the refusal is audited (``request.refused``).

A row keeps the request's body while its handler runs (``received``) and drops it when the handler finished
(``done``). Rows still ``received`` at start-up were acknowledged to Slack (which will not resend them) but not
finished before a shutdown: the next start handles them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.core.models import iso, utcnow
from bot.store import audit
from bot.store.store import Store

# How long an identity is remembered. The guard accepts a timestamp up to 300 s off our clock either way, so a
# copy of a request received at r can still pass the signature check until r + 600 s.
REMEMBER_SECONDS = 600


@dataclass(frozen=True)
class Unfinished:
    key: str
    kind: str
    body: dict[str, Any]


class Inbox:
    """Runs on the store's thread (``store.call``), like every Store method."""

    def __init__(self, store: Store):
        self.store = store

    def admit(self, key: str, kind: str, user: str | None, body: dict[str, Any], *, retry: str | None = None) -> bool:
        """True: the first copy, now remembered with its body. False: seen before, refused and audited."""
        now = utcnow()
        with self.store.transaction("request.received") as conn:
            conn.execute(
                "DELETE FROM slack_requests WHERE state = 'done' AND received_at < ?",
                (iso(now - timedelta(seconds=REMEMBER_SECONDS)),),
            )
            first = conn.execute("SELECT received_at FROM slack_requests WHERE key = ?", (key,)).fetchone()
            if first is None:
                conn.execute(
                    "INSERT INTO slack_requests (key, kind, user, received_at, body) VALUES (?, ?, ?, ?, ?)",
                    (key, kind, user, iso(now), json.dumps(body)),
                )
                return True
            audit.append(
                conn,
                "request.refused",
                actor=user or "unknown",
                detail={
                    # a copy that says it is Slack's retry is still only a copy (the header is not signed)
                    "reason": "retry" if retry else "replay",
                    "kind": kind,
                    "user": user,
                    "first_received_at": first[0],
                    **({"retry_num": retry} if retry else {}),
                },
            )
            return False

    def done(self, key: str) -> None:
        with self.store.transaction("request.done") as conn:
            conn.execute("UPDATE slack_requests SET state = 'done', body = NULL WHERE key = ?", (key,))

    def unfinished(self) -> list[Unfinished]:
        rows = self.store.conn.execute(
            "SELECT key, kind, body FROM slack_requests WHERE state = 'received' ORDER BY received_at"
        ).fetchall()
        return [Unfinished(key, kind, json.loads(body or "{}")) for key, kind, body in rows]
