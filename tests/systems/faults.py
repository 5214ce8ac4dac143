"""Fault injection for the transport tests: a WinRM request that gets a 500 once per run."""

from __future__ import annotations

from typing import Any


def server_error_on(executor: Any, host: Any, method: str, times: int) -> dict[str, int]:
    """The first ``times`` calls of pywinrm's Protocol.``method`` (run_command, send_command_input) meet an
    HTTP 500 from the host, so the client cannot know whether the script started."""
    original = executor._execute
    left = {"left": times}

    def execute(cancel, protocol, *args):
        real = getattr(protocol, method)

        def broken(*a, **k):
            if left["left"]:
                left["left"] -= 1
                host.faults.server_errors = 1
            return real(*a, **k)

        setattr(protocol, method, broken)
        return original(cancel, protocol, *args)

    executor._execute = execute
    return left
