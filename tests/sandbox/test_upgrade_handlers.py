"""The upgrade's scripts against the sandbox host, sent as the executor sends them, through real pywinrm.

Each command is `bot.winrm.start_script(protocol, shell, build_script(NAME, params))` with pywinrm's Protocol
(open shell, Command, Send, Receive, Signal, delete shell), so the host sees exactly what it would from the bot.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from winrm.protocol import Protocol

from bot.systems.winrm import build_script, clean_stderr, start_script
from sandbox.host import (
    CONNECTOR_LOG,
    INSTALLER_FILE,
    NEW_JRE_HOME,
    OLD_JRE_HOME,
    SCENARIOS,
    scenario,
)
from sandbox.threaded import running_host
from tests.support.waiting import wait_until

STAGING = r"C:\ProgramData\idm-upgrade\staging"
INSTALLER = rf"{STAGING}\{INSTALLER_FILE}"
STATE_FILE = r"C:\ProgramData\idm-upgrade\install-state.json"
INSTALL_LOG = r"C:\ProgramData\idm-upgrade\logs\connector-install.log"
MARKERS = r"C:\ProgramData\idm-upgrade\markers"
PRODUCT = {"ProductNamePattern": "VMware Identity Manager Connector*"}
PREFLIGHT = {
    "ServiceName": "VMwareIDMConnector",
    "ProductNamePattern": "VMware Identity Manager Connector*",
    "Drive": "C:",
}
FAILED_1603 = "Product: VMware Identity Manager Connector -- Installation failed."


@dataclass
class Out:
    code: int
    data: Any
    stderr: str
    raw_stderr: bytes


def run(h, name: str, params: dict | None = None) -> Out:
    """One script, as the executor sends it: the bootstrap command line, the script on stdin, one shell per command."""
    p = Protocol(
        h.endpoint,
        transport="basic",
        username=h.username,
        password=h.password,
        proxy=None,
        ca_trust_path=None,
        operation_timeout_sec=5,
        read_timeout_sec=7,
    )
    shell_id = p.open_shell()
    try:
        command_id = start_script(p, shell_id, build_script(name, params or {}))
        stdout, stderr, code = p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
    finally:
        p.close_shell(shell_id)
    text = stdout.decode().strip()
    return Out(code, json.loads(text) if text else None, clean_stderr(stderr), stderr)


def ok(h, name: str, params: dict | None = None) -> Any:
    out = run(h, name, params)
    assert out.code == 0, out.stderr
    return out.data


def stage_params(h, **overrides) -> dict:
    params = {"Url": h.installer_url, "Sha256": h.installer_sha256, "Directory": STAGING, "FileName": INSTALLER_FILE}
    return {**params, **overrides}


def start_params(token: str = "run-1-install") -> dict:
    return {
        "Installer": INSTALLER,
        "Arguments": f'/s /w /v"/qn /l*v ""{INSTALL_LOG}"""',
        "Log": INSTALL_LOG,
        "StateFile": STATE_FILE,
        "Token": token,
        "ServiceName": "VMwareIDMConnector",
    }


def reboot_params(token: str = "apr-1", delay: int = 5) -> dict:
    return {"DelaySeconds": delay, "Reason": 'idm-upgrade: "JRE" upgraded', "Token": token, "MarkerDirectory": MARKERS}


def put_installer(h) -> None:
    h.state.put_file(INSTALLER, h.state.artifact.payload)


def wait_for_exit(h, tail: int = 10) -> dict:
    """Poll install_status until the installer is no longer running."""
    params = {"StateFile": STATE_FILE, "Tail": tail}
    return wait_until(
        lambda: (s := ok(h, "install_status", params)) and not s["running"] and s,
        interval=0.02,
        what="the installer exited",
    )


# ----- filehash and product -----------------------------------------------------------------------------


