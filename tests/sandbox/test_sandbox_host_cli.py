"""`idm-upgrade sandbox host` as another tool would use it: a process, its JSON line, then WinRM."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import winrm

ROOT = Path(__file__).resolve().parents[2]


def test_sandbox_host_command_serves_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox", "host", "--name", "conn07", "--port", "0", "--scenario", "physical"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"endpoint", "username", "password", "scenario", "installer_url", "installer_sha256"}
        assert info["scenario"] == "physical"
        session = winrm.Session(info["endpoint"], auth=(info["username"], info["password"]), transport="basic")
        response = session.run_ps("$env:COMPUTERNAME")  # no marker: must fail, never silently succeed
        assert response.status_code != 0
        with urllib.request.urlopen(info["installer_url"]) as download:
            payload = download.read()
        assert hashlib.sha256(payload).hexdigest() == info["installer_sha256"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
