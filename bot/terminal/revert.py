"""`idm-upgrade revert RUN [--why TEXT]`: revert an ended run's VM to its snapshot from the terminal.

The same engine as Slack's **Revert to snapshot** button (``Engine.revert``, ``bot.engine.revert``): the revert
approval (and, without vCenter, the confirmation that a person reverted the VM by hand) is asked at the
prompt, as ``idm-upgrade run`` asks its gates; the person at the terminal is ``cli:<os user>``. Exit codes as
``run``'s: 0 reverted and verified, 1 the revert failed or was denied, 2 refused (nothing was changed).
"""

from __future__ import annotations

import sys
from typing import TextIO

from bot.core.config import Config
from bot.systems.services import Services
from bot.terminal.run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, terminal_runtime
from bot.terminal.view import TerminalView, terminal_actor


async def revert_from_terminal(
    config: Config,
    run_id: str,
    *,
    why: str | None = None,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    services: Services | None = None,
) -> int:
    out, err = out or sys.stdout, sys.stderr
    view = TerminalView(out, stdin=stdin or sys.stdin)
    runtime = terminal_runtime(config, view, services, err)
    if runtime is None:
        return EXIT_USAGE
    store, engine = runtime.store, runtime.engine
    try:
        resumed = {r.id for r in await engine.start()}
        run = store.find_run(run_id)
        if run is not None and run.id in resumed and run.recovery == "revert":
            view.line(f"{run.host:<12} {'':<10} resuming the unfinished revert of {run.id}")
        else:
            reply = await engine.revert(run_id, terminal_actor(), why)
            if not reply.ok:
                err.write(f"idm-upgrade: {reply.message}\n")
                return EXIT_USAGE
            view.line(reply.message)
        await engine.join()
        ended = store.get_run(run_id)
        out.write(f"\n{ended.host}: {ended.state.label} ({ended.id}): {ended.result}\n")
        events = [e.event for e in store.audit_events(run_id)]
        last = max(i for i, e in enumerate(events) if e == "revert.requested")
        verified = "revert.verified" in events[last:]
        verdict = store.verify_audit()
        out.write(f"{verdict}\n")
        return EXIT_OK if verified and verdict.ok else EXIT_FAILED
    finally:
        await runtime.close()
