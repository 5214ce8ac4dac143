"""The durable run engine: drives each host's plan of steps, with approval gates, from SQLite state.

Rules it keeps:
- state is written before each action and its result after it returns; audit events are written in
  the same transaction as the state they describe (bot.store does that);
- a restart resumes every unfinished run: a step in flight restarts from its check, a step whose
  verify succeeded never runs again, waiting approvals keep waiting and expire on time;
- a batch runs its hosts one after another and stops at the first run that does not succeed (a check
  batch goes on: it changes nothing);
- at most ``winrm.max_parallel`` steps work on hosts at once; a run waiting for approval holds no slot;
- cancel takes effect at the next safe point: between steps, or at once while waiting for approval;
  a step that is changing a host is never abandoned halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from bot.core.config import Config, GroupConfig
from bot.core.errors import ExternalSystemError
from bot.core.gates import REBOOT, REBOOT_OUTSIDE_WINDOW, Gate, change_digest, gate_named
from bot.core.models import Approval, ApprovalState, Run, RunState, StepRecord, StepState, iso, utcnow
from bot.core.signing import AuditSigner
from bot.core.windows import describe_moment, window_for
from bot.engine import recovery, revert
from bot.engine.admission import Admission, ChangeChecker, Refused
from bot.engine.approvals import ApprovalPolicy
from bot.engine.checkpointer import Checkpointer
from bot.engine.dry_run import PLAN_KEY, approvals_asked, stored_plan, summary
from bot.engine.events import ProgressEvent, SinkDispatcher
from bot.engine.outcome import outcome_of
from bot.engine.schedule import last_closing, when_to_start
from bot.engine.slots import Slot, SlotPool
from bot.store import fleet
from bot.store.store import BatchRequest, DecisionOutcome, HostBusy, NotRetriable, Store, UnknownRecord
from steps.base import CheckResult, PlannedStep, Step, StepContext, StepFailed

if TYPE_CHECKING:
    from bot.systems.services import Services  # handed through to the steps, never used here

log = logging.getLogger(__name__)
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")
T = TypeVar("T")


# How often a waiting gate re-reads its approval, so a decision written by another process is seen.
APPROVAL_POLL_SECONDS = 5.0
# How many requests one gate of one step may make because the change moved while people decided; past
# that the step fails rather than asking forever (someone keeps adding directories, a flapping host).
MAX_REQUESTS_PER_GATE = 3
# The longest a scheduled run, or a reboot held for its window, sleeps before it re-reads the database
# (a cancel or a reschedule from another process) and the clock.
SCHEDULE_POLL_SECONDS = 30.0


# A step's phase as an operator reads it in a failure ("check", "apply" are the code's words).
WHILE = {"check": "while looking at the host", "apply": "while making the change", "verify": "while verifying"}


class RunStopped(Exception):
    """The run ended inside a step (denied, expired, cancelled, failed); its state is already written."""


@dataclass(frozen=True)
class Reply:
    """The answer to a person's request (decision, cancel); ``ok`` False means nothing changed."""

    ok: bool
    message: str


