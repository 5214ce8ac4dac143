"""Outside text reaches Slack escaped: every message builder, with hostile strings in every outside field.

Directory names, host output, log lines, reasons, results and comments are not the bot's; in mrkdwn
``<!channel>`` pings the channel and ``<https://evil|APPROVE HERE>`` is a disguised link. What must hold:
no ``<`` or ``>`` from outside survives anywhere in the blocks or the fallback text, ``&`` only as an
entity, the outside text is still shown (escaped, not dropped), and the bot's own mentions still work.
"""

from __future__ import annotations

import inspect
import json
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from bot.core.models import (
    Approval,
    ApprovalState,
    AuditEvent,
    Decision,
    Run,
    RunState,
    StepRecord,
    StepState,
    utcnow,
)
from bot.engine.recap import RecapLine
from bot.slack import messages as msg
from bot.slack.context import SlackContext
from bot.slack.escape import escape, safe_cut
from bot.store.checkpoints import Checkpoint, from_message_text
from bot.store.store import Store
from sandbox.slack_state import APPROVER, OPS_CHANNEL, REQUESTER
from sandbox.workspace_one import default_directories
from tests.support.waiting import eventually

EVIL = "corp <!channel> <https://evil.example|APPROVE HERE> <@U0EVIL0001> <#C0EVIL0001> a&b &amp; &lt;"
ESCAPED = escape(EVIL)
OURS = re.compile(rf"<@({REQUESTER}|{APPROVER})>")  # the bot's own mentions: these must stay
ENTITY = re.compile(r"&(amp|lt|gt);")


def mrkdwn_texts(payload: Any) -> list[str]:
    """The fallback text and every mrkdwn text in the blocks (plain_text is shown as it is by Slack)."""
    found: list[str] = []
    if isinstance(payload, dict):
        if payload.get("type") == "plain_text":
            return found
        for key, value in payload.items():
            if key == "text" and isinstance(value, str):
                found.append(value)
            else:
                found += mrkdwn_texts(value)
    elif isinstance(payload, list):
        for item in payload:
            found += mrkdwn_texts(item)
    return found


def problems(payload: dict[str, Any]) -> list[str]:
    wrong = []
    for text in mrkdwn_texts(payload):
        bare = OURS.sub("", text)
        if "<" in bare or ">" in bare:
            wrong.append(f"raw < or > in {text[:300]!r}")
        if "&" in ENTITY.sub("", bare):
            wrong.append(f"a bare & in {text[:300]!r}")
    return wrong


def hostile_records() -> SimpleNamespace:
    now = utcnow()
    run = Run(
        id="run-0000abcd",
        host="host01",
        requester=REQUESTER,
        state=RunState.failed,
        batch_id="batch-0000abcd",
        plan=["preflight", "starttls", "install"],
        created_at=now,
        updated_at=now,
        result=f"install failed: {EVIL}",
    )
    facts = {
        "connector": {"version": EVIL},
        "exit_code": EVIL,
        "attempts": 2,
        "seconds": EVIL,
        "jre_changed": EVIL,
        "reboot_required": EVIL,
        "boot_time_after": EVIL,
        "snapshot": {"name": EVIL},
        "java_before": {"version": EVIL},
        "java_after": {"version": EVIL},
        "log_tail": [EVIL, f"MSI (s) {EVIL}"],
    }
    steps = [
        StepRecord(run_id=run.id, step="preflight", position=0, state=StepState.succeeded, facts=facts),
        StepRecord(
            run_id=run.id,
            step="install",
            position=1,
            state=StepState.failed,
            attempts=2,
            started_at=now,
            finished_at=now + timedelta(seconds=3),
            reason=EVIL,
            facts=facts,
        ),
    ]
    evidence = {
        "kind": EVIL,
        "what_changes": EVIL,
        "what_to_do": EVIL,
        "why": EVIL,
        "directories": [{"name": EVIL, "id": EVIL, "useStartTls": True}, EVIL, {"other": EVIL}],
        "verified_so_far": {"preflight": EVIL, EVIL: "ok"},
    }
    approval = Approval(
        id="apr-0000abcd",
        run_id=run.id,
        step="starttls",
        gate="STARTTLS",
        state=ApprovalState.open,
        requested_at=now,
        expires_at=now + timedelta(minutes=30),
        min_approvals=2,
        evidence=evidence,
    )
    decided = approval.model_copy(
        update={
            "state": ApprovalState.denied,
            "decided_at": now,
            "decisions": [Decision(approval_id=approval.id, user=APPROVER, decision="deny", at=now, comment=EVIL)],
        }
    )
    events = [
        AuditEvent(
            seq=seq, run_id=run.id, at="", actor="bot", event=name, step="install",
            detail={"reason": EVIL, "not_available": name == "step.failed"}, prev_hash="", hash="",
        )
        for seq, name in enumerate(("step.started", "step.succeeded", "step.skipped", "step.failed"), start=1)
    ]  # fmt: skip
    checkpoint = Checkpoint(seq=9, head="a" * 64, count=9, at="", prev="0" * 64, run_id=run.id, reason=EVIL)
    return SimpleNamespace(
        run=run, steps=steps, approval=approval, decided=decided, events=events, checkpoint=checkpoint
    )


