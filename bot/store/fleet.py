"""Every query of a fleet (a request of several hosts) and of its cards (``runs.fleet_id``, ``slack_fleets``).

A fleet reports in each channel its hosts' runs report in: one fleet card per (fleet, channel), updated in
place. Its outbox rows belong to no run: ``thread_key`` is the fleet id, ``channel`` the card's channel.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable

from bot.core.models import ACTIVE_RUN_STATES, iso, utcnow

ACTIVE_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_RUN_STATES)) + ")"


def assign(conn: sqlite3.Connection, run_ids: list[str]) -> str | None:
    """The runs of one request: several are a fleet (one id for all of them); one run is not."""
    if len(run_ids) < 2:
        return None
    fleet_id = f"fleet-{secrets.token_hex(4)}"
    conn.executemany("UPDATE runs SET fleet_id = ? WHERE id = ?", [(fleet_id, run_id) for run_id in run_ids])
    return fleet_id


def fleet_of(conn: sqlite3.Connection, run_id: str) -> str | None:
    row = conn.execute("SELECT fleet_id FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row[0] if row else None


def runs_of(conn: sqlite3.Connection, fleet_id: str) -> list[str]:
    """The fleet's run ids, in the request's order (its batches, each in its order)."""
    rows = conn.execute("SELECT id FROM runs WHERE fleet_id = ? ORDER BY created_at, rowid", (fleet_id,)).fetchall()
    return [r[0] for r in rows]


def others_active(conn: sqlite3.Connection, run_id: str) -> bool:
    """Another run of ``run_id``'s fleet is still active (scheduled, queued, running, waiting)."""
    row = conn.execute(
        f"""SELECT 1 FROM runs other JOIN runs me ON other.fleet_id = me.fleet_id
            WHERE me.id = ? AND other.id != me.id AND other.state IN {ACTIVE_SQL} LIMIT 1""",
        (run_id,),
    ).fetchone()
    return row is not None


def card_known(conn: sqlite3.Connection, fleet_id: str, channel: str) -> bool:
    """The fleet's card in this channel was queued (its row in slack_fleets exists)."""
    row = conn.execute("SELECT 1 FROM slack_fleets WHERE fleet_id = ? AND channel = ?", (fleet_id, channel)).fetchone()
    return row is not None


def card_ts(conn: sqlite3.Connection, fleet_id: str, channel: str) -> str | None:
    row = conn.execute(
        "SELECT card_ts FROM slack_fleets WHERE fleet_id = ? AND channel = ?", (fleet_id, channel)
    ).fetchone()
    return row[0] if row else None


def set_card_ts(conn: sqlite3.Connection, fleet_id: str, channel: str, ts: str) -> None:
    conn.execute("UPDATE slack_fleets SET card_ts = ? WHERE fleet_id = ? AND channel = ?", (ts, fleet_id, channel))


def queue_card(conn: sqlite3.Connection, fleet_id: str, channel: str, besides: Iterable[int]) -> None:
    """The fleet card's next row: the card itself the first time, then an update unless one is pending (a
    pending update renders the card when it is sent, so it shows this change too; one being sent does not)."""
    if not card_known(conn, fleet_id, channel):
        conn.execute("INSERT INTO slack_fleets (fleet_id, channel) VALUES (?, ?)", (fleet_id, channel))
        _insert(conn, fleet_id, channel, "fleet_card")
        return
    sending = tuple(besides)
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE thread_key = ? AND channel = ? AND kind = 'fleet_update' AND state = 'pending' "
        f"AND id NOT IN ({','.join('?' * len(sending)) or '-1'})",
        (fleet_id, channel, *sending),
    ).fetchone()
    if row is None:
        _insert(conn, fleet_id, channel, "fleet_update")


def _insert(conn: sqlite3.Connection, fleet_id: str, channel: str, kind: str) -> None:
    conn.execute(
        "INSERT INTO outbox (run_id, channel, thread_key, kind, payload, created_at) VALUES (NULL, ?, ?, ?, ?, ?)",
        (channel, fleet_id, kind, json.dumps({}), iso(utcnow())),
    )


def card_queued(conn: sqlite3.Connection, run_id: str) -> bool:
    """A fleet run's own card was queued (in a fleet a run's card is posted when it starts, not when queued)."""
    row = conn.execute("SELECT 1 FROM outbox WHERE run_id = ? AND kind = 'card'", (run_id,)).fetchone()
    return row is not None


def recap_queued(conn: sqlite3.Connection, key: str) -> bool:
    row = conn.execute("SELECT 1 FROM outbox WHERE kind = 'recap' AND thread_key = ?", (key,)).fetchone()
    return row is not None
