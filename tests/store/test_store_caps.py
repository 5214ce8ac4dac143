"""Every string the store keeps is capped with a note (bot.core.caps): a step's reason and facts, a run's
result, an approval's evidence, every audit event's detail. One place, the store, whatever step wrote it."""

from __future__ import annotations

import json
import os
from datetime import timedelta

from bot.core.caps import STORED_TEXT_CHARS, cap_strings, cap_text
from bot.core.models import RunState, StepState
from tests.support.configs import REQUESTER

MEGABYTE_LINE = "2024-03-04 05:07:31 ERROR CustomAction dumped: " + "x" * 1_000_000 + " END"


def test_cap_text_keeps_head_and_tail_and_says_how_much_was_cut():
    capped = cap_text("a" * 100 + "b" * 100, 40)
    assert capped == "a" * 30 + " … (160 characters cut) … " + "b" * 10
    assert cap_text("short", 40) == "short"
    assert cap_strings({"k" * 50: ["x" * 50, 3, None, {"y": "z" * 50}]}, 40) == {
        "k" * 50: [cap_text("x" * 50, 40), 3, None, {"y": cap_text("z" * 50, 40)}]
    }


def test_reasons_facts_results_evidence_and_audit_details_are_capped(store, tmp_path):
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=["install"])
    store.set_run_state(run.id, RunState.running, event="run.started")
    store.update_step(run.id, "install", StepState.checking, event="step.started")
    for _ in range(6):  # the reported run: six 1 MB log lines, each copied into reason, facts and audit
        store.update_step(
            run.id,
            "install",
            StepState.applying,
            facts={"log_tail": [MEGABYTE_LINE] * 6, "note": MEGABYTE_LINE},
        )
    approval = store.request_approval(
        run.id,
        "install",
        gate="install",
        timeout=timedelta(minutes=5),
        min_approvals=1,
        evidence={"what_changes": MEGABYTE_LINE},
        change={"host": "host01"},
    )
    reason = f"the installer failed with exit code 1603. Last lines: {MEGABYTE_LINE}. Nothing was rebooted"
    store.update_step(
        run.id, "install", StepState.failed, event="step.failed", reason=reason, detail={"extra": MEGABYTE_LINE}
    )
    store.set_run_state(run.id, RunState.failed, event="run.failed", result=f"install failed: {reason}")

    record = store.step(run.id, "install")
    assert len(record.reason) < STORED_TEXT_CHARS + 100
    assert record.reason.startswith("the installer failed with exit code 1603. Last lines: 2024-03-04")
    assert record.reason.endswith("x END. Nothing was rebooted") and "characters cut) …" in record.reason
    assert all(len(line) < STORED_TEXT_CHARS + 100 and "characters cut" in line for line in record.facts["log_tail"])
    assert len(store.get_run(run.id).result) < STORED_TEXT_CHARS + 100
    assert len(store.get_approval(approval.id).evidence["what_changes"]) < STORED_TEXT_CHARS + 100
    for event in store.audit_events(run.id):
        assert len(json.dumps(event.detail)) < 4 * STORED_TEXT_CHARS, event.event
    failed = next(e for e in store.audit_events(run.id) if e.event == "step.failed")
    assert "characters cut" in failed.detail["reason"] and "characters cut" in failed.detail["extra"]
    assert store.verify_audit().ok  # the chain hashes what was stored
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(store.path)
    assert size < 2_000_000, size  # unbounded, this run stored well over 40 MB