def hostile_plan() -> dict[str, Any]:
    """A dry run's plan whose reasons and changes come from outside (directory names, host output)."""
    step = {"step": "starttls", "title": "STARTTLS off", "would_run": True, "reason": EVIL, "changes": [EVIL]}
    asked = {"gate": "STARTTLS", "kind": "approval", "step": "starttls", "if_it_runs": False, "who": [APPROVER]}
    return {"host": EVIL, "steps": [step], "approvals": [{**asked, "min": 2, "self_approval": False}]}


def built_messages(r: SimpleNamespace) -> dict[str, list[dict[str, Any]]]:
    """Every message builder of bot/slack/messages.py, called with the hostile records."""
    titles = {"preflight": "Preflight", "install": "Install the connector"}
    running = r.run.model_copy(update={"state": RunState.running})  # the card with its Cancel button
    return {
        "card": [msg.card(run, r.steps, titles, EVIL, {REQUESTER, APPROVER}) for run in (r.run, running)],
        "step_reply": [msg.step_reply(e, r.steps[1], "Install") for e in r.events],
        "approval_request": [msg.approval_request(r.approval, r.run, "STARTTLS off")],
        "approval_decided": [msg.approval_decided(r.decided, r.run, "STARTTLS off")],
        # the run's own people (requester, deciders) become mentions; an id in outside text stays text
        "run_finished": [msg.run_finished(r.run), msg.run_finished(r.run, {REQUESTER, APPROVER, "U0EVIL0001"})],
        "steps_skipped": [msg.steps_skipped(["Install", "Reboot"], EVIL)],
        "note": [msg.note(EVIL, "Install")],
        "checkpoint": [msg.checkpoint(r.checkpoint)],
        "dry_run_plan": [msg.dry_run_plan(r.run, hostile_plan())],
        "batch_recap": [msg.batch_recap(EVIL, [RecapLine(EVIL, r.run.id, r.run.state, 1, 2, 3, 0)])],
    }


def test_every_message_builder_escapes_outside_text_and_keeps_our_mentions():
    builders = {
        name
        for name, fn in inspect.getmembers(msg, inspect.isfunction)
        if fn.__module__ == msg.__name__ and "dict[str, Any]" in str(fn.__annotations__.get("return"))
    } - {"message"}  # message() takes text the builders made; it is what they all call
    built = built_messages(hostile_records())
    assert builders == set(built), "a message builder this test does not walk: add it to built_messages()"
    wrong = [f"{name}: {p}" for name, payloads in built.items() for payload in payloads for p in problems(payload)]
    assert not wrong, "\n".join(wrong)
    for name, payloads in built.items():
        everything = json.dumps(payloads, ensure_ascii=False)
        assert ESCAPED in everything or escape("corp <!channel>") in everything, f"{name} dropped the text"
    assert from_message_text(built["checkpoint"][0]["text"]) == hostile_records().checkpoint, "read back as posted"
    shown = "\n".join(mrkdwn_texts(built["approval_request"][0]))
    assert f"{ESCAPED} ({ESCAPED})" in shown, "a directory is shown as `name (id)`"
    assert '"name"' not in shown and "useStartTls" not in shown, "not as raw JSON"
    for name in ("card", "approval_request", "approval_decided"):
        assert f"<@{REQUESTER}>" in json.dumps(built[name]), f"{name} lost the requester's mention"
    assert f"<@{APPROVER}>" in json.dumps(built["approval_decided"])