def test_filehash_reports_absent_and_present_files():
    with running_host("default") as h:
        assert ok(h, "filehash", {"Path": INSTALLER}) == {
            "exists": False,
            "path": INSTALLER,
            "sha256": None,
            "bytes": None,
        }
        put_installer(h)
        upper = INSTALLER.upper()  # Windows paths are case-insensitive; the path is echoed as given
        assert ok(h, "filehash", {"Path": upper}) == {
            "exists": True,
            "path": upper,
            "sha256": h.state.artifact.served_sha256,
            "bytes": len(h.state.artifact.payload),
        }
        missing = run(h, "filehash", {})
    assert (missing.code, missing.stderr) == (1, "filehash: Path is required")
    assert missing.raw_stderr.startswith(b"#< CLIXML")  # a throw: PowerShell serialises the error record


def test_product_reads_the_uninstall_keys():
    with running_host("physical") as h:
        assert ok(h, "product", PRODUCT) == {
            "installed": True,
            "displayName": "VMware Identity Manager Connector",
            "version": "19.03.0.0",
            "entries": 1,
        }
        # the WOW6432Node view counts too
        assert ok(h, "product", {"ProductNamePattern": "Dell OpenManage*"})["version"] == "9.5.0"
        assert ok(h, "product", {"ProductNamePattern": "Contoso*"}) == {
            "installed": False,
            "displayName": None,
            "version": None,
            "entries": 0,
        }


# ----- stage ---------------------------------------------------------------------------------------------


def test_stage_downloads_once_then_reuses_and_replaces_a_wrong_file():
    with running_host("default") as h:
        first = ok(h, "stage", stage_params(h))
        assert first == {
            "path": INSTALLER,
            "sha256": h.installer_sha256,
            "bytes": len(h.state.artifact.payload),
            "reused": False,
            "seconds": 2.0,
        }
        assert h.state.file(INSTALLER).sha256 == h.installer_sha256
        # the checksum compares case-insensitively; the answer is lower case
        again = ok(h, "stage", stage_params(h, Sha256=h.installer_sha256.upper()))
        assert (again["reused"], again["sha256"]) == (True, h.installer_sha256)
        assert h.stats["downloads"] == 1

        h.state.put_file(INSTALLER, b"MZ truncated")
        replaced = ok(h, "stage", stage_params(h))
        assert replaced["reused"] is False
        assert h.state.file(INSTALLER).sha256 == h.installer_sha256
        assert h.stats["downloads"] == 2

        # the same file by another name for this host
        other = ok(h, "stage", stage_params(h, Url=h.installer_url.replace("127.0.0.1", "localhost"), FileName="b.exe"))
        assert other["path"] == rf"{STAGING}\b.exe"


def test_stage_deletes_a_download_whose_hash_does_not_match():
    with running_host("hash-mismatch") as h:
        out = run(h, "stage", stage_params(h))
        served = h.state.artifact.served_sha256
        assert out.code == 3
        assert out.stderr == (
            f"SHA-256 mismatch for {INSTALLER_FILE}: expected {h.installer_sha256}, got {served}; "
            "the downloaded file was deleted"
        )
        assert out.data is None
        assert not out.raw_stderr.startswith(b"#< CLIXML")  # [Console]::Error.WriteLine: plain text
        assert h.state.file(INSTALLER) is None
        assert not any(path.endswith(".partial") for path in h.state.files)
        assert h.stats["downloads"] == 1


def test_stage_download_failures_and_file_copies():
    with running_host("default") as h:
        url = h.installer_url + ".old"
        missing = run(h, "stage", stage_params(h, Url=url))
        assert (missing.code, missing.stderr) == (
            2,
            f"download of {url} failed: The remote server returned an error: (404) Not Found.",
        )
        elsewhere = run(h, "stage", stage_params(h, Url="https://artifacts.example.com/" + INSTALLER_FILE))
        assert elsewhere.code == 2

        # A share is a second hop from a WinRM session (ANONYMOUS LOGON): refused, never tried
        share = r"\\fileserver\software\vmware\connector.exe"
        h.state.put_file(share, h.state.artifact.payload)
        downloads = h.stats["downloads"]
        for source in (share, "file://fileserver/software/vmware/connector.exe"):
            refused = run(h, "stage", stage_params(h, Url=source))
            assert (refused.code, refused.stderr) == (
                1,
                "stage: Url must be http:// or https:// (a file share is a second hop from WinRM)",
            )
        assert h.state.file(INSTALLER) is None and h.stats["downloads"] == downloads

        bad_hash = run(h, "stage", stage_params(h, Sha256="abc"))
        bad_name = run(h, "stage", stage_params(h, FileName=r"..\evil.exe"))
    assert (bad_hash.code, bad_hash.stderr) == (1, "stage: Sha256 must be 64 hex digits")
    assert (bad_name.code, bad_name.stderr) == (1, "stage: FileName must be a bare file name")


