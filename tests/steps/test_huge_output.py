"""Host output of megabytes stays small in the bot: the scripts cut long log lines on the host, the executor
keeps at most winrm.max_output_kib of a stream, the store at most 16 KiB of a string. The reported run: an
installer log with six 1 MB lines, whose tail went into the reason, the facts, the audit trail and the
thread, made a 42 MB database. Real pywinrm against the simulated host (scenario huge-log-lines)."""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from bot.core.models import RunState, StepState
from bot.systems.winrm import BadOutput
from sandbox.threaded import running_host
from steps.common import LOG_LINE_CHARS
from tests.steps.test_install_realism import SERVICE, STATE_FILE, ok, scripts_with, start
from tests.support.waiting import wait_until
from tests.systems.test_winrm_executor import executor_for

CUT_LINE = "characters cut]"
CUT_STAGE = (
    " | ForEach-Object { if ($w -gt 0 -and $_.Length -gt $w) { $_.Substring(0, $w) + ' [' + ($_.Length - $w) + "
    "' characters cut]' } else { $_ } }"
)


async def test_a_run_whose_installer_log_has_six_megabyte_lines_keeps_a_small_database(upgrade, tmp_path):
    engine, host, _clicker, run = await upgrade("huge-log-lines")
    assert run.state is RunState.failed
    record = engine.store.step(run.id, "install")
    assert record.state is StepState.failed and "exit code 1603" in record.reason
    # one line of cause; the log's lines are in the facts, shown once in the step's reply
    assert CUT_LINE not in record.reason and len(record.reason) < 400, record.reason[:500]
    long_lines = [line for line in record.facts["log_tail"] if CUT_LINE in line]
    assert len(long_lines) == 6 and all(len(line) < LOG_LINE_CHARS + 40 for line in long_lines)
    assert "998" in long_lines[0].rsplit("[", 1)[1]  # "[998000 characters cut]": what the host kept back
    assert CUT_LINE not in engine.store.get_run(run.id).result
    assert engine.store.verify_audit().ok
    engine.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = await asyncio.to_thread(os.path.getsize, tmp_path / "huge-log-lines.db")
    print(f"\nhuge-log-lines: database {size} bytes after the run")
    assert size < 2_000_000, size


async def test_a_script_that_does_not_cut_its_lines_is_cut_by_the_executor_and_says_so(tmp_path):
    # install_status as it was before LineChars: the whole 6 MB tail in one JSON document.
    uncut = scripts_with(tmp_path, "install_status", CUT_STAGE, "")
    params = {"StateFile": STATE_FILE, "Tail": 15, "LineChars": LOG_LINE_CHARS, "ServiceName": SERVICE}
    with running_host("huge-log-lines", time_scale=0.002) as host:
        host.state.put_file(rf"C:\ProgramData\idm-upgrade\{host.state.artifact.file_name}", host.state.artifact.payload)
        start(host)
        status = wait_until(
            lambda: (s := ok(host, "install_status", params)) and not s["running"] and s, what="the installer ended"
        )
        assert status["exitCode"] == 1603 and sum(CUT_LINE in line for line in status["logTail"]) == 6
        executor = executor_for(host, scripts_dir=uncut)
        with pytest.raises(BadOutput) as caught:
            await executor.run("host01", "install_status", params, retry_safe=True)
        message = str(caught.value)
        assert re.match(r"host01: install_status wrote 6\.\d MiB to stdout, more than winrm\.max_output_kib", message)
        assert "the first 192.0 KiB and the last 64.0 KiB are kept]" in message and "not one JSON document" in message
        executor.close()
