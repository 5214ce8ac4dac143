"""Ack latency: `/idm-upgrade status` and a button click sent as signed HTTP, at 0, 10 and 50 runs in flight.

The bot is `idm-upgrade serve --http` in its own process, working on N runs against simulated hosts
(every run active: max_parallel = N). The baseline is a bare Bolt app in its own process whose handlers
only ack, on the same machine at the same moment: the two are asked in turn, request by request.
The click names an approval that does not exist, so every sample takes the same path (ack, then the
engine looks it up and answers the clicker); the real approval clicks of the runs are reported too.
Measured, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.rig import (
    SIGNING_SECRET,
    BareBolt,
    HostFleet,
    bot_config,
    host_names,
    percentiles,
    request_runs,
    running_bot,
    until,
)
from sandbox.slack import SlackStandIn
from sandbox.slack_sender import block_actions_payload
from sandbox.slack_state import APPROVER, REQUESTER
from sandbox.workspace_one import WorkspaceOneStandIn

LEVELS = (0, 10, 50)
TIME_SCALE = 0.5  # a run lasts about 45 s: longer than the measurement, so the runs stay in flight
# winrm.poll_seconds as shipped: the runs read their hosts as often as they would in production (0.2 s, as
# the other benchmarks use to finish quickly, makes 50 runs poll 250 times a second).
POLL_SECONDS = 5.0
KINDS = ("bare_command", "bot_command", "bare_click", "bot_click")


async def level(in_flight: int, count: int) -> dict[str, Any]:
    hosts = HostFleet(max(in_flight, 1), "default", TIME_SCALE)
    with contextlib.ExitStack() as stack:
        stack.callback(hosts.stop)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ack-")))
        async with SlackStandIn(signing_secret=SIGNING_SECRET) as slack, WorkspaceOneStandIn() as ws1:
            config = bot_config(
                tmp / "bot.toml", hosts.hosts, ws1.url, max_parallel=max(in_flight, 1), poll_seconds=POLL_SECONDS
            )
            bare = BareBolt(slack)
            stack.callback(bare.stop)
            async with running_bot(config, slack, ws1, hosts.hosts[0]) as (bot, observer, approver):
                await bare.ready()
                senders = {"bare": slack.sender(bare.url, SIGNING_SECRET), "bot": slack.sender(bot.url, SIGNING_SECRET)}
                anchor = slack.post_as_user(APPROVER, "benchmark clicks").ts

                async def ask(kind: str) -> float:
                    who, what = kind.split("_")
                    sender = senders[who]
                    if what == "command":
                        result = await sender.send_slash_command(REQUESTER, "status")
                    else:  # a click of its own each time (its own trigger_id): the bot acts on a request once
                        click = json.dumps(block_actions_payload(slack, APPROVER, "approve", "apr-00000000", anchor))
                        result = await sender.replay(sender.build({"payload": click}))
                    if result.status != 200:
                        raise RuntimeError(f"{kind} answered {result.status}")
                    return result.seconds

                for kind in KINDS * 5:  # warm both up
                    await ask(kind)
                if in_flight:
                    await request_runs(slack, bot.url, host_names(in_flight))
                    await until(
                        lambda: (
                            observer.rows("SELECT COUNT(*) FROM audit WHERE event = 'step.started'")[0][0] >= in_flight
                        ),
                        "every run to start working",
                        120,
                    )
                samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
                active: list[int] = []
                for _ in range(count):
                    for kind in KINDS:
                        samples[kind].append(await ask(kind))
                    active.append(observer.active())
                    await asyncio.sleep(0.02)
    result: dict[str, Any] = {kind: percentiles(values) for kind, values in samples.items()}
    result["approval_clicks"] = percentiles(approver.latencies)
    result["in_flight"] = in_flight
    result["active_min"], result["active_max"] = min(active), max(active)
    result["ratio_command"] = result["bot_command"]["p99"] / result["bare_command"]["p99"]
    result["ratio_click"] = result["bot_click"]["p99"] / result["bare_click"]["p99"]
    return result


async def run(count: int = 300, levels: tuple[int, ...] = LEVELS) -> list[dict[str, Any]]:
    return [await level(n, count) for n in levels]


def report(results: list[dict[str, Any]]) -> str:
    rows = [
        "| runs in flight | request | bare Bolt p50 / p95 / p99 ms | bot p50 / p95 / p99 ms | p99 ratio |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        flight = f"{r['in_flight']}" + (f" (seen {r['active_min']}-{r['active_max']})" if r["in_flight"] else "")
        for what, label in (("command", "`/idm-upgrade status`"), ("click", "button click")):
            bare, bot = r[f"bare_{what}"], r[f"bot_{what}"]
            rows.append(
                f"| {flight} | {label} | {bare['p50']:.1f} / {bare['p95']:.1f} / {bare['p99']:.1f} "
                f"| {bot['p50']:.1f} / {bot['p95']:.1f} / {bot['p99']:.1f} | {r[f'ratio_{what}']:.2f} |"
            )
    rows.append("")
    samples = results[0]["bot_command"]["n"]
    rows.append(f"{samples} requests of each kind per level, bot and baseline asked in turn.")
    for r in results:
        clicks = r["approval_clicks"]
        if clicks["n"]:
            rows.append(
                f"Real approval clicks at {r['in_flight']} in flight: {clicks['n']}, p50 {clicks['p50']:.1f} ms, "
                f"p99 {clicks['p99']:.1f} ms, max {clicks['max']:.1f} ms."
            )
    return "\n".join(rows)


if __name__ == "__main__":
    print(report(asyncio.run(run())))
