"""`idm-upgrade run`: the engine driven from a terminal when Slack is not available.

The person at the terminal is the approver: each gate is asked at the prompt and recorded in the
audit trail as ``cli:<os user>``. ``--yes`` may answer gates only when ``terminal.allow_yes`` says so.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import threading
import time
from typing import TextIO

from bot.core.config import Config, Secrets
from bot.core.gates import gate_named
from bot.core.models import Run, RunState
from bot.engine.approvals import ApprovalPolicy, Verdict
from bot.engine.engine import Engine
from bot.engine.events import ProgressEvent
from bot.runtime import Runtime
from bot.store.lease import EngineBusy
from bot.store.store import HostBusy
from bot.systems.services import Services

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def terminal_actor() -> str:
    return f"cli:{getpass.getuser()}"


class TerminalPolicy(ApprovalPolicy):
    """At the terminal the operator present decides; Slack's approver list does not apply there."""

    async def may_decide(self, user: str, run: Run, decision: str, gate: str = "") -> Verdict:
        if user == terminal_actor():
            return Verdict(True)
        return await super().may_decide(user, run, decision, gate)


class StdinLines:
    """Lines typed at the terminal, read by a daemon thread so the event loop never waits on input."""

    def __init__(self, stream: TextIO):
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for line in stream:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(self.queue.put_nowait, None)

        threading.Thread(target=pump, name="stdin", daemon=True).start()

    async def readline(self) -> str | None:
        return await self.queue.get()


class TerminalView:
    """A readable live view: one line per event with the elapsed time, the step and its state."""

    def __init__(self, out: TextIO, engine: Engine | None = None, *, auto_yes: bool = False, stdin: TextIO):
        self.out, self.engine, self.auto_yes, self.stdin = out, engine, auto_yes, stdin
        self.started = time.monotonic()
        self._lines: StdinLines | None = None

    def line(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        self.out.write(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}\n")
        self.out.flush()

    async def deliver(self, event: ProgressEvent) -> None:
        step = f"{event.step:<10}" if event.step else " " * 10
        self.line(f"{event.host:<12} {step} {event.text}")
        if event.kind == "approval.requested":
            await self._ask(event)

    async def _ask(self, event: ProgressEvent) -> None:
        gate, approval_id = event.data["gate"], event.data["approval_id"]
        kind = event.data.get("request_kind", "approval")
        evidence = event.data.get("evidence", {})
        self.out.write(f"\n  {gate.upper()} {kind.upper()} for {event.host} (request {approval_id})\n")
        for key in ("what_changes", "what_to_do", "directories", "why", "verified_so_far"):
            if key in evidence:
                value = evidence[key]
                if isinstance(value, str):
                    text = value
                elif isinstance(value, list):
                    text = "; ".join(str(v) for v in value)
                else:
                    text = json.dumps(value, ensure_ascii=False)
                self.out.write(f"  {key.replace('_', ' ')}: {text}\n")
        if self.auto_yes:
            self.out.write("  approved by --yes (terminal.allow_yes = true)\n\n")
            answer = "y"
        else:
            question = gate_named(gate).ask(event.host)
            self.out.write(f"  {question} [y/N] ")
            self.out.flush()
            if self._lines is None:
                self._lines = StdinLines(self.stdin)
            answer = (await self._lines.readline() or "").strip().lower()
            self.out.write("\n")
        decision = "approve" if answer in ("y", "yes") else "deny"
        assert self.engine is not None, "the view is given its engine before the engine starts"
        reply = await self.engine.decide(approval_id, terminal_actor(), decision)
        self.line(f"{event.host:<12} {event.step or '':<10} {reply.message}")


async def run_from_terminal(
    config: Config,
    hosts: list[str],
    *,
    check_only: bool,
    yes: bool,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    services: Services | None = None,
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
    try:
        runtime = Runtime.build(
            config, Secrets.from_env(), policy=TerminalPolicy(config.slack), sinks=[view], services=services
        )
    except (EngineBusy, ValueError) as exc:
        err.write(f"idm-upgrade: {exc}\n")
        return EXIT_USAGE
    store, engine = runtime.store, runtime.engine
    view.engine = engine
    try:
        resumed = await engine.start()
        mine = {r.host: r for r in resumed if r.host in hosts}
        for run in mine.values():
            view.line(f"{run.host:<12} {'':<10} resuming unfinished run {run.id} ({run.state.label})")
        fresh = [h for h in hosts if h not in mine]
        runs = list(mine.values())
        if fresh:
            try:
                runs += await engine.submit(fresh, terminal_actor(), check_only=check_only)
            except HostBusy as exc:
                err.write(f"idm-upgrade: {exc}\n")
                return EXIT_USAGE
        await engine.join()
        finals = [store.get_run(r.id) for r in runs]
        out.write("\n")
        for run in finals:
            out.write(f"{run.host}: {run.state.label} ({run.id}): {run.result}\n")
        verdict = store.verify_audit()
        out.write(f"{verdict}\n")
        return EXIT_OK if all(r.state is RunState.succeeded for r in finals) and verdict.ok else EXIT_FAILED
    finally:
        await runtime.close()
