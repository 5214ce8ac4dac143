"""The container image's HEALTHCHECK (deploy/healthcheck.py) against a real bot's GET /healthz, and the cases it
must tell apart: a 503, nothing listening in HTTP mode, nothing listening in Socket Mode."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


async def healthcheck(url: str, **env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "SLACK_APP_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HEALTHCHECK), env={**environment, "IDM_UPGRADE_HEALTH_URL": url, **env}
    )
    return await asyncio.wait_for(proc.wait(), 60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_healthcheck_passes_on_a_healthy_bot(slack_bot):
    h = await slack_bot()
    assert await healthcheck(f"{h.bot.url}/healthz") == 0


async def test_the_healthcheck_fails_on_503_and_on_a_closed_port_unless_in_socket_mode():
    async def unhealthy(_request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "slack": "unreachable"}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", unhealthy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        assert await healthcheck(f"http://127.0.0.1:{port}/healthz") == 1
        # 503 in Socket Mode too: the bot's own verdict counts when it answers
        assert await healthcheck(f"http://127.0.0.1:{port}/healthz", SLACK_APP_TOKEN="xapp-x") == 1
    finally:
        await runner.cleanup()
    closed = f"http://127.0.0.1:{free_port()}/healthz"
    assert await healthcheck(closed) == 1  # HTTP mode and nothing listens: unhealthy
    assert await healthcheck(closed, SLACK_APP_TOKEN="xapp-x") == 0  # Socket Mode: no HTTP listener to ask
