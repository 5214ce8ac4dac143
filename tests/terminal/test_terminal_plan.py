"""`idm-upgrade run HOST... --check` at the terminal: each host's plan, then the batch's recap."""

from __future__ import annotations

import getpass
import io
import secrets

from bot.terminal.run import EXIT_OK, run_from_terminal
from sandbox.threaded import running_fleet
from tests.steps.conftest import sandbox_config


async def test_run_check_on_two_hosts_prints_each_plan_and_a_recap(tmp_path, monkeypatch):
    with running_fleet(2, "default", password=secrets.token_urlsafe(12)) as fleet:
        host = fleet[0]
        monkeypatch.setenv("WINRM_USERNAME", host.username)
        monkeypatch.setenv("WINRM_PASSWORD", host.password)
        config = sandbox_config(host, tmp_path / "bot.db", more_hosts=(fleet[1],))
        out = io.StringIO()
        code = await run_from_terminal(config, ["host01", "host02"], check_only=True, yes=False, out=out)
        text = out.getvalue()
        assert code == EXIT_OK, text
        assert [s.state.installs_started for s in fleet] == [0, 0]
        assert [s.state.downloads for s in fleet] == [0, 0]
    for name in ("host01", "host02"):
        assert f"PLAN for {name} (check only: nothing was changed)" in text
    assert "would run  Run the connector installer: upgrade 19.03.0.0 → 19.03.0.1 with the installer" in text
    approver = config.slack.approvers[0]
    assert f"asks      install approval: you, at the prompt (cli:{getpass.getuser()}) (in Slack: {approver})" in text
    recap = text.split("\nRECAP\n", 1)[1].splitlines()
    assert recap[0].startswith("host01 ") and recap[1].startswith("host02 ")
    assert all("ok=1   changed=0   skipped=0   failed=0   succeeded (run-" in line for line in recap[:2]), recap
    print(text)
