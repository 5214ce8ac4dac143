"""A retry survives a crash: SIGKILL the engine just before and just after run.retried is committed; a fresh
process does the right thing (before: the run is still failed, nothing written; after: it is queued on its
second attempt, and the restart drives it from its failed step to success, the earlier steps not again)."""

from __future__ import annotations

import signal

from bot.core.models import RunState, StepState
from bot.store.store import Store
from tests.engine.test_crash_resume import child
from tests.support.configs import write_config
from tests.support.fake_steps import FileHost

FAIL = {"IDM_UPGRADE_TEST_FAIL": "charlie:apply"}


def the_run(workdir):
    store = Store(workdir / "idm-upgrade.db")
    try:
        [run] = store.runs()
        return run, {s.step: s.state for s in store.steps(run.id)}, [e.event for e in store.audit_events(run.id)]
    finally:
        store.close()


def failed_at_charlie(tmp_path, name):
    workdir = tmp_path / name
    workdir.mkdir()
    write_config(workdir)
    done = child(workdir, "start", "approve", FAIL)
    assert done.returncode == 0, done.stderr
    run, steps, _ = the_run(workdir)
    assert run.state is RunState.failed and steps["charlie"] is StepState.failed
    return workdir


def test_killed_just_after_run_retried_the_restart_resumes_it(tmp_path):
    workdir = failed_at_charlie(tmp_path, "after")
    killed = child(workdir, "retry", "approve", {"IDM_UPGRADE_KILL_AT": "run.retried:after"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run, steps, trail = the_run(workdir)
    assert run.state is RunState.queued and run.attempt == 2 and steps["charlie"] is StepState.pending
    assert trail[-1] == "run.retried"

    resumed = child(workdir, "resume", "approve", {})
    assert resumed.returncode == 0, resumed.stderr
    run, steps, trail = the_run(workdir)
    assert run.state is RunState.succeeded, run.result
    assert set(steps.values()) == {StepState.succeeded}
    # alpha and bravo once (not again after the retry); charlie's failed apply and its new one; delta once
    assert sorted(FileHost(workdir, "host01").applies()) == ["alpha", "bravo", "charlie", "charlie", "delta"]
    assert trail.count("run.retried") == 1


def test_killed_just_before_run_retried_commits_nothing_is_written(tmp_path):
    workdir = failed_at_charlie(tmp_path, "before")
    before = the_run(workdir)
    killed = child(workdir, "retry", "approve", {"IDM_UPGRADE_KILL_AT": "run.retried:before"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert the_run(workdir) == before  # still failed on attempt 1, the same trail
