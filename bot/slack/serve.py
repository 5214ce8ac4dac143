"""Run the Slack bot until interrupted: Socket Mode when SLACK_APP_TOKEN is set, HTTP otherwise."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bot.core.config import Config, Secrets
from bot.slack.app import SlackBot, StartupError
from bot.slack.door import raise_descriptor_limit
from bot.store.lease import EngineBusy
from bot.systems.services import ServicesError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


async def serve(
    config: Config, *, socket_mode: bool = False, http: bool = False, port: int = 3000, bind: str | None = None
) -> int:
    """`bind`: the HTTP address (`--bind`), over `http.bind` (127.0.0.1 unless configured)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # as LimitNOFILE does under systemd: the soft descriptor limit (1024 by default) up to the hard one
    soft, _hard = raise_descriptor_limit()
    secrets = Secrets.from_env()
    use_socket = socket_mode or (secrets.slack_app_token is not None and not http)
    try:
        bot = SlackBot(config, secrets, socket_mode=use_socket)
    except (StartupError, ServicesError, EngineBusy, ValueError) as exc:
        sys.stderr.write(f"idm-upgrade: {exc}\n")
        return EXIT_USAGE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if not use_socket:
        logging.getLogger(__name__).info("descriptor limit %d", soft)
    await bot.start(port=port, host=bind or config.http.bind)
    try:
        await stop.wait()
    finally:
        await bot.stop()
    return EXIT_OK
