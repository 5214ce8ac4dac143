"""Every listed sandbox scenario ends, with the bot's own verdict, well within the sandbox's give-up time;
and when the sandbox does give up, it says so and on which step."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.core.config import ConnectorConfig
from sandbox.host import SCENARIOS
from sandbox.run import (
    GIVE_UP_SECONDS,
    INSTALLER_TIMEOUT_MINUTES,
    REBOOT_TIMEOUT_SECONDS,
    SERVICE_TIMEOUT_SECONDS,
    run_sandbox,
)

ROOT = Path(__file__).resolve().parents[2]
RESULT = re.compile(r"^sandbox: host01 (succeeded|failed|denied|cancelled) in \d+ s; audit chain verified")


def run_scenario(name: str) -> tuple[str, int, float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "sandbox", "--scenario", name],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=GIVE_UP_SECONDS + 120,
    )
    return name, proc.returncode, time.monotonic() - started, proc.stdout


def test_the_bots_own_timeouts_in_the_sandbox_end_before_the_sandbox_gives_up():
    assert ConnectorConfig().service_timeout_seconds > SERVICE_TIMEOUT_SECONDS  # not the production 300 s
    for own in (SERVICE_TIMEOUT_SECONDS, REBOOT_TIMEOUT_SECONDS, INSTALLER_TIMEOUT_MINUTES * 60):
        assert own * 2 <= GIVE_UP_SECONDS


@pytest.mark.timeout(900)
def test_every_scenario_ends_with_a_verdict_and_an_exit_code_in_bounded_time():
    # four at a time: the scenarios mostly wait on simulated hosts' (scaled) clocks, not on the CPU
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run_scenario, SCENARIOS))
    for name, code, seconds, out in results:
        last = out.strip().splitlines()[-1]
        assert RESULT.match(last), f"{name}: {last!r}"
        assert code == (0 if " succeeded in " in last else 1), f"{name}: exit {code} for {last!r}"
        # the bot's own verdict, not the sandbox's patience (allowing a loaded machine twice the give-up time)
        assert seconds < GIVE_UP_SECONDS * 2, f"{name} took {seconds:.0f} s"


def test_service_wont_start_fails_on_the_service_step_with_the_bots_own_timeout():
    name, code, seconds, out = run_scenario("service-wont-start")
    last = out.strip().splitlines()[-1]
    assert code == 1 and last.startswith("sandbox: host01 failed in "), last
    assert "running in" not in last and "gave up" not in last
    assert "VMwareIDMConnector" in out and "connector.log" in out  # the step's reason: the service and its log
    assert seconds < GIVE_UP_SECONDS


async def test_when_the_sandbox_gives_up_it_says_so_and_where_the_run_is():
    out = io.StringIO()
    code = await run_sandbox(scenario="reboot-never-returns", out=out, timeout=3)
    last = out.getvalue().strip().splitlines()[-1]
    assert code == 1
    assert re.fullmatch(
        r"sandbox: gave up after \d+ s; host01 still (running|waiting for approval|queued)( \(step \w+\))?", last
    ), last


@pytest.mark.timeout(600)
def test_the_scheduled_scenario_shows_the_run_scheduled_then_started_when_its_window_opens_then_succeeded():
    name, code, _seconds, out = run_scenario("scheduled")
    assert code == 0, out[-2000:]
    lines = out.splitlines()
    assert lines[0].startswith("sandbox: maintenance window sandbox: daily ") and " opens in " in lines[0]
    assert lines[1] == "$ /idm-upgrade host01 at next-window    (as @requester, scenario scheduled)"
    scheduled = next(i for i, line in enumerate(lines) if "*State:* 🗓️ scheduled for " in line)
    started = next(i for i, line in enumerate(lines) if "Started: it was scheduled for " in line)
    assert scheduled < started
    assert RESULT.match(lines[-1]) and " host01 succeeded in " in lines[-1]
    # the card had shown the window's opening, and the run started at that time
    when = re.search(r"scheduled for (\w{3} \d{4}-\d\d-\d\d \d\d:\d\d UTC)", lines[scheduled]).group(1)
    assert f"Started: it was scheduled for {when}" in lines[started]
