"""The command line as DESIGN.md describes it; parts not built yet say so and change nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot import cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    for command in ("serve", "run", "sandbox", "audit", "check-config"):
        assert command in done.stdout


def test_audit_help_lists_export_and_verify(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["audit", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "export" in out and "verify" in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["audit", "export", "--format", "xml"])
    assert done.value.code == 2


def test_sandbox_host_rejects_unknown_scenario(capsys):
    assert cli.main(["sandbox", "host", "--name", "h1", "--port", "0", "--scenario", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'" in err and "already-current" in err
