"""Audit checkpoints: the chain's head written down where the database's writers cannot change it.

A checkpoint is ``(last seq, head hash, event count, time)`` plus the digest of the checkpoint before it,
signed with the audit key when one is configured. The bot keeps a copy in ``audit_checkpoints`` (only
so it can post and link them); the witnesses are the copies outside: the run's Slack thread, and the
exports an auditor keeps. ``check`` compares such a list with the chain: every signature, every link,
and that the chain still has, at each checkpoint's seq, that hash and that count. An edited, removed or
renumbered event up to the last checkpoint, a cut tail or a replaced key shows as the first checkpoint
that does not hold. Events after the last checkpoint are covered by the chain alone, which is why a
checkpoint is written at the end of every run and at most every few minutes while runs are active.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.core.models import iso, utcnow
from bot.core.signing import AuditSigner, key_id, verify_signature
from bot.store import audit

VERSION = 1
MARKER = "idm-upgrade-checkpoint"  # how a checkpoint is found again in a Slack message
_BODY = ("v", "seq", "head", "count", "at", "prev", "run_id", "reason")


class Checkpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = VERSION
    seq: int = Field(ge=0)  # the last event it covers; 0 for an empty trail
    head: str = Field(pattern=r"^[0-9a-f]{64}$")  # that event's hash
    count: int = Field(ge=0)  # events with seq <= seq
    at: str
    prev: str = Field(pattern=r"^[0-9a-f]{64}$")  # digest of the checkpoint before it; GENESIS for the first
    run_id: str | None = None
    reason: str
    key: str | None = None  # the public key that signed it
    signature: str | None = None

    def body(self) -> bytes:
        """What is signed and what the next checkpoint links to."""
        data = {name: getattr(self, name) for name in _BODY}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        return f"seq {self.seq}, {self.at}, {self.reason}"


class CheckpointFormatError(ValueError):
    """A checkpoint list that cannot be read; the message says where."""


_COLUMNS = ("v", "seq", "head", "count", "at", "prev", "run_id", "reason", "key", "signature")


def _from_row(row: Iterable[Any]) -> Checkpoint:
    return Checkpoint.model_validate(dict(zip(_COLUMNS, row, strict=True)))


def last(conn: sqlite3.Connection) -> Checkpoint | None:
    row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return _from_row(row) if row else None


def behind(conn: sqlite3.Connection) -> bool:
    """Events were appended since the last checkpoint."""
    head = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    before = last(conn)
    return head is not None and (before is None or (before.seq, before.head) != (head[0], head[1]))


def write(
    conn: sqlite3.Connection, signer: AuditSigner | None, reason: str, run_id: str | None = None
) -> tuple[Checkpoint | None, bool]:
    """Write a checkpoint of the chain as it is now (inside the caller's transaction); returns it and whether
    it is new. When nothing was appended since the last checkpoint, that one is returned: it still holds
    (None while the trail is empty)."""
    head = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    before = last(conn)
    if head is None:  # an empty trail: nothing to anchor yet
        return before, False
    seq, head_hash = int(head[0]), str(head[1])
    (count,) = conn.execute("SELECT COUNT(*) FROM audit WHERE seq <= ?", (seq,)).fetchone()
    if before is not None and before.seq == seq and before.head == head_hash:
        return before, False
    unsigned = Checkpoint(
        seq=seq,
        head=head_hash,
        count=count,
        at=iso(utcnow()),
        prev=before.digest if before else audit.GENESIS,
        run_id=run_id,
        reason=reason,
    )
    checkpoint = unsigned
    if signer is not None:
        checkpoint = unsigned.model_copy(update={"key": signer.public_key, "signature": signer.sign(unsigned.body())})
    values = checkpoint.model_dump()
    conn.execute(
        f"INSERT INTO audit_checkpoints ({', '.join(_COLUMNS)}, digest) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
        (*(values[c] for c in _COLUMNS), checkpoint.digest),
    )
    return checkpoint, True


def stored(conn: sqlite3.Connection) -> list[Checkpoint]:
    return [_from_row(r) for r in conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit_checkpoints ORDER BY id")]


def not_queued(conn: sqlite3.Connection) -> list[tuple[int, Checkpoint]]:
    """Checkpoints not yet put in the Slack outbox, oldest first."""
    rows = conn.execute(
        f"SELECT id, {', '.join(_COLUMNS)} FROM audit_checkpoints WHERE queued_at IS NULL ORDER BY id"
    ).fetchall()
    return [(int(r[0]), _from_row(r[1:])) for r in rows]


def mark_queued(conn: sqlite3.Connection, checkpoint_id: int) -> None:
    conn.execute("UPDATE audit_checkpoints SET queued_at = ? WHERE id = ?", (iso(utcnow()), checkpoint_id))


def parse_list(text: str, source: str) -> list[Checkpoint]:
    """An exported list: a JSON array of checkpoints, or one checkpoint per line."""
    stripped = text.strip()
    try:
        if stripped.startswith("["):
            items = json.loads(stripped)
        else:
            items = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise CheckpointFormatError(f"{source}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(items, list):
        raise CheckpointFormatError(f"{source}: expected a JSON array of checkpoints")
    found = []
    for number, item in enumerate(items, 1):
        try:
            found.append(Checkpoint.model_validate(item))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(checkpoint)"
            raise CheckpointFormatError(f"{source}: checkpoint {number}: {where}: {first['msg']}") from None
    return found


def from_message_text(text: str) -> Checkpoint | None:
    """The checkpoint a bot message carries (``MARKER {json}`` on one line), or None."""
    unescaped = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    for line in unescaped.splitlines():
        line = line.strip().strip("`").strip()
        if line.startswith(MARKER + " "):
            try:
                return Checkpoint.model_validate_json(line.removeprefix(MARKER + " "))
            except ValidationError:
                return None
    return None


@dataclass
class CheckpointReport:
    ok: bool
    checked: int  # checkpoints that hold
    total: int
    events: int
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.ok:
            lines = [
                f"audit trail intact: {self.events} events, hash chain verified, "
                f"{self.total} checkpoint(s) hold (signatures, links, head hashes and counts)"
            ]
        else:
            lines = [f"audit trail BROKEN: {self.problem} ({self.checked} of {self.total} checkpoints held before it)"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def check(
    conn: sqlite3.Connection, checkpoints: list[Checkpoint], trusted: dict[str, Ed25519PublicKey] | None
) -> CheckpointReport:
    """The chain against a list of checkpoints (from an export or from Slack); names the first that does not
    hold. ``trusted``: the public keys (text → key) every checkpoint must be signed with one of (several
    after a key was rotated); None for unsigned checkpoints."""
    unique = {c.digest: c for c in checkpoints}  # Slack may hold copies of one checkpoint
    ordered = sorted(unique.values(), key=lambda c: (c.seq, c.at))
    notes: list[str] = []
    total = len(ordered)
    if not ordered:
        return CheckpointReport(False, 0, 0, 0, "no checkpoints to check against (none found in the list)")

    heads = _chain_at(conn, {c.seq for c in ordered})
    chain = heads.pop(-1)
    events = chain.count
    if trusted is None:
        if any(c.signature for c in ordered):
            return CheckpointReport(False, 0, total, events, "the checkpoints are signed but no public key was given")
        notes.append(
            "the checkpoints are not signed (no audit.signing_key_file): they hold against a database writer "
            "only where they were kept out of that writer's reach"
        )
    if ordered[0].prev != audit.GENESIS:
        notes.append(
            f"the earliest checkpoint found ({ordered[0].describe()}) links to one not in the list: "
            "it is checked, the link before it is not"
        )
    for index, checkpoint in enumerate(ordered):
        name = f"checkpoint {index + 1} of {total} ({checkpoint.describe()})"
        problem = _signature_problem(checkpoint, trusted)
        if problem is None and index > 0 and checkpoint.prev != ordered[index - 1].digest:
            problem = (
                "does not link to the checkpoint before it: one between them is missing from the list, "
                "or one of them was not written by the bot"
            )
        if problem is None:
            problem = _chain_problem(checkpoint, heads.get(checkpoint.seq), chain)
        if problem is not None:
            return CheckpointReport(False, index, total, events, f"{name}: {problem}", notes)
    if chain.problem is not None:
        return CheckpointReport(False, total, total, events, f"after the last checkpoint: {chain.problem}", notes)
    covered = ordered[-1].seq
    if events > covered:
        notes.append(f"events {covered + 1}-{events} came after the last checkpoint: the hash chain alone covers them")
    return CheckpointReport(True, total, total, events, None, notes)


def _signature_problem(checkpoint: Checkpoint, trusted: dict[str, Ed25519PublicKey] | None) -> str | None:
    if trusted is None:
        return None
    if not checkpoint.signature:
        return "is not signed, though every checkpoint must be signed with a trusted key"
    key = trusted.get(checkpoint.key or "")
    if key is None:
        other = key_id(checkpoint.key) if checkpoint.key else "none"
        ids = ", ".join(key_id(text) for text in trusted)
        return f"is signed with another key (id {other}, not the trusted {ids}): the key was replaced"
    if not verify_signature(key, checkpoint.body(), checkpoint.signature):
        return "its signature does not hold: the checkpoint was changed after it was signed"
    return None


@dataclass
class _Head:
    hash: str
    count: int  # rows with seq <= this seq
    problem: str | None = None  # the chain's own first break (when this is the walk's end)


def _chain_problem(checkpoint: Checkpoint, head: _Head | None, end: _Head) -> str | None:
    if head is None:
        return (
            f"the chain has no event {checkpoint.seq}: it ends at {end.count} events, so events were cut off "
            "the end or removed"
        )
    if head.problem is not None:
        return head.problem
    if head.hash != checkpoint.head:
        return (
            f"the chain's hash at seq {checkpoint.seq} is not the one signed: an event up to seq {checkpoint.seq} "
            "was edited, removed or inserted and the hashes recomputed"
        )
    if head.count != checkpoint.count:
        return f"{head.count} events up to seq {checkpoint.seq}, the checkpoint counted {checkpoint.count}"
    return None


def _chain_at(conn: sqlite3.Connection, seqs: set[int]) -> dict[int, _Head]:
    """One walk of the chain: the verified head at each wanted seq; key -1 is the end of the walk. A seq past
    the chain's first break carries that break as its problem."""
    found: dict[int, _Head] = {}
    if 0 in seqs:
        (rows,) = conn.execute("SELECT COUNT(*) FROM audit WHERE seq <= 0").fetchone()
        found[0] = _Head(audit.GENESIS, int(rows))
    count, head, problem = 0, audit.GENESIS, None
    for seq, digest, error in audit.walk(conn):
        if error is not None:
            problem = error
            break
        count, head = count + 1, digest
        if seq in seqs:
            found[seq] = _Head(digest, count)
    if problem is not None:
        for seq in seqs:
            if seq not in found and seq != 0:
                found[seq] = _Head("", count, f"the hash chain breaks before it: {problem}")
    found[-1] = _Head(head, count, problem)
    return found


def export(conn: sqlite3.Connection) -> str:
    return "[" + ",\n".join(c.to_json() for c in stored(conn)) + "]\n"
