"""The installer, product detection and staging as real Windows PowerShell 5.1 hosts behave (field notes §8).

Scripts go through real pywinrm to the sandbox host (`start_script`: the bootstrap command line, the
script on stdin), and whole upgrades run with the `upgrade` fixture (tests/steps/conftest.py).
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from winrm.protocol import Protocol

from bot.core.config import ConfigError, InstallerConfig, parse_config
from bot.core.models import RunState, StepState
from bot.systems.winrm import SCRIPTS_DIR, build_script, clean_stderr, start_script
from sandbox import upgrade_handlers
from sandbox.host import INSTALLER_FILE, Artifact
from sandbox.threaded import running_host
from steps.common import version_tuple, versus_target
from steps.facts import InstallStatus
from steps.install_outcome import exit_code
from tests.support.waiting import wait_until

WORK = r"C:\ProgramData\idm-upgrade"
INSTALLER = rf"{WORK}\{INSTALLER_FILE}"
STATE_FILE = rf"{WORK}\install-t1.json"
LOG = rf"{WORK}\install-t1.log"
SERVICE = "VMwareIDMConnector"
FAILED_1603 = "Product: VMware Identity Manager Connector -- Installation failed."
QUOTES = "'\u2018\u2019\u201a\u201b"  # every character that ends a single-quoted PowerShell string


def run_script(h, name: str, params: dict, scripts_dir: Path = SCRIPTS_DIR) -> tuple[int, Any, str]:
    """One script as the executor sends it, through pywinrm: (exit code, JSON document, clean stderr)."""
    p = Protocol(h.endpoint, transport="basic", username=h.username, password=h.password, proxy=None)
    shell_id = p.open_shell(codepage=65001)
    try:
        command_id = start_script(p, shell_id, build_script(name, params, scripts_dir))
        stdout, stderr, code = p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
    finally:
        p.close_shell(shell_id)
    text = stdout.decode("utf-8").strip()
    return code, json.loads(text) if text else None, clean_stderr(stderr)


def ok(h, name: str, params: dict, scripts_dir: Path = SCRIPTS_DIR) -> Any:
    code, data, stderr = run_script(h, name, params, scripts_dir)
    assert code == 0, stderr
    return data


def start(h, **overrides) -> dict:
    params = {
        "Installer": INSTALLER,
        "Arguments": f'/s /w /v"/qn /norestart /l*v \\"{LOG}\\""',
        "Log": LOG,
        "StateFile": STATE_FILE,
        "Token": "t1",
        "ServiceName": SERVICE,
        **overrides,
    }
    return ok(h, "install_start", params)


def finished(h, state_file: str = STATE_FILE, scripts_dir: Path = SCRIPTS_DIR) -> dict:
    params = {"StateFile": state_file, "Tail": 5, "ServiceName": SERVICE}
    return wait_until(
        lambda: (s := ok(h, "install_status", params, scripts_dir)) and not s["running"] and s,
        what="the installer wrapper ended",
    )


def scripts_with(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of steps/ps with one script changed (to show what the sandbox does with the unfixed text)."""
    target = tmp_path / "ps"
    shutil.copytree(SCRIPTS_DIR, target)
    text = (target / f"{name}.ps1").read_text(encoding="utf-8")
    assert text.count(old) == 1
    (target / f"{name}.ps1").write_text(text.replace(old, new), encoding="utf-8")
    return target


# ----- 1. log tails: plain strings, not 5.1's Get-Content objects --------------------------------------


def test_install_status_log_tail_is_plain_strings_as_51_serialises_them(tmp_path):
    with running_host("install-fails-1603", time_scale=0.002) as h:
        h.state.put_file(INSTALLER, h.state.artifact.payload)
        start(h)
        status = finished(h)
        assert status["exitCode"] == 1603
        assert status["logTail"] and all(isinstance(line, str) for line in status["logTail"]), status["logTail"]
        # The same script without the unwrap gets what 5.1's ConvertTo-Json makes of Get-Content lines.
        old = scripts_with(tmp_path, "install_status", "-Tail $n | ForEach-Object { [string]$_ }", "-Tail $n")
        raw = finished(h, scripts_dir=old)["logTail"]
    assert all(isinstance(line, dict) for line in raw)
    assert raw[0]["PSPath"] == f"Microsoft.PowerShell.Core\\FileSystem::{LOG}" and "PSDrive" in raw[0]
    assert [line["value"] for line in raw] == status["logTail"]


async def test_the_1603_failure_keeps_its_exit_code_and_log_lines(upgrade):
    engine, host, _clicker, run = await upgrade("install-fails-1603")
    assert run.state is RunState.failed
    record = engine.store.step(run.id, "install")
    assert record.state is StepState.failed
    # the cause in one line (it goes to the card and the channel); the log's lines in the facts, shown once
    assert "exit code 1603" in record.reason and FAILED_1603 not in record.reason, record.reason
    assert "\n" not in record.reason and len(record.reason) < 400
    assert record.facts["exit_code"] == 1603 and record.facts["msi_status"] == 1603
    assert any(FAILED_1603 in line for line in record.facts["log_tail"])
    assert all(isinstance(line, str) for line in record.facts["log_tail"])


