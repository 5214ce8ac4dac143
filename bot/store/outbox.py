"""Every query of the Slack outbox and of the runs' threads (``outbox``, ``slack_threads``), in one place.

A thread is a projection of a run's audit trail: ``slack_threads.projected_seq`` is how far it got. A row
of the outbox is one message (or one update of a message) to deliver, in id order per channel; a row
stays ``pending`` until Slack accepted it, so a row being sent is still pending.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.core.models import iso, utcnow
from bot.store.store import Store

# A run owes its thread everything when it has audit events past the thread's cursor; terminal runs
# (requester cli:…) never had a thread, unless one was started for them.
_OWES_THREAD = "(t.run_id IS NOT NULL OR r.requester NOT LIKE 'cli:%')"
_PAST_CURSOR = "(SELECT MAX(seq) FROM audit a WHERE a.run_id = r.id) > COALESCE(t.projected_seq, 0)"


# chat.update rows: paced on their own budget (Slack's Tier 3), apart from the channel's posts.
EDITS = ("card_update", "approval_update", "fleet_update")
_ENTRY = (
    "o.id, o.run_id, o.channel, o.kind, o.payload, o.approval_id, COALESCE(t.card_ts, f.card_ts), o.thread_key "
    "FROM outbox o LEFT JOIN slack_threads t ON t.run_id = o.run_id "
    "LEFT JOIN slack_fleets f ON o.run_id IS NULL AND f.fleet_id = o.thread_key AND f.channel = o.channel"
)


@dataclass(frozen=True)
class ThreadBacklog:
    runs_not_projected: int  # runs with audit events past their thread's projection cursor
    pending_messages: int  # outbox rows not yet accepted by Slack

    @property
    def delivered(self) -> bool:
        return self.runs_not_projected == 0 and self.pending_messages == 0


@dataclass(frozen=True)
class PendingEntry:
    id: int
    run_id: str
    channel: str
    kind: str  # card, card_update, reply, approval, approval_update, final, checkpoint, recap, fleet_card, fleet_update
    payload: str
    approval_id: str | None
    card_ts: str | None  # the run's card, or for a fleet row (run_id NULL) the fleet card in this channel
    thread_key: str | None = None  # a fleet row's fleet id, a recap's batch
    merged: tuple[int, ...] = ()  # the rows sent together as this one message, when merged

    @property
    def ids(self) -> tuple[int, ...]:
        return self.merged or (self.id,)


class Outbox:
    """Runs on the store's thread (``store.call``), like every Store method."""

    def __init__(self, store: Store):
        self.store = store

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn

    # -- threads and their cursor ----------------------------------------------------------------

    def cursor(self, conn: sqlite3.Connection, run_id: str, channel: str) -> int:
        """The run's projection cursor; starts the thread (cursor 0) when it has none yet."""
        row = conn.execute("SELECT projected_seq FROM slack_threads WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO slack_threads (run_id, channel) VALUES (?, ?)", (run_id, channel))
            return 0
        return int(row[0])

    def advance(self, conn: sqlite3.Connection, run_id: str, seq: int) -> None:
        conn.execute("UPDATE slack_threads SET projected_seq = ? WHERE run_id = ?", (seq, run_id))

    def has_thread(self, conn: sqlite3.Connection, run_id: str) -> bool:
        return conn.execute("SELECT 1 FROM slack_threads WHERE run_id = ?", (run_id,)).fetchone() is not None

    def thread_channel(self, conn: sqlite3.Connection, run_id: str) -> str | None:
        """The channel the run's thread is in (its host group's), or None when it has no thread yet."""
        row = conn.execute("SELECT channel FROM slack_threads WHERE run_id = ?", (run_id,)).fetchone()
        return str(row[0]) if row else None

    def runs_to_project(self) -> list[str]:
        """Runs with events past their cursor: by the cursor, not by the run's state, so a run that ended
        before its first projection (killed within the coalescing moment) still gets its thread."""
        rows = self.conn.execute(
            f"SELECT r.id FROM runs r LEFT JOIN slack_threads t ON t.run_id = r.id "
            f"WHERE {_OWES_THREAD} AND {_PAST_CURSOR} ORDER BY r.created_at, r.batch_id, r.batch_position"
        ).fetchall()
        return [r[0] for r in rows]

    def backlog(self, run_id: str | None = None) -> ThreadBacklog:
        """Delivered means both: the cursor is at the run's last audit event, and no row is pending (for the
        whole channel, rows of no run count too: checkpoints posted at the top of the channel)."""
        where, params = ("WHERE r.id = ?", [run_id]) if run_id is not None else ("", [])
        (runless,) = (
            (0,)
            if run_id is not None
            else self.conn.execute("SELECT COUNT(*) FROM outbox WHERE run_id IS NULL AND state = 'pending'").fetchone()
        )
        row = self.conn.execute(
            f"SELECT COALESCE(SUM({_PAST_CURSOR} AND {_OWES_THREAD}), 0), "
            "COALESCE(SUM((SELECT COUNT(*) FROM outbox o WHERE o.run_id = r.id AND o.state = 'pending')), 0) "
            f"FROM runs r LEFT JOIN slack_threads t ON t.run_id = r.id {where}",
            params,
        ).fetchone()
        return ThreadBacklog(runs_not_projected=row[0], pending_messages=row[1] + runless)

    def set_card_ts(self, run_id: str, ts: str) -> None:
        with self.store.transaction("slack.card") as conn:
            conn.execute("UPDATE slack_threads SET card_ts = ? WHERE run_id = ?", (ts, run_id))

    # -- rows ------------------------------------------------------------------------------------

    def insert(
        self,
        conn: sqlite3.Connection,
        run_id: str | None,
        channel: str,
        kind: str,
        payload: dict[str, Any] | None,
        approval_id: str | None,
    ) -> None:
        conn.execute(
            "INSERT INTO outbox (run_id, channel, thread_key, kind, payload, created_at, approval_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, channel, run_id, kind, json.dumps(payload) if payload else "{}", iso(utcnow()), approval_id),
        )

    def insert_recap(self, conn: sqlite3.Connection, batch_id: str, channel: str, payload: dict[str, Any]) -> None:
        """A batch's recap: a message of no run (the top of the channel), keyed by its batch."""
        conn.execute(
            "INSERT INTO outbox (run_id, channel, thread_key, kind, payload, created_at) VALUES (NULL, ?, ?, 'recap', ?, ?)",
            (channel, batch_id, json.dumps(payload), iso(utcnow())),
        )

    def recap_queued(self, conn: sqlite3.Connection, batch_id: str) -> bool:
        row = conn.execute("SELECT 1 FROM outbox WHERE kind = 'recap' AND thread_key = ?", (batch_id,)).fetchone()
        return row is not None

    def owes_projection(self, conn: sqlite3.Connection, run_id: str) -> bool:
        """The run has audit events its thread has not projected yet."""
        row = conn.execute(
            f"SELECT 1 FROM runs r LEFT JOIN slack_threads t ON t.run_id = r.id WHERE r.id = ? AND {_PAST_CURSOR}",
            (run_id,),
        ).fetchone()
        return row is not None

    def card_update_pending(self, conn: sqlite3.Connection, run_id: str, *, besides: int | Iterable[int]) -> bool:
        """A pending card update other than the rows ``besides`` (those being sent)."""
        sending = (besides,) if isinstance(besides, int) else tuple(besides)
        row = conn.execute(
            "SELECT 1 FROM outbox WHERE run_id = ? AND kind = 'card_update' AND state = 'pending' "
            f"AND id NOT IN ({','.join('?' * len(sending)) or '-1'})",
            (run_id, *sending),
        ).fetchone()
        return row is not None

    def next_pending(self, kinds: Iterable[str] | None = None) -> PendingEntry | None:
        """The next row to post (of ``kinds``; None: every kind, in one order, as before edits had a lane)."""
        only = tuple(kinds) if kinds is not None else ()
        row = self.conn.execute(
            f"SELECT {_ENTRY} WHERE o.state = 'pending' "
            + (f"AND o.kind IN ({','.join('?' * len(only))}) " if only else "")
            # A thread that waits for a person goes first (in its own order), so approval requests are not
            # stuck behind other runs' progress when a large fleet fills the paced queue.
            # A fleet's card first of all: once per channel, and the one place the whole fleet is seen.
            + "ORDER BY o.kind = 'fleet_card' DESC, "
            "o.run_id IN (SELECT run_id FROM outbox WHERE state = 'pending' AND kind = 'approval') DESC, "
            "o.id LIMIT 1",
            only,
        ).fetchone()
        return PendingEntry(*row) if row is not None else None

    def next_edit(self) -> PendingEntry | None:
        """The next edit (chat.update) whose message is posted or will never be, in id order: an edit sent is
        queued again behind the others, so no message's edits (a fleet's decisions, its card) starve the rest.
        An edit of a message still pending waits for it."""
        row = self.conn.execute(
            f"SELECT {_ENTRY} WHERE o.state = 'pending' AND o.kind IN ({','.join('?' * len(EDITS))}) "
            "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.state = 'pending' AND p.id < o.id AND ("
            "(o.kind = 'card_update' AND p.kind = 'card' AND p.run_id = o.run_id) OR "
            "(o.kind = 'approval_update' AND p.kind = 'approval' AND p.approval_id = o.approval_id) OR "
            "(o.kind = 'fleet_update' AND p.kind = 'fleet_card' AND p.thread_key = o.thread_key "
            "AND p.channel = o.channel))) "
            "ORDER BY o.id LIMIT 1",
            EDITS,
        ).fetchone()
        return PendingEntry(*row) if row is not None else None

    def same_edits(self, entry: PendingEntry) -> tuple[int, ...]:
        """The pending rows that edit the same message as ``entry`` (it included): the edit renders the
        message's latest state, so one chat.update covers them all."""
        params: tuple[str | None, ...]
        if entry.kind == "approval_update":
            where, params = "approval_id = ?", (entry.approval_id,)
        elif entry.kind == "fleet_update":
            where, params = "thread_key = ? AND channel = ?", (entry.thread_key, entry.channel)
        else:  # the card (a card_update, or the card itself: posted with the latest state)
            where, params = "run_id = ?", (entry.run_id,)
        kind = "fleet_update" if entry.kind in ("fleet_card", "fleet_update") else entry.kind
        if entry.kind == "card":
            kind = "card_update"
        rows = self.conn.execute(
            f"SELECT id FROM outbox WHERE state = 'pending' AND kind = ? AND {where} ORDER BY id", (kind, *params)
        ).fetchall()
        return tuple(dict.fromkeys((entry.id, *(r[0] for r in rows))))

    def pending_in_channel(self, channel: str) -> int:
        [(pending,)] = self.conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND channel = ?", (channel,)
        ).fetchall()
        return int(pending)

    def pending_of_run_from(self, run_id: str, first_id: int) -> list[tuple[int, str, str]]:
        """(id, kind, payload) of the run's pending rows from ``first_id`` on, in order."""
        return self.conn.execute(
            "SELECT id, kind, payload FROM outbox WHERE run_id = ? AND state = 'pending' AND id >= ? ORDER BY id",
            (run_id, first_id),
        ).fetchall()

    def approval_ts(self, approval_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT slack_ts FROM outbox WHERE approval_id = ? AND kind = 'approval' AND state = 'sent'", (approval_id,)
        ).fetchone()
        return row[0] if row else None

    def approval_message(self, approval_id: str) -> tuple[str, str | None] | None:
        """(channel, ts) of the message that asks for this approval; ts None while it is not sent yet; None
        when the request was never put in the outbox (a terminal run's)."""
        row = self.conn.execute(
            "SELECT channel, slack_ts FROM outbox WHERE approval_id = ? AND kind = 'approval' "
            "ORDER BY state = 'sent' DESC, id LIMIT 1",
            (approval_id,),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def mark(self, entry_ids: tuple[int, ...], state: str, ts: str | None, error: str | None) -> None:
        """One row, or the rows merged into one message: all in one transaction."""
        with self.store.transaction("slack.sent") as conn:
            for entry_id in entry_ids:
                conn.execute(
                    "UPDATE outbox SET state = ?, slack_ts = ?, error = ?, sent_at = ?, attempts = attempts + 1 "
                    "WHERE id = ?",
                    (state, ts, error, iso(utcnow()), entry_id),
                )
