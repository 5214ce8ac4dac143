"""`idm-upgrade run` as a person uses it: a process against `idm-upgrade sandbox host`, answers at the prompt.

Also the crash tests of the steps: SIGKILL the bot during the install and during the reboot wait;
a second `idm-upgrade run` resumes, and the host saw one installer start and one reboot.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox_host():
    procs = []

    def start(scenario="default"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "sandbox", "host", "--name", "host01", "--port", "0", "--scenario", scenario],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        procs.append(proc)
        return json.loads(proc.stdout.readline())

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def write_config(tmp_path: Path, info: dict) -> Path:
    url = urlsplit(info["endpoint"])
    path = tmp_path / "idm-upgrade.toml"
    path.write_text(f"""
[slack]
channel = "C0OPSCHANL"
requesters = ["U0REQUESTER"]
approvers = ["U0APPROVER1"]
[database]
path = "{tmp_path / "idm-upgrade.db"}"
[installer]
url = "{info["installer_url"]}"
sha256 = "{info["installer_sha256"]}"
version = "19.03.0.1"
[winrm]
scheme = "http"
transport = "basic"
poll_seconds = 0.2
connect_timeout_seconds = 1
[reboot]
timeout_seconds = 60
[hosts.host01]
address = "{url.hostname}"
port = {url.port}
""")
    return path


def bot(config: Path, info: dict, *args: str, stdin=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "WINRM_USERNAME": info["username"], "WINRM_PASSWORD": info["password"]}
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run", *args, "--config", str(config)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def stats(info: dict) -> dict:
    base = info["endpoint"].rsplit("/wsman", 1)[0]
    with urllib.request.urlopen(f"{base}/_sandbox/stats", timeout=30) as response:
        return json.loads(response.read())


def test_terminal_upgrade_with_a_person_answering(tmp_path, sandbox_host):
    info = sandbox_host("default")
    config = write_config(tmp_path, info)
    proc = bot(config, info, "host01")
    # snapshot taken? STARTTLS change? STARTTLS done in the console? install? reboot?
    out, err = proc.communicate("y\ny\ny\ny\ny\n", timeout=120)
    (tmp_path / "transcript.txt").write_text(out)
    assert proc.returncode == 0, out + err
    assert "REBOOT APPROVAL for host01" in out and "Reboot host01 now? (type y to approve, n to deny) [y/N]" in out
    assert "reboot approved for host01; the run goes on." in out
    assert "Run the connector installer on host01 now" in out and "install approved for host01" in out
    # the change in words, and what to type where Slack has a button
    assert "Turn STARTTLS off on the AD-over-IWA directories (tenant-wide), before upgrading host01?" in out
    assert 'Have you taken the snapshot of host01 described above? (type y for "Snapshot taken"' in out
    assert 'then answer y below ("Snapshot taken")' in out and "click Snapshot taken" not in out
    assert "verified so far: connector version 19.03.0.1; service Running (Auto)" in out  # not raw JSON
    assert "host01: succeeded" in out and "audit trail intact" in out
    for step in ("preflight", "stage", "install", "service", "reboot", "verify"):
        assert f" {step}" in out
    assert "SNAPSHOT CONFIRMATION" in out and "Have you turned STARTTLS off in the console" in out
    assert "NOT AVAILABLE" in out  # postcheck without Workspace ONE access is shown, not passed
    # what the approver reads at the prompt is words, not a JSON document
    assert "verified so far: connector version 19.03.0.0; installer downloaded" in out
    assert '{"' not in out and "{'" not in out
    assert info["password"] not in out + err
    seen = stats(info)
    assert seen["installs_started"] == 1 and seen["reboots_requested"] == 1
    conn = sqlite3.connect(tmp_path / "idm-upgrade.db")
    actors = {
        row[0] for row in conn.execute("SELECT actor FROM audit WHERE event IN ('approval.granted', 'approval.denied')")
    }
    assert actors == {f"cli:{getpass.getuser()}"}


def test_terminal_answer_no_denies_the_reboot(tmp_path, sandbox_host):
    info = sandbox_host("default")
    proc = bot(write_config(tmp_path, info), info, "host01")
    out, err = proc.communicate("y\ny\ny\ny\nn\n", timeout=120)
    assert proc.returncode == 1
    assert "host01: denied" in out and "IS INSTALLED" in out and "NOT been rebooted" in out
    assert "Not changed: the server (not rebooted)" in out
    assert stats(info)["reboots_requested"] == 0


def test_terminal_bad_input_exits_2_and_touches_nothing(tmp_path, sandbox_host):
    info = sandbox_host("default")
    config = write_config(tmp_path, info)
    proc = bot(config, info, "host99")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 2 and "unknown host(s): host99" in err
    proc = bot(config, info, "host01", "--yes")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 2 and "terminal.allow_yes = true" in err
    assert stats(info)["scripts"] == {}


def test_check_only(tmp_path, sandbox_host):
    info = sandbox_host("low-disk")
    proc = bot(write_config(tmp_path, info), info, "host01", "--check")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 1 and "GB free on C:" in out
    assert set(stats(info)["scripts"]) == {"preflight"}


@pytest.mark.parametrize("moment", ["install", "reboot wait"])
def test_killed_during_install_or_reboot_wait_resumes_without_repeating(tmp_path, sandbox_host, moment):
    info = sandbox_host("default")
    config = write_config(tmp_path, info)
    first = bot(config, info, "host01")
    first.stdin.write("y\ny\ny\ny\ny\n")
    first.stdin.flush()

    def reached() -> bool:
        seen = stats(info)
        if moment == "install":
            return seen["installs_started"] == 1 and seen["installs_run"] == 0
        return seen["reboots_requested"] == 1

    wait_until(reached, timeout=60, what=f"the run reached the {moment}")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    second = bot(config, info, "host01")
    out, err = second.communicate("y\ny\ny\ny\ny\n", timeout=120)
    assert second.returncode == 0, out + err
    assert "resuming unfinished run" in out
    seen = stats(info)
    assert seen["installs_started"] == 1, seen
    assert seen["reboots_requested"] == 1, seen
    assert "host01: succeeded" in out and "audit trail intact" in out
