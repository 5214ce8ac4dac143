"""Durable state in SQLite (WAL): runs, steps, approvals, decisions, the audit trail and the Slack outbox.

Every state change is one ``BEGIN IMMEDIATE`` transaction that also appends the audit events it
describes, so state and audit can never disagree. The rule "at most one active run per host" is a
unique partial index: it holds across threads and processes, not only in this one's memory.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlite_utils

from bot.core.caps import cap_strings, cap_text
from bot.core.gates import change_digest
from bot.core.models import (
    ACTIVE_RUN_STATES,
    Approval,
    ApprovalState,
    Decision,
    Run,
    RunState,
    StepRecord,
    StepState,
    iso,
    utcnow,
)
from bot.core.signing import AuditSigner
from bot.store import audit, checkpoints, fleet
from bot.store.files import create_private, database_files, tighten
from bot.store.migrations import MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")
_ACTIVE_SQL = "('" + "','".join(sorted(s.value for s in ACTIVE_RUN_STATES)) + "')"


class StoreError(Exception):
    pass


class HostBusy(StoreError):
    def __init__(self, host: str, run_id: str | None):
        self.host, self.run_id = host, run_id
        super().__init__(
            f"{host} already has an active run{f' ({run_id})' if run_id else ''}; "
            f"wait for it to finish or cancel it first"
        )


class UnknownRecord(StoreError):
    pass


class NotRetriable(StoreError):
    """A run that cannot be tried again (Store.retry_run): it did not fail, or it is being reverted."""

    def __init__(self, run: Run, why: str | None = None):
        self.run = run
        recovery = {"revert": " and being reverted", "reverted": " and was reverted to its snapshot"}
        state = f"it is {run.state.label}" + recovery.get(run.recovery or "", "")
        super().__init__(f"run {run.id} cannot be retried: {why or state}")


# Forward-only migrations; PRAGMA user_version records how many have been applied.
def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class DecisionOutcome(StrEnum):
    granted = "granted"  # this approval completed the gate
    recorded = "recorded"  # counted; more distinct approvers are needed
    denied = "denied"
    duplicate = "duplicate"  # this person already approved
    closed = "closed"  # the request was already decided, expired or cancelled: nothing changes


@dataclass(frozen=True)
class BatchRequest:
    """One batch of a request: its hosts in order, the host group it is, and when it is due (None: now)."""

    hosts: list[str]
    group: str | None = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True)
class DecisionResult:
    outcome: DecisionOutcome
    approval: Approval


class TransitionHooks(Protocol):
    """Called around each named transaction's commit (the crash tests' kill points; injected by the runtime)."""

    def before_commit(self, transition: str) -> None: ...

    def after_commit(self, transition: str) -> None: ...


class Store:
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000, hooks: TransitionHooks | None = None):
        self.path = str(path)
        private = self.path != ":memory:"
        if private:  # the file exists 0600 before SQLite opens it: its -wal and -shm then are 0600 too
            create_private(Path(self.path))
            tighten(database_files(self.path))
        # Autocommit at the driver level: transactions are opened explicitly with BEGIN IMMEDIATE,
        # so a writer takes the lock up front and never fails halfway on a lock upgrade.
        self.conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self.conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.db = sqlite_utils.Database(self.conn, execute_plugins=False)
        self.hooks = hooks
        # SQLite calls from async code run on this one thread: the event loop never waits on the disk or a lock.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._migrate()
        if private:  # -wal and -shm exist now; one an older version left open keeps its mode
            tighten(database_files(self.path))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` (a Store method or a function using this store) on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.conn.close()

    # -- transactions and schema ---------------------------------------------------------------

    @contextmanager
    def transaction(self, transition: str | None = None) -> Iterator[sqlite3.Connection]:
        """One atomic write. ``transition`` names it for the injected crash points."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        if transition and self.hooks is not None:
            self.hooks.before_commit(transition)
        self.conn.execute("COMMIT")
        if transition and self.hooks is not None:
            self.hooks.after_commit(transition)

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self.transaction():
            current = self.schema_version
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema version {current} is newer than this program "
                    f"understands ({SCHEMA_VERSION}); upgrade idm-upgrade"
                )
            for version in range(current, SCHEMA_VERSION):
                MIGRATIONS[version](self.db)
                self.conn.execute(f"PRAGMA user_version = {version + 1}")

    # -- reading ---------------------------------------------------------------------------------

    def _run(self, row: dict[str, Any]) -> Run:
        row = dict(row)
        row["group"] = row.pop("group_name", None)
        return Run(
            **{
                **row,
                "scheduled_for": _dt(row.get("scheduled_for")),
                "check_only": bool(row["check_only"]),
                "plan": json.loads(row["plan"]),
                "created_at": _dt(row["created_at"]),
                "updated_at": _dt(row["updated_at"]),
                "finished_at": _dt(row["finished_at"]),
            }
        )

    def get_run(self, run_id: str) -> Run:
        rows = list(self.db.table("runs").rows_where("id = ?", [run_id]))
        if not rows:
            raise UnknownRecord(f"no run with id {run_id!r}")
        return self._run(rows[0])

    def find_run(self, run_id: str) -> Run | None:
        try:
            return self.get_run(run_id)
        except UnknownRecord:
            return None

    def runs(self, *, host: str | None = None, active: bool | None = None, limit: int | None = None) -> list[Run]:
        where, params = [], []
        if host is not None:
            where.append("host = ?")
            params.append(host)
        if active is not None:
            where.append(f"state {'IN' if active else 'NOT IN'} {_ACTIVE_SQL}")
        rows = self.db.table("runs").rows_where(
            " AND ".join(where) or None, params, order_by="created_at DESC, batch_position DESC", limit=limit
        )
        return [self._run(r) for r in rows]

    def batch(self, batch_id: str) -> list[Run]:
        rows = self.db.table("runs").rows_where("batch_id = ?", [batch_id], order_by="batch_position")
        return [self._run(r) for r in rows]

    def active_host_run(self, host: str) -> str | None:
        row = self.conn.execute(f"SELECT id FROM runs WHERE host = ? AND state IN {_ACTIVE_SQL}", (host,)).fetchone()
        return row[0] if row else None

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self.db.table("steps").rows_where("run_id = ?", [run_id], order_by="position")
        return [self._step(r) for r in rows]

    def step(self, run_id: str, step: str) -> StepRecord:
        rows = list(self.db.table("steps").rows_where("run_id = ? AND step = ?", [run_id, step]))
        if not rows:
            raise UnknownRecord(f"run {run_id} has no step {step!r}")
        return self._step(rows[0])

    def _step(self, row: dict[str, Any]) -> StepRecord:
        return StepRecord(
            **{
                **row,
                "facts": json.loads(row["facts"] or "{}"),
                "started_at": _dt(row["started_at"]),
                "finished_at": _dt(row["finished_at"]),
            }
        )

    def get_approval(self, approval_id: str) -> Approval:
        rows = list(self.db.table("approvals").rows_where("id = ?", [approval_id]))
        if not rows:
            raise UnknownRecord(f"no approval request with id {approval_id!r}")
        return self._approval(rows[0])

    def find_approval(self, approval_id: str) -> Approval | None:
        try:
            return self.get_approval(approval_id)
        except UnknownRecord:
            return None

    def approvals(self, run_id: str, step: str | None = None) -> list[Approval]:
        where, params = "run_id = ?", [run_id]
        if step is not None:
            where, params = where + " AND step = ?", [*params, step]
        rows = self.db.table("approvals").rows_where(where, params, order_by="requested_at")
        return [self._approval(r) for r in rows]

    def _approval(self, row: dict[str, Any]) -> Approval:
        decisions = [
            Decision(**{**d, "at": _dt(d["at"])})
            for d in self.db.table("decisions").rows_where("approval_id = ?", [row["id"]], order_by="at")
        ]
        return Approval(
            **{
                **row,
                "evidence": json.loads(row["evidence"] or "{}"),
                "change": json.loads(row.get("change") or "{}"),
                "requested_at": _dt(row["requested_at"]),
                "expires_at": _dt(row["expires_at"]),
                "decided_at": _dt(row["decided_at"]),
                "decisions": decisions,
            }
        )

    # -- runs ------------------------------------------------------------------------------------

    def create_runs(
        self,
        hosts: Iterable[str],
        *,
        requester: str,
        plan: list[str],
        check_only: bool = False,
        ticket: str | None = None,
        group: str | None = None,
        scheduled_for: datetime | None = None,
    ) -> list[Run]:
        """Queue one run per host as one batch, atomically: all hosts are free, or nothing is created.

        With ``scheduled_for`` the runs are ``scheduled`` (the engine starts them then), else ``queued``."""
        batch = BatchRequest(list(hosts), group, scheduled_for)
        [runs] = self.create_batches([batch], requester=requester, plan=plan, check_only=check_only, ticket=ticket)
        return runs

    def create_batches(
        self,
        batches: list[BatchRequest],
        *,
        requester: str,
        plan: list[str],
        check_only: bool = False,
        ticket: str | None = None,
    ) -> list[list[Run]]:
        """Several batches (one per host group) in one transaction: every host is free, or nothing is created."""
        hosts = [host for batch in batches for host in batch.hosts]
        if len(set(hosts)) != len(hosts):
            raise StoreError("a host is named more than once in the same request")
        now = iso(utcnow())
        created: list[list[str]] = []
        try:
            with self.transaction("run.requested") as conn:
                for batch in batches:
                    created.append(self._insert_batch(conn, batch, now, requester, plan, check_only, ticket))
                fleet.assign(conn, [run_id for ids in created for run_id in ids])  # several hosts: a fleet
        except sqlite3.IntegrityError as exc:
            if "runs.host" not in str(exc):
                raise
            busy = next((h for h in hosts if self.active_host_run(h)), None)
            raise HostBusy(busy or ", ".join(hosts), self.active_host_run(busy) if busy else None) from None
        return [[self.get_run(r) for r in ids] for ids in created]

    def _insert_batch(
        self,
        conn: sqlite3.Connection,
        batch: BatchRequest,
        now: str,
        requester: str,
        plan: list[str],
        check_only: bool,
        ticket: str | None,
    ) -> list[str]:
        hosts, group, scheduled_for = batch.hosts, batch.group, batch.scheduled_for
        batch_id = new_id("batch")
        created = []
        for position, host in enumerate(hosts):
            run_id = new_id("run")
            self.db.table("runs").insert(
                {
                    "id": run_id,
                    "host": host,
                    "requester": requester,
                    "state": (RunState.scheduled if scheduled_for else RunState.queued).value,
                    "check_only": int(check_only),
                    "ticket": ticket,
                    "group_name": group,
                    "scheduled_for": iso(scheduled_for) if scheduled_for else None,
                    "batch_id": batch_id,
                    "batch_position": position,
                    "plan": json.dumps(plan),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for index, step in enumerate(plan):
                self.db.table("steps").insert(
                    {
                        "run_id": run_id,
                        "step": step,
                        "position": index,
                        "state": StepState.pending.value,
                        "attempts": 0,
                        "applied": 0,
                        "facts": "{}",
                    }
                )
            audit.append(
                conn,
                "run.requested",
                actor=requester,
                run_id=run_id,
                detail={
                    "host": host,
                    "plan": plan,
                    "check_only": check_only,
                    "batch_id": batch_id,
                    "batch_position": position,
                    "batch_size": len(hosts),
                    **({"ticket": ticket} if ticket else {}),
                    **({"group": group} if group else {}),
                    **({"scheduled_for": iso(scheduled_for)} if scheduled_for else {}),
                },
            )
            created.append(run_id)
        return created

    def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        actor: str = "bot",
        event: str | None = None,
        result: str | None = None,
        detail: dict[str, Any] | None = None,
        expect: frozenset[RunState] | None = None,
    ) -> Run | None:
        """Move a run to ``state``; a finished state also closes its open approvals.

        With ``expect``, nothing changes (and None is returned) unless the run is in one of those states.
        """
        now = iso(utcnow())
        changes: dict[str, Any] = {"state": state.value, "updated_at": now}
        if result is not None:
            result = changes["result"] = cap_text(result)
        if not state.active:
            changes["finished_at"] = now
        with self.transaction(event or f"run.{state.value}") as conn:
            if expect is not None and self.get_run(run_id).state not in expect:
                return None
            self.db.table("runs").update(run_id, changes)
            if not state.active:
                conn.execute(
                    "UPDATE approvals SET state = ?, decided_at = ? WHERE run_id = ? AND state = 'open'",
                    (ApprovalState.cancelled.value, now, run_id),
                )
            if event:
                audit.append(
                    conn,
                    event,
                    actor=actor,
                    run_id=run_id,
                    detail={**({"result": result} if result else {}), **(detail or {})},
                )
        return self.get_run(run_id)

    def reschedule_run(self, run_id: str, scheduled_for: datetime, *, why: str) -> Run | None:
        """Move a scheduled run's start to ``scheduled_for`` (audit run.rescheduled: from, to, why); None
        (nothing changed) unless the run is still scheduled."""
        with self.transaction("run.rescheduled") as conn:
            run = self.get_run(run_id)
            if run.state is not RunState.scheduled:
                return None
            self.db.table("runs").update(run_id, {"scheduled_for": iso(scheduled_for), "updated_at": iso(utcnow())})
            detail = {
                "from": iso(run.scheduled_for) if run.scheduled_for else None,
                "to": iso(scheduled_for),
                "why": why,
            }
            audit.append(conn, "run.rescheduled", actor="bot", run_id=run_id, detail=detail)
        return self.get_run(run_id)

    def retry_run(self, run_id: str, actor: str, why: str) -> Run:
        """A failed run tried again from its failed step, in one transaction (audit run.retried): that step
        back to pending (its reason and facts cleared, its attempts and applies kept; what it had found is
        in the event's detail), the later steps as they are (pending), the run ``queued`` on its next attempt.

        Raises UnknownRecord, NotRetriable (not failed, reverting, no failed step) or HostBusy (another run
        is active on the host: the unique index refuses it); then nothing is written."""
        try:
            with self.transaction("run.retried") as conn:
                run = self.get_run(run_id)
                if run.state is not RunState.failed or run.recovery is not None or run.check_only:
                    raise NotRetriable(run)
                failed = next((s for s in self.steps(run_id) if s.state is StepState.failed), None)
                if failed is None:
                    raise NotRetriable(run, "it has no failed step to try again")
                attempt = run.attempt + 1
                step_changes = {"state": StepState.pending.value, "reason": None, "facts": "{}"}
                self.db.table("steps").update(
                    (run_id, failed.step), {**step_changes, "started_at": None, "finished_at": None}
                )
                self.db.table("runs").update(
                    run_id,
                    {
                        "state": RunState.queued.value,
                        "attempt": attempt,
                        "result": None,
                        "finished_at": None,
                        "cancel_requested_by": None,
                        "scheduled_for": None,  # tried again now: its start is not the schedule's any more
                        "updated_at": iso(utcnow()),
                    },
                )
                detail = {
                    "why": cap_text(why),
                    "attempt": attempt,
                    "from_step": failed.step,
                    "previous_result": run.result,
                    # what the failed attempt found, readable in the trail once the step starts anew
                    "failed_step": {"reason": failed.reason, "attempts": failed.attempts, "facts": failed.facts},
                }
                audit.append(conn, "run.retried", actor=actor, run_id=run_id, detail=cap_strings(detail))
        except sqlite3.IntegrityError as exc:
            if "runs.host" not in str(exc):
                raise
            raise HostBusy(run.host, self.active_host_run(run.host)) from None
        return self.get_run(run_id)

    def begin_revert(self, run_id: str, actor: str, *, why: str | None, snapshot: dict[str, Any]) -> Run | None:
        """An ended run goes back to running to be reverted to its snapshot (recovery "revert", ended_as its
        end state), with revert.requested, in one transaction; None (nothing changed) unless it is still
        ended and not reverting. Another active run on the host: HostBusy (the one-active-run index)."""
        try:
            with self.transaction("revert.requested") as conn:
                run = self.get_run(run_id)
                if run.state.active or run.recovery is not None:
                    return None
                self.db.table("runs").update(
                    run_id,
                    {
                        "state": RunState.running.value,
                        "recovery": "revert",
                        "ended_as": run.state.value,
                        "finished_at": None,
                        "updated_at": iso(utcnow()),
                    },
                )
                detail = {"ended_as": run.state.value, "snapshot": snapshot, **({"why": cap_text(why)} if why else {})}
                audit.append(conn, "revert.requested", actor=actor, run_id=run_id, detail=detail)
        except sqlite3.IntegrityError as exc:
            if "runs.host" not in str(exc):
                raise
            host = self.get_run(run_id).host
            raise HostBusy(host, self.active_host_run(host)) from None
        return self.get_run(run_id)

    def revert_event(self, run_id: str, event: str, detail: dict[str, Any]) -> None:
        """One step of a revert (revert.started, .reverted, .powered_on, .verified), before what it describes."""
        with self.transaction(event) as conn:
            audit.append(conn, event, actor="bot", run_id=run_id, detail=cap_strings(detail))

    def end_revert(
        self, run_id: str, *, result: str, reverted: bool, failed: str | None = None, actor: str = "bot"
    ) -> Run | None:
        """The revert is over: the run ends again as it had (ended_as), recovery cleared, with ``result``;
        ``failed``: the cause, audited as revert.failed first, in the same transaction."""
        now = iso(utcnow())
        with self.transaction("revert.failed" if failed else "revert.ended") as conn:
            run = self.get_run(run_id)
            if run.recovery != "revert" or run.ended_as is None:
                return None
            state = RunState(run.ended_as)
            if failed:
                audit.append(conn, "revert.failed", actor="bot", run_id=run_id, detail={"reason": cap_text(failed)})
            self.db.table("runs").update(
                run_id,
                {
                    "state": state.value,
                    # "reverted" stays on the run: the host is as before it, its steps describe what is gone,
                    # so it offers neither a retry nor another revert (bot.engine.recovery)
                    "recovery": "reverted" if reverted else None,
                    "ended_as": None,
                    "result": cap_text(result),
                    "finished_at": now,
                    "updated_at": now,
                },
            )
            conn.execute(
                "UPDATE approvals SET state = ?, decided_at = ? WHERE run_id = ? AND state = 'open'",
                (ApprovalState.cancelled.value, now, run_id),
            )
            audit.append(
                conn,
                f"run.{state.value}",
                actor=actor,
                run_id=run_id,
                detail={"result": cap_text(result), "reverted": reverted},
            )
        return self.get_run(run_id)

    def request_cancel(self, run_id: str, actor: str) -> Run:
        """Record who asked to cancel; the engine stops the run at its next safe point."""
        with self.transaction("run.cancel_requested"):
            self.db.table("runs").update(run_id, {"cancel_requested_by": actor, "updated_at": iso(utcnow())})
        return self.get_run(run_id)

    # -- steps -----------------------------------------------------------------------------------

    def update_step(
        self,
        run_id: str,
        step: str,
        state: StepState,
        *,
        event: str | None = None,
        reason: str | None = None,
        facts: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        transition: str | None = None,
        actor: str = "bot",
    ) -> StepRecord:
        """Write a step's new state (and its facts so far) before the action it announces."""
        current = self.step(run_id, step)
        now = iso(utcnow())
        changes: dict[str, Any] = {"state": state.value}
        if state is StepState.checking:
            changes["attempts"] = current.attempts + 1
            detail = {**(detail or {}), "attempt": current.attempts + 1}
            changes["started_at"] = (current.started_at and iso(current.started_at)) or now
        if state is StepState.applying:
            changes["applied"] = current.applied + 1
        if state.finished:
            changes["finished_at"] = now
        if reason is not None:
            reason = changes["reason"] = cap_text(reason)
        if facts:
            changes["facts"] = json.dumps(cap_strings({**current.facts, **facts}), default=str)
        with self.transaction(transition or event or f"step.{state.value}") as conn:
            self.db.table("steps").update((run_id, step), changes)
            if state.finished:  # a finished step has nothing left to approve
                conn.execute(
                    "UPDATE approvals SET state = ?, decided_at = ? WHERE run_id = ? AND step = ? AND state = 'open'",
                    (ApprovalState.cancelled.value, now, run_id, step),
                )
            if event:
                audit.append(
                    conn,
                    event,
                    actor=actor,
                    run_id=run_id,
                    step=step,
                    detail={**({"reason": reason} if reason else {}), **(detail or {})},
                )
        return self.step(run_id, step)

    def skip_steps(self, run_id: str, steps: list[str], reason: str) -> None:
        """Steps skipped for one reason (an earlier step said the rest has nothing to do), in one transaction:
        one moment of the run, so its thread tells them in one reply."""
        now = iso(utcnow())
        reason = cap_text(reason)
        with self.transaction("step.skipped") as conn:
            for step in steps:
                changes = {"state": StepState.skipped.value, "finished_at": now, "reason": reason}
                self.db.table("steps").update((run_id, step), changes)
                audit.append(conn, "step.skipped", actor="bot", run_id=run_id, step=step, detail={"reason": reason})

    # -- approvals -------------------------------------------------------------------------------

    def request_approval(
        self,
        run_id: str,
        step: str,
        *,
        gate: str,
        timeout: timedelta,
        min_approvals: int,
        evidence: dict[str, Any],
        change: dict[str, Any],
    ) -> Approval:
        """Persist the request, bound to ``change`` by its digest, and put the step and the run in
        waiting_approval, in one transaction."""
        now = utcnow()
        approval_id = new_id("apr")
        digest = change_digest(change)  # of the change as the step made it: the engine compares exactly that
        evidence = cap_strings(evidence)
        with self.transaction("approval.requested") as conn:
            (attempt,) = conn.execute("SELECT attempt FROM runs WHERE id = ?", (run_id,)).fetchone()
            self.db.table("approvals").insert(
                {
                    "id": approval_id,
                    "attempt": attempt,
                    "run_id": run_id,
                    "step": step,
                    "gate": gate,
                    "state": ApprovalState.open.value,
                    "requested_at": iso(now),
                    "expires_at": iso(now + timeout),
                    "min_approvals": min_approvals,
                    "evidence": json.dumps(evidence, default=str),
                    "change": json.dumps(change, default=str),
                    "digest": digest,
                }
            )
            # a revert's request belongs to no step of the plan: no row to update then
            conn.execute(
                "UPDATE steps SET state = ? WHERE run_id = ? AND step = ?",
                (StepState.waiting_approval.value, run_id, step),
            )
            self.db.table("runs").update(run_id, {"state": RunState.waiting_approval.value, "updated_at": iso(now)})
            audit.append(
                conn,
                "approval.requested",
                actor="bot",
                run_id=run_id,
                step=step,
                detail={
                    "approval_id": approval_id,
                    "gate": gate,
                    "min_approvals": min_approvals,
                    "expires_at": iso(now + timeout),
                    "evidence": evidence,
                    "change": change,
                    "digest": digest,
                },
            )
        return self.get_approval(approval_id)

    def record_decision(
        self, approval_id: str, user: str, decision: str, *, comment: str | None = None, person: str | None = None
    ) -> DecisionResult:
        """Count one authorized person's decision. The caller has already checked the policy.

        ``person`` is who is behind the account ``user`` (None: the account itself). Approvals are counted per
        person: a second approval by another account of the same person is a duplicate.
        """
        if decision not in ("approve", "deny"):
            raise ValueError(f"decision must be 'approve' or 'deny', not {decision!r}")
        now = iso(utcnow())
        with self.transaction(f"approval.{decision}") as conn:
            approval = self.get_approval(approval_id)
            if approval.state is not ApprovalState.open:
                outcome = DecisionOutcome.closed
            elif decision == "approve" and (
                user in approval.approvers or (person or user) in approval.approving_people
            ):
                outcome = DecisionOutcome.duplicate
            else:
                self.db.table("decisions").insert(
                    {
                        "approval_id": approval_id,
                        "user": user,
                        "decision": decision,
                        "at": now,
                        "comment": comment,
                        "person": person,
                    },
                    replace=True,
                )
                others = {d.who for d in approval.decisions if d.decision == "approve" and d.user != user}
                count = len(others | ({person or user} if decision == "approve" else set()))
                if decision == "deny":
                    outcome, new_state = DecisionOutcome.denied, ApprovalState.denied
                elif count >= approval.min_approvals:
                    outcome, new_state = DecisionOutcome.granted, ApprovalState.granted
                else:
                    outcome, new_state = DecisionOutcome.recorded, ApprovalState.open
                if new_state is not ApprovalState.open:
                    self.db.table("approvals").update(approval_id, {"state": new_state.value, "decided_at": now})
                audit.append(
                    conn,
                    "approval.denied" if decision == "deny" else "approval.granted",
                    actor=user,
                    run_id=approval.run_id,
                    step=approval.step,
                    detail={
                        "approval_id": approval_id,
                        "gate": approval.gate,
                        "approvals": count,
                        "required": approval.min_approvals,
                        "gate_open": outcome is DecisionOutcome.granted,
                        "person": person or user,
                        # what this person decided on, exactly as the request showed it
                        "change": approval.change,
                        "digest": approval.digest,
                        **({"comment": comment} if comment else {}),
                    },
                )
        return DecisionResult(outcome, self.get_approval(approval_id))

    def record_refusal(self, approval_id: str, user: str, reason: str) -> None:
        """Audit a click by someone who may not decide; the request stays open."""
        approval = self.get_approval(approval_id)
        with self.transaction("approval.refused") as conn:
            audit.append(
                conn,
                "approval.refused",
                actor=user,
                run_id=approval.run_id,
                step=approval.step,
                detail={"approval_id": approval_id, "gate": approval.gate, "reason": reason},
            )

    def supersede_approval(self, approval_id: str, *, digest: str, why: str) -> bool:
        """Close a request (open, or granted and not yet used) whose change no longer matches what the
        step would do now (``digest``): it covers nothing any more."""
        return self._close_request(
            approval_id,
            ApprovalState.superseded,
            "approval.superseded",
            (ApprovalState.open, ApprovalState.granted),
            lambda a: {"digest": a.digest, "digest_now": digest, "reason": why},
        )

    def expire_approval(self, approval_id: str) -> bool:
        """Expire an open request; False when it was decided first (the decision wins)."""
        return self._close_request(
            approval_id,
            ApprovalState.expired,
            "approval.expired",
            (ApprovalState.open,),
            lambda a: {"expired_at": iso(a.expires_at)},
        )

    def _close_request(
        self,
        approval_id: str,
        state: ApprovalState,
        event: str,
        closable: tuple[ApprovalState, ...],
        detail: Callable[[Approval], dict[str, Any]],
    ) -> bool:
        """The bot closes a request (nobody decided it): False when it was no longer ``closable``."""
        with self.transaction(event) as conn:
            approval = self.get_approval(approval_id)
            if approval.state not in closable:
                return False
            self.db.table("approvals").update(approval_id, {"state": state.value, "decided_at": iso(utcnow())})
            audit.append(
                conn,
                event,
                actor="bot",
                run_id=approval.run_id,
                step=approval.step,
                detail={"approval_id": approval_id, "gate": approval.gate, **detail(approval)},
            )
        return True

    # -- audit -----------------------------------------------------------------------------------

    def audit_events(self, run_id: str | None = None, after: int | None = None) -> list[audit.AuditEvent]:
        return list(audit.events(self.conn, run_id, after))

    def verify_audit(self) -> audit.VerifyResult:
        return audit.verify(self.conn)

    def write_checkpoint(
        self, signer: AuditSigner | None, reason: str, run_id: str | None = None
    ) -> tuple[checkpoints.Checkpoint | None, bool]:
        """A checkpoint of the chain as it is now (the last one when nothing was appended since; None while
        the trail is empty); and whether it is new."""
        if not checkpoints.behind(self.conn):  # no transaction, so no kill point, when there is nothing to write
            return checkpoints.last(self.conn), False
        with self.transaction("audit.checkpoint") as conn:
            return checkpoints.write(conn, signer, reason, run_id)
