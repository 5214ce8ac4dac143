"""What a run changed and what it left alone, in words for its final message, from its step records.

Each step says what it changed (``Step.changed``) and what it would have changed but did not
(``Step.unchanged``). A snapshot revert is worth suggesting only when a step that changes the host itself
(the installer, a reboot: ``Step.changes_host``) did: a snapshot taken, an installer downloaded or a
tenant setting are not undone by reverting the VM, and nothing else needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.core.models import StepRecord
from steps.base import Step


@dataclass(frozen=True)
class Outcome:
    changed: list[str]
    unchanged: list[str]
    host_changed: bool

    def lines(self) -> list[str]:
        """For the end of a run that did not succeed: what the operator finds, changed and not."""
        lines = [f"Changed: {'; '.join(self.changed)}" if self.changed else "Nothing was changed"]
        if self.unchanged:
            lines.append(f"Not changed: {'; '.join(self.unchanged)}")
        return lines


def outcome_of(steps: Mapping[str, Step], records: Iterable[StepRecord]) -> Outcome:
    changed: list[str] = []
    unchanged: list[str] = []
    host_changed = False
    for record in records:
        step = steps.get(record.step)
        if step is None:
            continue
        if (what := step.changed(record)) is not None:
            changed.append(what)
            host_changed = host_changed or step.changes_host
        elif (left := step.unchanged(record)) is not None:
            unchanged.append(left)
    return Outcome(changed, unchanged, host_changed)
