"""The gates a run can stop at for a person: what each is called, what kind it is, its button, its words.

An **approval** asks a person to allow a change the bot then makes (STARTTLS off, the install, a reboot); approvers
decide it. A **confirmation** asks a person to say they did something by hand (a snapshot, a console
change); the requester may give it too. Steps, the approval policy, Slack and the terminal all read
these, so adding a gate is one entry here and the step that asks for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# What a request shows a person, in this order, wherever it is shown (Slack, the terminal). A step's
# evidence may carry more (facts for the audit trail); these are the keys people read.
EVIDENCE_SHOWN = ("what_changes", "what_to_do", "why", "directories", "verified_so_far")


class GateKind(StrEnum):
    approval = "approval"
    confirmation = "confirmation"


@dataclass(frozen=True)
class Gate:
    name: str  # stored with the request, shown in its text ("STARTTLS approval needed for host01")
    kind: GateKind
    button: str = "approve"  # action_id of the yes-button; the no-button is always "deny"
    button_label: str = "Approve"
    deny_label: str = "Deny"
    # Asked at the terminal: the change itself in words ("turn STARTTLS off", not "approve STARTTLS"), then
    # what to type, since there is no button to click there.
    question: str = "Approve {gate} on {host}?"

    @property
    def is_confirmation(self) -> bool:
        return self.kind is GateKind.confirmation

    def ask(self, host: str) -> str:
        return self.question.format(gate=self.name, host=host)

    def prompt(self, host: str) -> str:
        """The question and the answers to type, as the terminal (and the sandbox's prompt) asks it."""
        if self.is_confirmation:
            typed = f'type y for "{self.button_label}", n for "{self.deny_label}"'
        else:
            typed = "type y to approve, n to deny"
        return f"{self.ask(host)} ({typed}) [y/N] "


STARTTLS = Gate(
    "STARTTLS",
    GateKind.approval,
    question="Turn STARTTLS off on the AD-over-IWA directories (tenant-wide), before upgrading {host}?",
)
REBOOT = Gate("reboot", GateKind.approval, question="Reboot {host} now?")
INSTALL = Gate(  # only with policy.approve_install (the default)
    "install",
    GateKind.approval,
    question="Run the connector installer on {host} now (the connector stops and restarts)?",
)
# Asked when a run's maintenance window closed before its reboot: a person may allow the reboot now rather
# than wait for the next opening. The change it is bound to names the window and when it closed.
REBOOT_OUTSIDE_WINDOW = Gate(
    "reboot outside window", GateKind.approval, question="Reboot {host} now, outside its maintenance window?"
)
PENDING_REBOOT = Gate(
    "pending reboot", GateKind.approval, question="Go on with {host} although Windows already waits for a reboot?"
)
SNAPSHOT = Gate(
    "snapshot",
    GateKind.confirmation,
    button="snapshot_taken",
    button_label="Snapshot taken",
    deny_label="Cannot do it",
    question="Have you taken the snapshot of {host} described above?",
)
STARTTLS_CONSOLE = Gate(
    "STARTTLS console",
    GateKind.confirmation,
    button_label="Done",
    deny_label="Cannot do it",
    question="Have you turned STARTTLS off in the console as described above, for {host}?",
)

# Revert to snapshot (issue 20): approvers allow it (not the person who asked for it, unless
# slack.allow_self_approval), bound to the snapshot id it shows. Without vCenter (or a snapshot a person took)
# a person then reverts the VM by hand and confirms.
REVERT = Gate(
    "revert",
    GateKind.approval,
    question="Revert {host} to its snapshot now (everything on the server since the snapshot is undone)?",
)
REVERT_BY_HAND = Gate(
    "revert by hand",
    GateKind.confirmation,
    button_label="Reverted and powered on",
    deny_label="Cannot do it",
    question="Have you reverted the VM of {host} to the snapshot described above and powered it on?",
)

GATES: dict[str, Gate] = {
    g.name: g
    for g in (
        STARTTLS,
        REBOOT,
        REBOOT_OUTSIDE_WINDOW,
        INSTALL,
        PENDING_REBOOT,
        SNAPSHOT,
        STARTTLS_CONSOLE,
        REVERT,
        REVERT_BY_HAND,
    )
}


def gate_named(name: str) -> Gate:
    """The gate a stored request names. An unknown name is an approval: the stricter reading."""
    return GATES.get(name) or Gate(name, GateKind.approval)


def change_digest(change: dict[str, Any]) -> str:
    """The digest a request is bound to: sha256 of the change's canonical JSON (sorted keys, no spaces).

    The same change always gives the same digest, so a request can be compared with what a step would
    do now (after a restart, after a person took their time): a different digest is a different change.
    """
    text = json.dumps(change, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