def test_a_hostile_directory_name_cannot_ping_or_link():
    r = hostile_records()
    text = json.dumps(msg.approval_request(r.approval, r.run, "STARTTLS off"), ensure_ascii=False)
    for raw in ("<!channel>", "<https://evil", "<@U0EVIL0001>", "<#C0EVIL0001>"):
        assert raw not in text


async def test_status_and_history_escape_the_run_result(tmp_path):
    store = Store(tmp_path / "bot.db")
    try:
        [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["preflight"])
        store.set_run_state(run.id, RunState.running)
        store.set_run_state(run.id, RunState.failed, result=f"preflight failed: {EVIL}")
        deps = SlackContext(SimpleNamespace(store=store), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
        for text in (await deps.status_text(run.id), await deps.history_text(None), await deps.history_text("host01")):
            assert not problems({"text": text}), text
            assert ESCAPED in text
    finally:
        store.close()


@pytest.mark.parametrize("end", range(0, 40))
def test_truncation_never_cuts_an_entity_or_a_mention_in_half(end):
    text = f"ab {escape('<&>')} <@{REQUESTER}> {escape('&')}"
    head = safe_cut(text, end)
    assert text.startswith(head)
    assert not re.search(r"&[a-z]*$", head), head  # no `&am` at the end
    assert head.rfind("<") <= head.rfind(">"), head  # no `<@U0REQ` at the end


def test_fit_truncates_escaped_text_on_an_entity_boundary():
    long = escape("<" * 2000)  # 8,000 characters of `&lt;`
    for limit in range(msg.SECTION_LIMIT - 4, msg.SECTION_LIMIT + 1):
        cut = msg.fit(long, limit)
        assert len(cut) <= limit
        assert not problems({"text": cut}), cut[-120:]


# -- end to end: the bot over HTTP, the stand-ins as Slack, Workspace ONE Access and the host ----------------

DIRECTORY = "corp <!channel> <https://evil.example|APPROVE HERE>"


async def test_a_hostile_directory_name_reaches_slack_only_escaped(slack_bot):
    h = await slack_bot("default", ws1_directories=default_directories(iwa_name=DIRECTORY))
    assert (await h.sender.send_slash_command(REQUESTER, "host01")).status == 200
    [run] = await eventually(h.runs, what="the slash command created a run")
    await h.settle(run.id, approver=APPROVER)
    assert h.store.get_run(run.id).state is RunState.succeeded, h.store.get_run(run.id).result
    assert h.ws1.updates, "STARTTLS was turned off on the directory with that name"
    posted = [
        (m.ts, version.text, json.dumps(version.blocks, ensure_ascii=False))
        for m in h.slack.messages(OPS_CHANNEL)
        for version in m.versions
    ]
    posted += [(e.source, e.text, json.dumps(e.blocks, ensure_ascii=False)) for e in h.slack.ephemerals()]
    for where, text, blocks in posted:
        for raw in ("<!channel>", "<https://evil", "APPROVE HERE>"):
            assert raw not in text and raw not in blocks, (where, raw, text, blocks)
    request = next(blocks for _, _, blocks in posted if "*STARTTLS approval needed*" in blocks)
    assert escape(DIRECTORY) in request, "the directory is shown, escaped"
    assert f"<@{REQUESTER}>" in request, "our own mention of the requester still works"


def test_only_the_decider_the_bot_named_becomes_a_mention():
    """A run's result starts with the bot's words ("… denied by U…"): that id is shown as a mention (Slack
    shows the name); the same id inside outside text, or an account not of this run, stays text."""
    known = {REQUESTER, APPROVER}
    denied = escape(f"STARTTLS approval denied by {APPROVER}: not today. Log says {APPROVER}")
    assert msg.with_mentions(denied, known) == (
        f"STARTTLS approval denied by <@{APPROVER}>: not today. Log says {APPROVER}"
    )
    assert msg.with_mentions(f"cancelled by {REQUESTER}", known) == f"cancelled by <@{REQUESTER}>"
    assert msg.with_mentions("cancelled by U0STRANGER1", known) == "cancelled by U0STRANGER1"
    failed = escape(f"install failed: a log line: denied by {APPROVER}")
    assert msg.with_mentions(failed, known) == failed
