"""`idm-upgrade sandbox --scenario unicode-names`: non-ASCII names reach the Slack thread as they were written.

The tenant's AD-over-IWA directory is "Zürich – Ünïcødé ’s" (an en dash and U+2019, which PowerShell takes for a
single quote) and the connector log has a German line; WinRM in a shell opened with code page 437 would hand
them over mangled (field notes section 8). The directory comes over HTTPS JSON from Workspace ONE, the log
line over WinRM from service.ps1: both must arrive intact.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from sandbox.host import CONNECTOR_LOG, UNICODE_DIRECTORY, UNICODE_LOG_MESSAGE, scenario

ROOT = Path(__file__).resolve().parents[2]


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_the_scenario_has_the_non_ascii_names():
    state = scenario("unicode-names")
    assert state.directory_name == UNICODE_DIRECTORY
    assert any(UNICODE_LOG_MESSAGE in line for line in state.read_lines(CONNECTOR_LOG) or [])


def test_sandbox_shows_non_ascii_names_intact(tmp_path):
    database = tmp_path / "sandbox.db"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "sandbox", "--scenario", "unicode-names", "--database", str(database)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
        timeout=180,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-2000:] + proc.stderr[-2000:]
    # The thread as the sandbox renders it: the STARTTLS approval lists the directory by name.
    shown = [line for line in out.splitlines() if "*Directories:*" in line]
    assert shown and all(UNICODE_DIRECTORY in line for line in shown), out[-3000:]
    assert "Ã" not in out and "\ufffd" not in out  # nothing read as a single-byte code page, nothing lost
    # What the bot recorded of the connector log, read over WinRM by service.ps1 (a successful run's thread
    # does not quote the log; a failed start's would).
    conn = sqlite3.connect(database)
    (facts,) = conn.execute("SELECT facts FROM steps WHERE step = 'service'").fetchone()
    lines = [s for s in strings(json.loads(facts)) if "Verzeichnis" in s]
    assert lines, f"no connector log line was recorded: {facts[:2000]}"
    assert all(UNICODE_LOG_MESSAGE in line and UNICODE_DIRECTORY in line for line in lines), lines
