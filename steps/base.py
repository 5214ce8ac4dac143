"""What every upgrade step is: check (read, change nothing), apply, verify, and an optional gate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bot.core.config import Config
from bot.core.gates import Gate
from bot.core.models import Run, StepRecord

if TYPE_CHECKING:
    from bot.systems.services import Services
    from bot.systems.vcenter import VCenterClient
    from bot.systems.winrm import WinRMExecutor
    from bot.systems.workspace_one import WorkspaceOneClient


@dataclass(frozen=True)
class CheckResult:
    """Whether ``apply`` is needed, why, and what the check saw on the host."""

    needed: bool
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)
    # Set when the rest of the plan has nothing to do (e.g. already at the target version): the later
    # steps are skipped with this reason, except those marked ``always_run`` (the final verify).
    skip_rest: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedStep:
    """What a step would do, found by reading only: the dry run (`check`) shows it, as Ansible's --check --diff."""

    would_run: bool
    reason: str  # why it would run or be skipped, in words
    changes: list[str] = field(default_factory=list)  # what would change, one item a line
    gate: str | None = None  # the approval or confirmation it would ask for (gate name)

    def dump(self) -> dict[str, Any]:
        return {"would_run": self.would_run, "reason": self.reason, "changes": self.changes, "gate": self.gate}


class StepFailed(Exception):
    """The step cannot go on; ``reason`` says why and what to do, in words for the thread."""

    def __init__(self, reason: str, facts: dict[str, Any] | None = None):
        self.reason = reason
        self.facts = facts or {}
        super().__init__(reason)


@dataclass
class StepContext:
    """What a step may use: the run, the configuration, earlier steps' facts, a progress note."""

    run: Run
    config: Config
    record: StepRecord
    facts: dict[str, dict[str, Any]]
    note: Callable[[str], None] = lambda text: None
    services: Services | None = None  # None only for plans of fake steps in tests
    # Ask a person to confirm something done by hand (gate, what to do, evidence); returns once they have.
    confirm: Callable[[Gate, str, dict], Awaitable[None]] | None = None
    # The change a person granted for this apply (``Step.change`` as the request showed it); apply does
    # only that. None when the step had no gate.
    approved: dict[str, Any] | None = None
    # Steps an earlier run of this batch applied (step id -> that run's id and host, e.g.
    # "run-149a7efa (host01)"): a tenant-wide change found done says who did it.
    done_earlier: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.run.host

    @property
    def winrm(self) -> WinRMExecutor:
        if self.services is None:
            raise StepFailed("this engine was built without services, so no step can reach a host")
        return self.services.winrm

    @property
    def workspace_one(self) -> WorkspaceOneClient | None:
        return self.services.workspace_one if self.services else None

    @property
    def vcenter(self) -> VCenterClient | None:
        return self.services.vcenter if self.services else None

    @property
    def resumed_after_apply(self) -> bool:
        """apply was started before in this run (the process stopped before verify was recorded)."""
        return self.record.applied > 0


class Step(ABC):
    id: ClassVar[str]
    title: ClassVar[str]
    # "STARTTLS" or "reboot": apply waits for approval when check says it is needed.
    gate: ClassVar[Gate | None] = None
    # Runs even when an earlier step said the rest of the plan has nothing to do.
    always_run: ClassVar[bool] = False
    # Only reads (preflight, verify, postcheck): a batch's recap counts it "ok", never "changed".
    read_only: ClassVar[bool] = False
    # What this step changes is on the host itself (the installer, a reboot): once it has, reverting the VM
    # to its snapshot is the way back. A snapshot, a downloaded file or a tenant setting is not.
    changes_host: ClassVar[bool] = False

    def unavailable(self, config: Config) -> str | None:
        """Why this build cannot do the step (a person must), or None when it can."""
        return None

    def closing_note(self, record: StepRecord, host_changed: bool) -> str | None:
        """A line for the run's final summary (e.g. which snapshot to revert to), from this step's record;
        ``host_changed``: whether any step of the run changed the host itself."""
        return None

    def changed(self, record: StepRecord) -> str | None:
        """What this step changed, in words, from its record (what it applied); None when nothing."""
        return None

    def unchanged(self, record: StepRecord) -> str | None:
        """What this step would have changed and did not (it never applied), in words; None when that is
        nothing worth saying (it had nothing to do, or it changes nothing anyway)."""
        return None

    def when_denied(self, ctx: StepContext) -> str:
        """What a denial leaves behind on the host, for the person who must act on it."""
        return ""

    def gate_for(self, ctx: StepContext, check: CheckResult) -> Gate | None:
        """The approval this apply needs, if any; by default the step's fixed gate."""
        return self.gate

    @abstractmethod
    async def check(self, ctx: StepContext) -> CheckResult: ...

    @abstractmethod
    async def apply(self, ctx: StepContext) -> dict[str, Any]: ...

    @abstractmethod
    async def verify(self, ctx: StepContext) -> VerifyResult: ...

    async def plan(self, ctx: StepContext) -> PlannedStep:
        """What this step would do on the host now, changing nothing (check only reads); a step whose words
        or changes say more overrides it."""
        check = await self.check(ctx)
        gate = self.gate_for(ctx, check) if check.needed else None
        return PlannedStep(check.needed, check.reason, gate=gate.name if gate else None)

    def evidence(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        """What an approver needs to see: what will change, and what was verified so far."""
        return {"what_changes": check.reason, "facts": check.facts}

    def change(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        """Exactly what the gate asks to allow, from what check saw; the request is bound to its digest.

        Only what apply will act on, and nothing that changes from one read to the next (no times): the
        engine compares it after a person decided and after a restart, and asks again when it differs.
        """
        return {"host": ctx.host, "step": self.id}
