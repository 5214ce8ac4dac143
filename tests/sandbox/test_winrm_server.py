"""The sandbox WinRM host, driven by real pywinrm over HTTP (no mocks of the client or the protocol)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import winrm
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from bot.systems.winrm import command_line, start_script
from sandbox.host import (
    NEW_JRE_HOME,
    NEW_JRE_VERSION,
    OLD_JRE_HOME,
    OLD_JRE_VERSION,
    SCENARIOS,
    GiB,
    PendingReboot,
    scenario,
)
from sandbox.powershell import CMD_MAX_COMMAND_LINE
from sandbox.ps_handlers import HANDLERS, HandlerResult, like
from sandbox.threaded import running_fleet, running_host
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PS_DIR = ROOT / "steps" / "ps"
PREFLIGHT = (PS_DIR / "preflight.ps1").read_text()
BOOTTIME = (PS_DIR / "boottime.ps1").read_text()
PREFLIGHT_PARAMS = {
    "ServiceName": "VMwareIDMConnector",
    "ProductNamePattern": "VMware Identity Manager Connector*",
    "Drive": "C:",
}
TIMED_OUT = 2150858793
SHELL_NOT_FOUND = 2150858843


def with_params(script: str, params: dict) -> str:
    """The executor's prologue (preferences first, then `$Params = '<json>' | ConvertFrom-Json`), then the script."""
    literal = json.dumps(params).replace("'", "''")
    prologue = "$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'; "
    return f"{prologue}$Params = '{literal}' | ConvertFrom-Json\r\n{script}"


# proxy=None: an HTTP(S)_PROXY in the environment must not capture 127.0.0.1; ca_trust_path=None: plain
# HTTP needs no CA bundle (and pywinrm warns when it picks one up from the environment).
CLIENT = {"transport": "basic", "proxy": None, "ca_trust_path": None}


def session(h, *, username: str | None = None, password: str | None = None, **kwargs) -> winrm.Session:
    auth = (username or h.username, password or h.password)
    return winrm.Session(h.endpoint, auth=auth, **CLIENT, **kwargs)


def protocol(h, **kwargs) -> Protocol:
    return Protocol(h.endpoint, username=h.username, password=h.password, **CLIENT, **kwargs)


def encoded(script: str) -> str:
    return "powershell -encodedcommand " + base64.b64encode(script.encode("utf-16-le")).decode()


def run_ps(h, script: str, **kwargs) -> winrm.Response:
    """A script as the bot sends it: a UTF-8 shell, the bootstrap command line, the script on stdin."""
    p = protocol(h, **kwargs)
    shell_id = p.open_shell(codepage=65001)
    try:
        command_id = start_script(p, shell_id, script)
        response = winrm.Response(p.get_command_output(shell_id, command_id))
        p.cleanup_command(shell_id, command_id)
    finally:
        p.close_shell(shell_id)
    return response


def run_preflight(h, params: dict | None = None) -> dict:
    response = run_ps(h, with_params(PREFLIGHT, params or PREFLIGHT_PARAMS))
    assert response.status_code == 0, response.std_err
    return json.loads(response.std_out)


def run_boottime(h) -> str:
    response = run_ps(h, with_params(BOOTTIME, {}))
    assert response.status_code == 0, response.std_err
    return json.loads(response.std_out)["bootTime"]


def echo(state, params) -> HandlerResult:
    return HandlerResult(stdout={"echo": params})


def slow(state, params) -> HandlerResult:
    return HandlerResult(stdout={"slept": params.get("seconds", 2.5)}, duration_seconds=params.get("seconds", 2.5))


TEST_HANDLERS = {**HANDLERS, "echo": echo, "slow": slow}


# ----- preflight against every scenario ---------------------------------------------------------------

