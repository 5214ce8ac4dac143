"""A scheduled run survives a SIGKILL of the bot: it is in the database, and a process started after its
time starts it at once (no window: nothing keeps it), once, with an audit trail that verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta

from bot.core.models import RunState, utcnow
from bot.store.store import Store
from tests.engine.test_crash_resume import ROOT, STEPS, child
from tests.support.configs import write_config
from tests.support.fake_steps import FileHost
from tests.support.waiting import wait_until


def test_a_scheduled_run_survives_sigkill_and_starts_when_the_bot_comes_back_after_its_time(tmp_path):
    write_config(tmp_path)
    due = utcnow() + timedelta(seconds=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDM_UPGRADE_")} | {"PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "tests.support.engine_child", str(tmp_path / "idm-upgrade.toml"), str(tmp_path)]
    first = subprocess.Popen([*args, "schedule", "approve", due.isoformat()], env=env, cwd=ROOT)
    store = Store(tmp_path / "idm-upgrade.db")
    try:
        wait_until(lambda: store.runs(), what="the child scheduled the run")
        os.kill(first.pid, signal.SIGKILL)  # before it is due
        assert first.wait(30) == -signal.SIGKILL
        [run] = store.runs()
        assert run.state is RunState.scheduled and run.scheduled_for is not None
        assert FileHost(tmp_path, "host01").applies() == []
        wait_until(lambda: utcnow() >= run.scheduled_for, timeout=10, what="the run's time")

        done = child(tmp_path, "resume", "approve", {})
        assert done.returncode == 0, done.stderr
        run = store.get_run(run.id)
        assert run.state is RunState.succeeded, run.result
        assert FileHost(tmp_path, "host01").applies() == STEPS
        events = [e.event for e in store.audit_events(run.id)]
        assert events.count("run.requested") == 1 and events.count("run.started") == 1
        started = next(e for e in store.audit_events(run.id) if e.event == "run.started")
        assert datetime.fromisoformat(started.at) >= run.scheduled_for  # not before its time
        assert store.verify_audit().ok
    finally:
        store.close()