# ----- 2. no value becomes code: quotes of every kind reach the installer verbatim ------------------------


async def test_quotes_and_subexpressions_in_name_folder_and_arguments_reach_the_installer_verbatim(upgrade):
    name = "VMware%E2%80%98IDM%E2%80%99_%E2%80%9A$(Stop-Computer)%E2%80%9B_'x'.exe"  # percent-encoded in the URL
    decoded = "VMware\u2018IDM\u2019_\u201a$(Stop-Computer)\u201b_'x'.exe"
    work_dir = "C:\\\\ProgramData\\\\idm \u2018up\u2019grade\u201b $(Restart-Computer)"
    arguments = '/s /w /v"/qn /norestart /l*v \\"{log}\\"" NOTE=\u201ax\u201b$(Remove-Item C:\\\\ -Recurse)'

    def tweak(state):
        artifact = state.artifact
        state.artifact = Artifact(name, artifact.payload, artifact.advertised_sha256)
        state.artifact_url = state.artifact_url.rsplit("/", 1)[0] + "/" + name

    extra = f"installer: work_dir = \"{work_dir}\"\ninstaller: arguments = '{arguments}'"
    engine, host, _clicker, run = await upgrade("physical", extra=extra, tweak=tweak)
    assert run.state is RunState.succeeded, run.result
    config = engine.config.installer
    assert any(q in config.work_dir for q in QUOTES[1:]) and "$(" in config.arguments
    [launched] = host.state.installer_runs
    installer = f"{config.work_dir}\\{decoded}"
    assert launched.installer == installer
    log = engine.store.step(run.id, "install").facts["log"]
    assert launched.arguments == config.arguments.format(installer=installer, log=log)
    state_file = log.removesuffix(".log") + ".json"
    record = json.loads("\n".join(host.state.read_lines(state_file)))
    assert (record["log"], record["exitFile"]) == (log, state_file + ".exit")


def test_the_sandbox_refuses_a_wrapper_built_from_values(tmp_path):
    # The unfixed script's way: the installer's path pasted into code between doubled ASCII quotes.
    old = scripts_with(
        tmp_path,
        "install_start",
        "$in = $w.Replace('@DATA@', [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($data)))",
        "$in = '$p = Start-Process -FilePath ''' + $exe.Replace(\"'\", \"''\") + ''' -Wait -PassThru'",
    )
    with running_host("default") as h:
        h.state.put_file(INSTALLER, h.state.artifact.payload)
        code, _data, stderr = run_script(h, "install_start", {**start_params(), "Installer": INSTALLER}, old)
    assert code == 1 and "builds the wrapper's code from values" in stderr
    assert h.state.installer_runs == []


def test_doubling_only_the_ascii_quote_lets_a_typographic_quote_end_the_string():
    """The sandbox's reading of PowerShell's quoting rule, which the refusal above rests on."""
    harmless, hostile = "C:\\setup.exe", "C:\\a\u2019; Stop-Computer; \u2018.exe"

    def old_q(value: str) -> str:  # install_start.ps1's old `function Q`
        return "'" + value.replace("'", "''") + "'"

    code = upgrade_handlers._code_outside_strings
    assert code(f"Start-Process -FilePath {old_q(harmless)}") == "Start-Process -FilePath ''"
    assert "Stop-Computer" in code(f"Start-Process -FilePath {old_q(hostile)}")


def start_params() -> dict:
    return {"Log": LOG, "StateFile": STATE_FILE, "Token": "t1", "Arguments": "/s /w", "ServiceName": SERVICE}


# ----- 3. /w, the MSI log's status, and a launch that fails ----------------------------------------------


def test_the_default_arguments_make_setup_wait_for_the_msi():
    default = InstallerConfig.model_fields["arguments"].default
    assert default.split()[:2] == ["/s", "/w"] and "/l*v" in default


async def test_without_w_setup_returns_0_but_the_msi_log_says_1603_and_the_log_wins(upgrade):
    no_wait = 'installer: arguments = \'/s /v"/qn /norestart /l*v \\"{log}\\""\''
    engine, host, _clicker, run = await upgrade("install-fails-1603", extra=no_wait)
    assert run.state is RunState.failed
    record = engine.store.step(run.id, "install")
    assert "exit code 1603" in record.reason and "setup.exe returned 0" in record.reason, record.reason
    assert (record.facts["setup_exit_code"], record.facts["msi_status"], record.facts["exit_code"]) == (0, 1603, 1603)
    assert "the log's status is what Windows Installer did" in record.facts["exit_code_note"]
    assert host.state.connector.version == "19.03.0.0"


