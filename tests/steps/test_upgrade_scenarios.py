"""Every step of the vendor procedure against the simulated host, one scenario at a time."""

from __future__ import annotations

from datetime import datetime

import pytest

from bot.core.config import Secrets
from bot.core.models import RunState, StepState
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import Engine
from bot.store.store import Store
from bot.systems.services import Services
from bot.systems.winrm import WinRMExecutor
from sandbox.host import NEW_JRE_HOME, OLD_JRE_HOME
from sandbox.threaded import running_host
from sandbox.workspace_one import WorkspaceOneStandIn
from steps.plan import upgrade_plan
from tests.steps.conftest import Clicker, sandbox_config
from tests.support.configs import REQUESTER
from tests.support.waiting import eventually

PLAN = ["preflight", "snapshot", "starttls", "stage", "install", "service", "reboot", "verify", "postcheck"]


def states(engine, run):
    return {s.step: s.state for s in engine.store.steps(run.id)}


def scripts_run(host) -> dict[str, int]:
    return host.stats["scripts"]


async def test_default_scenario_end_to_end(upgrade):
    async with WorkspaceOneStandIn() as ws1:
        engine, host, clicker, run = await upgrade("default", ws1=ws1)
        assert len(ws1.updates) == 1 and ws1.updates[0].document["useStartTls"] is False
    assert run.state is RunState.succeeded, run.result
    assert [s.step for s in engine.store.steps(run.id)] == PLAN
    assert set(states(engine, run).values()) == {StepState.succeeded}
    assert "revert the VM to snapshot 'idm-upgrade run-" in run.result
    # the host: upgraded, the new JRE in JAVA_HOME after exactly one installer and one reboot
    assert host.state.connector.version == "19.03.0.1"
    assert host.state.java_home == NEW_JRE_HOME != OLD_JRE_HOME
    assert host.state.service.state == "Running"
    assert host.stats["installs_started"] == 1 and host.stats["reboots_requested"] == 1
    # the reboot only after its approval, and the reboot script ran after the grant
    assert [a["gate"] for a in clicker.asked] == ["snapshot", "STARTTLS", "install", "reboot"]
    events = engine.store.audit_events(run.id)
    granted = next(e for e in events if e.event == "approval.granted" and e.step == "reboot")
    reboot_requests = [r for r in host.requests if r.script == "reboot"]
    assert len(reboot_requests) == 1
    assert reboot_requests[0].at > datetime.fromisoformat(granted.at).timestamp()
    # why, in the record: exit code, JRE before, versions
    install = engine.store.step(run.id, "install").facts
    assert install["exit_code"] == 0 and install["reboot_required"] is True
    assert engine.store.verify_audit().ok


async def test_physical_without_jre_change_needs_no_reboot(upgrade):
    engine, host, clicker, run = await upgrade("physical")
    assert run.state is RunState.succeeded, run.result
    # no snapshot on a physical server; STARTTLS by hand (no Workspace ONE API here); no reboot
    assert [a["gate"] for a in clicker.asked] == ["STARTTLS", "STARTTLS console", "install"]
    assert engine.store.step(run.id, "snapshot").state is StepState.skipped
    reboot = engine.store.step(run.id, "reboot")
    assert reboot.state is StepState.skipped and "no reboot needed" in reboot.reason
    assert host.stats["reboots_requested"] == 0 and "reboot" not in scripts_run(host)


async def test_the_installer_runs_only_after_the_install_approval(upgrade):
    """policy.approve_install (default true): the connector's downtime is approved before the installer starts."""
    engine, host, clicker, run = await upgrade("physical")
    assert run.state is RunState.succeeded, run.result
    [asked] = [a for a in clicker.asked if a["gate"] == "install"]
    assert asked["request_kind"] == "approval"
    shown = asked["evidence"]
    assert "19.03.0.1" in shown["what_changes"] and engine.config.installer.sha256 in shown["what_changes"]
    assert "VMwareIDMConnector service stops and restarts" in shown["what_changes"]
    assert "→ 19.03.0.1" in shown["what_changes"] and shown["why"].startswith("upgrade ")
    granted = next(
        e for e in engine.store.audit_events(run.id) if e.event == "approval.granted" and e.step == "install"
    )
    # the grant covers this installer over this version on this host, and the audit says so
    assert granted.detail["change"]["installer"] == {"version": "19.03.0.1", "sha256": engine.config.installer.sha256}
    assert granted.detail["change"]["host"] == "host01" and granted.detail["digest"].startswith("sha256:")
    [launch] = [r for r in host.requests if r.script == "install_start"]
    assert launch.at > datetime.fromisoformat(granted.at).timestamp()


