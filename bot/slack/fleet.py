"""A fleet (a request of several hosts) in Slack: its card, what its hosts' threads carry, its recap.

One fleet card per channel the fleet reports in, updated in place: a line per host (state, version, the step
in progress) and the counts. A host's own card (posted when its run starts) keeps the step-by-step detail;
its thread carries only what a person must see: approval requests and their decided form, a failure with
its log tail, the result. Pure functions of stored records, like bot.slack.messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, MarkdownTextObject, SectionBlock

from bot.core.models import AuditEvent, Run, RunState, StepRecord, StepState
from bot.engine.recap import RecapLine
from bot.slack.escape import escape
from bot.slack.messages import RUN_MARKS, SECTION_LIMIT, batch_recap, message

Row = tuple[str, dict[str, Any] | None, str | None]  # kind, payload, approval id (as bot.slack.projector)
ENDS = frozenset({"run.succeeded", "run.failed", "run.cancelled", "run.denied"})
# a reply a fleet's host thread keeps: a failure (with its log tail), why a request was asked again, a dry
# run's plan (the answer to a check), who retried it or asked for its revert and how the revert ended; the
# approval requests and the result are rows of their own
KEPT_REPLIES = frozenset(
    {"step.failed", "approval.superseded", "run.retried", "revert.requested", "revert.verified", "revert.failed", *ENDS}
)
IN_PROGRESS = (StepState.checking, StepState.applying, StepState.verifying, StepState.waiting_approval)
MAX_SECTIONS = 45  # Slack allows 50 blocks; the header and the counts take two


def fleet_rows(pairs: list[tuple[AuditEvent, list[Row]]], card_queued: bool) -> list[Row]:
    """Of a fleet run's rows (each event with the rows a run of its own would get), those its thread keeps.
    Its card is posted when it starts (the fleet card shows it queued); a run that never started gets none."""
    kept: list[Row] = []
    has_card = card_queued
    for event, rows in pairs:
        if event.event == "run.started":
            if not has_card:
                kept.append(("card", None, None))
                has_card = True
            continue
        if not has_card or event.event == "run.requested":
            continue
        for kind, payload, approval_id in rows:
            if kind == "reply" and event.event not in KEPT_REPLIES:
                continue
            kept.append((kind, payload, approval_id))
    return kept


def host_line(run: Run, steps: list[StepRecord], titles: dict[str, str], target: str) -> str:
    """``✅ `host01` 19.03.0.0 → 19.03.0.1 · succeeded`` or the step in progress; escaped."""
    facts = {s.step: s.facts for s in steps}
    before = (facts.get("preflight", {}).get("connector") or {}).get("version")
    version = escape(before or "?")
    if run.state is RunState.succeeded and not run.check_only:
        version = f"{version} → {escape(target)}"
    doing = next((s for s in steps if s.state in IN_PROGRESS), None)
    where = f" · {titles.get(doing.step, doing.step)}" if doing is not None and run.state.active else ""
    return f"{RUN_MARKS[run.state]} `{escape(run.host)}` {version} · {run.state.label}{where} · `{run.id}`"


def fleet_card(
    fleet_id: str,
    runs: list[Run],
    steps: dict[str, list[StepRecord]],
    titles: dict[str, str],
    target: str,
    fleet_size: int,
) -> dict[str, Any]:
    """The fleet card of one channel: its hosts (``runs``), a line each, and the counts by state."""
    counts = Counter(r.state for r in runs)
    summary = " · ".join(f"{RUN_MARKS[state]} {state.label} {counts[state]}" for state in RunState if counts[state])
    elsewhere = (
        f" (of {fleet_size} in the request; the others report in their group's channel)"
        if fleet_size > len(runs)
        else ""
    )
    check = any(r.check_only for r in runs)
    blocks: list[Block] = [
        HeaderBlock(text=f"Fleet {'check' if check else 'upgrade'}: {len(runs)} hosts"),
        SectionBlock(text=MarkdownTextObject(text=f"*Hosts:* {summary}{elsewhere}\n*Fleet:* `{fleet_id}`")),
    ]
    sections: list[str] = []
    for run in runs:
        line = host_line(run, steps.get(run.id, []), titles, target)
        if sections and len(sections[-1]) + 1 + len(line) <= SECTION_LIMIT:
            sections[-1] += "\n" + line
        else:
            sections.append(line)
    for text in sections[:MAX_SECTIONS]:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    blocks.append(
        ContextBlock(
            elements=[MarkdownTextObject(text="Each host's card has its steps; its thread, its requests and result.")]
        )
    )
    words = ", ".join(f"{counts[state]} {state.label}" for state in RunState if counts[state])
    return message(f"Fleet of {len(runs)} hosts: {words} ({fleet_id})", blocks)


def fleet_recap(key: str, lines: list[RecapLine]) -> dict[str, Any]:
    """The end of a fleet of several batches, once per channel: every host's ok / changed / skipped / failed."""
    return batch_recap(key, lines, kind="Fleet")
