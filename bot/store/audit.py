"""The audit trail: an append-only, hash-chained table, and its export and verification.

Each event's hash is ``sha256(prev_hash + canonical JSON of the event)``, so editing, deleting or
inserting a row breaks the chain at that row. Triggers refuse UPDATE and DELETE as a guard against
accidents; the chain is what detects deliberate tampering. Export and verify stream rows, so their
memory does not grow with the trail.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from bot.core.caps import cap_strings
from bot.core.models import AUDIT_EVENTS, AuditEvent, iso, utcnow

GENESIS = "0" * 64
COLUMNS = ("seq", "run_id", "at", "actor", "event", "step", "detail", "prev_hash", "hash")


def canonical(event: dict[str, Any]) -> str:
    body = {key: event[key] for key in ("seq", "run_id", "at", "actor", "event", "step", "detail")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, event: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(event)).encode("utf-8")).hexdigest()


def append(
    conn: sqlite3.Connection,
    event: str,
    *,
    actor: str,
    run_id: str | None = None,
    step: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. Call inside the write transaction of the state change it describes.

    Every string in ``detail`` is capped (bot.core.caps): the trail records what happened, not megabytes of
    host output."""
    if event not in AUDIT_EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    if not conn.in_transaction:
        raise RuntimeError("audit events are written inside the transaction of the change they describe")
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    record = {
        "seq": seq,
        "run_id": run_id,
        "at": iso(utcnow()),
        "actor": actor,
        "event": event,
        "step": step,
        "detail": cap_strings(detail or {}),  # host output inside a reason stays a few KiB
    }
    digest = chain_hash(prev_hash, record)
    conn.execute(
        "INSERT INTO audit (seq, run_id, at, actor, event, step, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, run_id, record["at"], actor, event, step, json.dumps(record["detail"]), prev_hash, digest),
    )
    return AuditEvent.model_validate({**record, "prev_hash": prev_hash, "hash": digest})


def _rows(conn: sqlite3.Connection, run_id: str | None, after: int | None = None) -> Iterator[dict[str, Any]]:
    # No seq condition unless asked: an export shows every row, even one inserted with a bogus seq.
    where: list[tuple[str, Any]] = [("run_id = ?", run_id)] if run_id is not None else []
    if after is not None:
        where.append(("seq > ?", after))
    sql = f"SELECT {', '.join(COLUMNS)} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(condition for condition, _ in where)
    for row in conn.execute(sql + " ORDER BY seq", tuple(value for _, value in where)):
        record = dict(zip(COLUMNS, row, strict=True))
        record["detail"] = json.loads(record["detail"])
        yield record


def events(conn: sqlite3.Connection, run_id: str | None = None, after: int | None = None) -> Iterator[AuditEvent]:
    """The events (of one run), in order; only those with seq > ``after``."""
    for record in _rows(conn, run_id, after):
        yield AuditEvent(**record)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    problem: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.checked} events, hash chain verified"
        return f"audit trail BROKEN: {self.problem} ({self.checked} events checked before it)"


def walk(conn: sqlite3.Connection) -> Iterator[tuple[int, str, str | None]]:
    """Walk the whole chain: (seq, hash, None) for each event that holds; at the first that does not,
    (seq, "", what is wrong) and the walk ends."""
    expected_seq, prev_hash = 1, GENESIS
    cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY seq")
    for row in cursor:
        record = dict(zip(COLUMNS, row, strict=True))
        seq = record["seq"]
        where = f"event seq {seq} ({record['event']}, run {record['run_id']})"
        if seq != expected_seq:
            missing = f"events {expected_seq}-{seq - 1} are missing" if seq > expected_seq else "out of order"
            yield seq, "", f"{where}: expected seq {expected_seq}; {missing}"
            return
        if record["prev_hash"] != prev_hash:
            yield seq, "", f"{where}: prev_hash does not match the previous event (deleted or inserted row)"
            return
        try:
            record["detail"] = json.loads(record["detail"])
        except (TypeError, json.JSONDecodeError):
            yield seq, "", f"{where}: detail is not valid JSON (edited row)"
            return
        if chain_hash(prev_hash, record) != record["hash"]:
            yield seq, "", f"{where}: hash does not match its content (edited row)"
            return
        prev_hash, expected_seq = record["hash"], seq + 1
        yield seq, prev_hash, None


def verify(conn: sqlite3.Connection) -> VerifyResult:
    """Walk the whole chain; report the first event whose sequence, link or hash is wrong."""
    checked = 0
    for _seq, _hash, problem in walk(conn):
        if problem is not None:
            return VerifyResult(False, checked, problem)
        checked += 1
    return VerifyResult(True, checked)


def export_json(conn: sqlite3.Connection, out: TextIO, run_id: str | None = None) -> int:
    """Write a JSON array of events, one per line, without holding the trail in memory."""
    count = 0
    out.write("[")
    for record in _rows(conn, run_id):
        out.write(("\n" if count == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


# The run's change ticket on every row, so a spreadsheet filters a change's events in one column. It comes
# from the trail itself (the run.requested event of the run, always its first), not from the runs table.
CSV_COLUMNS = (*COLUMNS, "ticket")


def export_csv(conn: sqlite3.Connection, out: TextIO, run_id: str | None = None) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    tickets: dict[str, str] = {}
    for record in _rows(conn, run_id):
        detail = record["detail"]
        if record["event"] == "run.requested" and isinstance(detail, dict) and detail.get("ticket"):
            tickets[record["run_id"]] = str(detail["ticket"])
        record["detail"] = json.dumps(detail, sort_keys=True, ensure_ascii=False)
        record["ticket"] = tickets.get(record["run_id"], "")
        writer.writerow([record[c] for c in CSV_COLUMNS])
        count += 1
    return count
