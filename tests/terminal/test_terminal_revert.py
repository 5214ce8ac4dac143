"""`idm-upgrade revert RUN` at the terminal: the approval asked at the prompt, exit codes like run's."""

from __future__ import annotations

import io

from bot.terminal.revert import revert_from_terminal
from bot.terminal.run import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tests.engine.test_revert import Revert
from tests.vcsim import vcsim_fixture

vcsim = vcsim_fixture()


async def test_revert_at_the_terminal_asks_at_the_prompt_and_exits_0_once_verified(tmp_path, vcsim, capsys):
    async with Revert(tmp_path, vcsim) as r:
        run_id = r.run.id
        await r.stop()
        out = io.StringIO()
        code = await revert_from_terminal(
            r.config, run_id, why="wrong build", out=out, stdin=io.StringIO("y\n"), services=r.services()
        )
        text = out.getvalue()
        assert code == EXIT_OK, text
        assert "Revert host01 to its snapshot now" in text
        assert "reverted to snapshot 'idm-upgrade " in text and "service Running" in text
        assert r.host.state.connector.version == "19.03.0.0"


async def test_a_denied_revert_exits_1_and_a_refused_one_exits_2(tmp_path, vcsim, capsys):
    async with Revert(tmp_path, vcsim) as r:
        run_id = r.run.id
        await r.stop()
        code = await revert_from_terminal(
            r.config, run_id, out=io.StringIO(), stdin=io.StringIO("n\n"), services=r.services()
        )
        assert code == EXIT_FAILED
        assert r.host.state.connector.version == "19.03.0.2"
        code = await revert_from_terminal(r.config, "run-00000000", out=io.StringIO(), services=r.services())
        assert code == EXIT_USAGE
        assert "There is no run 'run-00000000'" in capsys.readouterr().err
