"""A bot process for crash tests: `python -m tests.support.engine_child CONFIG HOSTDIR start|resume [approve|deny|none]`.

`start` queues host01 and drives it; `resume` only resumes what the database holds. Every approval
request is answered by APPROVER (`approve`, `deny`, or `none`: nobody answers), as a person would click.
The parent kills this process with IDM_UPGRADE_KILL_AT set, then runs it again with `resume`.
"""

from __future__ import annotations

import asyncio
import sys

from bot.core.config import load_config
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import Engine
from bot.store.killpoints import KillPoints
from bot.store.store import Store
from tests.support.configs import APPROVER, REQUESTER
from tests.support.fake_steps import gated_plan


class ClickingApprover:
    def __init__(self, decision: str):
        self.decision = decision
        self.engine: Engine | None = None

    async def deliver(self, event) -> None:
        if event.kind == "approval.requested" and self.decision != "none":
            await self.engine.decide(event.data["approval_id"], APPROVER, self.decision)


async def main(config_path: str, host_dir: str, mode: str, decision: str) -> int:
    config = load_config(config_path)
    approver = ClickingApprover(decision)
    engine = Engine(
        Store(config.database.path, hooks=KillPoints()),  # IDM_UPGRADE_KILL_AT / _TRACE from the parent
        config,
        gated_plan(host_dir),
        policy=ApprovalPolicy(config.slack),
        sinks=[approver],
        approval_poll_seconds=0.05,
    )
    approver.engine = engine
    await engine.start()
    if mode == "start":
        await engine.submit(["host01"], REQUESTER)
    await engine.join()
    await engine.stop()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    decision = args[3] if args[3:] else "approve"
    sys.exit(asyncio.run(main(args[0], args[1], args[2], decision)))
