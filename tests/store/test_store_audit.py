"""Store and audit trail on real SQLite files: schema, one active run per host, tamper detection, export."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core.models import RunState, StepState
from bot.store import audit
from bot.store import store as store_module
from bot.store.store import SCHEMA_VERSION, HostBusy, Store, StoreError
from tests.support.configs import APPROVER, REQUESTER, write_config

ROOT = Path(__file__).resolve().parents[2]
PLAN = ["alpha", "bravo"]


def populate(store: Store) -> list[str]:
    """Two finished runs with a gate each: a realistic little trail."""
    ids = []
    for host in ("host01", "host02"):
        [run] = store.create_runs([host], requester=REQUESTER, plan=PLAN)
        store.set_run_state(run.id, RunState.running, event="run.started")
        store.update_step(run.id, "alpha", StepState.checking, event="step.started")
        store.update_step(run.id, "alpha", StepState.succeeded, event="step.succeeded", reason="ok")
        approval = store.request_approval(
            run.id,
            "bravo",
            gate="reboot",
            timeout=timedelta(minutes=5),
            min_approvals=1,
            evidence={"x": 1},
            change={"host": host},
        )
        store.record_decision(approval.id, APPROVER, "approve")
        store.set_run_state(run.id, RunState.succeeded, event="run.succeeded", result="done")
        ids.append(run.id)
    return ids


def test_schema_version_wal_and_tables(store):
    assert store.schema_version == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"runs", "steps", "approvals", "decisions", "audit", "outbox"} <= set(store.db.table_names())


def test_reopening_does_not_migrate_again_and_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    Store(path).close()
    Store(path).close()  # second open: already at SCHEMA_VERSION, no "table exists" error
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this program"):
        Store(path)


def test_one_active_run_per_host_enforced_by_database(store):
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=PLAN)
    with pytest.raises(HostBusy) as busy:
        store.create_runs(["host01"], requester=REQUESTER, plan=PLAN)
    assert busy.value.run_id == run.id and "host01 already has an active run" in str(busy.value)
    # the rule lives in the schema: a raw INSERT bypassing the Store is refused too
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO runs (id, host, requester, state, check_only, batch_id, batch_position, plan,"
            " created_at, updated_at) VALUES ('x', 'host01', 'u', 'waiting_approval', 0, 'b', 0, '[]', 'n', 'n')"
        )
    store.set_run_state(run.id, RunState.failed, event="run.failed", result="test")
    [second] = store.create_runs(["host01"], requester=REQUESTER, plan=PLAN)
    assert second.state is RunState.queued


def _race(db_path: str, barrier, results) -> None:
    store = Store(db_path)
    barrier.wait()
    try:
        store.create_runs(["host01"], requester=REQUESTER, plan=PLAN)
        results.put("created")
    except HostBusy:
        results.put("busy")
    finally:
        store.close()


def test_one_active_run_per_host_across_processes(tmp_path):
    db_path = str(tmp_path / "shared.db")
    Store(db_path).close()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_race, args=(db_path, barrier, results)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes == ["busy", "busy", "busy", "created"]
    assert len(Store(db_path).runs(host="host01", active=True)) == 1


def test_audit_chain_verifies_and_is_append_only(store):
    populate(store)
    result = store.verify_audit()
    assert result.ok and result.checked == len(store.audit_events())
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("UPDATE audit SET actor = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM audit WHERE seq = 1")


def _tamper(store: Store, sql: str, params=()) -> None:
    """What an attacker with file access does: drop the guard triggers and rewrite rows."""
    store.conn.execute("DROP TRIGGER audit_no_update")
    store.conn.execute("DROP TRIGGER audit_no_delete")
    store.conn.execute(sql, params)


def test_edited_row_is_named(store):
    populate(store)
    _tamper(store, "UPDATE audit SET actor = 'U0MALLORY1' WHERE seq = 5")
    result = store.verify_audit()
    assert not result.ok and result.problem.startswith("event seq 5 ") and "edited" in result.problem


def test_edited_detail_is_named(store):
    populate(store)
    _tamper(store, """UPDATE audit SET detail = '{"x": 2}' WHERE seq = 3""")
    result = store.verify_audit()
    assert not result.ok and "event seq 3 " in result.problem


def test_deleted_row_is_named(store):
    populate(store)
    _tamper(store, "DELETE FROM audit WHERE seq = 4")
    result = store.verify_audit()
    assert not result.ok and result.problem.startswith("event seq 5 ") and "4-4 are missing" in result.problem


def test_deleted_last_rows_and_renumbered_deletion_are_caught(store):
    populate(store)
    _tamper(store, "DELETE FROM audit WHERE seq = 4")
    store.conn.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 4")
    result = store.verify_audit()
    assert not result.ok and result.problem.startswith("event seq 4 ") and "prev_hash" in result.problem


def test_inserted_row_is_named(store):
    populate(store)
    total = len(store.audit_events())
    _tamper(store, "UPDATE audit SET seq = seq + 1000 WHERE seq > 6")
    store.conn.execute("UPDATE audit SET seq = seq - 999 WHERE seq > 1000")
    forged = {
        "seq": 7,
        "run_id": None,
        "at": "2026-01-01T00:00:00+00:00",
        "actor": "U0MALLORY1",
        "event": "approval.granted",
        "step": "bravo",
        "detail": {},
    }
    prev = store.conn.execute("SELECT hash FROM audit WHERE seq = 6").fetchone()[0]
    store.conn.execute(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (7, None, forged["at"], forged["actor"], forged["event"], "bravo", "{}", prev, audit.chain_hash(prev, forged)),
    )
    assert len(store.audit_events()) == total + 1
    result = store.verify_audit()
    # the forged row itself chains correctly; the row after it no longer does
    assert not result.ok and result.problem.startswith("event seq 8 ") and "prev_hash" in result.problem


def test_export_json_and_csv_all_and_one_run(store):
    first, second = populate(store)
    out = io.StringIO()
    count = audit.export_json(store.conn, out)
    events = json.loads(out.getvalue())
    assert count == len(events) == len(store.audit_events())
    assert set(events[0]) == {"seq", "run_id", "at", "actor", "event", "step", "detail", "prev_hash", "hash"}
    assert events[0]["event"] == "run.requested" and events[0]["actor"] == REQUESTER
    out = io.StringIO()
    audit.export_json(store.conn, out, run_id=second)
    only = json.loads(out.getvalue())
    assert only and {e["run_id"] for e in only} == {second}
    out = io.StringIO()
    audit.export_csv(store.conn, out, run_id=first)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == len(store.audit_events(first)) and rows[0]["event"] == "run.requested"
    assert json.loads(rows[0]["detail"])["host"] == "host01"
    empty = io.StringIO()
    assert audit.export_json(store.conn, empty, run_id="run-none") == 0 and json.loads(empty.getvalue()) == []


def test_audit_cli_export_and_verify(tmp_path):
    config = write_config(tmp_path)
    store = Store(tmp_path / "idm-upgrade.db")
    first, _ = populate(store)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "bot", *args, "--config", str(config)], capture_output=True, text=True, cwd=ROOT
        )

    exported = cli("audit", "export", "--format", "json", "--run", first)
    assert exported.returncode == 0 and {e["run_id"] for e in json.loads(exported.stdout)} == {first}
    as_csv = cli("audit", "export", "--format", "csv")
    assert as_csv.returncode == 0 and as_csv.stdout.startswith("seq,run_id,at,actor,event")
    ok = cli("audit", "verify")
    assert ok.returncode == 0 and "intact" in ok.stdout
    _tamper(store, "UPDATE audit SET event = 'approval.denied' WHERE seq = 6")
    store.close()
    bad = cli("audit", "verify")
    assert bad.returncode == 1 and "event seq 6 " in bad.stderr and "BROKEN" in bad.stderr


def test_events_outside_the_contract_are_refused(store):
    with store.transaction(), pytest.raises(ValueError, match="unknown audit event"):
        audit.append(store.conn, "run.exploded", actor="bot")
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit.append(store.conn, "run.started", actor="bot")


def test_forward_migration_applies_to_an_existing_database(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    old = Store(path)
    [run] = old.create_runs(["host01"], requester=REQUESTER, plan=PLAN)
    old.close()

    def v2(db):
        db["runs"].add_column("note", str)

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, v2])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    upgraded = Store(path)
    assert upgraded.schema_version == SCHEMA_VERSION + 1
    assert "note" in upgraded.db["runs"].columns_dict
    assert upgraded.get_run(run.id).host == "host01"  # data kept
    assert upgraded.verify_audit().ok
    upgraded.close()


def test_finishing_a_step_closes_its_open_approval(store):
    [run] = store.create_runs(["host01"], requester=REQUESTER, plan=PLAN)
    approval = store.request_approval(
        run.id, "bravo", gate="STARTTLS", timeout=timedelta(minutes=5), min_approvals=1, evidence={}, change={}
    )
    store.update_step(run.id, "bravo", StepState.skipped, event="step.skipped", reason="already off")
    assert store.get_approval(approval.id).state.value == "cancelled"
    assert store.record_decision(approval.id, APPROVER, "approve").outcome.value == "closed"


def test_the_store_reads_no_kill_points_from_the_environment(tmp_path, monkeypatch):
    """Test hooks are injected (bot/runtime.py), never read from the environment by the Store itself."""
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("IDM_UPGRADE_TRACE", str(trace))
    monkeypatch.setenv("IDM_UPGRADE_KILL_AT", "1:before")
    store = Store(tmp_path / "idm-upgrade.db")  # would SIGKILL this test process at its first transaction
    store.create_runs(["host01"], requester="U0REQUESTER", plan=["alpha"])
    store.close()
    assert not trace.exists()
    from bot.store.killpoints import KillPoints

    traced = Store(tmp_path / "traced.db", hooks=KillPoints({"IDM_UPGRADE_TRACE": str(trace)}))
    traced.create_runs(["host01"], requester="U0REQUESTER", plan=["alpha"])
    traced.close()
    assert trace.read_text().splitlines() == ["run.requested"]  # injected, the hook sees the transition
