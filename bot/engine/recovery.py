"""What an ended run offers next: **Retry** (from its failed step) and **Revert to snapshot** (issue 20).

One rule, read by the run card (which buttons it shows), the terminal and the engine (which refuses a
click the rule does not allow, whatever button it came from):

- retry: a run that *failed* (not denied: a person refused, trying again would only ask them again; not
  cancelled) and is not reverting. The same run resumes from its failed step's check.
- neither, once a revert was verified (``recovery == "reverted"``): the host is as it was before the run.
- revert: a run that ended *failed or denied* after its snapshot step took a snapshot (by vCenter or by a
  person) and a step that changes the host itself (install, reboot) changed something. Nothing else is
  undone by a revert (``bot.engine.outcome``), so without such a change there is nothing to offer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from bot.core.models import Run, RunState, StepRecord, StepState
from bot.engine.outcome import outcome_of
from steps.base import Step

SNAPSHOT_STEP = "snapshot"


class Offer(StrEnum):
    retry = "retry"
    revert = "revert"


def snapshot_taken(records: Iterable[StepRecord]) -> dict[str, Any] | None:
    """The snapshot the run's snapshot step took (name, id, vm; ``manual`` when a person took it), or None."""
    for record in records:
        if record.step != SNAPSHOT_STEP or record.state not in (StepState.succeeded, StepState.skipped):
            continue
        snapshot = record.facts.get("snapshot")
        if isinstance(snapshot, dict) and snapshot.get("name"):
            return {**snapshot, **({"manual": True} if record.facts.get("manual") else {})}
    return None


def offers(run: Run, records: list[StepRecord], steps: Mapping[str, Step]) -> list[Offer]:
    """What ``run`` offers now, in the order its buttons show."""
    if run.state.active or run.recovery is not None or run.check_only:
        return []
    found: list[Offer] = []
    if run.state is RunState.failed:
        found.append(Offer.retry)
    if (
        run.state in (RunState.failed, RunState.denied)
        and snapshot_taken(records) is not None
        and outcome_of(steps, records).host_changed
    ):
        found.append(Offer.revert)
    return found
