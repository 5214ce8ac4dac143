"""`idm-upgrade sandbox`: the whole upgrade in Slack form from one command; Ctrl-C stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sandbox(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def test_sandbox_default_scenario_succeeds():
    # how long it takes is the sandbox's own result line (and bench/), not a timed assertion here
    proc = sandbox()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("sandbox: host01 succeeded in ") and "audit chain verified" in last
    assert last.endswith("1 signed checkpoint(s) in Slack hold")
    assert "reboot approval needed" in out and "host01: succeeded" in out


def test_sandbox_failure_scenario_exits_1_and_shows_why():
    proc = sandbox("--scenario", "low-disk")
    out, _err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "GB free on C:" in out and "sandbox: host01 failed" in out


def test_sandbox_ctrl_c_stops_cleanly():
    proc = sandbox()
    # Ctrl-C once the upgrade is under way: the first line (the slash command) is flushed with the first
    # drawing of the channel, after the run was submitted. A busy machine may take long to get there.
    timer = threading.Timer(120, proc.kill)  # never hang on a sandbox that prints nothing
    timer.start()
    first = proc.stdout.readline()
    timer.cancel()
    assert first.startswith("$ /idm-upgrade host01"), f"the sandbox did not start its run: {first!r}"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "sandbox stopped" in err
    assert "Traceback" not in err


def test_sandbox_rejects_an_unknown_scenario():
    proc = sandbox("--scenario", "nope")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "unknown scenario 'nope'" in err


def test_sandbox_two_hosts_leaves_a_verifiable_audit(tmp_path):
    import json
    import sqlite3

    database = tmp_path / "sandbox.db"
    proc = sandbox("--hosts", "2", "--database", str(database))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert "host01 succeeded, host02 succeeded" in out.strip().splitlines()[-1]
    conn = sqlite3.connect(database)
    events = [(run, event) for run, event in conn.execute("SELECT run_id, event FROM audit ORDER BY seq")]
    hosts = dict(conn.execute("SELECT id, host FROM runs"))
    finished = [hosts[run] for run, event in events if event == "run.succeeded"]
    assert finished == ["host01", "host02"]  # one after another
    config = tmp_path / "c.toml"
    config.write_text(f"""
[slack]
channel = "C0OPSCHANL"
requesters = ["U0REQUESTER"]
[database]
path = "{database}"
[installer]
url = "http://127.0.0.1/x.exe"
sha256 = "{"ab" * 32}"
version = "19.03.0.1"
[hosts.host01]
address = "127.0.0.1"
""")
    verify = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert verify.returncode == 0 and "intact" in verify.stdout
    exported = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "export", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert len(json.loads(exported.stdout)) == len(events)


def test_sandbox_already_current_succeeds_with_nothing_to_do():
    """The host is at the target and its tenant has STARTTLS off (the upgrade did that): nothing to do."""
    proc = sandbox("--scenario", "already-current")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert out.strip().splitlines()[-1].startswith("sandbox: host01 succeeded in ")
    assert "nothing to do: the connector is already at 19.03.0.1" in out


def test_sandbox_prints_the_app_home():
    proc = sandbox("--hosts", "2", "--home")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    home = out[out.index("App Home of @requester") :]
    assert "the fleet at a glance" in home and "2 hosts · 0 in flight" in home
    for host in ("host01", "host02"):
        assert f"*{host}* · connector 19.03.0.1 (seen by verify" in home
    assert "succeeded" in home and "[Check] [Upgrade]" in home
