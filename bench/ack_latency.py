"""Ack latency of /idm-upgrade over signed HTTP: the bot versus a bare Bolt app that only acks.

Both run in this process, on the same loop, against the same Slack stand-in, with the same sender;
the figure is the ratio of their percentiles. Measured, never asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import tomllib
from pathlib import Path

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.config import Secrets, parse_config
from bot.slack_app import SlackBot, web_client
from sandbox.slack import SlackStandIn
from sandbox.slack_state import REQUESTER

SECRET = "bench-signing-secret"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "mean": statistics.fmean(ordered) * 1000}


async def bare_bolt(slack: SlackStandIn) -> tuple[web.AppRunner, str]:
    app = AsyncApp(client=web_client("xoxb-sandbox", slack.api_url), signing_secret=SECRET)

    @app.command("/idm-upgrade")
    async def only_ack(ack):
        await ack()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"


def bot_config(directory: Path):
    text = f"""
[slack]
channel = "C0OPSCHANL"
approvers = ["U0APPROVER1"]
[database]
path = "{directory / "bench.db"}"
[installer]
url = "http://127.0.0.1:1/connector.exe"
sha256 = "{"ab" * 32}"
version = "19.03.0.1"
[winrm]
scheme = "http"
transport = "basic"
[hosts.host01]
address = "127.0.0.1"
port = 1
"""
    return parse_config(tomllib.loads(text))


async def measure(sender, text: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        result = await sender.send_slash_command(REQUESTER, text)
        assert result.status == 200, result.status
        samples.append(result.seconds)
    return samples


async def run(count: int = 300) -> dict:
    async with SlackStandIn(signing_secret=SECRET) as slack:
        runner, bare_url = await bare_bolt(slack)
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "SLACK_BOT_TOKEN": "xoxb-sandbox",
                "SLACK_SIGNING_SECRET": SECRET,
                "WINRM_USERNAME": "bench",
                "WINRM_PASSWORD": "bench",
            }
            bot = SlackBot(bot_config(Path(tmp)), Secrets.from_env(env), socket_mode=False, api_url=slack.api_url)
            await bot.start(port=0)
            try:
                bare_sender = slack.sender(bare_url, SECRET)
                bot_sender = slack.sender(f"{bot.url}/slack/events", SECRET)
                await measure(bare_sender, "help", 10)  # warm both up
                await measure(bot_sender, "help", 10)
                results = {"count": count}
                # interleave the two so load on the machine hits both alike
                bare, bot_help, bot_status = [], [], []
                for _ in range(count):
                    bare += await measure(bare_sender, "help", 1)
                    bot_help += await measure(bot_sender, "help", 1)
                    bot_status += await measure(bot_sender, "status", 1)
                results["bare_bolt"] = percentiles(bare)
                results["bot_help"] = percentiles(bot_help)
                results["bot_status"] = percentiles(bot_status)
                results["ratio_p99_help"] = results["bot_help"]["p99"] / results["bare_bolt"]["p99"]
                results["ratio_p99_status"] = results["bot_status"]["p99"] / results["bare_bolt"]["p99"]
            finally:
                await bot.stop()
                await runner.cleanup()
    return results


def report(results: dict) -> str:
    rows = ["| request | p50 ms | p95 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
    for key, label in (
        ("bare_bolt", "bare Bolt, ack only (baseline)"),
        ("bot_help", "bot: `/idm-upgrade help`"),
        ("bot_status", "bot: `/idm-upgrade status`"),
    ):
        p = results[key]
        rows.append(f"| {label} | {p['p50']:.1f} | {p['p95']:.1f} | {p['p99']:.1f} | {p['mean']:.1f} |")
    rows.append("")
    rows.append(
        f"p99 ratio to bare Bolt: help {results['ratio_p99_help']:.2f}, status {results['ratio_p99_status']:.2f} "
        f"({results['count']} requests each, 0 runs in flight)"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(report(asyncio.run(run())))
