"""Slack messages for a run, built with slack_sdk's Block Kit models and kept within Slack's limits.

Pure functions of stored records: the card (updated in place), thread replies, approval requests.
Every string from outside the bot (host output, directory names, reasons, results, comments) goes
through ``escape`` as it is put in, in the blocks and in the fallback text; our own mentions are not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.core.config import GroupConfig, SlackConfig
from bot.core.gates import EVIDENCE_SHOWN, gate_named
from bot.core.models import Approval, ApprovalState, AuditEvent, Run, RunState, StepRecord, StepState
from bot.core.signing import key_id
from bot.core.windows import MaintenanceWindow, describe_moment
from bot.engine.dry_run import deciders as who_decides
from bot.engine.recap import RecapLine, recap_text
from bot.slack.escape import escape, safe_cut
from bot.store.checkpoints import MARKER, Checkpoint

SECTION_LIMIT = 2900  # Slack allows 3,000 characters in a section's text
TEXT_LIMIT = 3500  # the fallback `text` of a message; Slack truncates beyond 40,000

MARKS = {
    StepState.pending: "⬜",
    StepState.checking: "⏳",
    StepState.applying: "⏳",
    StepState.verifying: "⏳",
    StepState.waiting_approval: "✋",
    StepState.succeeded: "✅",
    StepState.skipped: "⏭️",
    StepState.failed: "❌",
    StepState.denied: "⛔",
    StepState.cancelled: "🚫",
    StepState.unavailable: "⚠️",
}
RUN_MARKS = {
    RunState.scheduled: "🗓️",
    RunState.queued: "🕒",
    RunState.running: "⏳",
    RunState.waiting_approval: "✋",
    RunState.succeeded: "✅",
    RunState.failed: "❌",
    RunState.denied: "⛔",
    RunState.cancelled: "🚫",
}
LOG_BLOCK_LINES = 10  # the installer's (or service's) last log lines shown in a failed step's reply
LOG_BLOCK_LINE_CHARS = 240
# How the engine starts a result it ends for a person: the gate (or nothing), then who (bot.engine.engine).
_BOT_PHRASE = re.compile(r"^([A-Za-z ]*?(?:denied|cancelled) by )([UW][A-Z0-9]{2,})\b")


def fit(text: str, limit: int = SECTION_LIMIT) -> str:
    if len(text) <= limit:
        return text
    note = f"… (truncated: {len(text) - limit} more characters; `idm-upgrade audit export` has all of it)"
    return safe_cut(text, limit - len(note)) + note


def section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=fit(text)))


def context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=fit(text))])


def message(text: str, blocks: list[Block]) -> dict[str, Any]:
    return {"text": fit(text, TEXT_LIMIT), "blocks": [b.to_dict() for b in blocks]}


def people(run: Run, approvals: Iterable[Approval]) -> set[str]:
    """The accounts this run recorded: its requester, who asked to cancel it, who decided its requests."""
    found = {run.requester, *(d.user for a in approvals for d in a.decisions)}
    if run.cancel_requested_by:
        found.add(run.cancel_requested_by)
    return found


def with_mentions(escaped: str, known: Iterable[str]) -> str:
    """Escaped text (a run's result) with the decider the bot itself named at its start ("STARTTLS approval
    denied by U0…", "cancelled by U0…") shown as a mention, which Slack renders as their name; only when that
    account is one of ``known`` (the run's own people). Nothing else is touched: an id anywhere else in the
    text may have come from outside, and stays text."""
    found = _BOT_PHRASE.match(escaped)
    if found is None or found.group(2) not in set(known):
        return escaped
    return f"{found.group(1)}<@{found.group(2)}>{escaped[found.end() :]}"


def ticket_note(run: Run) -> str:
    """`` · ticket CHG…`` for one-line listings (status, history), escaped; empty without a ticket."""
    return f" · ticket {escape(run.ticket)}" if run.ticket else ""


def state_words(run: Run, window: MaintenanceWindow | None = None) -> str:
    """The run's state label; a scheduled run's with its time: in its ``window``'s zone and in UTC."""
    if run.state is RunState.scheduled and run.scheduled_for is not None:
        return f"{run.state.label} for {describe_moment(run.scheduled_for, window)}"
    return run.state.label


def card(
    run: Run,
    steps: list[StepRecord],
    titles: dict[str, str],
    target: str,
    known: Iterable[str] = (),
    window: MaintenanceWindow | None = None,
    offers: Iterable[str] = (),
) -> dict[str, Any]:
    """The run card: host, versions, requester, state (one of the contract's words), step checklist; an
    ended run's buttons are what it ``offers`` (``bot.engine.recovery``: retry, revert)."""
    preflight = next((s.facts for s in steps if s.step == "preflight"), {})
    current = escape((preflight.get("connector") or {}).get("version") or "?")
    checklist = "\n".join(
        f"{MARKS[s.state]} {titles.get(s.step, s.step)}"
        + (f" — {s.state.label}" if s.state not in (StepState.pending, StepState.succeeded) else "")
        for s in steps
    )
    blocks: list[Block] = [
        HeaderBlock(text=f"Connector upgrade: {run.host}"),  # plain_text: Slack shows it as it is
        section(
            f"*State:* {RUN_MARKS[run.state]} {state_words(run, window)}"
            + (f" (attempt {run.attempt})" if run.attempt > 1 else "")
            + "\n"
            f"*Version:* {current} → {escape(target)}{'  (check only)' if run.check_only else ''}\n"
            f"*Requested by:* <@{run.requester}>\n*Run:* `{run.id}`"
            + (f"\n*Change ticket:* {escape(run.ticket)}" if run.ticket else "")
        ),
        section(checklist),
    ]
    if run.result and not run.state.active:
        lines = [_labelled(with_mentions(escape(line), known)) for line in run.result.split("\n")]
        blocks.append(section("*Result:* " + "\n".join(lines)))
    if run.state.active:
        blocks.append(
            ActionsBlock(
                elements=[
                    ButtonElement(text="Cancel run", action_id="cancel_run", value=run.id, style="danger"),
                ]
            )
        )
    elif buttons := [OFFER_BUTTONS[o](run) for o in offers if o in OFFER_BUTTONS]:
        blocks.append(ActionsBlock(elements=buttons))
    text = f"Connector upgrade on {escape(run.host)}: {state_words(run, window)} ({run.id})"
    return message(text, blocks)


# An ended run's buttons, by offer (bot.engine.recovery.Offer); the value is the run id, as on Cancel run.
OFFER_BUTTONS = {
    "retry": lambda run: ButtonElement(text="Retry", action_id="retry_run", value=run.id, style="primary"),
    "revert": lambda run: ButtonElement(
        text="Revert to snapshot", action_id="revert_run", value=run.id, style="danger"
    ),
}


def _labelled(line: str) -> str:
    """A result's "Changed:" / "Not changed:" line (bot.engine.outcome) with its label in bold."""
    for label in ("Changed:", "Not changed:"):
        if line.startswith(label):
            return f"*{label}*{line.removeprefix(label)}"
    return line


def _facts_line(facts: dict[str, Any]) -> str:
    """The few facts that matter, in words: exit codes, versions, durations, snapshot names (escaped: all
    of it comes from the host). Never a raw True/False: each flag says what it means."""
    keep = []
    for key in ("exit_code", "attempts", "seconds", "boot_time_after"):
        if key in facts:
            keep.append(f"{key.replace('_', ' ')}: {facts[key]}")
    if facts.get("reboot_required") is True:
        keep.append("a reboot is needed")
    if "snapshot" in facts and isinstance(facts["snapshot"], dict):
        keep.append(f"snapshot: {facts['snapshot'].get('name')}")
    before, after = facts.get("java_before"), facts.get("java_after")
    if isinstance(before, dict) and isinstance(after, dict):
        if facts.get("jre_changed"):
            keep.append(f"JRE: {before.get('version')} → {after.get('version')}")
        else:
            # JAVA_HOME as read right after the installer: a new JRE takes over at the next boot, if any.
            keep.append(f"JAVA_HOME unchanged so far (JRE {before.get('version')})")
    return escape("; ".join(keep))


def log_block(lines: list[str]) -> str:
    """A log's last lines as a code block, escaped, each line shortened: shown once, in the step's reply."""
    shown_lines = [line for line in lines if line.strip()][-LOG_BLOCK_LINES:]
    cut = [
        line if len(line) <= LOG_BLOCK_LINE_CHARS else line[: LOG_BLOCK_LINE_CHARS - 1] + "…" for line in shown_lines
    ]
    # a run of backticks in a log line would close the block early
    body = "\n".join(escape(line).replace("```", "`\u200b``") for line in cut)
    return f"```{body}```"


def step_reply(event: AuditEvent, record: StepRecord | None, title: str) -> dict[str, Any]:
    reason = escape(event.detail.get("reason") or "")
    if event.event == "step.started":
        attempt = record.attempts if record else 1
        text = f"▶️ *{title}*: started" + (f" (attempt {attempt}, after a restart)" if attempt > 1 else "")
        return message(f"{title}: started", [section(text)])
    mark = {"step.succeeded": "✅", "step.skipped": "⏭️", "step.failed": "❌"}[event.event]
    if event.detail.get("not_available"):
        mark = "⚠️"
    word = {"step.succeeded": "done", "step.skipped": "skipped", "step.failed": "FAILED"}[event.event]
    duration = ""
    if record and record.started_at and record.finished_at:
        duration = f" in {(record.finished_at - record.started_at).total_seconds():.0f} s"
    blocks: list[Block] = [section(f"{mark} *{title}*: {word}{duration}\n{reason}")]
    if record and (facts := _facts_line(record.facts)):
        blocks.append(context(facts))
    if record and event.event == "step.failed" and record.facts.get("log_tail"):
        blocks.append(section("Last lines of the log:\n" + log_block(record.facts["log_tail"])))
    return message(f"{title}: {word}: {reason}", blocks)


def steps_skipped(titles: list[str], reason: str) -> dict[str, Any]:
    """Several steps skipped for one reason, in one reply (the rest of the plan had nothing to do)."""
    names = ", ".join(f"*{title}*" for title in titles)
    text = f"⏭️ {names}: skipped\n{escape(reason)}"
    return message(f"{', '.join(titles)}: skipped: {escape(reason)}", [section(text)])


def mention(principal: str) -> str:
    """Slack's notifying form: a user group as <!subteam^S…>, a user as <@U…> (a plain name notifies nobody)."""
    return f"<!subteam^{principal}>" if principal.startswith("S") else f"<@{principal}>"


def deciders(slack: SlackConfig, gate: str, group: GroupConfig | None = None) -> list[str]:
    """Who a request should notify: the approvers (the host group's own, when it has them); for a confirmation
    also the listed requesters."""
    return who_decides(slack, gate, group)


def _deciders_line(approval: Approval, deciders: list[str]) -> str | None:
    if not deciders:
        return None
    label = "Who may confirm" if gate_named(approval.gate).is_confirmation else "Approvers"
    return f"*{label}:* " + " ".join(mention(p) for p in deciders)


def approval_request(approval: Approval, run: Run, title: str, deciders: list[str] | None = None) -> dict[str, Any]:
    """What an approver needs: what changes, why, what was verified so far, who asked; and the buttons."""
    evidence = dict(approval.evidence)
    kind = evidence.pop("kind", "approval")
    lines = [f"*{approval.gate} {escape(kind)} needed* for `{escape(run.host)}`: {title}"]
    for key in EVIDENCE_SHOWN:
        if key in evidence:
            lines.append(f"*{key.replace('_', ' ').capitalize()}:* {shown(evidence[key])}")
    if approval.digest:  # the approver's click covers this change and nothing else; the audit trail has it
        lines.append(f"*Change digest:* `{approval.digest[:19]}…` (a different change is asked again)")
    lines.append(f"*Asked by:* <@{run.requester}> · expires {approval.expires_at:%Y-%m-%d %H:%M} UTC")
    if run.ticket:  # the approver sees which change authorizes the work
        lines.append(f"*Change ticket:* {escape(run.ticket)}")
    if approval.min_approvals > 1:
        lines.append(f"*Needs:* {approval.min_approvals} different approvers")
    if who := _deciders_line(approval, deciders or []):
        lines.append(who)  # mentioned, so they are notified
    gate = gate_named(approval.gate)
    buttons = [
        ButtonElement(text=gate.button_label, action_id=gate.button, value=approval.id, style="primary"),
        ButtonElement(text=gate.deny_label, action_id="deny", value=approval.id, style="danger"),
    ]
    blocks: list[Block] = [section("\n".join(lines)), ActionsBlock(block_id=f"decide-{approval.id}", elements=buttons)]
    # The fallback text is what Slack's notifications show: the mentions go there too.
    mentions = " ".join(mention(p) for p in deciders or [])
    return message(
        f"{approval.gate} {escape(kind)} needed for {escape(run.host)}" + (f" ({mentions})" if mentions else ""),
        blocks,
    )


def shown(value: Any) -> str:
    """An evidence value as an approver reads it, escaped: a list one item a line, a directory as
    ``name (id)``, a mapping as ``key: value`` pairs."""
    if isinstance(value, list):
        return "\n".join(f"• {_item(v)}" for v in value)
    if isinstance(value, dict):
        return escape(", ".join(f"{str(k).replace('_', ' ')}: {v}" for k, v in value.items()))
    return escape(value)


def _item(value: Any) -> str:
    if isinstance(value, dict) and "name" in value and "id" in value:
        return escape(f"{value['name']} ({value['id']})")
    return shown(value) if isinstance(value, dict) else escape(value)


def approval_decided(approval: Approval, run: Run, title: str, deciders: list[str] | None = None) -> dict[str, Any]:
    """The request again, its buttons replaced by who decided and when."""
    request = approval_request(approval, run, title, deciders)
    blocks = [b for b in request["blocks"] if b["type"] != "actions"]
    if approval.decisions:
        who = ", ".join(
            f"{'approved' if d.decision == 'approve' else 'denied'} by <@{d.user}> at {d.at:%H:%M:%S} UTC"
            + (f" ({escape(d.comment)})" if d.comment else "")
            for d in approval.decisions
        )
    else:
        who = approval.state.value
    if approval.state is ApprovalState.superseded:
        who = "what it showed no longer matched what would change; a new request follows in the thread"
    blocks.append(context(f"*{approval.state.value.upper()}*: {who}").to_dict())
    return {"text": f"{approval.gate}: {approval.state.value}", "blocks": blocks}


def run_finished(run: Run, known: Iterable[str] = ()) -> dict[str, Any]:
    """The run's end, broadcast to the channel: the first line of its result (the cause) and what it changed
    (the tenant's STARTTLS is everyone's business); the card, updated at the same moment, has the rest."""
    first, *rest = (run.result or "").split("\n")
    result = with_mentions(escape(first), known)
    changed = [_labelled(escape(line)) for line in rest if line.startswith("Changed:")]
    text = f"{RUN_MARKS[run.state]} *{escape(run.host)}: {run.state.label}* (`{run.id}`) — {result}"
    return message(f"{escape(run.host)}: {run.state.label}: {result}", [section("\n".join([text, *changed]))])


def note(text: str, title: str) -> dict[str, Any]:
    """A step's note: its text comes from the step (host output, log lines)."""
    text = escape(text)
    return message(f"{title}: {text}", [context(f"_{title}_: {text}")])


def checkpoint(cp: Checkpoint) -> dict[str, Any]:
    """An audit checkpoint, in the thread the bot cannot edit silently; the marker line is read back by
    `audit verify --checkpoints slack`, the summary is for people."""
    signed = f"signed, key id {key_id(cp.key)}" if cp.key else "not signed"
    summary = (
        f"🔏 Audit checkpoint: {cp.count} events, head `{cp.head[:16]}…` ({signed}; {escape(cp.reason)}). "
        "`idm-upgrade audit verify --checkpoints slack` checks the trail against it."
    )
    line = escape(f"{MARKER} {cp.to_json()}")  # read back unescaped, as Slack gives the text back
    return {"text": f"{summary}\n`{line}`", "blocks": [section(summary).to_dict(), context(f"`{line}`").to_dict()]}


def batch_recap(batch_id: str, lines: list[RecapLine], kind: str = "Batch") -> dict[str, Any]:
    """The end of a batch (or, ``kind="Fleet"``, of a fleet of several batches, once per channel), at the top of
    the channel: per host ok / changed / skipped / failed and the run, like Ansible's PLAY RECAP."""
    done = sum(line.state is RunState.succeeded for line in lines)
    mark = "✅" if done == len(lines) else "❌"
    head = f"{mark} *{kind} of {len(lines)} hosts ended*: {done} of {len(lines)} succeeded"
    states = ", ".join(f"{escape(line.host)} {line.state.label}" for line in lines)
    return message(
        f"{kind} recap: {states}",
        [section(f"{head}\n```{escape(recap_text(lines))}```"), context(f"{kind} `{escape(batch_id)}`")],
    )


def dry_run_plan(run: Run, plan: dict[str, Any]) -> dict[str, Any]:
    """A check run's plan, as Ansible's --check --diff shows one: each step, would it run and why, what
    would change; the reboot; the requests an upgrade would make and whom they notify. Nothing was changed."""
    blocks: list[Block] = [
        section(f"📋 *Dry run of `{escape(run.host)}`*: what an upgrade would do now. *Nothing was changed.*")
    ]
    lines = []
    for step in plan.get("steps", []):
        mark = "✅ ran (read only)" if step.get("ran") else "▶️ would run" if step["would_run"] else "⏭️ skip"
        lines.append(f"{mark} — *{escape(step['title'])}*: {escape(step['reason'])}")
        lines.extend(f"      ~ {escape(change)}" for change in step.get("changes", []))
    blocks.extend(section(chunk) for chunk in _chunks(lines))
    asked = []
    for request in plan.get("approvals", []):
        who = " ".join(mention(p) for p in request["who"]) or "nobody is configured (slack.approvers)"
        need = f"{request['min']} different people of " if request["min"] > 1 else ""
        when = " _(if that step runs)_" if request["if_it_runs"] else ""
        asked.append(f"• {escape(request['gate'])} {escape(request['kind'])}{when}: {need}{who}")
    if asked:
        self_ok = "may" if plan["approvals"][0].get("self_approval") else "may not"
        asked.append(f"_The requester {self_ok} approve their own run (slack.allow_self_approval)._")
        blocks.append(section("*An upgrade would ask:*\n" + "\n".join(asked)))
    would = sum(1 for s in plan.get("steps", []) if s["would_run"])
    return message(f"Dry run of {escape(run.host)}: {would} steps would run; nothing was changed", blocks[:50])


def _chunks(lines: list[str], limit: int = SECTION_LIMIT) -> list[str]:
    """Lines grouped into section-sized texts (a long plan is several sections, not one cut short)."""
    chunks: list[str] = []
    for line in lines:
        if chunks and len(chunks[-1]) + 1 + len(line) <= limit:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line)
    return chunks
