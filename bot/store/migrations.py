"""The schema, one migration per version: ``PRAGMA user_version`` says how many have run."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from bot.core.models import ACTIVE_RUN_STATES

_ACTIVE_SQL = "('" + "','".join(sorted(s.value for s in ACTIVE_RUN_STATES)) + "')"


def _v1(db: sqlite_utils.Database) -> None:
    db.table("runs").create(
        {
            "id": str,
            "host": str,
            "requester": str,
            "state": str,
            "check_only": int,
            "batch_id": str,
            "batch_position": int,
            "plan": str,
            "created_at": str,
            "updated_at": str,
            "finished_at": str,
            "result": str,
            "cancel_requested_by": str,
        },
        pk="id",
        not_null={"host", "requester", "state", "batch_id", "plan", "created_at", "updated_at"},
    )
    db.execute(f"CREATE UNIQUE INDEX runs_one_active_per_host ON runs(host) WHERE state IN {_ACTIVE_SQL}")
    db.table("runs").create_index(["batch_id", "batch_position"])
    db.table("steps").create(
        {
            "run_id": str,
            "step": str,
            "position": int,
            "state": str,
            "attempts": int,
            "applied": int,
            "started_at": str,
            "finished_at": str,
            "reason": str,
            "facts": str,
        },
        pk=("run_id", "step"),
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"state", "position"},
    )
    db.table("approvals").create(
        {
            "id": str,
            "run_id": str,
            "step": str,
            "gate": str,
            "state": str,
            "requested_at": str,
            "expires_at": str,
            "min_approvals": int,
            "evidence": str,
            "decided_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"run_id", "step", "gate", "state", "requested_at", "expires_at"},
    )
    db.table("approvals").create_index(["run_id", "step"])
    db.execute("CREATE UNIQUE INDEX approvals_one_open_per_step ON approvals(run_id, step) WHERE state = 'open'")
    db.table("decisions").create(
        {"approval_id": str, "user": str, "decision": str, "at": str, "comment": str},
        pk=("approval_id", "user"),
        foreign_keys=[("approval_id", "approvals", "id")],
    )
    db.execute(
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            run_id TEXT, at TEXT NOT NULL, actor TEXT NOT NULL, event TEXT NOT NULL,
            step TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"""
    )
    db.table("audit").create_index(["run_id"])
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
    )
    # Slack messages are stored here first and delivered in order by the Slack front end.
    db.execute(
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT REFERENCES runs(id), channel TEXT NOT NULL, thread_key TEXT,
            kind TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0, not_before TEXT, created_at TEXT NOT NULL,
            sent_at TEXT, slack_ts TEXT, error TEXT)"""
    )
    db.table("outbox").create_index(["state", "channel", "id"])


def _v2(db: sqlite_utils.Database) -> None:
    # The Slack thread of each run: where its card is, and how far the audit trail has been projected.
    db.execute(
        """CREATE TABLE slack_threads (
            run_id TEXT PRIMARY KEY REFERENCES runs(id), channel TEXT NOT NULL, card_ts TEXT,
            projected_seq INTEGER NOT NULL DEFAULT 0)"""
    )
    db.execute("ALTER TABLE outbox ADD COLUMN approval_id TEXT")
    db.table("outbox").create_index(["approval_id"])


def _approval_change(db: sqlite_utils.Database) -> None:
    # What a request asks to allow, and its digest: a grant covers exactly that change.
    db.execute("ALTER TABLE approvals ADD COLUMN change TEXT")
    db.execute("ALTER TABLE approvals ADD COLUMN digest TEXT")


def _decision_person(db: sqlite_utils.Database) -> None:
    # The person behind the deciding account (several accounts, one person): approvals count people.
    # NULL for decisions recorded before, and for a deny whose person could not be told: the account counts.
    db.execute("ALTER TABLE decisions ADD COLUMN person TEXT")


def _slack_requests(db: sqlite_utils.Database) -> None:
    # Each Slack request the bot accepted (bot.store.inbox): its identity, for the replay window, and while
    # its handler has not finished, the request itself (to be handled at the next start).
    db.execute(
        """CREATE TABLE slack_requests (
            key TEXT PRIMARY KEY, kind TEXT NOT NULL, user TEXT, received_at TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'received', body TEXT)"""
    )
    db.table("slack_requests").create_index(["state", "received_at"])


def _audit_checkpoints(db: sqlite_utils.Database) -> None:
    # The bot's copy of each audit checkpoint (bot.store.checkpoints), and when it was queued for Slack (outbox).
    db.execute(
        """CREATE TABLE audit_checkpoints (
            id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL, seq INTEGER NOT NULL, head TEXT NOT NULL,
            count INTEGER NOT NULL, at TEXT NOT NULL, prev TEXT NOT NULL, run_id TEXT, reason TEXT NOT NULL,
            key TEXT, signature TEXT, digest TEXT NOT NULL, queued_at TEXT)"""
    )


def _change_management(db: sqlite_utils.Database) -> None:
    # The change ticket, host group and due time of a run; a scheduled run holds its host like a queued one.
    db.execute("ALTER TABLE runs ADD COLUMN ticket TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN group_name TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN scheduled_for TEXT")
    db.execute("DROP INDEX runs_one_active_per_host")
    db.execute(f"CREATE UNIQUE INDEX runs_one_active_per_host ON runs(host) WHERE state IN {_ACTIVE_SQL}")
    db.execute("CREATE INDEX runs_scheduled ON runs(state, scheduled_for)")


def _recovery(db: sqlite_utils.Database) -> None:
    # Retry and revert reopen an ended run (issue 20): which attempt it is on, whether it is reverting,
    # and the state it had ended in before (a reverted run ends as it had: failed or denied).
    db.execute("ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1")
    db.execute("ALTER TABLE runs ADD COLUMN recovery TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN ended_as TEXT")


def _approval_attempt(db: sqlite_utils.Database) -> None:
    # The run attempt a request was asked in (runs.attempt then): a grant covers what a person decided for
    # that attempt; a retried run's gate asks again. Requests from before: attempt 1, as their runs were.
    db.execute("ALTER TABLE approvals ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1")


def _fleets(db: sqlite_utils.Database) -> None:
    # A request of several hosts is a fleet (issue 20): its runs share a fleet id, and each channel the fleet
    # reports in has one fleet card (bot.store.fleet), updated in place.
    db.execute("ALTER TABLE runs ADD COLUMN fleet_id TEXT")
    db.execute("CREATE INDEX runs_fleet ON runs(fleet_id)")
    db.execute(
        """CREATE TABLE slack_fleets (
            fleet_id TEXT NOT NULL, channel TEXT NOT NULL, card_ts TEXT, PRIMARY KEY (fleet_id, channel))"""
    )
    db.execute("CREATE INDEX outbox_thread_key ON outbox(thread_key, kind, state)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1,
    _v2,
    _approval_change,
    _decision_person,
    _slack_requests,
    _audit_checkpoints,
    _change_management,
    _recovery,
    _approval_attempt,
    _fleets,
]
SCHEMA_VERSION = len(MIGRATIONS)