# ----- install_start / install_status --------------------------------------------------------------------


def test_install_starts_once_per_token_and_reports_progress_until_it_exits():
    with running_host("default") as h:
        assert ok(h, "install_status", {"StateFile": STATE_FILE, "Tail": 5}) == {"known": False, "msiBusy": False}
        h.state.installer.duration_seconds = 100  # 1 s: time to look at it while it runs
        put_installer(h)
        started = ok(h, "install_start", start_params())
        assert started["alreadyStarted"] is False
        assert started["token"] == "run-1-install"
        assert started["log"] == INSTALL_LOG and started["exitFile"] == STATE_FILE + ".exit"
        assert isinstance(started["pid"], int) and started["startedAt"].endswith("Z")

        # a retry of the same step (say the reply was lost) starts nothing
        again = ok(h, "install_start", start_params())
        assert again == {**started, "alreadyStarted": True}
        assert h.stats["installs_started"] == 1

        running = ok(h, "install_status", {"StateFile": STATE_FILE, "Tail": 3})
        assert running["running"] is True and running["exitCode"] is None and running["msiBusy"] is True
        assert running["pid"] == started["pid"] and running["token"] == "run-1-install"
        assert running["logTail"][-1].startswith("Action start")
        assert ok(h, "service", {"ServiceName": "VMwareIDMConnector"})["state"] == "Stopped"

        done = wait_for_exit(h)
        assert done["exitCode"] == 0 and done["msiBusy"] is False
        assert done["logTail"][-2].endswith("MainEngineThread is returning 0")
        assert ok(h, "product", PRODUCT)["version"] == "19.03.0.1"
        facts = ok(h, "preflight", PREFLIGHT)
        # The new JRE waits for the reboot: its files are replaced at boot, JAVA_HOME switches then.
        assert facts["pendingReboot"] == {"any": True, "reasons": ["PendingFileRenameOperations"]}
        assert facts["java"]["home"] == OLD_JRE_HOME
        assert facts["service"]["state"] == "Running"
        assert ok(h, "install_start", start_params())["alreadyStarted"] is True
        stats = h.stats
    assert (stats["installs_started"], stats["installs_run"]) == (1, 1)
    assert stats["scripts"]["install_start"] == 3


def test_a_failed_install_rolls_back_and_shows_the_log_tail():
    with running_host("install-fails-1603") as h:
        put_installer(h)
        ok(h, "install_start", start_params())
        done = wait_for_exit(h, tail=6)
        assert done["exitCode"] == 1603
        assert any(line.endswith(FAILED_1603) for line in done["logTail"])
        assert done["logTail"][-2].endswith("MainEngineThread is returning 1603")
        assert ok(h, "product", PRODUCT)["version"] == "19.03.0.0"
        facts = ok(h, "preflight", PREFLIGHT)
    assert facts["service"]["state"] == "Running"
    assert facts["pendingReboot"]["any"] is False


