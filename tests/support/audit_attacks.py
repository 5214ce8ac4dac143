"""What an attacker with write access to the database does to the audit trail (the attack session on 38f7b97):
drop the guard triggers, rewrite rows, recompute every hash after them, put the triggers back."""

from __future__ import annotations

import json
import sqlite3

from bot.store import audit

TRIGGERS = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
)


def rewrite(conn: sqlite3.Connection, *statements: tuple[str, tuple]) -> None:
    """Run the statements with the triggers dropped, renumber seq from 1, rehash the whole chain, restore."""
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for sql, params in statements:
        conn.execute(sql, params)
    rows = conn.execute("SELECT seq, run_id, at, actor, event, step, detail FROM audit ORDER BY seq").fetchall()
    conn.execute("UPDATE audit SET seq = -seq")  # out of the way of the renumbering (seq is the key)
    prev = audit.GENESIS
    for number, (old, run_id, at, actor, event, step, detail) in enumerate(rows, 1):
        record = {
            "seq": number,
            "run_id": run_id,
            "at": at,
            "actor": actor,
            "event": event,
            "step": step,
            "detail": json.loads(detail),
        }
        digest = audit.chain_hash(prev, record)
        conn.execute("UPDATE audit SET seq = ?, prev_hash = ?, hash = ? WHERE seq = ?", (number, prev, digest, -old))
        prev = digest
    for trigger in TRIGGERS:
        conn.execute(trigger)
