"""A simulated connector fleet in its own process, so the bot's CPU and memory are measured alone.

    BENCH_HOST_PASSWORD=... python -m bench.hosts --count 200 --scenario default --time-scale 0.05

Prints one JSON line per host (endpoint, username, password, installer URL and checksum), then `ready`,
and serves until SIGINT/SIGTERM. All hosts download the installer from the first host (one artifact store).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal

from sandbox.winrm_server import start_hosts


async def serve(count: int, scenario: str, time_scale: float, password: str) -> None:
    servers = await start_hosts(count, scenario, time_scale=time_scale, password=password)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for server in servers:
            server.state.artifact_url = servers[0].installer_url
            print(json.dumps(server.describe()), flush=True)
        print("ready", flush=True)
        await stop.wait()
    finally:
        for server in servers:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--time-scale", type=float, default=0.0)
    args = parser.parse_args()
    # A host that reboots drops its connections; aiohttp logs each one, which is expected here.
    logging.basicConfig(level=logging.CRITICAL)
    password = os.environ["BENCH_HOST_PASSWORD"]  # a secret: from the environment, never the command line
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.count, args.scenario, args.time_scale, password))


if __name__ == "__main__":
    main()