class Engine:
    def __init__(
        self,
        store: Store,
        config: Config,
        steps: Mapping[str, Step],
        *,
        policy: ApprovalPolicy | None = None,
        sinks: list | None = None,
        services: Services | None = None,
        approval_poll_seconds: float = APPROVAL_POLL_SECONDS,
        signer: AuditSigner | None = None,
        changes: ChangeChecker | None = None,
        clock: Callable[[], datetime] = utcnow,  # admission, schedules and windows go by it (tests set it)
        schedule_poll_seconds: float = SCHEDULE_POLL_SECONDS,
        revert_reader: revert.HostReader | None = None,  # what a revert verifies (steps.revert_check)
    ):
        self.revert_reader = revert_reader
        self.store = store
        self.clock = clock  # when scheduled runs are due and windows open (tests inject one)
        self.schedule_poll_seconds = schedule_poll_seconds
        self.admission = Admission(config, changes=changes, clock=clock)
        self.config = config
        self.steps = dict(steps)
        self.policy = policy or ApprovalPolicy(config.slack, host_groups=config.groups)
        self.progress = SinkDispatcher(sinks or [])
        self.checkpoints = Checkpointer(store, signer, config.audit.checkpoint_minutes, self.progress.publish)
        self.services = services
        self.approval_poll_seconds = approval_poll_seconds
        self._slots = SlotPool(config.winrm.max_parallel)
        self._batches: dict[str, asyncio.Task] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._done_earlier: dict[str, dict[str, str]] = {}  # run id -> StepContext.done_earlier

    # -- plumbing --------------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.store.call(fn, *args, **kwargs)

    def _publish(self, kind: str, run: Run, text: str, step: str | None = None, **data: Any) -> None:
        self.progress.publish(ProgressEvent(kind, run.id, run.host, text, step, data))

    def _wakeup(self, run_id: str) -> asyncio.Event:
        return self._wakeups.setdefault(run_id, asyncio.Event())

    async def _nap_until(self, moment: datetime, run_id: str) -> None:
        """Sleep towards ``moment`` on ``self.clock``, at most one poll, waking early for a cancel or a decision."""
        seconds = min((moment - self.clock()).total_seconds(), self.schedule_poll_seconds)
        wakeup = self._wakeup(run_id)
        wakeup.clear()
        await _woken(wakeup, max(seconds, 0.0))

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> list[Run]:
        """Checkpoint the trail as found, then resume every unfinished run found in the database."""
        await self.checkpoints.start()
        runs = await self._db(self.store.runs, active=True)
        for batch_id in dict.fromkeys(r.batch_id for r in sorted(runs, key=lambda r: r.created_at)):
            self._spawn(batch_id)
        for run in runs:
            if run.state not in (RunState.queued, RunState.scheduled):
                self._publish("run.resumed", run, f"resuming after a restart (was {run.state.label})")
        return runs

    async def submit(
        self,
        hosts: list[str],
        requester: str,
        *,
        check_only: bool = False,
        ticket: str | None = None,
        group: str | None = None,
        scheduled_for: datetime | None = None,
    ) -> list[Run]:
        """Queue a batch and start it (or schedule it, with ``scheduled_for``). Raises HostBusy (nothing
        created) when a host has an active run."""
        unknown = [h for h in hosts if h not in self.config.hosts]
        if unknown:
            raise UnknownRecord(f"unknown host(s): {', '.join(unknown)}")
        plan = self.plan_for(check_only)
        runs = await self._db(
            self.store.create_runs,
            hosts,
            requester=requester,
            plan=plan,
            check_only=check_only,
            ticket=ticket,
            group=group,
            scheduled_for=scheduled_for,
        )
        for run in runs:
            what = "check only" if check_only else "upgrade"
            if run.scheduled_for:
                self._publish(
                    "run.scheduled",
                    run,
                    f"scheduled by {requester}: {what}, for {self.when(run)}",
                    at=iso(run.scheduled_for),
                )
            else:
                self._publish("run.queued", run, f"queued by {requester}: {what}")
        self._spawn(runs[0].batch_id)
        return runs

    async def submit_batches(
        self, batches: list[BatchRequest], requester: str, *, check_only: bool = False, ticket: str | None = None
    ) -> list[list[Run]]:
        """Several batches at once (one per host group: they run side by side, each one host at a time),
        created in one transaction: HostBusy for any host and none is created."""
        unknown = [h for b in batches for h in b.hosts if h not in self.config.hosts]
        if unknown:
            raise UnknownRecord(f"unknown host(s): {', '.join(unknown)}")
        plan = self.plan_for(check_only)
        created = await self._db(
            self.store.create_batches, batches, requester=requester, plan=plan, check_only=check_only, ticket=ticket
        )
        for runs in created:
            for run in runs:
                self._publish("run.queued", run, f"queued by {requester}: {'check only' if check_only else 'upgrade'}")
        for runs in created:
            self._spawn(runs[0].batch_id)
        return created

    def _group_of(self, host: str) -> GroupConfig | None:
        name = self.config.group_of(host)
        return self.config.groups[name] if name else None

    @property
    def read_only_steps(self) -> frozenset[str]:
        return frozenset(step_id for step_id, step in self.steps.items() if step.read_only)

    def offers(self, run: Run, records: list[StepRecord]) -> list[str]:
        """What an ended run offers next (bot.engine.recovery): the card's buttons, the engine's own check."""
        return [str(o) for o in recovery.offers(run, records, self.steps)]

    def plan_for(self, check_only: bool) -> list[str]:
        ids = list(self.steps)
        return ids[:1] if check_only else ids

    def _spawn_after(self, batch_id: str) -> None:
        """Drive ``batch_id`` again once its task (ending after a run's end) has returned: a retried run."""
        before = self._batches.get(batch_id)
        if before is None or before.done():
            self._spawn(batch_id)
            return

        async def after() -> None:
            await asyncio.gather(before, return_exceptions=True)
            await self._run_batch(batch_id)

        self._batches[batch_id] = asyncio.get_running_loop().create_task(after(), name=f"batch {batch_id}")

    def _spawn(self, batch_id: str) -> None:
        if batch_id not in self._batches or self._batches[batch_id].done():
            task = asyncio.get_running_loop().create_task(self._run_batch(batch_id), name=f"batch {batch_id}")
            self._batches[batch_id] = task

    async def join(self) -> None:
        """Wait until every batch started so far has finished and its progress has been delivered."""
        while pending := [t for t in self._batches.values() if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
        await self.progress.drain()

    async def stop(self) -> None:
        """Stop working (shutdown). Runs stay as persisted and resume on the next start."""
        for task in self._batches.values():
            task.cancel()
        await asyncio.gather(*self._batches.values(), return_exceptions=True)
        await self.checkpoints.stop()
        await self.progress.close()

    # -- batches and runs ------------------------------------------------------------------------

    async def _run_batch(self, batch_id: str) -> None:
        try:
            for run in await self._db(self.store.batch, batch_id):
                if run.state is RunState.scheduled:
                    run = await self._await_schedule(run)
                if run.state.active:
                    await self._drive(run)
                    run = await self._db(self.store.get_run, run.id)
                # A dry run changes nothing, so one host's refusal is no reason not to look at the next.
                if run.state is not RunState.succeeded and not run.check_only:
                    await self._abandon_rest(batch_id, run)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug or a broken database: the run stays as persisted and resumes at the next start.
            log.exception("batch %s stopped unexpectedly; it will resume on restart", batch_id)

    async def _abandon_rest(self, batch_id: str, stopped: Run) -> None:
        for run in await self._db(self.store.batch, batch_id):
            if run.batch_position > stopped.batch_position and run.state in _NOT_STARTED:
                reason = f"not started: {stopped.host} before it in the batch ended {stopped.state.label}"
                await self._cancel_unstarted(run, reason, _NOT_STARTED)

    async def _cancel_unstarted(self, run: Run, reason: str, expect: frozenset[RunState]) -> None:
        """End a run that never started (cancelled, with ``reason``), unless it has left ``expect`` meanwhile."""
        done = await self._db(
            self.store.set_run_state, run.id, RunState.cancelled, event="run.cancelled", result=reason, expect=expect
        )
        if done:
            await self._ended(done, reason)

    def when(self, run: Run) -> str:
        """A scheduled run's start in words: in its window's zone, and in UTC."""
        assert run.scheduled_for is not None
        return describe_moment(run.scheduled_for, window_for(self.config, run.host))

    async def _await_schedule(self, run: Run) -> Run:
        """Wait until the scheduled ``run`` is due and may start; return it as it then is (it may have been
        cancelled). Due while the window is closed or a freeze is on: moved to the next moment both allow."""
        while True:
            run = await self._db(self.store.get_run, run.id)
            if run.state is not RunState.scheduled or run.scheduled_for is None:
                return run
            now = self.clock()
            if now < run.scheduled_for:
                await self._nap_until(run.scheduled_for, run.id)
                continue
            later = when_to_start(self.config, run.host, now)
            if later is None:
                try:
                    await self.before_scheduled_start(run)
                except Refused as exc:  # the change no longer allows it: it never starts, nor does the rest
                    await self._cancel_unstarted(run, f"not started: {exc}", frozenset({RunState.scheduled}))
                    return await self._db(self.store.get_run, run.id)
                return run
            moved = await self._db(self.store.reschedule_run, run.id, later.moment, why=later.why)
            if moved is not None:
                self._publish(
                    "run.rescheduled",
                    moved,
                    f"was due {describe_moment(run.scheduled_for, window_for(self.config, run.host))} but "
                    f"{later.why}: rescheduled for {self.when(moved)}",
                    at=iso(later.moment),
                )

    async def before_scheduled_start(self, run: Run) -> None:
        """Called just before a scheduled run starts: its change ticket must still allow it now (ServiceNow,
        when configured). Refused: the run is cancelled unstarted, with the reason."""
        await self.admission.recheck_change(run)

    async def _drive(self, run: Run) -> None:
        # Queued runs wait here for a slot (and stay 'queued' on the card); a resumed run goes first.
        async with Slot(self._slots, under_way=run.state not in _NOT_STARTED) as slot:
            if run.recovery == "revert":  # an ended run being reverted to its snapshot (bot.engine.revert)
                await revert.drive(self, run, slot)
                return
            if run.state in _NOT_STARTED:
                started = await self._db(
                    self.store.set_run_state,
                    run.id,
                    RunState.running,
                    event="run.started",
                    detail={"scheduled_for": iso(run.scheduled_for)} if run.scheduled_for else None,
                    expect=_NOT_STARTED,
                )
                if started is None:  # cancelled while queued
                    return
                run = started
                self._publish("run.started", run, f"started: {len(run.plan)} steps")
            self._done_earlier[run.id] = await self._db(self._applied_earlier_in_batch, run)
            try:
                for step_id in run.plan:
                    # One read of the run's steps per step: the record, the skip reason and the context's facts.
                    records = {r.step: r for r in await self._db(self.store.steps, run.id)}
                    record = records[step_id]
                    step = self.steps[step_id]
                    if record.state is StepState.failed:  # the process stopped before the run was marked
                        await self._finish(run, RunState.failed, f"{step_id} failed: {record.reason}")
                        return
                    if record.state is StepState.denied:  # likewise, after a person refused its gate
                        await self._finish(run, RunState.denied, record.reason or f"{step_id} denied")
                        return
                    if record.state.finished:
                        continue
                    if why := step.unavailable(self.config):
                        await self._mark_unavailable(run, step, why)
                    elif (skipping := self._skipping(records.values())) and not step.always_run:
                        await self._skip_rest(run, records, skipping)
                    else:
                        await self._do_step(run, step, slot, records)
                if run.check_only:
                    await self._dry_run(run)
            except RunStopped:
                return
            await self._finish(run, RunState.succeeded, await self._summary(run))

    def _applied_earlier_in_batch(self, run: Run) -> dict[str, str]:
        """Step id -> "RUN (HOST)" of the last earlier run of ``run``'s batch that applied that step (store thread)."""
        done: dict[str, str] = {}
        for earlier in self.store.batch(run.batch_id):
            if earlier.batch_position >= run.batch_position:
                break
            for record in self.store.steps(earlier.id):
                if record.state is StepState.succeeded and record.applied:
                    done[record.step] = f"{earlier.id} ({earlier.host})"
        return done

    @staticmethod
    def _skipping(records: Iterable[StepRecord]) -> str | None:
        """The reason an earlier step gave for skipping the rest of the plan (persisted in its facts)."""
        for record in records:
            if record.state.finished and (reason := record.facts.get("skip_rest")):
                return reason
        return None

    async def _skip_rest(self, run: Run, records: dict[str, StepRecord], reason: str) -> None:
        """Skip, together, every step left that the reason covers (not the always-run ones, not those this
        build cannot do: their own turn marks them)."""
        rest = [
            step
            for step_id in run.plan
            if not records[step_id].state.finished
            and not (step := self.steps[step_id]).always_run
            and not step.unavailable(self.config)
        ]
        await self._db(self.store.skip_steps, run.id, [step.id for step in rest], reason)
        for step in rest:
            self._publish("step.finished", run, f"skipped: {reason}", step.id, state="skipped")

    async def _mark_unavailable(self, run: Run, step: Step, why: str) -> None:
        await self._db(
            self.store.update_step,
            run.id,
            step.id,
            StepState.unavailable,
            event="step.skipped",
            reason=why,
            detail={"not_available": True},
        )
        self._publish("step.finished", run, f"NOT AVAILABLE: {why}", step.id, state="unavailable")

    async def _dry_run(self, run: Run) -> None:
        """After a check run's preflight: every step's plan (reads only), stored in the preflight's facts."""
        records = {r.step: r for r in await self._db(self.store.steps, run.id)}
        first = records.get(run.plan[0]) if run.plan else None
        if first is None or first.state is not StepState.succeeded:
            return  # preflight refused the host: that is the answer
        facts = {name: r.facts for name, r in records.items()}
        skipping = self._skipping(records.values())
        planned: list[dict[str, Any]] = []
        for position, (step_id, step) in enumerate(self.steps.items()):
            ctx = StepContext(
                run=run,
                config=self.config,
                record=records.get(step_id) or StepRecord(run_id=run.id, step=step_id, position=position),
                facts=facts,
                services=self.services,
            )
            if why := step.unavailable(self.config):
                entry = PlannedStep(False, f"not done by the bot: {why}")
            elif skipping and not step.always_run and step_id not in records:
                entry = PlannedStep(False, skipping)
            else:
                entry = await self._plan_step(run, step, ctx)
            planned.append({"step": step_id, "title": step.title, "ran": step_id in records, **entry.dump()})
        plan = {
            "host": run.host,
            "steps": planned,
            "approvals": approvals_asked(planned, self.config.slack, self._group_of(run.host)),
        }
        await self._db(self.store.update_step, run.id, first.step, StepState.succeeded, facts={PLAN_KEY: plan})

    async def _plan_step(self, run: Run, step: Step, ctx: StepContext) -> PlannedStep:
        try:
            return await step.plan(ctx)
        except asyncio.CancelledError:
            raise
        except StepFailed as exc:  # an upgrade would stop here
            return PlannedStep(False, f"an upgrade would stop here: {exc.reason}")
        except ExternalSystemError as exc:
            return PlannedStep(False, f"could not tell: {exc}")
        except Exception as exc:
            log.exception("%s %s raised while planning", run.id, step.id)
            return PlannedStep(False, f"could not tell: unexpected error {type(exc).__name__}: {exc}")

    async def _summary(self, run: Run) -> str:
        records = await self._db(self.store.steps, run.id)
        if run.check_only and (plan := stored_plan(records)):
            return summary(plan)
        skipped_rest = next((r.facts["skip_rest"] for r in records if r.facts.get("skip_rest")), None)
        manual = [r.step for r in records if r.state is StepState.unavailable]
        text = skipped_rest or "all steps done"
        if manual:
            text += f"; not done by the bot, check by hand: {', '.join(manual)}"
        return text

    async def _finish(self, run: Run, state: RunState, result: str, actor: str = "bot") -> None:
        records = await self._db(self.store.steps, run.id)
        outcome = outcome_of(self.steps, records)
        notes = [
            note
            for r in records
            if r.step in self.steps and (note := self.steps[r.step].closing_note(r, outcome.host_changed))
        ]
        if state is RunState.succeeded:
            result = ". ".join([result, *notes])
        else:
            # The run stopped part way: one line of cause, then what the operator finds on the host and tenant.
            result = "\n".join([result, *outcome.lines(), *notes])
        done = await self._db(
            self.store.set_run_state,
            run.id,
            state,
            actor=actor,
            event=f"run.{state.value}",
            result=result,
            expect=frozenset({RunState.queued, RunState.running, RunState.waiting_approval}),
        )
        if done:
            await self._ended(done, f"{state.label}: {result}")
        self._wakeups.pop(run.id, None)
        self._done_earlier.pop(run.id, None)

    async def _ended(self, done: Run, text: str) -> None:
        """A run reached its end (persisted): checkpoint the trail with it first, so whoever hears of the end
        (the Slack thread) finds its checkpoint already written, then tell. A run of a fleet whose other runs
        are still under way is covered by the fleet's last end (and the periodic checkpoints): at Slack's pace
        of one post a second per channel, one checkpoint post per host would hold up every other message."""
        fleet_goes_on = await self._db(lambda: fleet.others_active(self.store.conn, done.id))
        checkpoint = None if fleet_goes_on else await self.checkpoints.checkpoint(f"end of run {done.id}", done.id)
        self._publish("run.finished", done, text, state=done.state.value)
        if checkpoint is not None:
            self._publish(
                "audit.checkpoint", done, self.checkpoints.describe(checkpoint), checkpoint=checkpoint.model_dump()
            )

    async def _stop_if_cancelled(self, run: Run, step: str) -> None:
        current = await self._db(self.store.get_run, run.id)
        if current.cancel_requested_by:
            await self._db(self.store.update_step, run.id, step, StepState.cancelled, reason="run cancelled")
            await self._finish(
                run,
                RunState.cancelled,
                f"cancelled by {current.cancel_requested_by}",
                current.cancel_requested_by,
            )
            raise RunStopped

    async def _fail(self, run: Run, step: str, reason: str, facts: dict | None = None) -> NoReturn:
        await self._db(
            self.store.update_step,
            run.id,
            step,
            StepState.failed,
            event="step.failed",
            reason=reason,
            facts=facts,
        )
        self._publish("step.finished", run, f"failed: {reason}", step, state="failed")
        await self._finish(run, RunState.failed, f"{step} failed: {reason}")
        raise RunStopped

    async def _deny(self, run: Run, step: Step, gate: Gate, ctx: StepContext, approval: Approval) -> NoReturn:
        """A person refused the gate: the step never applies and the run ends ``denied`` (not failed: nothing
        went wrong); its result says what the run had changed by then and what it had not."""
        deny = next(d for d in reversed(approval.decisions) if d.decision == "deny")
        why = f": {deny.comment}" if deny.comment else ""
        reason = f"{gate.name} {gate.kind.value} denied by {deny.user}{why}"
        # No step event: approval.denied already says it, and the run's end follows at once. The change it
        # refused stays with the step: it is what was not changed (Step.unchanged).
        await self._db(
            self.store.update_step, run.id, step.id, StepState.denied, reason=reason, facts={"denied": approval.change}
        )
        after = step.when_denied(ctx)
        await self._finish(run, RunState.denied, reason + (f". {after}" if after else ""), deny.user)
        raise RunStopped

    # -- one step: check, gate, apply, verify ----------------------------------------------------

    def _context(
        self,
        run: Run,
        step: Step,
        slot: Slot,
        records: dict[str, StepRecord],
        approved: dict[str, Any] | None = None,
    ) -> StepContext:
        """What a step sees: its own record as just written, and every step's facts (only this run writes them)."""

        async def confirm(gate: Gate, reason: str, evidence: dict) -> None:
            # A person is asked in the middle of apply: the slot is not held while they think. What they
            # confirm is the to-do the request showed, on this host.
            change = {"host": run.host, "step": step.id, "gate": gate.name, "what_to_do": evidence.get("what_to_do")}
            async with slot.released():
                await self._gate(run, step, gate, ctx, reason, evidence, change)

        ctx = StepContext(
            run=run,
            config=self.config,
            record=records[step.id],
            facts={name: r.facts for name, r in records.items()},
            note=lambda text: self._publish("step.note", run, text, step.id),
            services=self.services,
            confirm=confirm,
            approved=approved,
            done_earlier=self._done_earlier.get(run.id, {}),
        )
        return ctx

    async def _call(self, run: Run, step: Step, phase: str, fn: Callable, ctx: StepContext) -> Any:
        try:
            return await fn(ctx)
        except StepFailed as exc:
            await self._fail(run, step.id, exc.reason, exc.facts)
        except (asyncio.CancelledError, RunStopped):
            raise
        except ExternalSystemError as exc:  # a host or service refused or was away; the message says why
            await self._fail(run, step.id, f"{WHILE[phase]}: {exc}")
        except Exception as exc:
            log.exception("%s %s raised during %s", run.id, step.id, phase)
            await self._fail(run, step.id, f"unexpected error {WHILE[phase]}: {type(exc).__name__}: {exc}")

    async def _do_step(self, run: Run, step: Step, slot: Slot, records: dict[str, StepRecord]) -> None:
        await self._stop_if_cancelled(run, step.id)
        # A pending step that was checked before is a retried run's failed step: a new attempt, not a restart.
        retried = records[step.id].state is StepState.pending and records[step.id].attempts > 0
        record = records[step.id] = await self._db(
            self.store.update_step,
            run.id,
            step.id,
            StepState.checking,
            event="step.started",
            detail={"title": step.title, **({"retried": True} if retried else {})},
        )
        self._publish("step.started", run, f"{step.title}: checking", step.id, attempt=record.attempts)
        ctx = self._context(run, step, slot, records)
        check: CheckResult = await self._call(run, step, "check", step.check, ctx)
        check_facts = {**check.facts, **({"skip_rest": check.skip_rest} if check.skip_rest else {})}
        if not check.needed and not ctx.resumed_after_apply:
            await self._db(
                self.store.update_step,
                run.id,
                step.id,
                StepState.skipped,
                event="step.skipped",
                reason=check.reason,
                facts=check_facts,
            )
            self._publish("step.finished", run, f"skipped: {check.reason}", step.id, state="skipped")
            return
        gate = step.gate_for(ctx, check) if check.needed else None
        approved: dict[str, Any] | None = None
        if gate:
            check, approved = await self._approved(run, step, slot, gate, ctx, check)
            check_facts = {**check.facts, **({"skip_rest": check.skip_rest} if check.skip_rest else {})}
        if check.needed:
            if gate:  # someone may have cancelled the run while a person decided
                await self._stop_if_cancelled(run, step.id)
            if gate is not None and gate.name == REBOOT.name:
                await self._keep_window(run, step, slot, ctx)
            records[step.id] = await self._db(
                self.store.update_step, run.id, step.id, StepState.applying, facts=check_facts
            )
            ctx = self._context(run, step, slot, records, approved)
            applied = await self._call(run, step, "apply", step.apply, ctx)
            records[step.id] = await self._db(
                self.store.update_step, run.id, step.id, StepState.verifying, facts=applied or {}
            )
        else:
            # apply ran before a restart (or a person did it while others decided) and the host now shows
            # it done: prove it with verify.
            records[step.id] = await self._db(
                self.store.update_step, run.id, step.id, StepState.verifying, facts=check_facts
            )
        ctx = self._context(run, step, slot, records)
        result = await self._call(run, step, "verify", step.verify, ctx)
        if not result.ok:
            await self._fail(run, step.id, f"verify failed: {result.reason}", result.facts)
        await self._db(
            self.store.update_step,
            run.id,
            step.id,
            StepState.succeeded,
            event="step.succeeded",
            reason=result.reason,
            facts=result.facts,
        )
        self._publish("step.finished", run, f"done: {result.reason}", step.id, state="succeeded")

    async def _approved(
        self, run: Run, step: Step, slot: Slot, gate: Gate, ctx: StepContext, check: CheckResult
    ) -> tuple[CheckResult, dict[str, Any] | None]:
        """Ask for ``gate`` until a grant covers the change the step would make now.

        Returns the check to go on with and the change granted (None when, looking again, nothing is left
        to change). A person decides on what the request showed; once they have, the step looks again, and
        if the change it would make differs (a directory added, the reasons for a reboot moved) the grant
        does not cover it: a new request shows the new change. A grant from before a restart counts only
        when its digest matches the change seen now (``_gate``).
        """
        for _ in range(MAX_REQUESTS_PER_GATE):
            change = step.change(ctx, check)
            async with slot.released():  # nobody's host waits on a person's decision
                approval, decided_now = await self._gate(
                    run, step, gate, ctx, check.reason, step.evidence(ctx, check), change
                )
            if not decided_now or gate.is_confirmation:
                return check, approval.change
            await self._stop_if_cancelled(run, step.id)
            again: CheckResult = await self._call(run, step, "check", step.check, ctx)
            if not again.needed or step.gate_for(ctx, again) is None:
                return again, None
            now = step.change(ctx, again)
            if change_digest(now) == approval.digest:
                return again, approval.change
            await self._supersede(run, step, approval, now, "what it showed changed before it was applied")
            check = again
        await self._fail(
            run,
            step.id,
            f"the change the {gate.name} {gate.kind.value} asks for moved {MAX_REQUESTS_PER_GATE} times while "
            "people decided; nothing was changed. Find out what keeps changing it, then run again",
        )

    async def _keep_window(self, run: Run, step: Step, slot: Slot, ctx: StepContext) -> None:
        """Reboot only inside the host's maintenance window: outside it, wait for the next opening, or for a
        person's override (its own approval, bound to the window and when it closed; its grant is audited
        with ``override: true`` in the change). Durable: the request is in the database, so a restart finds
        it and waits on. A denied or expired override leaves the reboot waiting for the window."""
        window = window_for(self.config, run.host)
        if window is None:
            return
        asked: Approval | None = None
        announced: set[str] = set()  # requests told of in this call (again after a restart: the thread says so)
        settled: set[str] = set()  # requests denied or expired, told of in this call
        async with slot.released():  # a run waiting for its window holds no slot
            while True:
                await self._stop_if_cancelled(run, step.id)
                now = self.clock()
                if window.is_open(now):
                    if asked is not None and asked.state is ApprovalState.open:
                        why = f"the maintenance window {window.name} opened; no override is needed"
                        await self._db(self.store.supersede_approval, asked.id, digest=asked.digest, why=why)
                        self._publish("approval.superseded", run, f"{asked.gate} request closed: {why}", step.id)
                    if asked is not None:
                        await self._db(self.store.set_run_state, run.id, RunState.running)
                        self._publish("step.note", run, f"window {window.name} open: rebooting", step.id)
                    return
                opening = window.current_or_next(now)
                closed = last_closing(window, now)
                if asked is None or asked.state is ApprovalState.open:
                    asked = await self._override(run, step, window.name, closed)
                    if asked.state is ApprovalState.open and asked.id not in announced:
                        announced.add(asked.id)
                        self._announce_override(run, step, asked, window.name, closed, window.describe(opening))
                if asked.state is ApprovalState.granted:
                    await self._db(self.store.set_run_state, run.id, RunState.running)
                    return
                if asked.state is not ApprovalState.open and asked.id not in settled:
                    # denied or expired: no override; the run shows running (not waiting for a person) meanwhile
                    settled.add(asked.id)
                    await self._db(self.store.set_run_state, run.id, RunState.running)
                    self._publish(
                        "step.note",
                        run,
                        f"no reboot outside the window ({asked.gate} {asked.state.value}): waiting for the "
                        f"next opening of {window.name}, {window.describe(opening)}",
                        step.id,
                    )
                if asked.state is ApprovalState.open and asked.expires_at <= utcnow():
                    if await self._db(self.store.expire_approval, asked.id):
                        self._publish(
                            "approval.decided", run, f"{asked.gate} approval expired; waiting for the window", step.id
                        )
                    continue
                until = min(opening.start, asked.expires_at) if asked.state is ApprovalState.open else opening.start
                await self._nap_until(until, run.id)

    async def _override(self, run: Run, step: Step, window: str, closed: datetime) -> Approval:
        """The override request for this closing of ``window``: the one already asked (in any state), else a new one."""
        change = {"host": run.host, "step": step.id, "override": True, "window": window, "closed_at": iso(closed)}
        digest = change_digest(change)
        gate = REBOOT_OUTSIDE_WINDOW
        attempt = (await self._db(self.store.get_run, run.id)).attempt  # an earlier attempt's override covers none
        mine = [
            a
            for a in await self._db(self.store.approvals, run.id, step.id)
            if a.gate == gate.name and a.attempt == attempt
        ]
        if mine and mine[-1].digest == digest:
            return mine[-1]
        if mine and mine[-1].state is ApprovalState.open:
            await self._supersede(run, step, mine[-1], change, "the window closed again since it was asked")
        closed_text = describe_moment(closed, window_for(self.config, run.host))
        evidence = {
            "what_changes": f"restart {run.host} now, OUTSIDE its maintenance window {window}, which closed at "
            f"{closed_text}; without this the reboot waits for the window's next opening",
            "why": "the run was under way when the window closed; every step before the reboot is done",
        }
        return await self._db(
            self.store.request_approval,
            run.id,
            step.id,
            gate=gate.name,
            timeout=timedelta(minutes=self.config.slack.approval_timeout_minutes),
            min_approvals=self.config.slack.min_approvals,
            evidence={**evidence, "requested_by": run.requester, "host": run.host, "kind": gate.kind.value},
            change=change,
        )

    def _announce_override(
        self, run: Run, step: Step, approval: Approval, window: str, closed: datetime, opening: str
    ) -> None:
        closed_text = describe_moment(closed, window_for(self.config, run.host))
        gate = REBOOT_OUTSIDE_WINDOW
        self._publish(
            "step.note",
            run,
            f"the maintenance window {window} closed at {closed_text}: the reboot waits for its next opening "
            f"({opening}), unless an approver allows a reboot outside the window",
            step.id,
        )
        self.announce_request(
            run, step.id, gate, approval, f"{gate.name} approval needed: window {window} closed at {closed_text}"
        )

    def announce_request(self, run: Run, step_id: str, gate: Gate, approval: Approval, text: str) -> None:
        """Tell the front ends an open request (``approval.requested``): what it shows, its digest, its deadline."""
        self._publish(
            "approval.requested",
            run,
            text,
            step_id,
            approval_id=approval.id,
            gate=gate.name,
            request_kind=gate.kind.value,
            evidence=approval.evidence,
            digest=approval.digest,
            expires_at=approval.expires_at.isoformat(),
        )

    async def _supersede(self, run: Run, step: Step, approval: Approval, change: dict[str, Any], what: str) -> None:
        """Close ``approval``: the change the step would make now is another than the one it showed."""
        why = f"{what} ({difference(approval.change, change)})"
        await self._db(self.store.supersede_approval, approval.id, digest=change_digest(change), why=why)
        self._publish("approval.superseded", run, f"{approval.gate} request superseded: {why}; asking again", step.id)

    async def _gate(
        self, run: Run, step: Step, gate: Gate, ctx: StepContext, reason: str, evidence: dict, change: dict[str, Any]
    ) -> tuple[Approval, bool]:
        """Ask for ``gate`` (an approval or a confirmation), bound to ``change``; return once granted.

        Returns the granted request and whether a person decided it just now (False: it was granted before
        a restart). Otherwise the run ends here. A request for this step and gate that is open or granted is
        reused only when it was bound to the same change; else it is superseded and a new one asked.
        """
        digest = change_digest(change)
        # Only this attempt's requests: a grant covers what a person decided for the attempt it was asked in,
        # so a retried run's gate asks again (Store.retry_run).
        attempt = (await self._db(self.store.get_run, run.id)).attempt
        asked = [
            a
            for a in await self._db(self.store.approvals, run.id, step.id)
            if a.gate == gate.name and a.attempt == attempt
        ]
        latest = asked[-1] if asked else None
        kind = gate.kind.value
        if (
            latest is not None
            and latest.state in (ApprovalState.open, ApprovalState.granted)
            and latest.digest != digest
        ):
            await self._supersede(run, step, latest, change, "it showed another change than the step would make now")
            latest = None
        if latest is None or latest.state not in (ApprovalState.open, ApprovalState.granted):
            latest = await self._db(
                self.store.request_approval,
                run.id,
                step.id,
                gate=gate.name,
                timeout=timedelta(minutes=self.config.slack.approval_timeout_minutes),
                min_approvals=self.config.slack.min_approvals if kind == "approval" else 1,
                evidence={**evidence, "requested_by": run.requester, "host": run.host, "kind": kind},
                change=change,
            )
        decided_now = False
        if latest.state is ApprovalState.open:
            self.announce_request(run, step.id, gate, latest, f"{gate.name} {kind} needed: {reason}")
            latest = await self.await_decision(run, step.id, latest.id)
            decided_now = True
        if latest.state is ApprovalState.granted:
            await self._db(self.store.set_run_state, run.id, RunState.running)
            return latest, decided_now
        if latest.state is ApprovalState.denied:
            await self._deny(run, step, gate, ctx, latest)
        if latest.state is ApprovalState.expired:
            minutes = self.config.slack.approval_timeout_minutes
            await self._fail(run, step.id, f"{gate.name} {kind} expired after {minutes:g} minutes without an answer")
        await self._stop_if_cancelled(run, step.id)
        raise RunStopped  # cancelled by a finished run elsewhere

    async def await_decision(self, run: Run, step_id: str, approval_id: str, *, cancellable: bool = True) -> Approval:
        """Wait until the request is decided or expires (bounded by its deadline). ``cancellable``: a cancel of
        the run stops the wait (a revert, which cannot be cancelled, waits on)."""
        wakeup = self._wakeup(run.id)
        while True:
            wakeup.clear()
            approval = await self._db(self.store.get_approval, approval_id)
            if approval.state is not ApprovalState.open:
                return approval
            if cancellable:
                await self._stop_if_cancelled(run, step_id)
            remaining = (approval.expires_at - utcnow()).total_seconds()
            if remaining <= 0:
                if await self._db(self.store.expire_approval, approval_id):
                    self._publish("approval.decided", run, f"{approval.gate} approval expired", step_id)
                continue
            await _woken(wakeup, min(remaining, self.approval_poll_seconds))

    # -- people ----------------------------------------------------------------------------------

    async def decide(self, approval_id: str, user: str, decision: str, comment: str | None = None) -> Reply:
        """An approver's click. Refusals are audited and leave the request open."""
        approval = await self._db(self.store.find_approval, approval_id)
        if approval is None:
            return Reply(False, f"There is no approval request {approval_id!r}; it may belong to another bot.")
        if approval.state is ApprovalState.open and approval.expires_at <= utcnow():
            # Past its deadline but not yet marked (the bot was restarting): it is expired, not decided now.
            await self._db(self.store.expire_approval, approval_id)
            approval = await self._db(self.store.get_approval, approval_id)
        if approval.state is not ApprovalState.open:
            by = ", ".join(as_mention(d.user) for d in approval.decisions) or "the bot"
            return Reply(
                False,
                f"This {approval.gate} request is already {approval.state.value} ({by}); nothing changed.",
            )
        run = await self._db(self.store.get_run, approval.run_id)
        verdict = await self.policy.may_decide(
            user, run, decision, approval.gate, requested_by=approval.evidence.get("requested_by")
        )
        if not verdict.allowed:
            await self._db(self.store.record_refusal, approval_id, user, verdict.reason)
            return Reply(False, f"Not accepted: {verdict.reason}.")
        result = await self._db(
            self.store.record_decision, approval_id, user, decision, comment=comment, person=verdict.person
        )
        self._wakeup(run.id).set()
        approval = result.approval
        messages = {
            DecisionOutcome.granted: f"{approval.gate} {'confirmed' if gate_named(approval.gate).is_confirmation else 'approved'}"
            f" for {run.host}; the run goes on.",
            DecisionOutcome.recorded: f"Approval recorded ({len(approval.approving_people)} of {approval.min_approvals});"
            " waiting for another approver.",
            DecisionOutcome.denied: f"{approval.gate} denied for {run.host}; the run stops.",
            DecisionOutcome.duplicate: "You already approved this request"
            + ("" if user in approval.approvers else " (as another account); one person counts once")
            + "; another approver is needed.",
            DecisionOutcome.closed: f"This request is already {approval.state.value}; nothing changed.",
        }
        ok = result.outcome in (DecisionOutcome.granted, DecisionOutcome.recorded, DecisionOutcome.denied)
        if ok:
            self._publish(
                "approval.decided",
                run,
                f"{user}: {decision} ({result.outcome.value})",
                approval.step,
                approval_id=approval.id,
                outcome=result.outcome.value,
                user=user,
            )
        return Reply(ok, messages[result.outcome])

    async def revert(self, run_id: str, user: str, why: str | None = None) -> Reply:
        """Ask for the revert of an ended run to its snapshot (bot.engine.revert); refused: nothing written."""
        run = await self._db(self.store.find_run, run_id)
        if run is None:
            return Reply(False, f"There is no run {run_id!r}. `/idm-upgrade status` lists active runs.")
        if run.recovery == "revert":
            return Reply(False, f"Run {run_id} is already being reverted; its thread shows where it is.")
        if run.recovery == "reverted":
            return Reply(
                False,
                f"Run {run_id} was already reverted to its snapshot and verified; nothing to revert. Nothing was changed.",
            )
        if run.state.active:
            return Reply(
                False,
                f"Run {run_id} is still {run.state.label}; only a run that ended failed or denied can be reverted.",
            )
        records = await self._db(self.store.steps, run_id)
        if recovery.Offer.revert not in recovery.offers(run, records, self.steps):
            snapshot = recovery.snapshot_taken(records)
            if run.state not in (RunState.failed, RunState.denied) or run.check_only:
                why_not = f"it ended {run.state.label}; only a failed or denied upgrade can be reverted"
            elif snapshot is None:
                why_not = "its snapshot step took no snapshot, so there is nothing to revert to"
            else:
                why_not = (
                    "nothing on the host was changed (the installer did not run, no reboot), so nothing needs a revert"
                )
            return Reply(False, f"Run {run_id} cannot be reverted: {why_not}. Nothing was changed.")
        verdict = await self.policy.may_revert(user, run)
        if not verdict.allowed:
            return Reply(False, f"Not accepted: {verdict.reason}.")
        snapshot = recovery.snapshot_taken(records) or {}
        try:
            reverting = await self._db(self.store.begin_revert, run_id, user, why=why, snapshot=snapshot)
        except HostBusy as exc:
            return Reply(False, f"Not accepted: {exc}. Nothing was reverted.")
        if reverting is None:
            return Reply(False, f"Run {run_id} is already being reverted or was reopened; nothing was changed.")
        self._publish("revert.requested", reverting, f"revert to snapshot '{snapshot.get('name')}' asked by {user}")
        self._spawn(reverting.batch_id)
        return Reply(
            True,
            f"Revert of {run.host} to snapshot '{snapshot.get('name')}' asked; approvers decide in the run's thread.",
        )

    async def cancel(self, run_id: str, user: str) -> Reply:
        run = await self._db(self.store.find_run, run_id)
        if run is None:
            return Reply(False, f"There is no run {run_id!r}. `/idm-upgrade status` lists active runs.")
        if not run.state.active:
            return Reply(False, f"Run {run_id} already ended ({run.state.label}); nothing to cancel.")
        if run.recovery == "revert":  # bot.engine.revert has no safe point to stop at once the VM is reverting
            return Reply(
                False,
                f"Run {run_id} is being reverted to its snapshot, which cannot be cancelled; an approver may deny "
                "its revert request while it is open. Nothing was changed.",
            )
        verdict = await self.policy.may_cancel(user, run)
        if not verdict.allowed:
            return Reply(False, f"Not accepted: {verdict.reason}.")
        if run.cancel_requested_by:
            return Reply(True, f"Cancel of {run_id} was already requested by {as_mention(run.cancel_requested_by)}.")
        await self._db(self.store.request_cancel, run_id, user)
        cancelled = await self._db(
            self.store.set_run_state,
            run_id,
            RunState.cancelled,
            actor=user,
            event="run.cancelled",
            result=f"cancelled by {user} before it started",
            expect=_NOT_STARTED,
        )
        self._wakeup(run_id).set()  # a scheduled run's batch wakes, sees it and abandons the rest
        if cancelled:
            await self._ended(cancelled, f"cancelled by {user} before it started")
            return Reply(True, f"Run {run_id} on {run.host} cancelled before it started.")
        return Reply(
            True,
            f"Cancelling run {run_id} on {run.host}: it stops at the next safe point "
            "(now if it waits for approval, otherwise when the current step ends).",
        )

    async def retry(self, run_id: str, user: str, why: str | None = None) -> Reply:
        """Try a failed run again from its failed step (check → gate → apply → verify; the steps that
        succeeded are not repeated), as its next attempt. Only this run: the rest of its batch, abandoned
        when it failed, stays cancelled. Every refusal changes nothing."""
        run = await self._db(self.store.find_run, run_id)
        if run is None:
            return Reply(False, f"There is no run {run_id!r}. `/idm-upgrade history` lists the recent runs.")
        records = await self._db(self.store.steps, run_id)
        if recovery.Offer.retry not in recovery.offers(run, records, self.steps):  # the card's rule, in words
            return Reply(False, retry_refusal(run) or f"Run {run_id} cannot be retried.")
        verdict = await self.policy.may_retry(user, run)
        if not verdict.allowed:
            return Reply(False, f"Not accepted: {verdict.reason}.")
        try:
            retried = await self._db(self.store.retry_run, run_id, user, why or "no reason given")
        except HostBusy as exc:
            return Reply(False, f"Not retried: {exc}. Run {run_id} is unchanged.")
        except NotRetriable as exc:  # it changed between the look above and the transaction
            return Reply(False, f"Not retried: {exc}.")
        step = next((s for s in await self._db(self.store.steps, run_id) if s.state is StepState.pending), None)
        title = self.steps[step.step].title if step and step.step in self.steps else "the failed step"
        self._publish("run.retried", retried, f"retried by {user} (attempt {retried.attempt})")
        self._spawn_after(retried.batch_id)
        rest = [
            r.host
            for r in await self._db(self.store.batch, run.batch_id)
            if r.batch_position > run.batch_position and r.state is RunState.cancelled
        ]
        later = (
            f" The rest of its batch stays cancelled ({', '.join(rest)}): start {'it' if len(rest) == 1 else 'them'}"
            " again with a new request once this run has succeeded."
            if rest
            else ""
        )
        return Reply(
            True,
            f"Retrying run {run_id} on {run.host} (attempt {retried.attempt}) from its step “{title}”: it checks the host "
            f"again, asks again for any approval it needs, and the steps that succeeded are not repeated.{later}",
        )


def retry_refusal(run: Run) -> str | None:
    """Why ``run`` may not be retried (bot.engine.recovery's rule, in words), or None."""
    if run.check_only:
        return f"Run {run.id} was a dry run; it changed nothing. Ask for a new check instead."
    if run.recovery == "reverted":
        return (
            f"Run {run.id} was reverted to its snapshot: the host is as it was before the run, so there is "
            "nothing to resume. Ask for a new run instead."
        )
    if run.recovery is not None:
        return f"Run {run.id} is being reverted to its snapshot; it cannot be retried meanwhile."
    if run.state is RunState.denied:
        return (
            f"Run {run.id} was denied: a person refused one of its approvals, so retrying would only ask them "
            "again; ask for a new run instead."
        )
    if run.state.active:
        return f"Run {run.id} is still {run.state.label}; only a failed run can be retried."
    if run.state is not RunState.failed:
        return f"Run {run.id} ended {run.state.label}; only a failed run can be retried."
    return None


# Runs that have not started: cancelled at once, and abandoned with the rest of their batch.
_NOT_STARTED = frozenset({RunState.queued, RunState.scheduled})


async def _woken(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. asyncio.timeout, not wait_for: on Python 3.11 wait_for can
    swallow a cancel that arrives as the event is set, and the task would not stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def as_mention(user: str) -> str:
    """A Slack account as a mention in a reply to a person (Slack shows the name); anyone else (cli:…) as is."""
    return f"<@{user}>" if _SLACK_USER.fullmatch(user) else user


def difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    """In words, which parts of a change differ: ``directories: [...] → [...]``, shortened."""

    def short(value: Any) -> str:
        text = words(value)
        return text if len(text) <= 200 else text[:199] + "…"

    parts = [
        f"{key}: {short(before.get(key))} → {short(now.get(key))}"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]
    return "; ".join(parts) or "a request from before changes were bound to requests"


def words(value: Any) -> str:
    """A value of a change as people read it: a directory as ``name (id)``, a list comma-separated, a
    mapping as ``key: value`` pairs; never Python's or JSON's notation."""
    if isinstance(value, list):
        return ", ".join(words(v) for v in value) or "none"
    if isinstance(value, dict):
        if "name" in value and "id" in value:
            return f"{value['name']} ({value['id']})"
        return ", ".join(f"{k}: {words(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "none" if value is None else str(value)
