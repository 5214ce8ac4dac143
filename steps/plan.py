"""The nine steps of the vendor procedure, in order (DESIGN.md section 2)."""

from __future__ import annotations

from steps.base import Step
from steps.install import Install
from steps.preflight import Preflight
from steps.reboot import Reboot
from steps.service import Service
from steps.snapshot import Snapshot
from steps.stage import Stage
from steps.starttls import PostCheck, StartTls
from steps.verify import Verify


def upgrade_plan() -> dict[str, Step]:
    steps: list[Step] = [
        Preflight(),
        Snapshot(),
        StartTls(),
        Stage(),
        Install(),
        Service(),
        Reboot(),
        Verify(),
        PostCheck(),
    ]
    return {step.id: step for step in steps}