def test_another_installation_in_progress_exits_1618_until_it_is_done():
    state = scenario("default")
    state.installer.busy_first_starts = 2
    with running_host(state=state) as h:
        put_installer(h)
        for attempt in (1, 2):
            ok(h, "install_start", start_params(f"run-1-install-{attempt}"))
            done = wait_for_exit(h, tail=4)
            assert done["exitCode"] == 1618, attempt
            assert any("Another installation is in progress" in line for line in done["logTail"])
            assert done["msiBusy"] is (attempt == 1)  # the other installation ends as the 2nd start is refused
        ok(h, "install_start", start_params("run-1-install-3"))
        assert wait_for_exit(h)["exitCode"] == 0

        # Our own installer holds the mutex too: a start beside it (another token) gets 1618.
        h.state.installer.duration_seconds = 300
        ok(h, "install_start", {**start_params("run-2"), "StateFile": STATE_FILE + ".2"})
        ok(h, "install_start", {**start_params("run-3"), "StateFile": STATE_FILE + ".3"})
        third = wait_until(
            lambda: (s := ok(h, "install_status", {"StateFile": STATE_FILE + ".3"}))["exitCode"] and s,
            what="the third installer's exit code",
        )
        assert third["exitCode"] == 1618
        stats = h.stats
    assert stats["installs_started"] == 5


def test_install_start_failures():
    state = scenario("default")
    state.installer.create_return_value = 8
    with running_host(state=state) as h:
        absent = run(h, "install_start", start_params())
        assert (absent.code, absent.stderr) == (1, f"install_start: installer not found: {INSTALLER}")
        put_installer(h)
        refused = run(h, "install_start", start_params())
        assert (refused.code, refused.stderr) == (5, "install_start: Win32_Process.Create failed: 8")
        # nothing recorded, so a later attempt with the same token really starts
        assert ok(h, "install_status", {"StateFile": STATE_FILE})["known"] is False
        assert h.stats["installs_started"] == 0
        missing = run(h, "install_start", {**start_params(), "Token": ""})
    assert (missing.code, missing.stderr) == (1, "install_start: Token is required")


def test_a_reboot_kills_a_running_installer():
    with running_host("default") as h:
        put_installer(h)
        h.state.installer.duration_seconds = 300
        ok(h, "install_start", start_params())
        h.begin_reboot()
        assert h.wait_online(timeout=30)
        status = ok(h, "install_status", {"StateFile": STATE_FILE, "Tail": 2})
        assert (status["running"], status["exitCode"], status["msiBusy"]) == (False, None, False)
        assert ok(h, "install_start", start_params())["alreadyStarted"] is True
        assert ok(h, "product", PRODUCT)["version"] == "19.03.0.0"
        stats = h.stats
    assert (stats["installs_started"], stats["installs_run"], stats["installs_killed"]) == (1, 0, 1)


def test_exit_1641_means_the_installer_restarts_the_host_itself():
    state = scenario("default")
    state.installer.exit_code = 1641
    with running_host(state=state) as h:
        put_installer(h)
        before = ok(h, "boottime")["bootTime"]
        ok(h, "install_start", start_params())
        wait_until(lambda: h.stats["boots"] == 1, what="the host booted again")
        assert h.wait_online(timeout=30)
        status = ok(h, "install_status", {"StateFile": STATE_FILE, "Tail": 3})
        facts = ok(h, "preflight", PREFLIGHT)
    assert (status["running"], status["exitCode"]) == (False, 1641)
    assert facts["bootTime"] != before
    assert facts["java"]["home"] == NEW_JRE_HOME and facts["pendingReboot"]["any"] is False
    assert facts["connector"]["version"] == "19.03.0.1"


# ----- service -------------------------------------------------------------------------------------------


