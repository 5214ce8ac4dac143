"""Test steps whose "host" is a JSON file, so effects survive a SIGKILL and can be counted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bot.core.gates import REBOOT, STARTTLS, Gate, gate_named
from bot.core.models import StepRecord
from steps.base import CheckResult, Step, StepContext, StepFailed, VerifyResult


class FileHost:
    """A host's state (one JSON file) and a log of every apply, both fsynced."""

    def __init__(self, directory: str | Path, host: str):
        self.state_path = Path(directory) / f"{host}.json"
        self.log_path = Path(directory) / f"{host}.applies"

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}

    def set(self, key: str, value: Any) -> None:
        state = {**self.state(), key: value}
        tmp = self.state_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def log_apply(self, step: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(step + "\n")
            f.flush()
            os.fsync(f.fileno())

    def applies(self) -> list[str]:
        try:
            return self.log_path.read_text().split()
        except FileNotFoundError:
            return []


class FileStep(Step):
    """Sets ``state[id] = True`` on its host; check reads it, verify proves it."""

    def __init__(self, step_id: str, directory: str | Path, gate: Gate | str | None = None, fail: str | None = None):
        self.id = step_id
        self.title = f"Step {step_id}"
        self.gate = gate_named(gate) if isinstance(gate, str) else gate
        self.directory = directory
        self.fail = fail  # "check", "apply" or "verify": fail in that phase

    def host(self, ctx: StepContext) -> FileHost:
        return FileHost(self.directory, ctx.host)

    async def check(self, ctx: StepContext) -> CheckResult:
        if self.fail == "check":
            raise StepFailed(f"{self.id}: the host is unfit (test)")
        done = self.host(ctx).state().get(self.id, False)
        return CheckResult(not done, f"{self.id} already done" if done else f"{self.id} will be set", {"seen": done})

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        host = self.host(ctx)
        host.log_apply(self.id)
        if self.fail == "apply":
            raise StepFailed(f"{self.id}: apply failed (test)", {"exit_code": 1603})
        host.set(self.id, True)
        return {"applied_by_pid": os.getpid()}

    def changed(self, record: StepRecord) -> str | None:
        # each apply writes to the file host: a change, said as a real step says its own
        return f"{self.id} applied" if record.applied else None

    async def verify(self, ctx: StepContext) -> VerifyResult:
        ok = self.host(ctx).state().get(self.id, False) and self.fail != "verify"
        return VerifyResult(bool(ok), f"{self.id} is set" if ok else f"{self.id} is not set")


class ItemsStep(Step):
    """Turns off each item listed on its host that is on (like directories with STARTTLS on); its change
    is the list of those items, and apply changes only the items the grant named."""

    id = "items"
    title = "Turn items off"
    gate = STARTTLS

    def __init__(self, directory):
        self.directory = directory

    def host(self, ctx: StepContext) -> FileHost:
        return FileHost(self.directory, ctx.host)

    def on(self, ctx: StepContext) -> list[str]:
        return sorted(k for k, v in self.host(ctx).state().get("items", {}).items() if v)

    async def check(self, ctx: StepContext) -> CheckResult:
        on = self.on(ctx)
        return CheckResult(bool(on), f"on: {on}", {"on": on})

    def change(self, ctx: StepContext, check: CheckResult) -> dict[str, Any]:
        return {"items": check.facts["on"]}

    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        host = self.host(ctx)
        granted = set((ctx.approved or {}).get("items", []))
        items = host.state().get("items", {})
        host.set("items", {k: (v and k not in granted) for k, v in items.items()})
        for item in sorted(granted & set(items)):
            host.log_apply(item)
        return {"changed": sorted(granted)}

    async def verify(self, ctx: StepContext) -> VerifyResult:
        on = self.on(ctx)
        return VerifyResult(not on, "all off" if not on else f"still on: {on}")


def gated_plan(directory: str | Path, **fail: str) -> dict[str, Step]:
    """The 4-step plan used by engine tests: two ungated steps and two gates, like the real one."""
    specs = [("alpha", None), ("bravo", STARTTLS), ("charlie", None), ("delta", REBOOT)]
    return {sid: FileStep(sid, directory, gate, fail.get(sid)) for sid, gate in specs}
