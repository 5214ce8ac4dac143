"""The baseline for ack latency: a bare Bolt AsyncApp whose handlers only ack, in its own process.

    SLACK_SIGNING_SECRET=... SLACK_API_URL=... python -m bench.bare_bolt --port 3001

Served the same way as the bot's HTTP mode (aiohttp, POST /slack/events), so the two differ only by
what the bot does beyond acking.
"""

from __future__ import annotations

import argparse
import os
import re

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.slack.app import web_client


def build() -> web.Application:
    app = AsyncApp(
        client=web_client("xoxb-sandbox", os.environ["SLACK_API_URL"]),
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    )

    @app.command("/idm-upgrade")
    async def only_ack_command(ack):
        await ack()

    @app.action(re.compile(".*"))
    async def only_ack_click(ack):
        await ack()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", health)
    return web_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_bolt")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
