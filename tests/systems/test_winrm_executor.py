"""The WinRM executor against the simulated host: real pywinrm, real WS-Management over HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.core.config import Config, ConfigError, Secrets, parse_config
from bot.systems.winrm import (
    AuthenticationFailed,
    BadOutput,
    CappedStream,
    CommandOutcomeUnknown,
    CommandTimedOut,
    CommandTooLong,
    HostUnreachable,
    ScriptFailed,
    WinRMExecutor,
    build_script,
    clean_stderr,
    command_line,
    powershell_literal,
)
from sandbox.host import SCENARIOS
from sandbox.ps_handlers import HANDLERS, HandlerResult
from sandbox.threaded import running_fleet, running_host
from steps.reboot import RebootTimedOut, read_boot_time, wait_for_reboot
from tests.support.waiting import eventually
from tests.systems.faults import server_error_on

PREFLIGHT = {
    "ServiceName": "VMwareIDMConnector",
    "ProductNamePattern": "VMware Identity Manager Connector*",
    "Drive": "C:",
}


def make_config(endpoints: dict[str, str], winrm: str = "", scheme: str = "http", transport: str = "basic") -> Config:
    hosts = ""
    for name, endpoint in endpoints.items():
        url = urlsplit(endpoint)
        hosts += f'[hosts.{name}]\naddress = "{url.hostname}"\nport = {url.port}\n'
    text = f"""
