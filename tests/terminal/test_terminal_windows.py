"""`idm-upgrade run` keeps to maintenance windows and freezes as Slack does: the same refusal, nothing started.

A process, so the real clock: the window opens three days from today, which `now` is certainly outside.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from bot.core.config import DAYS
from tests.terminal.test_terminal_run import bot, sandbox_host, stats, write_config

__all__ = ["sandbox_host"]  # the fixture, used here too


def nothing_started(tmp_path, info) -> None:
    with sqlite3.connect(tmp_path / "idm-upgrade.db") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert stats(info)["scripts"] == {}


def test_run_outside_the_window_is_refused_with_the_next_opening(tmp_path, sandbox_host):
    info = sandbox_host("default")
    config = write_config(tmp_path, info)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    name = DAYS[day.weekday()]
    with config.open("a") as f:
        f.write(
            f'window = "later"\n[windows.later]\ndays = ["{name}"]\nstart = "00:00"\nend = "01:00"\ntimezone = "UTC"\n'
        )
    proc = bot(config, info, "host01")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 2, out + err
    assert err.splitlines()[-1] == (
        f"idm-upgrade: host01 is outside its maintenance window later ({name} 00:00-01:00 UTC); it next opens "
        f"{name} {day} 00:00 UTC (00:00 UTC) to {name} 01:00 UTC (01:00 UTC). To run at the earliest allowed time ({day} 00:00 UTC), ask "
        f"for `/idm-upgrade host01 at next-window` or `/idm-upgrade host01 at {day}T00:00Z`"
    )
    nothing_started(tmp_path, info)
    # a dry run is not held to the window
    proc = bot(config, info, "host01", "--check")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 0, out + err
    assert stats(info)["installs_started"] == 0 and stats(info)["scripts"]  # it looked, changed nothing
    with sqlite3.connect(tmp_path / "idm-upgrade.db") as conn:
        assert conn.execute("SELECT check_only, scheduled_for FROM runs").fetchall() == [(1, None)]


def test_run_in_a_freeze_is_refused(tmp_path, sandbox_host):
    info = sandbox_host("default")
    config = write_config(tmp_path, info)
    with config.open("a") as f:
        f.write('[[freeze]]\nstart = 2020-01-01T00:00:00Z\nend = 2099-01-01T00:00:00+01:00\nreason = "the long one"\n')
    proc = bot(config, info, "host01")
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 2, out + err
    assert err.splitlines()[-1] == (
        "idm-upgrade: a change freeze is on until 2098-12-31 23:00 UTC (2099-01-01T00:00+01:00): the long one; "
        "no run starts during it. The earliest time it may run is 2098-12-31 23:00 UTC, more than 30 days ahead"
    )
    nothing_started(tmp_path, info)
