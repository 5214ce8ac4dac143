"""What a revert to snapshot verifies on the host: the connector's version and its service, read the way
preflight reads them (one WinRM round trip, ``steps.common.read_host``). The engine's revert flow
(``bot.engine.revert``) is handed this reader by the runtime: the engine itself never imports the steps'
readers."""

from __future__ import annotations

from typing import Any

from steps.base import StepContext
from steps.common import read_host


async def connector_now(ctx: StepContext) -> dict[str, Any]:
    """{"version", "service", "start_mode"} as the host says now; raises ExternalSystemError while it is away."""
    facts = await read_host(ctx)
    return {
        "version": facts.connector.version,
        "service": facts.service.state,
        "start_mode": facts.service.start_mode,
    }