async def test_an_installer_that_cannot_be_launched_says_why(upgrade):
    engine, host, _clicker, run = await upgrade("installer-launch-fails")
    assert run.state is RunState.failed
    record = engine.store.step(run.id, "install")
    assert record.reason.startswith(
        "the installer could not be started: This command cannot be run due to the error: Access is denied."
    ), record.reason
    assert "without an exit code" not in record.reason
    assert host.stats["installs_started"] == 0 and host.state.connector.version == "19.03.0.0"


def test_exit_code_trusts_the_msi_log_when_they_disagree():
    def status(setup, msi):
        return InstallStatus.model_validate({"known": True, "exitCode": setup, "msiStatus": msi})

    assert exit_code(status(0, 0)).code == 0 and exit_code(status(0, 0)).note == ""
    assert exit_code(status(3010, None)).code == 3010
    assert exit_code(status(0, 1603)).code == 1603 and "setup.exe returned 0" in exit_code(status(0, 1603)).note
    assert exit_code(status(None, 0)).code == 0 and "no exit code" in exit_code(status(None, 0)).note


# ----- 4. file shares are a second hop ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file://fileserver/software/connector.exe", r"\\fileserver\software\connector.exe"])
def test_a_file_share_url_is_refused_at_load_with_the_reason(url):
    text = f"""
[slack]
channel = "C0OPSCHANL"
requesters = ["U0REQUESTER"]
[installer]
url = '{url}'
sha256 = "{"ab" * 32}"
version = "19.03.0.1"
[hosts.host01]
address = "host01.corp.example"
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text))
    message = str(caught.value)
    assert "installer.url: a file share cannot be read from a WinRM session" in message
    assert "second hop" in message and "ANONYMOUS LOGON" in message and "http(s)://" in message


# ----- 5. the connector's Uninstall entry: highest version, no SystemComponent, target's parts ------------


def test_versus_target_compares_only_the_targets_parts():
    target = "19.03.0.1"
    assert versus_target("19.03.0.1 Build 123", target) == 0
    assert versus_target("19.03.0.1.5", target) == 0
    assert versus_target("19.3.0.1", target) == 0
    assert versus_target("19.03", "19.03.0.0") == 0
    assert versus_target("19.03.0.0 Build 13180", target) == -1
    assert versus_target("19.03.0.2", target) == 1 and versus_target("20.10.0.0", target) == 1
    assert versus_target(None, target) == -1
    # version_tuple keeps its meaning for the others (JRE FileVersions compare every part)
    assert version_tuple("8.0.2510.8") > version_tuple("8.0.2020.8") and version_tuple("19.03.0.1.5") > (19, 3, 0, 1)


def test_product_picks_the_highest_entry_that_is_not_a_system_component():
    with running_host("several-uninstall-entries") as h:
        product = ok(h, "product", {"ProductNamePattern": "VMware Identity Manager Connector*"})
        facts = ok(
            h,
            "preflight",
            {"ServiceName": SERVICE, "ProductNamePattern": "VMware Identity Manager Connector*", "Drive": "C:"},
        )
    assert product == {
        "installed": True,
        "displayName": "VMware Identity Manager Connector",
        "version": "19.03.0.0 Build 13180",
        "entries": 2,
    }
    assert facts["connector"]["version"] == "19.03.0.0 Build 13180"


async def test_several_uninstall_entries_upgrade_and_verify(upgrade):
    engine, host, _clicker, run = await upgrade("several-uninstall-entries")
    assert run.state is RunState.succeeded, run.result
    assert "19.03.0.0 Build 13180 → 19.03.0.1" in engine.store.step(run.id, "preflight").reason
    verify = engine.store.step(run.id, "verify")
    assert verify.state is StepState.succeeded and "19.03.0.1 Build 13999" in verify.reason


# ----- 6. the service's logon account ------------------------------------------------------------------


async def test_an_installer_that_resets_the_service_account_fails_loudly(upgrade):
    engine, host, _clicker, run = await upgrade("service-account-reset")
    assert run.state is RunState.failed
    record = engine.store.step(run.id, "install")
    assert record.state is StepState.failed
    assert "from CORP\\svc-idm-connector to LocalSystem" in record.reason, record.reason
    assert "services.msc" in record.reason and "then run again" in record.reason
    facts = record.facts
    assert (facts["service_account_before"], facts["service_account_after"]) == (
        "CORP\\svc-idm-connector",
        "LocalSystem",
    )
    assert host.state.connector.version == "19.03.0.1"  # installed; only the account is wrong


async def test_the_service_account_is_recorded_before_and_after(upgrade):
    engine, _host, _clicker, run = await upgrade("physical")
    assert run.state is RunState.succeeded, run.result
    facts = engine.store.step(run.id, "install").facts
    assert facts["service_account_before"] == facts["service_account_after"] == "CORP\\svc-idm-connector"