[slack]
channel = "C0OPSCHANL"
requesters = ["U0REQUESTER"]
[installer]
url = "http://127.0.0.1/x.exe"
sha256 = "{"ab" * 32}"
version = "19.03.0.1"
[winrm]
scheme = "{scheme}"
transport = "{transport}"
{winrm}
{hosts}
"""
    return parse_config(tomllib.loads(text))


def executor_for(host, winrm: str = "", **kwargs) -> WinRMExecutor:
    config = make_config({"host01": host.endpoint}, winrm)
    secrets = Secrets.from_env({"WINRM_USERNAME": host.username, "WINRM_PASSWORD": host.password})
    return WinRMExecutor(config, secrets, retry_delays=(0.1, 0.2), **kwargs)


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog):
    """Every test here also proves the password never reaches a log line."""
    caplog.set_level(logging.DEBUG)
    passwords: list[str] = []
    yield passwords
    for password in passwords:
        assert password not in caplog.text


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_preflight_facts_for_every_scenario(scenario, no_secrets_in_logs):
    with running_host(scenario) as host:
        no_secrets_in_logs.append(host.password)
        executor = executor_for(host)
        result = await executor.run("host01", "preflight", PREFLIGHT)
        facts = result.data
        state = host.state
        assert facts["connector"]["installed"] is (state.connector is not None)
        if state.connector:
            assert facts["connector"]["version"] == state.connector.version
        assert facts["machine"]["virtual"] is state.manufacturer.startswith("VMware")
        assert facts["pendingReboot"]["any"] is (scenario == "pending-reboot")
        assert facts["disk"]["freeBytes"] == state.free_bytes["C:"]
        assert facts["java"]["version"] == state.java_version
        assert facts["java"]["home"] == state.java_home
        assert result.exit_code == 0 and result.attempts == 1
        executor.close()


async def test_command_slower_than_operation_timeout_completes_by_polling():
    with running_host() as host:
        host.faults.command_delay_seconds = 2.5
        executor = executor_for(host, "operation_timeout_seconds = 1\nread_timeout_seconds = 3")
        result = await executor.run("host01", "boottime")
        assert "bootTime" in result.data
        timed_out = [r for r in host.requests if r.action == "Receive" and r.status == 500]
        assert len(timed_out) >= 2  # pywinrm polled again after each w:TimedOut, as against Windows
        executor.close()


async def test_command_past_its_deadline_is_stopped_and_reported():
    with running_host() as host:
        host.faults.command_delay_seconds = 30
        executor = executor_for(host, "operation_timeout_seconds = 5\nread_timeout_seconds = 8")
        started = time.monotonic()
        with pytest.raises(CommandTimedOut) as caught:
            await executor.run("host01", "boottime", deadline=1.5)
        elapsed = time.monotonic() - started
        assert caught.value.deadline == 1.5 and "deadline of 1.5 s" in str(caught.value)
        assert elapsed < 4  # the Receive wait was shortened to the deadline, not the 5 s operation timeout
        assert any(r.action == "Signal" for r in host.requests)
        assert host.stats["commands_in_flight"] == 0
        executor.close()


async def test_cancelling_the_task_stops_the_command_on_the_host():
    with running_host() as host:
        host.faults.command_delay_seconds = 30
        executor = executor_for(host, "operation_timeout_seconds = 1\nread_timeout_seconds = 3")
        task = asyncio.create_task(executor.run("host01", "boottime"))
        await eventually(lambda: host.stats["commands_in_flight"] == 1, what="the command running on the host")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert any(r.action == "Signal" for r in host.requests)
        assert host.stats["commands_in_flight"] == 0
        executor.close()


async def test_wrong_password_is_an_authentication_error_without_the_password(no_secrets_in_logs):
    with running_host() as host:
        config = make_config({"host01": host.endpoint})
        wrong = "Wr0ng-Pa55word-Not-Shown"
        no_secrets_in_logs.append(wrong)
        executor = WinRMExecutor(config, Secrets.from_env({"WINRM_USERNAME": host.username, "WINRM_PASSWORD": wrong}))
        with pytest.raises(AuthenticationFailed) as caught:
            await executor.run("host01", "boottime")
        assert wrong not in str(caught.value) and wrong not in repr(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        assert "refused the credentials" in str(caught.value)
        executor.close()


async def test_refused_port_is_unreachable_after_bounded_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = make_config({"host01": f"http://127.0.0.1:{port}/wsman"})
    executor = WinRMExecutor(
        config, Secrets.from_env({"WINRM_USERNAME": "u", "WINRM_PASSWORD": "p"}), retry_delays=(0.05, 0.05)
    )
    with pytest.raises(HostUnreachable) as caught:
        await executor.run("host01", "boottime")
    assert "connection refused" in str(caught.value)
    executor.close()


async def test_dropped_receive_is_polled_again_not_rerun():
    with running_host() as host:
        host.faults.command_delay_seconds = 0.5
        host.faults.drop_receives = 1
        executor = executor_for(host)
        result = await executor.run("host01", "boottime")
        assert "bootTime" in result.data
        commands = [r for r in host.requests if r.action == "Command"]
        assert len(commands) == 1  # the script ran once; only the Receive was repeated
        executor.close()


async def test_receive_dropped_too_often_is_reported_and_not_rerun():
    with running_host() as host:
        host.faults.command_delay_seconds = 0.5
        host.faults.drop_receives = 10
        executor = executor_for(host, receive_retries=2)
        with pytest.raises(CommandOutcomeUnknown) as caught:
            await executor.run("host01", "boottime")
        assert "outcome is unknown" in str(caught.value)
        assert len([r for r in host.requests if r.action == "Command"]) == 1
        executor.close()


async def test_a_shell_lost_to_a_restart_is_not_polled_again():
    with running_host() as host:
        host.faults.command_delay_seconds = 1.0
        executor = executor_for(host, receive_retries=10)
        running = asyncio.create_task(executor.run("host01", "boottime"))
        await eventually(lambda: host.stats["commands_in_flight"] == 1, what="the command running on the host")
        await asyncio.to_thread(host.begin_reboot)  # the host restarts while the command runs
        with pytest.raises(CommandOutcomeUnknown) as caught:
            await running
        assert "no longer has the command's shell" in str(caught.value)
        lost = [r for r in host.requests if r.action == "Receive" and "InvalidSelectors" in r.detail]
        assert len(lost) == 1  # polling a shell the host does not have could never succeed
        assert len([r for r in host.requests if r.action == "Command"]) == 1
        executor.close()


async def test_a_command_that_restarts_the_host_ends_when_the_connection_does():
    with running_host() as host:
        host.faults.command_delay_seconds = 1.0
        executor = executor_for(host, receive_retries=10)
        running = asyncio.create_task(executor.run("host01", "boottime", ends_connection=True))
        await eventually(lambda: host.stats["commands_in_flight"] == 1, what="the command running on the host")
        await asyncio.to_thread(host.begin_reboot)
        with pytest.raises(HostUnreachable):
            await running
        assert host.wait_online(30)
        # it did not poll the lost shell again once the host was back
        assert not [r for r in host.requests if r.action == "Receive" and "InvalidSelectors" in r.detail]
        executor.close()


async def test_server_error_before_the_command_is_retried():
    with running_host() as host:
        host.faults.server_errors = 1  # the shell Create fails once: nothing has run yet
        executor = executor_for(host)
        result = await executor.run("host01", "boottime")
        assert result.attempts == 2
        assert len([r for r in host.requests if r.action == "Command"]) == 1
        executor.close()


async def test_lost_command_request_is_not_resent_unless_the_script_is_safe():
    with running_host() as host:
        executor = executor_for(host)
        # Create succeeds; the Command request then gets a 500, so the client cannot know whether the script started.
        arm = server_error_on(executor, host, "run_command", times=2)  # the first attempt of each run below
        with pytest.raises(CommandOutcomeUnknown) as caught:
            await executor.run("host01", "boottime")
        assert "may be running" in str(caught.value)
        assert arm["left"] == 1  # not sent again
        result = await executor.run("host01", "boottime", retry_safe=True)
        assert result.attempts == 2  # a read-only script is simply sent again
        executor.close()


async def test_401_in_the_middle_of_a_run():
    with running_host() as host:
        executor = executor_for(host)
        await executor.run("host01", "boottime")
        host.faults.unauthorized = 5
        with pytest.raises(AuthenticationFailed):
            await executor.run("host01", "boottime")
        executor.close()


async def test_an_over_long_command_line_is_refused_before_sending(monkeypatch):
    # The script goes on stdin; only a bootstrap grown past cmd.exe's limit could trip this guard.
    import bot.systems.winrm as winrm_module

    monkeypatch.setattr(winrm_module, "command_line", lambda: "powershell.exe " + "x" * 8200)
    with running_host() as host:
        executor = executor_for(host)
        with pytest.raises(CommandTooLong) as caught:
            await executor.run("host01", "preflight", PREFLIGHT)
        assert "Windows allows 8191" in str(caught.value)
        assert host.requests == []  # nothing reached the host
        executor.close()


async def test_script_failure_carries_exit_code_and_clean_stderr():
    with running_host() as host:
        executor = executor_for(host)
        with pytest.raises(ScriptFailed) as caught:
            await executor.run("host01", "preflight", {"Drive": "C:"})
        assert caught.value.exit_code == 1
        assert "is required" in caught.value.stderr and "CLIXML" not in caught.value.stderr
        executor.close()


async def test_output_that_is_not_one_json_document_is_bad_output(tmp_path):
    (tmp_path / "chatty.ps1").write_text("# idm-upgrade: chatty\n'hello'\n")
    handlers = {**HANDLERS, "chatty": lambda state, params: HandlerResult(stdout="hello\r\n{}")}
    with running_host(handlers=handlers) as host:
        executor = executor_for(host, scripts_dir=tmp_path)
        with pytest.raises(BadOutput) as caught:
            await executor.run("host01", "chatty")
        assert "did not write one JSON document" in str(caught.value)
        executor.close()


async def test_wait_for_reboot_returns_once_the_boot_time_changed():
    with running_host() as host:
        executor = executor_for(host)
        before = await read_boot_time(executor, "host01")
        host.begin_reboot()
        after = await wait_for_reboot(executor, executor.config, "host01", before, timeout=30)
        assert after > before
        assert await read_boot_time(executor, "host01") == after
        executor.close()


async def test_wait_for_reboot_backs_off_from_the_poll_interval_up_to_the_cap():
    with running_host("reboot-never-returns") as host:
        executor = executor_for(host, "connect_timeout_seconds = 1\npoll_seconds = 0.25")
        before = await read_boot_time(executor, "host01")
        host.begin_reboot()
        waits: list[float] = []

        async def record(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(0.01)

        with pytest.raises(RebootTimedOut):
            await wait_for_reboot(executor, executor.config, "host01", before, timeout=1.5, max_delay=1.0, sleep=record)
        assert len(waits) >= 3
        # 0.25, 0.5, 1.0, 1.0 ... each plus up to 0.25 of jitter: a host that is back is seen within a poll
        for wait, floor in zip(waits, [0.25, 0.5, 1.0, 1.0, 1.0, 1.0], strict=False):
            assert floor <= wait <= floor + 0.25, waits
        # without a cap given: at most two polls between probes (0.25, 0.5, 0.5, ...)
        waits.clear()
        with pytest.raises(RebootTimedOut):
            await wait_for_reboot(executor, executor.config, "host01", before, timeout=1.5, sleep=record)
        for wait, floor in zip(waits, [0.25, 0.5, 0.5, 0.5, 0.5, 0.5], strict=False):
            assert floor <= wait <= floor + 0.25, waits
        executor.close()


async def test_wait_for_reboot_times_out_cleanly_when_the_host_never_returns():
    with running_host("reboot-never-returns") as host:
        executor = executor_for(host, "connect_timeout_seconds = 1")
        before = await read_boot_time(executor, "host01")
        host.begin_reboot()
        started = time.monotonic()
        with pytest.raises(RebootTimedOut) as caught:
            await wait_for_reboot(executor, executor.config, "host01", before, timeout=3, max_delay=0.5)
        assert time.monotonic() - started < 6
        assert "did not come back from the reboot within 3 s" in str(caught.value)
        executor.close()


async def test_twenty_hosts_at_once_and_a_responsive_loop():
    with running_fleet(20) as fleet:
        for host in fleet:
            # each command runs until all twenty are in flight (bounded): they overlap, or the peak says not
            host.faults.hold_until_fleet_in_flight = 20
        endpoints = {f"host{i:02d}": h.endpoint for i, h in enumerate(fleet, start=1)}
        config = make_config(endpoints, "max_parallel = 5")
        first = fleet[0]
        executor = WinRMExecutor(config, Secrets.from_env({"WINRM_USERNAME": first.username, "WINRM_PASSWORD": "x"}))
        # each host has its own password: give each run the right one through per-host executors' secrets
        executors = {}
        for name, host in zip(endpoints, fleet, strict=True):
            secrets = Secrets.from_env({"WINRM_USERNAME": host.username, "WINRM_PASSWORD": host.password})
            executors[name] = WinRMExecutor(config, secrets)
        gaps, last = [], time.monotonic()
        stop = asyncio.Event()

        async def ticker():
            nonlocal last
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(*(ex.run(name, "boottime") for name, ex in executors.items()))
        stop.set()
        await tick
        assert len(results) == 20
        # the transport runs what it is given, one command per host at a time; how many hosts work at once
        # is the engine's business (its slots: tests/engine/test_engine.py, max_parallel)
        assert fleet.gauge.peak == 20
        assert max(gaps) < 0.25, f"event loop stalled for {max(gaps):.3f} s"
        for ex in executors.values():
            ex.close()
        executor.close()


def test_params_are_data_not_code():
    literal = powershell_literal({"Name": "it's $(Remove-Item C:\\)"})
    assert literal.startswith("'") and literal.endswith("'")
    assert "it''s" in literal  # quote characters are the only special ones in a single-quoted string
    script = build_script("boottime", {"A": 1})
    assert script.splitlines()[0].endswith("""$Params = '{"A":1}' | ConvertFrom-Json""")
    assert script.splitlines()[1] == "# idm-upgrade: boottime"
    # the script is not in the command line: that is the fixed bootstrap, the script goes on stdin
    assert command_line().startswith("powershell.exe -NoProfile -NonInteractive -EncodedCommand ")


def test_clixml_is_decoded():
    raw = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN></Obj>'
        b'<S S="Error">disk too small_x000D__x000A_</S><S S="Error">second line_x000D__x000A_</S></Objs>'
    )
    assert clean_stderr(raw) == "disk too small\nsecond line"


def test_missing_credentials_are_a_clear_error():
    config = make_config({"host01": "http://127.0.0.1:1/wsman"})
    with pytest.raises(ValueError, match="WINRM_USERNAME and WINRM_PASSWORD"):
        WinRMExecutor(config, Secrets.from_env({}))


def test_scripts_dir_is_the_package_one():
    assert (Path(__file__).resolve().parents[2] / "steps" / "ps" / "boottime.ps1").exists()


def test_transport_without_its_library_is_a_clear_error(monkeypatch):
    from winrm import transport

    monkeypatch.setattr(transport, "HAVE_CREDSSP", False)
    config = make_config({"host01": "http://127.0.0.1:1/wsman"}, transport="credssp")
    with pytest.raises(ValueError) as caught:
        WinRMExecutor(config, Secrets.from_env({"WINRM_USERNAME": "u", "WINRM_PASSWORD": "p"}))
    assert "hosts.host01 (credssp)" in str(caught.value) and "pywinrm[credssp]" in str(caught.value)


def test_ignoring_certificates_is_explicit_and_logged(caplog):
    config = make_config({"host01": "http://127.0.0.1:1/wsman"}, 'server_cert_validation = "ignore"', scheme="https")
    executor = WinRMExecutor(config, Secrets.from_env({"WINRM_USERNAME": "u", "WINRM_PASSWORD": "p"}))
    protocol = executor._protocol("host01")
    assert protocol.server_cert_validation == "ignore"
    assert "TLS certificate validation is OFF" in caplog.text
    executor.close()


def test_certificates_are_validated_by_default():
    config = make_config({"host01": "http://127.0.0.1:1/wsman"})
    executor = WinRMExecutor(config, Secrets.from_env({"WINRM_USERNAME": "u", "WINRM_PASSWORD": "p"}))
    assert executor._protocol("host01").server_cert_validation == "validate"
    executor.close()


def test_each_script_is_read_from_disk_once(tmp_path):
    """build_script runs on the event loop: after the first read it must not touch the disk again."""
    (tmp_path / "once.ps1").write_text("# idm-upgrade: once\n@{} | ConvertTo-Json\n")
    first = build_script("once", {"A": 1}, tmp_path)
    (tmp_path / "once.ps1").unlink()
    assert build_script("once", {"A": 1}, tmp_path) == first


# ----- output caps: a script that prints megabytes costs winrm.max_output_kib, not megabytes ----------------


def test_a_capped_stream_keeps_head_and_tail_and_counts_the_rest():
    stream = CappedStream(64 * 1024)
    chunk = bytes(range(256)) * 512  # 128 KiB, as one Receive carries
    peak = 0
    for _ in range(48):  # 6 MiB
        stream.add(chunk)
        peak = max(peak, len(stream.head) + len(stream.tail))
    assert peak <= 64 * 1024 and stream.kept == 64 * 1024
    assert stream.received == 48 * len(chunk) and stream.cut == 48 * len(chunk) - 64 * 1024
    value = stream.value()
    assert value.startswith(chunk[: 48 * 1024]) and value.endswith(chunk[-16 * 1024 :])
    assert b"[... 5.9 MiB of output cut; the first 48.0 KiB and the last 16.0 KiB are kept]" in value
    small = CappedStream(64 * 1024)
    small.add(b"{}")
    assert small.value() == b"{}" and small.cut == 0


async def test_megabytes_of_stderr_are_read_to_the_end_and_kept_to_the_cap():
    with running_host() as host:
        host.faults.noise_stderr_bytes = 6_000_000  # six 1 MB log lines
        host.faults.noise_script = "boottime"
        executor = executor_for(host, "max_output_kib = 64")
        result = await executor.run("host01", "boottime")
        assert "bootTime" in result.data  # the command finished and its document was read
        assert result.stderr_cut == 6_000_000 - 64 * 1024  # all of it received, only 64 KiB kept
        assert "of output cut; the first 48.0 KiB and the last 16.0 KiB are kept]" in result.stderr
        assert len(result.stderr) < 3000  # and what reaches a message is short
        receives = [r for r in host.requests if r.action == "Receive" and r.status == 200]
        assert len(receives) > 6_000_000 // (128 * 1024)  # it arrived in envelope-sized pieces
        executor.close()


async def test_stdout_cut_at_the_cap_is_bad_output_saying_so():
    with running_host() as host:
        host.faults.noise_stdout_bytes = 3_000_000
        host.faults.noise_script = "boottime"
        executor = executor_for(host, "max_output_kib = 64")
        with pytest.raises(BadOutput) as caught:
            await executor.run("host01", "boottime")
        message = str(caught.value)
        assert message.startswith("host01: boottime wrote 2.9 MiB to stdout, more than winrm.max_output_kib (64 KiB)")
        assert "of output cut; the first 48.0 KiB and the last 16.0 KiB are kept]" in message
        assert "is not one JSON document" in message
        executor.close()


def test_max_output_kib_is_validated():
    with pytest.raises(ConfigError) as caught:
        make_config({"host01": "http://127.0.0.1:5985/wsman"}, "max_output_kib = 4")
    assert caught.value.problems == ["winrm.max_output_kib: Input should be greater than or equal to 16"]
    assert make_config({"host01": "http://127.0.0.1:5985/wsman"}).winrm.max_output_kib == 256