def test_service_start_failure_reports_the_error_and_the_connector_log():
    params = {"ServiceName": "VMwareIDMConnector", "Start": True, "LogPath": CONNECTOR_LOG, "Tail": 5}
    with running_host("service-wont-start") as h:
        looked = ok(h, "service", {**params, "Start": False})
        assert (looked["state"], looked["startError"]) == ("Stopped", None)
        tried = ok(h, "service", params)
        assert tried["exists"] is True
        assert (tried["state"], tried["startMode"]) == ("Stopped", "Auto")
        # ServiceController.Start's refusal, as service.ps1 reports it (the InnerException's message)
        assert tried["startError"] == "Cannot start service VMwareIDMConnector on computer '.'."
        assert len(tried["logTail"]) == 5
        assert any("BeanCreationException" in line for line in tried["logTail"])
        # "Start": "true" is not a JSON boolean: no start attempt
        assert ok(h, "service", {**params, "Start": "true"})["startError"] is None

    with running_host("default") as h:
        h.state.service.state = "Stopped"
        started = ok(h, "service", params)
        assert (started["state"], started["startError"]) == ("Running", None)
        assert "Server startup in" in started["logTail"][-1]
        h.state.service.state, h.state.service.start_mode = "Stopped", "Disabled"
        assert ok(h, "service", params)["state"] == "Stopped"
        assert ok(h, "service", {**params, "ServiceName": "NoSuch", "LogPath": r"C:\nothing.log"}) == {
            "exists": False,
            "state": None,
            "startMode": None,
            "startError": None,
            "logTail": [],
        }


# ----- reboot --------------------------------------------------------------------------------------------


def test_reboot_is_issued_once_per_token_and_really_happens():
    with running_host("default") as h:
        before = ok(h, "boottime")["bootTime"]
        first = ok(h, "reboot", reboot_params(delay=50))  # 0.5 s at the test time scale
        assert first == {
            "issued": True,
            "alreadyScheduled": False,
            "alreadyRebooted": False,
            "shutdownExitCode": 0,
            "bootTime": before,
            "requestedAt": first["requestedAt"],  # the host's clock, when shutdown was asked
        }
        assert first["requestedAt"] >= before
        second = ok(h, "reboot", reboot_params(delay=50))
        assert second == {**first, "issued": False, "alreadyScheduled": True, "shutdownExitCode": None}
        assert h.stats["reboots_requested"] == 1

        wait_until(lambda: h.stats["boots"] == 1, what="the host booted again")
        assert h.wait_online(timeout=30)
        assert ok(h, "boottime")["bootTime"] != before
        after = ok(h, "reboot", reboot_params(delay=50))
        assert after == {**first, "issued": False, "alreadyRebooted": True, "shutdownExitCode": None}
        time.sleep(0.7)  # longer than the delay: no second reboot follows
        stats = h.stats
    assert (stats["reboots_requested"], stats["boots"]) == (1, 1)


def test_a_boot_never_falls_in_the_second_its_shutdown_was_asked():
    """A real server takes far longer than a second to restart; the sandbox, at its time scale, need not. The
    boot time (one-second resolution) must still come after the request, or the reboot reads as not done."""
    state = scenario("default")
    assert state.shutdown(("/r", "/t", "0")) == 0
    asked = state.shutdown_asked_at
    assert asked is not None
    state.finish_boot(now=asked.replace(microsecond=999_999))  # back up within the same second
    assert state.boot_time > asked


def test_reboot_shutdown_exit_codes():
    with running_host("default") as h:  # the 600 s delays outlast the test
        h.state.reboot.shutdown_exit_codes = [5]
        denied = run(h, "reboot", reboot_params("apr-denied", delay=600))
        assert denied.code == 6
        assert denied.stderr == (
            "reboot: shutdown.exe /r failed with exit code 5 (access denied: the account lacks "
            "SeRemoteShutdownPrivilege)"
        )
        assert h.state.read_lines(rf"{MARKERS}\reboot-apr-denied.json") is None  # so a retry may issue it

        h.state.reboot.shutdown_exit_codes = [1190]  # someone else's shutdown: aborted, ours scheduled
        assert ok(h, "reboot", reboot_params("apr-2", delay=600))["shutdownExitCode"] == 0
        # a new token while ours is pending: 1190, /a, issued again
        assert ok(h, "reboot", reboot_params("apr-3", delay=600))["issued"] is True
        h.state.reboot.shutdown_exit_codes = [1190, 1190]
        assert run(h, "reboot", reboot_params("apr-4")).code == 6
        h.state.reboot.shutdown_exit_codes = [1115]
        assert ok(h, "reboot", reboot_params("apr-5", delay=600))["shutdownExitCode"] == 1115

        bad = run(h, "reboot", reboot_params("apr;shutdown /a"))
        assert (bad.code, bad.stderr) == (1, "reboot: Token may hold only letters, digits and . _ -")
        stats = h.stats
    assert stats["reboots_requested"] == 3