async def test_a_denied_install_installs_nothing(upgrade):
    engine, host, clicker, run = await upgrade("physical", decision={"install": "deny"})
    assert run.state is RunState.denied
    assert run.result.startswith("install approval denied by U0APPROVER1")
    # physical: no snapshot; STARTTLS by a person in the console, before the install was asked
    assert "Not changed: the connector (still 19.03.0.0; the installer did not run)" in run.result
    assert "revert the VM" not in run.result  # the host itself was not changed, and there is no snapshot
    assert host.state.connector.version != "19.03.0.1"  # still the old connector
    assert host.stats["installs_started"] == 0 and "install_start" not in scripts_run(host)
    assert host.state.service.state == "Running"  # the connector was never stopped
    steps = states(engine, run)
    assert steps["install"] is StepState.denied and steps["service"] is StepState.pending


async def test_approve_install_false_runs_the_installer_without_asking(upgrade):
    engine, host, clicker, run = await upgrade("physical", extra="policy: approve_install = false")
    assert run.state is RunState.succeeded, run.result
    assert [a["gate"] for a in clicker.asked] == ["STARTTLS", "STARTTLS console"]
    assert host.stats["installs_started"] == 1 and host.state.connector.version == "19.03.0.1"


async def test_already_current_changes_nothing(upgrade):
    engine, host, _clicker, run = await upgrade("already-current")
    assert run.state is RunState.succeeded and run.result.startswith("nothing to do")
    steps = states(engine, run)
    assert steps["verify"] is StepState.succeeded
    for step in ("stage", "install", "service", "reboot"):
        assert steps[step] is StepState.skipped
    ran = scripts_run(host)
    for script in ("stage", "install_start", "reboot", "service"):
        assert script not in ran, ran
    assert host.stats["installs_started"] == 0 and host.stats["boots"] == 0


async def test_check_only_runs_preflight_then_plans_the_rest_reading_only(upgrade):
    # A check run is preflight, then each step's plan: scripts that read (the installer's hash, Programs &
    # Features, the service, the host again), never one that changes the host; no request is made.
    async with WorkspaceOneStandIn() as ws1:
        engine, host, _clicker, run = await upgrade("default", check_only=True, ws1=ws1)
        assert ws1.updates == []
    assert run.state is RunState.succeeded
    assert [s.step for s in engine.store.steps(run.id)] == ["preflight"]
    assert set(scripts_run(host)) <= {"preflight", "filehash", "product", "service"}, scripts_run(host)
    assert host.stats["installs_started"] == 0 and host.stats["boots"] == 0
    assert engine.store.approvals(run.id) == []
    plan = engine.store.step(run.id, "preflight").facts["plan"]
    assert [s["step"] for s in plan["steps"]] == list(engine.steps)
    assert [a["gate"] for a in plan["approvals"]] == ["snapshot", "STARTTLS", "install", "reboot"]