EXPECTED = {
    "default": {
        "connector.version": "19.03.0.0",
        "machine.virtual": True,
        "machine.manufacturer": "VMware, Inc.",
        "service.state": "Running",
        "service.startMode": "Auto",
        "java.home": OLD_JRE_HOME,
        "java.version": OLD_JRE_VERSION,
        "pendingReboot.any": False,
        "disk.freeBytes": 40 * GiB,
    },
    "physical": {"machine.virtual": False, "machine.manufacturer": "Dell Inc.", "machine.model": "PowerEdge R640"},
    "already-current": {"connector.version": "19.03.0.1", "java.home": NEW_JRE_HOME, "java.version": NEW_JRE_VERSION},
    "install-fails-1603": {"connector.version": "19.03.0.0", "service.state": "Running"},
    "huge-log-lines": {"connector.version": "19.03.0.0", "service.state": "Running"},
    "service-wont-start": {"service.exists": True, "service.state": "Stopped", "service.startMode": "Auto"},
    "reboot-never-returns": {"connector.version": "19.03.0.0", "machine.virtual": True},
    "pending-reboot": {
        "pendingReboot.any": True,
        "pendingReboot.reasons": ["WindowsUpdate", "PendingFileRenameOperations"],
    },
    "low-disk": {"disk.freeBytes": 800 * 1024**2, "disk.drive": "C:"},
    "hash-mismatch": {"connector.version": "19.03.0.0"},
    # before the install these look like the default host
    "installer-launch-fails": {"connector.version": "19.03.0.0", "service.state": "Running"},
    "several-uninstall-entries": {"connector.version": "19.03.0.0 Build 13180"},
    "service-account-reset": {"connector.version": "19.03.0.0", "java.home": OLD_JRE_HOME},
    "delayed-service-start": {"connector.version": "19.03.0.0", "service.state": "Running"},
    "clock-step": {"connector.version": "19.03.0.0", "pendingReboot.any": False},
    "unicode-names": {"connector.version": "19.03.0.0", "service.state": "Running"},
}


