"""`idm-upgrade retry RUN`: a failed run tried again from its failed step, driven at the terminal as
`idm-upgrade run` drives a run (the approvals asked at the prompt, recorded as ``cli:<os user>``)."""

from __future__ import annotations

import sys
from typing import TextIO

from bot.core.config import Config
from bot.core.models import RunState
from bot.systems.services import Services
from bot.terminal.run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, terminal_runtime
from bot.terminal.view import TerminalView, terminal_actor


async def retry_from_terminal(
    config: Config,
    run_id: str,
    *,
    why: str | None = None,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    services: Services | None = None,
) -> int:
    """Exit 0 when the run then succeeds, 1 when it ends otherwise, 2 when the retry is refused (nothing changed)."""
    out = out or sys.stdout
    view = TerminalView(out, stdin=stdin or sys.stdin)
    runtime = terminal_runtime(config, view, services, sys.stderr)
    if runtime is None:
        return EXIT_USAGE
    store, engine = runtime.store, runtime.engine
    try:
        await engine.start()
        reply = await engine.retry(run_id, terminal_actor(), why or "idm-upgrade retry at the terminal")
        if not reply.ok:
            sys.stderr.write(f"idm-upgrade: {reply.message}\n")
            await engine.join()  # runs resumed by start() go on to their end meanwhile
            return EXIT_USAGE
        view.line(reply.message)
        await engine.join()
        run = store.get_run(run_id)
        out.write(f"\n{run.host}: {run.state.label} ({run.id}, attempt {run.attempt}): {run.result}\n")
        verdict = store.verify_audit()
        out.write(f"{verdict}\n")
        return EXIT_OK if run.state is RunState.succeeded and verdict.ok else EXIT_FAILED
    finally:
        await runtime.close()
