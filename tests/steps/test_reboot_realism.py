"""The reboot and the connector service as a real Windows Server 2016 (PowerShell 5.1) has them.

Field notes section 8: Get-Content lines serialise as objects, a service is Start Pending for a while after
a boot, Start-Service blocks while a service is Start Pending, a clock step moves LastBootUpTime, and a
restart without a reason code is logged as unplanned. Every test drives the real scripts through the real
executor and pywinrm against the simulated host; where a test shows how the sandbox answers a script
written the old way, it sends that script from a temporary scripts directory.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core.config import Secrets
from bot.core.models import RunState, StepState
from bot.systems.winrm import SCRIPTS_DIR, CommandTimedOut, WinRMExecutor
from sandbox.host import CONNECTOR_LOG
from sandbox.host_model import UNPLANNED_REASON, ShutdownCall
from sandbox.threaded import running_host
from steps.facts import RebootIssued, ServiceStatus
from steps.reboot import REBOOT_CLOCK_MARGIN_SECONDS, read_boot_time, wait_for_reboot
from tests.steps.conftest import sandbox_config

MARKERS = r"C:\ProgramData\idm-upgrade\markers"
SERVICE = {"ServiceName": "VMwareIDMConnector", "Start": False, "LogPath": CONNECTOR_LOG, "Tail": 5}


def executor_for(host, tmp_path: Path, scripts_dir: Path = SCRIPTS_DIR, extra: str = "") -> WinRMExecutor:
    config = sandbox_config(host, tmp_path / "unused.db", extra)
    secrets = Secrets.from_env({"WINRM_USERNAME": host.username, "WINRM_PASSWORD": host.password})
    return WinRMExecutor(config, secrets, scripts_dir=scripts_dir, retry_delays=(0.1, 0.2))


def scripts_with(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of steps/ps where NAME.ps1 has `old` replaced by `new` (the script as it was written before)."""
    folder = tmp_path / "ps"
    shutil.copytree(SCRIPTS_DIR, folder)
    path = folder / f"{name}.ps1"
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{name}.ps1 no longer holds {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return folder


def reboot_params(token: str, delay: int) -> dict:
    return {
        "DelaySeconds": delay,
        "Reason": "idm-upgrade run-1: connector upgrade (approved)",
        "Token": token,
        "MarkerDirectory": MARKERS,
        "MarginSeconds": REBOOT_CLOCK_MARGIN_SECONDS,
    }


# ----- 1. Get-Content lines are objects to ConvertTo-Json on 5.1 ------------------------------------------


async def test_the_service_log_tail_arrives_as_plain_lines(tmp_path):
    with running_host("service-wont-start") as host:
        winrm = executor_for(host, tmp_path)
        try:
            raw = (await winrm.run("host01", "service", SERVICE)).data
        finally:
            winrm.close()
    assert len(raw["logTail"]) == 5
    assert all(isinstance(line, str) for line in raw["logTail"]), raw["logTail"][0]
    assert any("BeanCreationException" in line for line in raw["logTail"])


async def test_the_sandbox_answers_an_unwrapped_get_content_as_5_1_does(tmp_path):
    """A script that hands Get-Content's lines straight to ConvertTo-Json gets 5.1's objects."""
    old = scripts_with(tmp_path, "service", "| ForEach-Object { [string]$_ }", "")
    with running_host("service-wont-start") as host:
        winrm = executor_for(host, tmp_path, old)
        try:
            raw = (await winrm.run("host01", "service", SERVICE)).data
        finally:
            winrm.close()
    first = raw["logTail"][0]
    assert isinstance(first, dict) and isinstance(first["value"], str)
    assert first["PSPath"] == f"Microsoft.PowerShell.Core\\FileSystem::{CONNECTOR_LOG}"
    assert first["PSDrive"]["Root"] == "C:\\"


async def test_a_service_that_wont_start_fails_the_upgrade_with_its_log_lines(upgrade):
    engine, _host, _clicker, run = await upgrade("service-wont-start", extra="connector: service_timeout_seconds = 1")
    assert run.state is RunState.failed
    # the log's lines are kept with the step (its Slack reply shows them once), not in the run's result
    tail = engine.store.step(run.id, "service").facts["log_tail"]
    assert any("BeanCreationException" in line for line in tail) and not any("PSPath" in line for line in tail)
    assert "BeanCreationException" not in run.result and "connector.log" in run.result


# ----- 2. after a boot the connector is Start Pending for a while -----------------------------------------


async def test_after_the_reboot_the_service_is_awaited_while_start_pending(upgrade):
    engine, host, _clicker, run = await upgrade("delayed-service-start")
    assert run.state is RunState.succeeded, run.result
    assert host.stats["reboots_requested"] == 1 and host.state.service.state == "Running"
    reboot = engine.store.step(run.id, "reboot")
    assert reboot.state is StepState.succeeded
    # it was really Start Pending when the host answered again: the first service read after the boot says so
    assert reboot.facts["service_after_reboot"]["first"]["state"] == "Start Pending"


async def test_a_service_still_start_pending_after_the_service_timeout_fails_the_reboot(upgrade):
    def forever(state):
        state.service_start_pending_after_boot_seconds = 1e6

    _engine, host, _clicker, run = await upgrade(
        "delayed-service-start", tweak=forever, extra="connector: service_timeout_seconds = 1"
    )
    assert run.state is RunState.failed
    assert "VMwareIDMConnector is Start Pending (start mode Auto) 1 s after the reboot" in run.result
    assert "connector.log" in run.result
    assert host.stats["reboots_requested"] == 1


# ----- 3. Start-Service blocks while the service is Start Pending -----------------------------------------


def slow_to_start(state) -> None:
    state.service.state = "Stopped"
    state.service.start_seconds = 1e5  # 1,000 s at the test time scale: longer than any command deadline


async def test_starting_the_service_returns_at_once_and_the_caller_polls(tmp_path):
    with running_host("default") as host:
        slow_to_start(host.state)
        winrm = executor_for(host, tmp_path)
        try:
            started = time.monotonic()
            raw = (await winrm.run("host01", "service", {**SERVICE, "Start": True}, deadline=10)).data
            took = time.monotonic() - started
        finally:
            winrm.close()
    assert ServiceStatus.model_validate(raw).state == "Start Pending"
    assert took < 10


async def test_the_sandbox_blocks_start_service_for_the_whole_start(tmp_path):
    """Start-Service waits, with no timeout of its own, until the start is over: the command deadline ends it."""
    old = scripts_with(
        tmp_path,
        "service",
        "[void](Get-Service -Name $s.Name).Start()",
        "Start-Service -Name $s.Name -WarningAction SilentlyContinue",
    )
    with running_host("default") as host:
        slow_to_start(host.state)
        winrm = executor_for(host, tmp_path, old)
        try:
            with pytest.raises(CommandTimedOut):
                await winrm.run("host01", "service", {**SERVICE, "Start": True}, deadline=1.5)
        finally:
            winrm.close()


# ----- 4. a clock step moves LastBootUpTime without a reboot ----------------------------------------------


async def test_a_clock_step_is_not_taken_for_a_reboot(upgrade):
    engine, host, _clicker, run = await upgrade("clock-step")
    assert run.state is RunState.succeeded, run.result
    assert host.stats["reboots_requested"] == 1 and host.stats["boots"] == 1
    assert engine.store.step(run.id, "reboot").state is StepState.succeeded


async def test_waiting_for_the_reboot_sees_through_a_clock_step(tmp_path):
    with running_host("default") as host:
        winrm = executor_for(host, tmp_path)
        try:
            before = await read_boot_time(winrm, "host01")
            # 3 s at the test time scale: the clock steps while shutdown /t counts down
            first = (await winrm.run("host01", "reboot", reboot_params("clock-1", 300))).data
            issued = RebootIssued.model_validate(first)
            assert issued.issued and issued.requested_at is not None
            host.state.step_clock(4)
            assert await read_boot_time(winrm, "host01") == before + timedelta(seconds=4)
            # reboot.ps1's marker: the boot time differs, but it is not later than the request
            again = RebootIssued.model_validate(
                (await winrm.run("host01", "reboot", reboot_params("clock-1", 300))).data
            )
            assert (again.already_scheduled, again.already_rebooted) == (True, False)
            assert again.requested_at == issued.requested_at
            back = await wait_for_reboot(winrm, winrm.config, "host01", before, 30, requested_at=issued.requested_at)
            assert host.stats["boots"] == 1
            assert back > issued.requested_at - timedelta(seconds=REBOOT_CLOCK_MARGIN_SECONDS)
            after = RebootIssued.model_validate(
                (await winrm.run("host01", "reboot", reboot_params("clock-1", 300))).data
            )
            assert (after.already_scheduled, after.already_rebooted) == (False, True)
        finally:
            winrm.close()


# ----- 5. a planned restart is logged as planned --------------------------------------------------------


async def test_the_reboot_is_logged_as_a_planned_maintenance(tmp_path):
    with running_host("default") as host:
        winrm = executor_for(host, tmp_path)
        try:
            await winrm.run("host01", "reboot", reboot_params("planned-1", 600))
        finally:
            winrm.close()
        [call] = host.state.shutdown_calls
    assert call.args == ("/r", "/t", "600", "/d", "p:4:1", "/c", "idm-upgrade run-1: connector upgrade (approved)")
    assert call.logged_as == "Application: Maintenance (Planned)"


def test_a_shutdown_without_a_reason_code_is_logged_as_unplanned():
    assert ShutdownCall(("/r", "/t", "5", "/c", "x")).logged_as == UNPLANNED_REASON
    assert ShutdownCall(("/r", "/d", "p:4:1", "/c", "x")).logged_as != UNPLANNED_REASON
