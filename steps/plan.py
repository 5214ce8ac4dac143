"""The nine steps of the vendor procedure, in order (DESIGN.md section 2)."""

from __future__ import annotations

from steps.base import Step
from steps.install import Install
from steps.preflight import Preflight
from steps.reboot import Reboot
from steps.service import Service
from steps.stage import Stage
from steps.unavailable import NotAvailable
from steps.verify import Verify

CONSOLE_PATH = (
    "Identity & Access Management > Manage > Directories > each Active Directory over IWA directory > "
    "clear 'This directory requires all connections to use STARTTLS' > Save"
)


def upgrade_plan() -> dict[str, Step]:
    steps: list[Step] = [
        Preflight(),
        NotAvailable("snapshot", "Snapshot the virtual machine", "take a VM snapshot in vCenter before the upgrade"),
        NotAvailable("starttls", "Turn STARTTLS off on AD-over-IWA directories", CONSOLE_PATH),
        Stage(),
        Install(),
        Service(),
        Reboot(),
        Verify(),
        NotAvailable(
            "postcheck",
            "Check STARTTLS stays off",
            "confirm STARTTLS is still off on every AD-over-IWA directory, and never turn it back on",
        ),
    ]
    return {step.id: step for step in steps}
