"""`idm-upgrade run`: the engine driven from a terminal when Slack is not available.

The person at the terminal is the approver: each gate is asked at the prompt and recorded in the
audit trail as ``cli:<os user>``. ``--yes`` may answer gates only when ``terminal.allow_yes`` says so.
"""

from __future__ import annotations

import sys
from typing import TextIO

from bot.core.config import Config, Secrets
from bot.core.models import Run, RunState
from bot.engine.admission import Refused, Request
from bot.engine.approvals import ApprovalPolicy, Verdict
from bot.engine.dry_run import plan_lines, stored_plan
from bot.engine.recap import recap_line, recap_text
from bot.runtime import Runtime
from bot.store.lease import EngineBusy
from bot.store.store import HostBusy
from bot.systems.services import Services
from bot.terminal.view import TerminalView, shown_value, terminal_actor

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class TerminalPolicy(ApprovalPolicy):
    """At the terminal the operator present decides; Slack's approver list does not apply there."""

    async def may_decide(
        self, user: str, run: Run, decision: str, gate: str = "", requested_by: str | None = None
    ) -> Verdict:
        if user == terminal_actor():
            return Verdict(True)
        return await super().may_decide(user, run, decision, gate, requested_by)


def terminal_runtime(config: Config, view: TerminalView, services: Services | None, err: TextIO) -> Runtime | None:
    """The runtime a terminal command drives, its approvals asked at ``view``'s prompt; None (the reason
    written to ``err``) when another process holds the database or the configuration is unusable."""
    try:
        runtime = Runtime.build(
            config, Secrets.from_env(), policy=TerminalPolicy(config.slack), sinks=[view], services=services
        )
    except (EngineBusy, ValueError) as exc:
        err.write(f"idm-upgrade: {exc}\n")
        return None
    view.engine = runtime.engine
    return runtime


async def run_from_terminal(
    config: Config,
    hosts: list[str],
    *,
    check_only: bool,
    yes: bool,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    services: Services | None = None,
    ticket: str | None = None,
) -> int:
    out = out or sys.stdout
    err = sys.stderr
    unknown = [h for h in hosts if h not in config.hosts]
    if unknown:
        err.write(f"idm-upgrade: unknown host(s): {', '.join(unknown)}; configured: {', '.join(config.hosts)}\n")
        return EXIT_USAGE
    if len(set(hosts)) != len(hosts):
        err.write("idm-upgrade: a host is named more than once\n")
        return EXIT_USAGE
    if yes and not config.terminal.allow_yes:
        err.write(
            "idm-upgrade: --yes cannot answer the STARTTLS and reboot approvals unless terminal.allow_yes = true "
            "in the configuration; run without --yes and answer at the prompt\n"
        )
        return EXIT_USAGE
    view = TerminalView(out, auto_yes=yes, stdin=stdin or sys.stdin)
    runtime = terminal_runtime(config, view, services, err)
    if runtime is None:
        return EXIT_USAGE
    store, engine = runtime.store, runtime.engine
    try:
        resumed = await engine.start()
        mine = {r.host: r for r in resumed if r.host in hosts}
        for run in mine.values():
            view.line(f"{run.host:<12} {'':<10} resuming unfinished run {run.id} ({run.state.label})")
        fresh = [h for h in hosts if h not in mine]
        runs = list(mine.values())
        if fresh:
            try:
                await engine.admission.admit(Request(fresh, terminal_actor(), check_only, ticket))
                runs += await engine.submit(fresh, terminal_actor(), check_only=check_only, ticket=ticket)
            except (HostBusy, Refused) as exc:
                err.write(f"idm-upgrade: {exc}\n")
                return EXIT_USAGE
        await engine.join()
        finals = [store.get_run(r.id) for r in runs]
        out.write("\n")
        for run in finals:
            if run.check_only and (plan := stored_plan(store.steps(run.id))):
                out.write("\n".join(plan_lines(plan, f"you, at the prompt ({terminal_actor()})")) + "\n\n")
        for run in finals:
            ticket_note = f", ticket {shown_value(run.ticket)}" if run.ticket else ""
            out.write(f"{run.host}: {run.state.label} ({run.id}{ticket_note}): {run.result}\n")
        if len(finals) > 1:
            lines = [recap_line(r, store.steps(r.id), engine.read_only_steps) for r in finals]
            out.write(f"\nRECAP\n{recap_text(lines)}\n")
        verdict = store.verify_audit()
        out.write(f"{verdict}\n")
        return EXIT_OK if all(r.state is RunState.succeeded for r in finals) and verdict.ok else EXIT_FAILED
    finally:
        await runtime.close()