def test_every_scenario_has_expectations():
    assert set(EXPECTED) == set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_preflight_reports_the_scenario(name):
    with running_host(name) as h:
        facts = run_preflight(h)
    assert set(facts) == {
        "computerName",
        "os",
        "connector",
        "service",
        "java",
        "disk",
        "pendingReboot",
        "machine",
        "bootTime",
    }
    assert facts["os"] == {"caption": "Microsoft Windows Server 2016 Standard", "version": "10.0.14393"}
    assert facts["connector"]["installed"] is True
    assert facts["connector"]["displayName"] == "VMware Identity Manager Connector"
    assert facts["service"]["exists"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", facts["bootTime"])
    for path, value in EXPECTED[name].items():
        section, key = path.split(".")
        assert facts[section][key] == value, path


def test_preflight_reports_absent_things_and_each_pending_reboot_source():
    with running_host("default") as h:
        facts = run_preflight(h, {"ServiceName": "NoSuchService", "ProductNamePattern": "Contoso*", "Drive": "D:"})
        assert facts["connector"] == {"installed": False, "displayName": None, "version": None}
        assert facts["service"] == {"name": "NoSuchService", "exists": False, "state": None, "startMode": None}
        assert facts["disk"] == {"drive": "D:", "freeBytes": None}

        # -like is case-insensitive and does not match VMware Tools with the connector's pattern.
        facts = run_preflight(h, {**PREFLIGHT_PARAMS, "ProductNamePattern": "vmware identity manager conn?ctor"})
        assert facts["connector"]["version"] == "19.03.0.0"

        sources = {
            "ComponentBasedServicing": PendingReboot(component_based_servicing=True),
            "WindowsUpdate": PendingReboot(windows_update=True),
            "PendingFileRenameOperations": PendingReboot(file_rename_operations=[r"\??\C:\x.tmp", ""]),
            "ComputerRename": PendingReboot(new_computer_name="IDM-CONN99"),
        }
        for reason, pending in sources.items():
            h.state.pending = pending
            assert run_preflight(h)["pendingReboot"] == {"any": True, "reasons": [reason]}

        h.state.java_home = None
        assert run_preflight(h)["java"] == {"home": None, "version": None}


def test_preflight_without_params_fails_like_the_script():
    with running_host("default") as h:
        missing = run_ps(h, PREFLIGHT)
        bad_drive = run_ps(h, with_params(PREFLIGHT, {**PREFLIGHT_PARAMS, "Drive": "C:' OR 1=1"}))
    assert missing.status_code == 1
    assert b"ServiceName is required" in missing.std_err
    assert bad_drive.status_code == 1
    assert b"Drive must look like C:" in bad_drive.std_err


# ----- the protocol ---------------------------------------------------------------------------------


def test_a_command_slower_than_the_operation_timeout_completes_by_polling():
    with running_host("default", time_scale=1.0, handlers=TEST_HANDLERS) as h:
        response = run_ps(
            h, with_params("# idm-upgrade: slow\n", {"seconds": 2.5}), operation_timeout_sec=1, read_timeout_sec=2
        )
        assert response.status_code == 0
        assert json.loads(response.std_out) == {"slept": 2.5}
        timeouts = [r for r in h.requests if r.action == "Receive" and r.detail == "TimedOut"]
        assert len(timeouts) >= 1
        assert all(r.status == 500 for r in timeouts)
        assert h.stats["timed_out_receives"] == len(timeouts)


def test_a_run_is_logged_request_by_request_with_the_signal():
    with running_host("default", handlers=TEST_HANDLERS) as h:
        response = run_ps(h, with_params("# idm-upgrade: echo\n", {"it's": "quoted"}))
        assert json.loads(response.std_out) == {"echo": {"it's": "quoted"}}
        log = h.requests
    assert [r.action for r in log] == ["Create", "Command", "Send", "Receive", "Signal", "Delete"]
    command, send = log[1], log[2]
    assert (command.script, command.detail) == (None, "reading stdin")
    assert (send.script, send.params) == ("echo", {"it's": "quoted"})
    assert send.command_id == log[4].command_id == command.command_id
    assert log[4].detail == "terminate"
    assert {r.shell_id for r in log} == {log[0].shell_id}


def test_signal_terminates_a_hung_command():
    with running_host("default") as h:
        h.faults.command_delay_seconds = 60  # the real preflight script, hanging
        p = protocol(h, operation_timeout_sec=1, read_timeout_sec=2)
        shell_id = p.open_shell()
        command_id = start_script(p, shell_id, with_params(PREFLIGHT, PREFLIGHT_PARAMS))
        assert h.stats["commands_in_flight"] == 1
        with pytest.raises(WinRMOperationTimeoutError):
            p.get_command_output_raw(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
        p.close_shell(shell_id)
        wait_until(lambda: h.stats["commands_in_flight"] == 0, interval=0.01, what="the Signal ended the command")
        assert h.stats["commands_in_flight"] == 0
        assert h.stats["shells_open"] == 0
        signals = [r for r in h.requests if r.action == "Signal"]
        assert [(r.command_id, r.detail) for r in signals] == [(command_id, "terminate (while running)")]


def test_wrong_password_is_an_authentication_error_without_the_password():
    with running_host("default") as h:
        wrong = "not-the-" + h.password
        with pytest.raises(InvalidCredentialsError) as caught:
            session(h, password=wrong).run_ps("$x")
        assert wrong not in str(caught.value)
        assert h.requests[-1].status == 401
        # The account name is case-insensitive, as on Windows.
        upper = session(h, username=h.username.upper())
        assert upper.run_ps("# idm-upgrade: nothing").status_code == 1


def test_unknown_or_unmarked_scripts_fail_like_unknown_commands():
    with running_host("default") as h:
        s = session(h)
        unknown = s.run_ps("# idm-upgrade: frobnicate\n$x = 1")
        unmarked = s.run_ps("Get-Service VMwareIDMConnector")
        raw = protocol(h)
        shell_id = raw.open_shell()
        _, raw_err, _ = raw.get_command_output(shell_id, raw.run_command(shell_id, encoded("Stop-Computer")))
        _, cmd_err, cmd_code = raw.get_command_output(shell_id, raw.run_command(shell_id, "hostname"))
        bad = raw.run_command(shell_id, "powershell -encodedcommand not*base64")
        _, _, bad_code = raw.get_command_output(shell_id, bad)
        raw.close_shell(shell_id)
    assert unknown.status_code == 1
    assert b"The term 'frobnicate' is not recognized" in unknown.std_err
    assert unmarked.status_code == 1
    assert b"The term 'Get-Service' is not recognized" in unmarked.std_err
    # PowerShell serialises its error stream; pywinrm's run_ps turned the above back into text.
    assert raw_err.startswith(b"#< CLIXML\r\n")
    assert b"Stop-Computer" in raw_err
    assert cmd_code == 9009
    assert b"'hostname' is not recognized as an internal or external command" in cmd_err
    assert bad_code == -196608


def test_powershell_switches_before_the_encoded_command_are_accepted():
    script = with_params("# idm-upgrade: preflight\n$ProgressPreference = 'SilentlyContinue'\n", PREFLIGHT_PARAMS)
    payload = base64.b64encode(script.encode("utf-16-le")).decode()
    lines = [
        f"powershell -NoProfile -NonInteractive -EncodedCommand {payload}",
        f"powershell.exe -ExecutionPolicy Bypass -enc {payload}",
        f"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -e {payload}",
    ]
    with running_host("default") as h:
        p = protocol(h)
        shell_id = p.open_shell()
        for line in lines:
            out, err, code = p.get_command_output(shell_id, p.run_command(shell_id, line))
            assert (code, err) == (0, b""), line
            assert json.loads(out)["connector"]["version"] == "19.03.0.0"
        p.close_shell(shell_id)


def test_cmd_exe_command_line_limit():
    prefix = "# idm-upgrade: echo\n$ProgressPreference = 'SilentlyContinue'\n# "

    def script_of_length(n: int) -> str:
        return prefix + "x" * (n - len(prefix))

    # 3,061 UTF-16 characters encode to exactly 8,191 characters of command line.
    fits, too_long = script_of_length(3061), script_of_length(3062)
    assert len(encoded(fits)) == CMD_MAX_COMMAND_LINE
    assert len(encoded(too_long)) > CMD_MAX_COMMAND_LINE
    with running_host("default", handlers=TEST_HANDLERS) as h:
        ok = session(h).run_ps(fits)
        refused = session(h).run_ps(too_long)
    assert (ok.status_code, ok.std_err) == (0, b"")
    assert refused.status_code == 1
    assert refused.std_err.strip() == b"The command line is too long."
    assert refused.std_out == b""


def test_forgetting_progress_preference_adds_clixml_noise_but_not_failure():
    with running_host("default", handlers=TEST_HANDLERS) as h:
        response = session(h).run_ps("# idm-upgrade: echo\n")
    assert response.status_code == 0
    assert response.std_err.startswith(b"#< CLIXML") and b"Preparing modules for first use." in response.std_err


# ----- faults ---------------------------------------------------------------------------------------


def test_injected_500_401_and_dropped_receive_surface_as_client_errors():
    with running_host("default") as h:
        h.faults.server_errors = 1
        with pytest.raises(WSManFaultError) as fault:
            run_ps(h, with_params(PREFLIGHT, PREFLIGHT_PARAMS))
        assert fault.value.code == 500
        assert fault.value.wsman_fault_code not in (None, TIMED_OUT)

        h.faults.server_errors, h.faults.server_error_body = 1, False
        with pytest.raises(WinRMTransportError) as transport_error:
            run_ps(h, with_params(PREFLIGHT, PREFLIGHT_PARAMS))
        assert transport_error.value.code == 500

        # Credentials "expire" for one request, then work again.
        h.faults.unauthorized = 1
        with pytest.raises(InvalidCredentialsError):
            run_ps(h, with_params(PREFLIGHT, PREFLIGHT_PARAMS))
        assert run_preflight(h)["connector"]["installed"] is True

        h.faults.drop_receives = 1
        with pytest.raises(requests.exceptions.ConnectionError):
            run_ps(h, with_params(PREFLIGHT, PREFLIGHT_PARAMS))
        assert [r.detail for r in h.requests if r.action == "Receive"][-1] == "dropped"


def test_a_dropped_receive_can_be_retried_and_the_command_is_still_there():
    with running_host("default") as h:
        p = protocol(h)
        shell_id = p.open_shell()
        command_id = start_script(p, shell_id, with_params(PREFLIGHT, PREFLIGHT_PARAMS))
        h.faults.drop_receives = 1
        with pytest.raises(requests.exceptions.ConnectionError):
            p.get_command_output_raw(shell_id, command_id)
        out, _, code = p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
        p.close_shell(shell_id)
    assert code == 0
    assert json.loads(out)["connector"]["version"] == "19.03.0.0"


def test_slow_responses_and_refused_connections():
    with running_host("default") as h:
        h.faults.delay_seconds = 0.1
        started = time.monotonic()
        run_preflight(h)
        assert time.monotonic() - started >= 0.5  # five requests, each delayed
        h.faults.clear()

        # A client holding a keep-alive connection and an open shell sees the host vanish.
        p = protocol(h)
        shell_id = p.open_shell()
        h.refuse_connections()
        with pytest.raises(requests.exceptions.ConnectionError):
            p.run_command(shell_id, encoded("# idm-upgrade: preflight"))
        with pytest.raises(requests.exceptions.ConnectionError):
            run_ps(h, PREFLIGHT)
        h.accept_connections()
        assert run_preflight(h)["connector"]["installed"] is True
        # Only the network went away: the shell is still there.
        p.close_shell(shell_id)


# ----- reboots --------------------------------------------------------------------------------------


def test_reboot_refuses_connections_then_comes_back_with_a_new_boot_time_and_the_new_jre():
    with running_host("default", time_scale=0.02) as h:  # 30 s of downtime -> 0.6 s
        before = run_preflight(h)
        assert run_boottime(h) == before["bootTime"]
        assert h.state.run_installer() == 0
        after_install = run_preflight(h)
        assert after_install["connector"]["version"] == "19.03.0.1"
        assert after_install["java"]["home"] == OLD_JRE_HOME  # JAVA_HOME moves only with the reboot

        p = protocol(h)
        shell_id = p.open_shell()
        h.begin_reboot()
        with pytest.raises(requests.exceptions.ConnectionError):
            run_ps(h, with_params(PREFLIGHT, PREFLIGHT_PARAMS))
        assert h.wait_online(timeout=30)

        after = run_preflight(h)
        assert after["bootTime"] > before["bootTime"]
        assert run_boottime(h) == after["bootTime"]
        assert after["java"] == {"home": NEW_JRE_HOME, "version": NEW_JRE_VERSION}
        assert after["service"]["state"] == "Running"
        assert h.stats["boots"] == 1
        # Shells do not survive a reboot; Windows answers with its "shell not found" fault.
        with pytest.raises(WSManFaultError) as gone:
            p.run_command(shell_id, encoded("# idm-upgrade: preflight"))
        assert gone.value.wsman_fault_code == SHELL_NOT_FOUND


def test_reboot_never_returns_stays_down():
    with running_host("reboot-never-returns", time_scale=0.01) as h:
        h.begin_reboot()
        assert not h.wait_online(timeout=1.0)  # three times the simulated downtime
        with pytest.raises(requests.exceptions.ConnectionError):
            run_ps(h, PREFLIGHT)


def test_a_handler_can_schedule_a_reboot_like_shutdown_r_t():
    def restart(state, params):
        return HandlerResult(stdout={"scheduled": True}, reboot_after_seconds=20)

    with running_host("default", time_scale=0.01, handlers={**HANDLERS, "restart": restart}) as h:
        boot = h.state.boot_time
        assert session(h).run_ps("# idm-upgrade: restart").status_code == 0
        wait_until(lambda: h.state.boot_time != boot, interval=0.02, what="the scheduled reboot happened")
        assert h.state.boot_time > boot
        assert h.wait_online(timeout=30)


# ----- concurrency and the extra routes --------------------------------------------------------------


def test_commands_in_flight_are_counted_per_host_and_across_the_fleet():
    handlers = {**HANDLERS, "slow": slow}
    with running_fleet(3, time_scale=1.0, handlers=handlers) as fleet:
        script = with_params("# idm-upgrade: slow\n", {"seconds": 0.4})
        targets = [*fleet.hosts, fleet[0]]  # host 0 runs two at once
        with ThreadPoolExecutor(len(targets)) as pool:
            codes = list(pool.map(lambda h: session(h).run_ps(script).status_code, targets))
        assert codes == [0, 0, 0, 0]
        assert fleet.gauge.peak == 4
        assert fleet.gauge.current == 0
        assert [h.stats["peak_commands_in_flight"] for h in fleet] == [2, 1, 1]
        assert {h.state.computer_name for h in fleet} == {"IDM-CONN01", "IDM-CONN02", "IDM-CONN03"}
        assert all(h.stats["shells_open"] == 0 for h in fleet)


@pytest.mark.parametrize("name", ["default", "hash-mismatch"])
def test_installer_artifact_and_stats_routes(name):
    with running_host(name) as h, requests.Session() as http:
        http.trust_env = False
        payload = http.get(h.installer_url, timeout=30).content
        assert payload.startswith(b"MZ")
        matches = hashlib.sha256(payload).hexdigest() == h.installer_sha256
        assert matches is (name == "default")
        assert http.get(h.installer_url + ".bak", timeout=30).status_code == 404
        stats = http.get(h.endpoint.replace("/wsman", "/_sandbox/stats"), timeout=30).json()
        assert stats["scenario"] == name and stats["online"] is True


def test_serve_host_prints_its_connection_line_and_serves_until_interrupted():
    code = "from sandbox.winrm_server import serve_host; serve_host('host01', 0, 'physical')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        timer = threading.Timer(60, proc.kill)  # never hang the suite on a server that fails to print
        timer.start()
        line = json.loads(proc.stdout.readline())
        timer.cancel()
        assert set(line) == {"endpoint", "username", "password", "scenario", "installer_url", "installer_sha256"}
        assert line["scenario"] == "physical"

        class Host:
            endpoint, username, password = line["endpoint"], line["username"], line["password"]

        facts = run_preflight(Host)
        assert facts["computerName"] == "HOST01"
        assert facts["machine"]["virtual"] is False
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()


# ----- the model, the scripts and their handlers -------------------------------------------------------


def test_unknown_scenario_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid scenarios: default, physical"):
        scenario("nope")
    first = scenario("default")
    first.connector.version = "changed"
    assert scenario("default").connector.version == "19.03.0.0"


def test_installer_and_boot_semantics():
    state = scenario("default")
    assert state.run_installer() == 0
    assert (state.connector.version, state.pending_java_home) == ("19.03.0.1", NEW_JRE_HOME)
    state.finish_boot(now=state.boot_time)  # even a clock that did not move yields a new boot time
    assert state.java_home == NEW_JRE_HOME and state.pending_java_home is None
    assert state.boot_time.second == 8

    failing = scenario("install-fails-1603")
    assert failing.run_installer() == 1603
    assert failing.connector.version == "19.03.0.0" and failing.pending_java_home is None

    broken = scenario("service-wont-start")
    broken.run_installer()
    broken.finish_boot(now=datetime(2030, 1, 1, tzinfo=UTC))
    assert broken.service.state == "Stopped"

    asks = scenario("default")
    asks.installer.exit_code = 3010
    asks.run_installer()
    assert asks.pending.reasons() == ["PendingFileRenameOperations"]


def test_like_follows_powershell_wildcards():
    assert like("VMware Identity Manager Connector", "VMware Identity Manager Connector*")
    assert like("vmware tools", "VMWARE [st]ools")
    assert like("a*b", "a`*b") and not like("axb", "a`*b")
    assert not like("VMware Tools", "VMware Identity Manager Connector*")
    assert not like(None, "*")


def test_every_script_has_a_handler_and_every_handler_a_script():
    names = {}
    for path in sorted(PS_DIR.glob("*.ps1")):
        first_line = path.read_text().splitlines()[0]
        assert first_line == f"# idm-upgrade: {path.stem}", path.name
        names[path.stem] = path
    assert set(names) == set(HANDLERS)


# ----- code pages, the script on stdin, progress before stderr ------------------------------------------

NON_ASCII = "Müller — 東京 ’"


def unicode_out(state, params) -> HandlerResult:
    return HandlerResult(stdout={"name": NON_ASCII}, stderr=f"warned {NON_ASCII}", stderr_plain=True)


def plain_failure(state, params) -> HandlerResult:
    return HandlerResult(exit_code=2, stderr="boom: the script's own words", stderr_plain=True)


STDIN_HANDLERS = {**TEST_HANDLERS, "unicode_out": unicode_out, "plain_failure": plain_failure}


def bootstrap_line() -> str:
    return command_line()


@pytest.mark.parametrize("codepage", [437, 65001])
def test_output_is_written_in_the_code_page_the_shell_asked_for(codepage):
    """Without [Console]::OutputEncoding set, PowerShell writes in the shell's code page (437 by default),
    and what that code page cannot hold arrives as '?', as from a real host."""
    script = "# idm-upgrade: unicode_out\n$ProgressPreference = 'SilentlyContinue'\n"
    with running_host("default", handlers=STDIN_HANDLERS) as h:
        p = protocol(h)
        shell_id = p.open_shell(codepage=codepage)
        out, err, code = p.get_command_output(shell_id, p.run_command(shell_id, encoded(script)))
        p.close_shell(shell_id)
    assert code == 0
    expected = json.dumps({"name": NON_ASCII}, separators=(",", ":"), ensure_ascii=False) + "\r\n"
    codec = "cp437" if codepage == 437 else "utf-8"
    assert out == expected.encode(codec, errors="replace")
    assert err == f"warned {NON_ASCII}\r\n".encode(codec, errors="replace")
    assert (json.loads(out.decode("utf-8", errors="replace"))["name"] == NON_ASCII) is (codepage == 65001)


def send_script(p: Protocol, shell_id: str, script: str, chunks: int = 1) -> str:
    command_id = p.run_command(shell_id, bootstrap_line(), console_mode_stdin=False)
    data = script.encode("utf-8")
    size = -(-len(data) // chunks)
    for i in range(chunks):
        p.send_command_input(shell_id, command_id, data[i * size : (i + 1) * size], end=i == chunks - 1)
    return command_id


def test_the_bootstrap_runs_the_script_sent_on_stdin_only_once_stdin_ended():
    padding = "x" * 20_000
    script = with_params(
        "# idm-upgrade: echo\n$ProgressPreference = 'SilentlyContinue'\n", {"P": padding, "N": NON_ASCII}
    )
    assert len(script) > CMD_MAX_COMMAND_LINE
    with running_host("default", handlers=STDIN_HANDLERS) as h:
        # a 437 shell: the bootstrap sets [Console]::OutputEncoding to UTF-8 itself
        p = protocol(h, operation_timeout_sec=1, read_timeout_sec=3)
        shell_id = p.open_shell(codepage=437)
        command_id = p.run_command(shell_id, bootstrap_line(), console_mode_stdin=False)
        data = script.encode("utf-8")
        p.send_command_input(shell_id, command_id, data[:7000], end=False)
        assert h.stats["scripts"] == {}  # half a script is not run
        with pytest.raises(WinRMOperationTimeoutError):  # still waiting for the rest of stdin
            p.get_command_output_raw(shell_id, command_id)
        p.send_command_input(shell_id, command_id, data[7000:], end=True)
        out, err, code = p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
        p.close_shell(shell_id)
        sends = [(r.detail, r.script) for r in h.requests if r.action == "Send"]
    assert (code, err) == (0, b"")
    assert json.loads(out.decode("utf-8")) == {"echo": {"P": padding, "N": NON_ASCII}}
    assert sends == [("stdin", None), ("stdin ended", "echo")]


def test_stdin_is_refused_after_it_ended_and_for_unknown_commands():
    with running_host("default", handlers=STDIN_HANDLERS) as h:
        p = protocol(h)
        shell_id = p.open_shell(codepage=65001)
        command_id = send_script(p, shell_id, "# idm-upgrade: echo\n$ProgressPreference = 'SilentlyContinue'\n")
        with pytest.raises(WSManFaultError):
            p.send_command_input(shell_id, command_id, b"more", end=True)
        with pytest.raises(WSManFaultError):
            p.send_command_input(shell_id, "00000000-0000-0000-0000-000000000000", b"x", end=True)
        out, _, code = p.get_command_output(shell_id, command_id)
        p.close_shell(shell_id)
    assert code == 0 and json.loads(out) == {"echo": {}}


def test_a_hand_made_bootstrap_command_line_over_the_limit_is_refused():
    line = bootstrap_line() + " " + "-NoLogo " * ((CMD_MAX_COMMAND_LINE - len(bootstrap_line())) // 8 + 1)
    assert len(line) > CMD_MAX_COMMAND_LINE
    with running_host("default", handlers=STDIN_HANDLERS) as h:
        p = protocol(h)
        shell_id = p.open_shell(codepage=65001)
        command_id = p.run_command(shell_id, line, console_mode_stdin=False)
        p.send_command_input(shell_id, command_id, b"# idm-upgrade: echo\n", end=True)
        out, err, code = p.get_command_output(shell_id, command_id)
        p.close_shell(shell_id)
        assert h.stats["scripts"] == {}
    assert (code, out) == (1, b"")
    assert err.strip() == b"The command line is too long."


def test_a_terminated_command_that_waits_for_stdin_ends():
    with running_host("default", handlers=STDIN_HANDLERS) as h:
        p = protocol(h)
        shell_id = p.open_shell(codepage=65001)
        command_id = p.run_command(shell_id, bootstrap_line(), console_mode_stdin=False)
        assert h.stats["commands_in_flight"] == 1  # powershell.exe is running, reading its stdin
        p.cleanup_command(shell_id, command_id)
        wait_until(lambda: h.stats["commands_in_flight"] == 0, interval=0.01, what="the Signal ended the command")
        p.close_shell(shell_id)
        assert h.stats["scripts"] == {}


OLD_PROLOGUE = "$Params = '{}' | ConvertFrom-Json\r\n"
PLAIN_FAILURE = (
    "# idm-upgrade: plain_failure\n$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\n"
)


def test_a_cmdlet_before_progress_is_silenced_puts_a_progress_record_before_the_scripts_stderr():
    with running_host("default", handlers=STDIN_HANDLERS) as h:
        p = protocol(h)
        shell_id = p.open_shell(codepage=65001)
        # the old prologue: ConvertFrom-Json runs before the script's own $ProgressPreference line
        _, noisy, noisy_code = p.get_command_output(
            shell_id, p.run_command(shell_id, encoded(OLD_PROLOGUE + PLAIN_FAILURE))
        )
        # the same script with progress silenced first, on the first line
        quiet_script = "$ProgressPreference = 'SilentlyContinue'; " + OLD_PROLOGUE + PLAIN_FAILURE
        _, quiet, quiet_code = p.get_command_output(shell_id, p.run_command(shell_id, encoded(quiet_script)))
        # no prologue at all: the first cmdlet comes after the script silenced progress
        _, bare, _ = p.get_command_output(shell_id, p.run_command(shell_id, encoded(PLAIN_FAILURE)))
        # through the bootstrap, which silences progress before anything else, the old prologue is quiet too
        _, piped, _ = p.get_command_output(shell_id, send_script(p, shell_id, OLD_PROLOGUE + PLAIN_FAILURE))
        p.close_shell(shell_id)
    assert noisy_code == quiet_code == 2
    assert noisy.startswith(b"#< CLIXML\r\n")
    assert noisy.index(b"Preparing modules for first use.") < noisy.index(b"boom: the script's own words")
    assert quiet == bare == piped == b"boom: the script's own words\r\n"


def test_a_single_quoted_string_ends_at_any_of_the_five_quote_characters():
    """PowerShell ends '...' at ' and at U+2018-U+201B; doubling only ASCII ' lets data become code."""
    value = "a\u2019; Remove-Item C:\\ ; \u2019"
    ascii_only = json.dumps({"Name": value}, ensure_ascii=False).replace("'", "''")
    every_quote = "".join(
        c * 2 if c in "'\u2018\u2019\u201a\u201b" else c for c in json.dumps({"Name": value}, ensure_ascii=False)
    )
    with running_host("default", handlers=STDIN_HANDLERS) as h:
        broken = run_ps(h, f"$Params = '{ascii_only}' | ConvertFrom-Json\n# idm-upgrade: echo\n")
        data = run_ps(h, f"$Params = '{every_quote}' | ConvertFrom-Json\n# idm-upgrade: echo\n")
    assert broken.status_code == 1 and b"Unexpected token" in broken.std_err
    assert data.status_code == 0 and json.loads(data.std_out) == {"echo": {"Name": value}}
