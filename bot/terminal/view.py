"""What the person at the terminal sees and answers: one line per event, and each gate asked at the prompt."""

from __future__ import annotations

import asyncio
import getpass
import re
import sys
import threading
import time
from typing import TextIO

from bot.core.gates import EVIDENCE_SHOWN, Gate, gate_named
from bot.engine.engine import Engine
from bot.engine.events import ProgressEvent


def terminal_actor() -> str:
    return f"cli:{getpass.getuser()}"


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
        for key in EVIDENCE_SHOWN:
            if key in evidence:
                text = at_the_terminal(shown_value(evidence[key]), gate_named(gate))
                self.out.write(f"  {key.replace('_', ' ')}: {text}\n")
        if event.data.get("digest"):
            self.out.write(f"  change digest: {event.data['digest']}\n")
        assert self.engine is not None, "the view is given its engine before the engine starts"
        run = await self.engine.store.call(self.engine.store.find_run, event.run_id)
        if run is not None and run.ticket:  # the change that authorizes the work, as in Slack's request
            self.out.write(f"  change ticket: {shown_value(run.ticket)}\n")
        if self.auto_yes:
            self.out.write("  approved by --yes (terminal.allow_yes = true)\n\n")
            answer = "y"
        else:
            self.out.write("  " + gate_named(gate).prompt(event.host))
            self.out.flush()
            if self._lines is None:
                self._lines = StdinLines(self.stdin)
            answer = (await self._lines.readline() or "").strip().lower()
            self.out.write("\n")
        decision = "approve" if answer in ("y", "yes") else "deny"
        assert self.engine is not None, "the view is given its engine before the engine starts"
        reply = await self.engine.decide(approval_id, terminal_actor(), decision)
        self.line(f"{event.host:<12} {event.step or '':<10} {reply.message}")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown_value(value: object) -> str:
    """Evidence as a person reads it: a directory by name and id, a mapping as `key: value`, never raw JSON.
    Control characters from outside (a directory's name, host output) are shown as escapes, not obeyed."""
    if isinstance(value, list):
        text = "; ".join(shown_value(item) for item in value)
    elif isinstance(value, dict) and "name" in value and "id" in value:
        text = f"{value['name']} ({value['id']})"
    elif isinstance(value, dict):
        text = ", ".join(f"{str(k).replace('_', ' ')}: {shown_value(v)}" for k, v in value.items())
    else:
        text = str(value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def at_the_terminal(text: str, gate: Gate) -> str:
    """Slack's "click Snapshot taken" said for the terminal, where the answer is typed at the prompt below."""
    button = re.compile(rf"\bclick \*?{re.escape(gate.button_label)}\*?", re.IGNORECASE)
    return button.sub(f'answer y below ("{gate.button_label}")', text)


class TerminalSink:
    """One line per event, for `idm-upgrade run` and logs."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    async def deliver(self, event: ProgressEvent) -> None:
        where = f"{event.host}" + (f" {event.step}" if event.step else "")
        self.out.write(f"[{event.run_id} {where}] {event.text}\n")
        self.out.flush()