@pytest.mark.parametrize(
    ("scenario", "extra", "step", "says"),
    [
        ("install-fails-1603", "", "install", ["exit code 1603", "nothing was rebooted", "should still be installed"]),
        ("service-wont-start", "connector: service_timeout_seconds = 1", "service", ["is Stopped", "connector.log"]),
        ("reboot-never-returns", "winrm: connect_timeout_seconds = 1", "reboot", ["did not come back from the reboot"]),
        ("pending-reboot", "", "preflight", ["a reboot is already pending", "Reboot the server first"]),
        ("low-disk", "", "preflight", ["GB free on C:", "Free disk space"]),
        ("hash-mismatch", "", "stage", ["SHA-256 mismatch", "deleted", "installer.url and installer.sha256"]),
    ],
)
async def test_failure_scenarios_stop_at_the_right_step_and_say_why(upgrade, scenario, extra, step, says):
    engine, host, _clicker, run = await upgrade(scenario, extra=extra)
    assert run.state is RunState.failed
    record = engine.store.step(run.id, step)
    assert record.state is StepState.failed
    for words in says:
        assert words in record.reason, record.reason
    assert run.result.startswith(f"{step} failed:")
    later = PLAN[PLAN.index(step) + 1 :]
    assert all(states(engine, run)[s] is StepState.pending for s in later)
    if step in ("preflight", "stage", "install"):
        assert host.stats["reboots_requested"] == 0  # no reboot on a failed install
    if scenario == "hash-mismatch":
        staged = f"{engine.config.installer.work_dir}\\{host.state.artifact.file_name}"
        assert host.state.file(staged) is None, "a mismatching download is deleted"
    assert engine.store.verify_audit().ok


async def test_pending_reboot_can_be_put_to_an_approver(upgrade):
    _engine, _host, clicker, run = await upgrade("pending-reboot", extra='preflight: pending_reboot = "ask"')
    gates = [a["gate"] for a in clicker.asked]
    assert gates[0] == "pending reboot" and gates[-1] == "reboot"
    assert run.state is RunState.succeeded, run.result


async def test_denied_reboot_says_the_upgrade_is_installed_but_not_rebooted(upgrade):
    _engine, host, _clicker, run = await upgrade("default", decision={"reboot": "deny"})
    assert run.state is RunState.denied
    assert "reboot approval denied" in run.result
    assert "IS INSTALLED" in run.result and "NOT been rebooted" in run.result
    assert host.state.connector.version == "19.03.0.1" and host.stats["reboots_requested"] == 0


async def test_installer_busy_1618_is_retried(upgrade):
    def busy_once(state):
        state.installer.busy_first_starts = 1

    engine, _host, _clicker, run = await upgrade(
        "physical", extra="installer: busy_wait_seconds = 0.1", tweak=busy_once
    )
    assert run.state is RunState.succeeded, run.result
    install = engine.store.step(run.id, "install").facts
    assert install["attempts"] == 2 and install["exit_code"] == 0


async def test_bot_restarted_while_the_server_is_down_for_its_reboot(tmp_path):
    """The bot stops mid reboot wait and starts again while the host still refuses connections."""
    with running_host("default") as host:
        host.state.reboot.downtime_seconds = 300  # 3 s at the test time scale: longer than the retries below
        config = sandbox_config(host, tmp_path / "r.db", "winrm: connect_timeout_seconds = 1")
        secrets = Secrets.from_env({"WINRM_USERNAME": host.username, "WINRM_PASSWORD": host.password})

        def engine_with(clicker):
            executor = WinRMExecutor(config, secrets, retry_delays=(0.1, 0.1))
            engine = Engine(
                Store(config.database.path),
                config,
                upgrade_plan(),
                policy=ApprovalPolicy(config.slack),
                sinks=[clicker],
                services=Services(winrm=executor),
                approval_poll_seconds=0.05,
            )
            clicker.engine = engine
            return engine, executor

        first, first_executor = engine_with(Clicker())
        [run] = await first.submit(["host01"], REQUESTER)
        await eventually(
            lambda: host.stats["reboots_requested"] == 1 and not host.server.online,
            timeout=60,
            interval=0.02,
            what="the reboot was requested and the server went down",
        )
        assert host.stats["reboots_requested"] == 1
        await first.stop()  # the bot goes away while the server is down
        first_executor.close()
        second, second_executor = engine_with(Clicker())
        await second.start()
        await second.join()
        await second.stop()
        second_executor.close()
        done = second.store.get_run(run.id)
        assert done.state is RunState.succeeded, done.result
        assert host.stats["reboots_requested"] == 1 and host.stats["installs_started"] == 1
