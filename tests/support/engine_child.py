"""A bot process for crash tests: `python -m tests.support.engine_child CONFIG HOSTDIR start|resume|schedule
[approve|deny|none] [WHEN]`.

`start` queues host01 and drives it; `resume` only resumes what the database holds; `schedule` schedules
host01 for WHEN (an ISO time) and waits for it; `retry` retries the database's one failed run (as REQUESTER).
IDM_UPGRADE_TEST_FAIL=STEP:PHASE makes that fake step fail in that phase (check, apply, verify). Every approval
request is answered by APPROVER (`approve`, `deny`, or `none`: nobody answers), as a person would click.
The parent kills this process with IDM_UPGRADE_KILL_AT set, then runs it again with `resume`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime

from bot.core.config import Secrets, load_config
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import Engine
from bot.runtime import Runtime
from bot.systems.services import Services
from bot.systems.winrm import WinRMExecutor
from tests.support.configs import APPROVER, REQUESTER
from tests.support.fake_steps import gated_plan


class ClickingApprover:
    def __init__(self, decision: str):
        self.decision = decision
        self.engine: Engine | None = None

    async def deliver(self, event) -> None:
        if event.kind == "approval.requested" and self.decision != "none":
            await self.engine.decide(event.data["approval_id"], APPROVER, self.decision)


async def main(config_path: str, host_dir: str, mode: str, decision: str, when: str | None = None) -> int:
    config = load_config(config_path)
    approver = ClickingApprover(decision)
    step, _, phase = os.environ.get("IDM_UPGRADE_TEST_FAIL", "").partition(":")
    fail = {step: phase} if step else {}
    # The runtime injects IDM_UPGRADE_KILL_AT / IDM_UPGRADE_TRACE from the parent as the store's hooks.
    runtime = Runtime.build(
        config,
        Secrets(),
        policy=ApprovalPolicy(config.slack),
        sinks=[approver],
        # the fake steps never reach a host; the executor is there because every runtime has one
        services=Services(
            winrm=WinRMExecutor(config, Secrets.from_env({"WINRM_USERNAME": "-", "WINRM_PASSWORD": "-"}))
        ),
        plan=gated_plan(host_dir, **fail),
        approval_poll_seconds=0.05,
    )
    engine = approver.engine = runtime.engine
    await engine.start()
    if mode == "start":
        await engine.submit(["host01"], REQUESTER)
    if mode == "schedule" and when:
        await engine.submit(["host01"], REQUESTER, scheduled_for=datetime.fromisoformat(when))
    if mode == "retry":
        [failed] = [r for r in runtime.store.runs() if r.state.value == "failed"]
        reply = await engine.retry(failed.id, REQUESTER, "crash test")
        assert reply.ok, reply.message
    await engine.join()
    await runtime.close()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    decision = args[3] if args[3:] else "approve"
    sys.exit(asyncio.run(main(args[0], args[1], args[2], decision, args[4] if args[4:] else None)))
