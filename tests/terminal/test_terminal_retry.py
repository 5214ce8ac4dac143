"""`idm-upgrade retry RUN` at the terminal: a run that failed at the installer, retried once the host is fixed,
resumes from its failed step with the approvals asked again at the prompt; a refusal exits 2, changing nothing."""

from __future__ import annotations

import io

from bot.cli import main
from bot.core.models import RunState
from bot.store.store import Store
from bot.terminal.retry import retry_from_terminal
from bot.terminal.run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_from_terminal
from sandbox.threaded import running_host
from tests.steps.conftest import sandbox_config

YES = "y\n" * 20  # every question at the prompt answered yes


def the_run(config):
    store = Store(config.database.path)
    try:
        [run] = store.runs()
        return run, len(store.audit_events()), [e.event for e in store.audit_events(run.id)]
    finally:
        store.close()


async def test_retry_at_the_terminal_resumes_the_failed_run_and_refusals_exit_2(tmp_path, monkeypatch):
    with running_host("install-fails-1603") as host:
        monkeypatch.setenv("WINRM_USERNAME", host.username)
        monkeypatch.setenv("WINRM_PASSWORD", host.password)
        config = sandbox_config(host, tmp_path / "bot.db")
        out = io.StringIO()
        code = await run_from_terminal(config, ["host01"], check_only=False, yes=False, out=out, stdin=io.StringIO(YES))
        assert code == EXIT_FAILED, out.getvalue()
        run, events, _ = the_run(config)
        assert run.state is RunState.failed

        refused = await retry_from_terminal(config, "run-00000000", out=io.StringIO(), stdin=io.StringIO(YES))
        assert refused == EXIT_USAGE
        assert the_run(config)[1] == events

        host.state.installer.exit_code = 0  # the cause on the host is fixed
        out = io.StringIO()
        code = await retry_from_terminal(config, run.id, why="MSI log read", out=out, stdin=io.StringIO(YES))
        text = out.getvalue()
        assert code == EXIT_OK, text
        assert f"Retrying run {run.id} on host01 (attempt 2)" in text
        assert "INSTALL APPROVAL" in text  # asked again at the prompt: the first attempt's grant does not carry over
        assert f"host01: succeeded ({run.id}, attempt 2)" in text
        run, events, trail = the_run(config)
        assert run.state is RunState.succeeded and run.attempt == 2
        assert trail.count("run.retried") == 1

        again = await retry_from_terminal(config, run.id, out=io.StringIO(), stdin=io.StringIO(YES))
        assert again == EXIT_USAGE  # succeeded: nothing to retry
        assert the_run(config)[1] == events


def test_the_retry_subcommand_exists_with_its_why(capsys):
    try:
        main(["retry", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    shown = capsys.readouterr().out
    assert "RUN" in shown and "--why" in shown
