"""SIGKILL the engine at every persisted transition of a gated 4-step plan; a fresh process resumes.

Kill points are named by the store's transactions (bot.killpoints): first a clean run traces every
transition, then for each one a child process is killed just before and just after its commit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.core.models import RunState, StepState
from bot.store import checkpoints
from bot.store.store import Store
from tests.support.configs import write_config
from tests.support.fake_steps import FileHost

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["alpha", "bravo", "charlie", "delta"]


def child(workdir: Path, mode: str, decision: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDM_UPGRADE_")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "tests.support.engine_child", str(workdir / "idm-upgrade.toml"), str(workdir)]
    return subprocess.run([*args, mode, decision], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def trace_transitions(tmp_path: Path, decision: str) -> list[str]:
    workdir = tmp_path / "trace"
    workdir.mkdir()
    write_config(workdir)
    trace = workdir / "trace.txt"
    done = child(workdir, "start", decision, {"IDM_UPGRADE_TRACE": str(trace)})
    assert done.returncode == 0, done.stderr
    return trace.read_text().split()


def expected(decision: str) -> tuple[RunState, dict[str, StepState], list[str]]:
    if decision == "approve":
        return RunState.succeeded, dict.fromkeys(STEPS, StepState.succeeded), STEPS
    # a person refused bravo's gate: the run ends denied, not failed, whatever line the first process died at
    states = {"alpha": StepState.succeeded, "bravo": StepState.denied}
    return RunState.denied, {**states, "charlie": StepState.pending, "delta": StepState.pending}, ["alpha"]


def check_outcome(workdir: Path, decision: str) -> None:
    run_state, step_states, applied = expected(decision)
    store = Store(workdir / "idm-upgrade.db")
    try:
        [run] = store.runs()
        assert run.state is run_state, run.result
        assert {s.step: s.state for s in store.steps(run.id)} == step_states
        # Each apply ran exactly once across both processes: never twice, and never again after verify.
        assert FileHost(workdir, "host01").applies() == applied
        verdict = store.verify_audit()
        assert verdict.ok, str(verdict)
        # the run's end is anchored, whichever line the first process died at
        kept = checkpoints.stored(store.conn)
        assert kept and kept[-1].seq == store.audit_events()[-1].seq
        assert checkpoints.check(store.conn, kept, None).ok
        events = [e.event for e in store.audit_events(run.id)]
        assert events.count("run.requested") == 1 and events.count("run.started") == 1
        assert events[-1] == f"run.{run_state.value}" and events.count(events[-1]) == 1
        for step in step_states:
            finished = [e for e in store.audit_events(run.id) if e.step == step and e.event != "step.started"]
            if step_states[step] is StepState.succeeded:
                assert [e.event for e in finished if e.event.startswith("step.")] == ["step.succeeded"]
        granted = events.count("approval.granted")
        assert granted == (2 if decision == "approve" else 0)
    finally:
        store.close()


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_sigkill_at_every_transition_then_resume(tmp_path, decision):
    transitions = trace_transitions(tmp_path, decision)
    assert len(transitions) >= (25 if decision == "approve" else 10)
    tried = 0
    for index, name in enumerate(transitions, start=1):
        for when in ("before", "after"):
            workdir = tmp_path / f"kill-{index}-{when}"
            workdir.mkdir()
            write_config(workdir)
            killed = child(workdir, "start", decision, {"IDM_UPGRADE_KILL_AT": f"{index}:{when}"})
            assert killed.returncode == -signal.SIGKILL, f"{name} {when}: {killed.stderr}"
            if index == 1 and when == "before":
                # killed before the first commit: nothing was queued, so the request is simply sent again
                assert not Store(workdir / "idm-upgrade.db").runs()
                resumed = child(workdir, "start", decision, {})
            else:
                resumed = child(workdir, "resume", decision, {})
            assert resumed.returncode == 0, f"{name} {when}: {resumed.stderr}"
            try:
                check_outcome(workdir, decision)
            except AssertionError as exc:
                raise AssertionError(f"kill point {index}:{when} ({name}): {exc}") from exc
            tried += 1
    print(f"\n{decision}: {tried} kill points tried over {len(transitions)} transitions: {transitions}")
    assert tried == 2 * len(transitions)


def test_waiting_approval_survives_restart_and_expires_on_time(tmp_path):
    """Killed while waiting for STARTTLS approval; the approval expires while no bot runs."""
    write_config(tmp_path, slack="approval_timeout_minutes = 0.01")  # 0.6 s
    killed = child(tmp_path, "start", "none", {"IDM_UPGRADE_KILL_AT": "8:after"})  # 8 = approval.requested
    assert killed.returncode == -signal.SIGKILL
    store = Store(tmp_path / "idm-upgrade.db")
    [run] = store.runs()
    assert run.state is RunState.waiting_approval
    [approval] = store.approvals(run.id)
    assert approval.state.value == "open"
    store.close()
    time.sleep(0.7)
    resumed = child(tmp_path, "resume", "none", {})
    assert resumed.returncode == 0, resumed.stderr
    store = Store(tmp_path / "idm-upgrade.db")
    [run] = store.runs()
    assert run.state is RunState.failed and "expired" in run.result
    assert [e.event for e in store.audit_events(run.id)][-3:] == ["approval.expired", "step.failed", "run.failed"]
    assert FileHost(tmp_path, "host01").applies() == ["alpha"]
    assert store.verify_audit().ok
    store.close()


def test_waiting_approval_survives_restart_and_is_granted(tmp_path):
    write_config(tmp_path)
    killed = child(tmp_path, "start", "none", {"IDM_UPGRADE_KILL_AT": "8:after"})
    assert killed.returncode == -signal.SIGKILL
    resumed = child(tmp_path, "resume", "approve", {})
    assert resumed.returncode == 0, resumed.stderr
    check_outcome(tmp_path, "approve")
