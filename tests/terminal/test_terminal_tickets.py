"""Change tickets at the terminal: `idm-upgrade run host01 --ticket …` as a real process against
`idm-upgrade sandbox host`, and against the ServiceNow stand-in."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandbox.servicenow import ServiceNowStandIn
from tests.terminal.test_terminal_run import ROOT, bot, sandbox_host, stats, write_config

__all__ = ["sandbox_host"]  # the fixture, shared with test_terminal_run

TICKET = "CHG0012345"


def ticketed(tmp_path: Path, info: dict, change: str = 'ticket = "required"') -> Path:
    config = write_config(tmp_path, info)
    config.write_text(config.read_text() + f"[change]\n{change}\n")
    return config


def nothing_recorded(tmp_path: Path) -> bool:
    database = tmp_path / "idm-upgrade.db"
    if not database.exists():
        return True
    conn = sqlite3.connect(database)
    try:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0 and (
            conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
        )
    finally:
        conn.close()


def test_required_and_missing_exits_2_showing_the_pattern(tmp_path, sandbox_host):
    info = sandbox_host("default")
    proc = bot(ticketed(tmp_path, info), info, "host01")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 2, out + err
    assert "a change ticket is required" in err and "^CHG[0-9]{7}$" in err and "--ticket" in err
    assert nothing_recorded(tmp_path) and stats(info)["scripts"] == {}


def test_malformed_exits_2_showing_the_pattern(tmp_path, sandbox_host):
    info = sandbox_host("default")
    proc = bot(ticketed(tmp_path, info, 'ticket = "optional"'), info, "host01", "--ticket", "CHG-12")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 2, out + err
    assert "`CHG-12` is not a change ticket: it must match `^CHG[0-9]{7}$`" in err
    assert "--ticket CHG0012345" in err
    assert nothing_recorded(tmp_path) and stats(info)["scripts"] == {}


def test_optional_and_missing_runs(tmp_path, sandbox_host):
    info = sandbox_host("low-disk")  # preflight refuses: a short run that shows it was started
    proc = bot(ticketed(tmp_path, info, 'ticket = "optional"'), info, "host01")
    out, err = proc.communicate("", timeout=60)
    assert "GB free on C:" in out and ", ticket" not in out, out + err


def test_the_ticket_in_every_prompt_the_summary_and_the_audit_csv(tmp_path, sandbox_host):
    info = sandbox_host("default")
    config = ticketed(tmp_path, info)
    proc = bot(config, info, "host01", "--ticket", TICKET)
    out, err = proc.communicate("y\ny\ny\ny\ny\n", timeout=120)
    assert proc.returncode == 0, out + err
    prompts = out.count(" for host01 (request ")
    assert prompts >= 4 and out.count(f"  change ticket: {TICKET}\n") == prompts
    assert "host01: succeeded (run-" in out and f", ticket {TICKET}): " in out
    exported = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "export", "--format", "csv", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert rows[0]["event"] == "run.requested" and {row["ticket"] for row in rows if row["run_id"]} == {TICKET}


async def run_bot(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`idm-upgrade run ARGS` without blocking the loop the ServiceNow stand-in answers on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        *args,
        "--config",
        str(config),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_servicenow_refusal_at_the_terminal(tmp_path, sandbox_host):
    info = sandbox_host("default")
    now = datetime.now(UTC)
    async with ServiceNowStandIn() as snow:
        snow.add(TICKET, start=now + timedelta(days=1), end=now + timedelta(days=2), state="-2")
        config = ticketed(tmp_path, info, f'ticket = "required"\n[change.servicenow]\nurl = "{snow.url}"')
        env = {**os.environ, "WINRM_USERNAME": info["username"], "WINRM_PASSWORD": info["password"]}
        code, out, err = await run_bot(config, env | snow.environment(), "host01", "--ticket", TICKET)
        assert code == 2, out + err
        assert f"change {TICKET} does not allow this run" in err
        assert "not in the Implement state" in err and "before its planned start" in err
        assert snow.password not in out + err
        # without the credentials the terminal refuses before asking anyone
        code, out, err = await run_bot(config, env, "host01", "--ticket", TICKET)
        assert code == 2 and "SERVICENOW_USERNAME / SERVICENOW_PASSWORD" in err, out + err
        assert [r.status for r in snow.requests] == [200]
    assert nothing_recorded(tmp_path) and stats(info)["scripts"] == {}
