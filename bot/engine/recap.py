"""A batch's recap, like Ansible's PLAY RECAP: per host the run, its state, and its steps counted.

Derived from the store (the runs and their step records) whenever it is shown, so the Slack message and
the terminal say the same and a restart recomputes it instead of remembering it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.core.models import Run, RunState, StepRecord, StepState


@dataclass(frozen=True)
class RecapLine:
    host: str
    run_id: str
    state: RunState
    ok: int  # finished without changing anything (read-only steps, or nothing to do)
    changed: int  # changed the host or the tenant
    skipped: int  # skipped, not available to the bot, or not reached
    failed: int

    def text(self, width: int = 12) -> str:
        return (
            f"{self.host:<{width}} : ok={self.ok:<3} changed={self.changed:<3} skipped={self.skipped:<3} "
            f"failed={self.failed:<3} {self.state.label} ({self.run_id})"
        )


def recap_line(run: Run, steps: Iterable[StepRecord], read_only: frozenset[str]) -> RecapLine:
    ok = changed = skipped = failed = 0
    for record in steps:
        if record.state is StepState.succeeded:
            if record.applied and record.step not in read_only:
                changed += 1
            else:
                ok += 1
        elif record.state is StepState.failed:
            failed += 1
        else:  # skipped, unavailable, cancelled, or never reached because the run ended before it
            skipped += 1
    return RecapLine(run.host, run.id, run.state, ok, changed, skipped, failed)


def batch_recap(
    runs: Iterable[Run], steps: Mapping[str, Iterable[StepRecord]], read_only: frozenset[str]
) -> list[RecapLine]:
    """One line per run of the batch, in the batch's order."""
    ordered = sorted(runs, key=lambda r: r.batch_position)
    return [recap_line(run, steps.get(run.id, ()), read_only) for run in ordered]


def recap_text(lines: list[RecapLine]) -> str:
    """The recap as plain lines (the terminal; the Slack message puts it in a code block)."""
    width = max((len(line.host) for line in lines), default=4) + 1
    return "\n".join(line.text(width) for line in lines)
