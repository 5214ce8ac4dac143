"""The dry run (`check HOST`, `run HOST --check`): after preflight, what every step would do, changing nothing.

Like Ansible's ``--check --diff``: each step and whether it would run (or why not), what would change,
whether a reboot is expected, and which approvals an upgrade would ask, of whom. The plan is stored in
the preflight step's facts (``plan``), so the Slack thread and the terminal render it from the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.core.config import ANYONE, GroupConfig, SlackConfig
from bot.core.gates import gate_named
from bot.core.models import StepRecord
from bot.engine.approvals import approvers_for, requesters_for

PLAN_KEY = "plan"


def deciders(slack: SlackConfig, gate: str, group: GroupConfig | None = None) -> list[str]:
    """Who may decide ``gate``: the approvers; for a confirmation also the listed requesters. A host group's
    own approvers and requesters ([groups.NAME]) replace slack's for its runs."""
    approvers, requesters = approvers_for(slack, group), requesters_for(slack, group)
    who = approvers if not gate_named(gate).is_confirmation else [*requesters, *approvers]
    return [p for p in dict.fromkeys(who) if p != ANYONE]


def approvals_asked(
    steps: list[dict[str, Any]], slack: SlackConfig, group: GroupConfig | None = None
) -> list[dict[str, Any]]:
    """The requests an upgrade would make, in the plan's order: gate, kind, step, who, how many people."""
    asked = []
    for step in steps:
        if not step.get("gate"):
            continue
        gate = gate_named(step["gate"])
        asked.append(
            {
                "gate": gate.name,
                "kind": gate.kind.value,
                "step": step["step"],
                "if_it_runs": not step["would_run"],
                "who": deciders(slack, gate.name, group),
                "min": slack.min_approvals if not gate.is_confirmation else 1,
                "self_approval": slack.allow_self_approval,
            }
        )
    return asked


def stored_plan(records: Iterable[StepRecord]) -> dict[str, Any] | None:
    for record in records:
        if isinstance(plan := record.facts.get(PLAN_KEY), dict):
            return plan
    return None


def summary(plan: dict[str, Any]) -> str:
    """One line: how many steps would run, and that nothing was changed."""
    steps = plan.get("steps", [])
    run = sum(1 for s in steps if s["would_run"])
    return f"dry run: {run} of {len(steps)} steps would run; nothing was changed"


def plan_lines(plan: dict[str, Any], asked_here: str | None = None) -> list[str]:
    """The plan in plain lines, for the terminal. ``asked_here``: who answers where these lines are read (at
    the terminal, the operator at the prompt); Slack's deciders are shown beside it."""
    lines = [f"PLAN for {plan['host']} (check only: nothing was changed)"]
    for step in plan.get("steps", []):
        mark = "ran       " if step.get("ran") else "would run " if step["would_run"] else "skip      "
        lines.append(f"  {mark} {step['title']}: {step['reason']}")
        lines.extend(f"             ~ {change}" for change in step.get("changes", []))
    for asked in plan.get("approvals", []):
        who = ", ".join(asked["who"]) or "nobody is configured"
        when = " (if that step runs)" if asked["if_it_runs"] else ""
        need = f"{asked['min']} of " if asked["min"] > 1 else ""
        whom = f"{asked_here} (in Slack: {need}{who})" if asked_here else f"{need}{who}"
        lines.append(f"  asks      {asked['gate']} {asked['kind']}{when}: {whom}")
    return lines
