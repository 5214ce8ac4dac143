"""The records idm-upgrade keeps: runs, their steps, approvals and audit events."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds, so the text sorts like the time."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class RunState(StrEnum):
    scheduled = "scheduled"  # waits for its time (Run.scheduled_for); the engine starts it then
    queued = "queued"
    running = "running"
    waiting_approval = "waiting_approval"
    succeeded = "succeeded"
    failed = "failed"
    denied = "denied"  # a person refused a gate: the run ended there, by their decision, not by a fault
    cancelled = "cancelled"

    @property
    def active(self) -> bool:
        return self in ACTIVE_RUN_STATES

    @property
    def label(self) -> str:
        """The word shown on the run card (DESIGN.md: people and scripts rely on it)."""
        return "waiting for approval" if self is RunState.waiting_approval else self.value


# A scheduled run holds its host like a queued one: one active run per host.
ACTIVE_RUN_STATES = frozenset({RunState.scheduled, RunState.queued, RunState.running, RunState.waiting_approval})


class StepState(StrEnum):
    pending = "pending"
    checking = "checking"
    waiting_approval = "waiting_approval"
    applying = "applying"
    verifying = "verifying"
    succeeded = "succeeded"
    skipped = "skipped"
    failed = "failed"
    denied = "denied"  # its gate was refused: apply never ran
    cancelled = "cancelled"
    unavailable = "unavailable"  # this build cannot do the step; a person must (shown, never as passed)

    @property
    def finished(self) -> bool:
        return self in {
            StepState.succeeded,
            StepState.skipped,
            StepState.failed,
            StepState.denied,
            StepState.cancelled,
            StepState.unavailable,
        }

    @property
    def label(self) -> str:
        return "not available" if self is StepState.unavailable else self.value.replace("_", " ")


class ApprovalState(StrEnum):
    open = "open"
    granted = "granted"
    denied = "denied"
    expired = "expired"
    cancelled = "cancelled"
    superseded = "superseded"  # what it showed no longer matched the host or tenant; a new request replaced it


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Run(_Record):
    id: str
    host: str
    requester: str
    state: RunState
    check_only: bool = False
    batch_id: str
    batch_position: int = 0
    plan: list[str]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    result: str | None = None
    cancel_requested_by: str | None = None
    ticket: str | None = None  # the change ticket that authorizes the run ([change])
    group: str | None = None  # the host group ([groups.NAME]) the run was requested as part of
    scheduled_for: datetime | None = None  # when a scheduled run is due to start
    attempt: int = 1  # 1, then one more each time a failed run is retried (run.retried)
    # "revert" while an ended run is being reverted to its snapshot; "reverted" once that was verified
    recovery: str | None = None
    ended_as: RunState | None = None  # while reverting: the state the run had ended in (it ends so again)


class StepRecord(_Record):
    run_id: str
    step: str
    position: int
    state: StepState = StepState.pending
    attempts: int = 0
    applied: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)


class Decision(_Record):
    approval_id: str
    user: str
    decision: str
    at: datetime
    comment: str | None = None
    person: str | None = None  # the person behind `user` (bot.engine.approvals.IdentityResolver)

    @property
    def who(self) -> str:
        return self.person or self.user


class Approval(_Record):
    id: str
    run_id: str
    step: str
    gate: str
    state: ApprovalState
    requested_at: datetime
    expires_at: datetime
    min_approvals: int
    evidence: dict[str, Any] = Field(default_factory=dict)
    # Exactly what a grant allows (directory ids; the host and the reasons for a reboot) and its digest.
    change: dict[str, Any] = Field(default_factory=dict)
    digest: str | None = None  # None on requests stored before changes were bound: they bind to nothing
    decided_at: datetime | None = None
    decisions: list[Decision] = Field(default_factory=list)
    attempt: int = 1  # the run's attempt it was asked in (Run.attempt): it covers nothing in a later one

    @property
    def approvers(self) -> list[str]:
        return [d.user for d in self.decisions if d.decision == "approve"]

    @property
    def approving_people(self) -> set[str]:
        """Who approved, counted as people: two accounts of one person are one."""
        return {d.who for d in self.decisions if d.decision == "approve"}


class AuditEvent(_Record):
    seq: int
    run_id: str | None
    at: str
    actor: str
    event: str
    step: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str


AUDIT_EVENTS = frozenset(
    {
        "run.requested",
        "run.scheduled",
        "run.rescheduled",
        "run.started",
        "step.started",
        "step.succeeded",
        "step.skipped",
        "step.failed",
        "approval.requested",
        "approval.granted",
        "approval.denied",
        "approval.expired",
        "approval.refused",
        "approval.superseded",
        "request.refused",
        "run.succeeded",
        "run.failed",
        "run.denied",
        "run.cancelled",
        # issue 20: a failed run tried again from its failed step; an ended run reverted to its snapshot
        "run.retried",
        "revert.requested",
        "revert.started",
        "revert.reverted",
        "revert.powered_on",
        "revert.verified",
        "revert.failed",
    }
)