def test_reboot_never_returns_stays_down_after_the_script():
    with running_host("reboot-never-returns") as h:
        assert ok(h, "reboot", reboot_params(delay=2))["issued"] is True
        wait_until(lambda: not h.server.online, what="the host went down")
        assert not h.wait_online(timeout=0.5)


# ----- the whole upgrade per scenario, and the stats route ---------------------------------------------

# scenario -> (stage exit, installer exit, version after, reboot pending after, service after)
OUTCOMES = {
    "default": (0, 0, "19.03.0.1", True, "Running"),
    "physical": (0, 0, "19.03.0.1", False, "Running"),
    "already-current": (0, 0, "19.03.0.1", False, "Running"),
    "install-fails-1603": (0, 1603, "19.03.0.0", False, "Running"),
    "huge-log-lines": (0, 1603, "19.03.0.0", False, "Running"),
    "service-wont-start": (0, 0, "19.03.0.1", True, "Stopped"),
    "reboot-never-returns": (0, 0, "19.03.0.1", True, "Running"),
    "pending-reboot": (0, 0, "19.03.0.1", True, "Running"),
    "low-disk": (0, 0, "19.03.0.1", True, "Running"),
    "hash-mismatch": (3, None, "19.03.0.0", False, "Running"),
    "installer-launch-fails": (0, None, "19.03.0.0", False, "Running"),
    "several-uninstall-entries": (0, 0, "19.03.0.1 Build 13999", True, "Running"),
    "service-account-reset": (0, 0, "19.03.0.1", False, "Running"),
    "delayed-service-start": (0, 0, "19.03.0.1", True, "Running"),  # Start Pending only after a boot
    "clock-step": (0, 0, "19.03.0.1", True, "Running"),
    "unicode-names": (0, 0, "19.03.0.1", True, "Running"),
}


def test_every_scenario_has_an_outcome():
    assert set(OUTCOMES) == set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_stage_and_install_per_scenario(name):
    stage_code, install_code, version, pending, service = OUTCOMES[name]
    with running_host(name, time_scale=0.002) as h:
        assert run(h, "stage", stage_params(h)).code == stage_code
        if stage_code == 0:
            ok(h, "install_start", start_params())
            assert wait_for_exit(h)["exitCode"] == install_code
        facts = ok(h, "preflight", PREFLIGHT)
        answer = ok(h, "service", {"ServiceName": "VMwareIDMConnector", "Start": True})
    assert facts["connector"]["version"] == version
    assert facts["pendingReboot"]["any"] is pending
    assert answer["state"] == service
    assert (answer["startError"] is not None) is (service == "Stopped")


def test_stats_route_counts_scripts_and_side_effects():
    with running_host("default") as h, requests.Session() as http:
        http.trust_env = False
        ok(h, "preflight", PREFLIGHT)
        ok(h, "preflight", PREFLIGHT)
        ok(h, "stage", stage_params(h))
        ok(h, "install_start", start_params())
        wait_for_exit(h)
        ok(h, "reboot", reboot_params(delay=2))
        wait_until(lambda: h.stats["boots"] == 1, what="the host booted again")
        assert h.wait_online(timeout=30)
        stats = http.get(h.endpoint.replace("/wsman", "/_sandbox/stats"), timeout=30).json()
    assert stats["scripts"]["preflight"] == 2
    assert stats["scripts"]["stage"] == 1 and stats["scripts"]["reboot"] == 1
    assert stats["scripts"]["install_status"] >= 1
    assert {k: stats[k] for k in ("downloads", "installs_started", "installs_run", "reboots_requested", "boots")} == {
        "downloads": 1,
        "installs_started": 1,
        "installs_run": 1,
        "reboots_requested": 1,
        "boots": 1,
    }
