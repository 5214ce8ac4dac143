"""Per-run overhead: the default plan on hosts whose every action takes no time, approvals clicked at once,
against the same scripts sent back to back by a plain pywinrm loop (one shell per command, as
`winrm.Session.run_cmd` does). Both run in this command, on hosts of the same scenario.

The bot's time is from `run.requested` to `run.succeeded` in its audit trail, less the time each approval
stood open (a person's time, here the benchmark's click and the channel's pace). Measured, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from winrm.exceptions import WinRMTransportError, WSManFaultError
from winrm.protocol import Protocol

from bench.rig import (
    SIGNING_SECRET,
    HostFleet,
    HostInfo,
    Observer,
    at,
    bot_config,
    host_names,
    request_runs,
    running_bot,
    until,
)
from bot.systems.winrm import UTF8_CODEPAGE, build_script, start_script
from sandbox.slack import SlackStandIn
from sandbox.workspace_one import WorkspaceOneStandIn

RUN_TIMEOUT = 120.0


def plain_pywinrm_loop(host: HostInfo, sequence: list[tuple[str, dict]]) -> float:
    """Send each script as the bot did, back to back. Across the reboot the host drops the connection and
    refuses new ones for a moment, or no longer knows the shell: the reboot command counts as sent, another
    is tried again at once."""
    protocol = Protocol(host.endpoint, transport="basic", username=host.username, password=host.password)
    started = time.perf_counter()
    for script, params in sequence:
        body = build_script(script, params)
        while True:
            try:
                shell = protocol.open_shell(codepage=UTF8_CODEPAGE)
                command = start_script(protocol, shell, body)
                protocol.get_command_output(shell, command)
                protocol.cleanup_command(shell, command)
                protocol.close_shell(shell)
                break
            except (requests.ConnectionError, WinRMTransportError, WSManFaultError):
                if script == "reboot":
                    break
                time.sleep(0.01)
    return time.perf_counter() - started


def run_times(observer: Observer, run_id: str) -> dict[str, float]:
    events = observer.rows("SELECT event, at, detail FROM audit WHERE run_id = ? ORDER BY seq", run_id)
    opened: dict[str, float] = {}
    person = 0.0
    for event, when, detail in events:
        data = json.loads(detail or "{}")
        if event == "approval.requested":
            opened[data["approval_id"]] = at(when)
        elif event == "approval.granted" and data.get("approval_id") in opened:
            person += at(when) - opened.pop(data["approval_id"])
    wall = at(events[-1][1]) - at(events[0][1])
    return {"wall": wall, "person": person, "bot": wall - person}


def response_url_posts(slack: SlackStandIn) -> int:
    return sum(len(r.posts) for r in list(slack.response_urls.values()))


def commands_sent(host: HostInfo) -> list[tuple[str, dict]]:
    base = host.endpoint.rsplit("/wsman", 1)[0]
    with urllib.request.urlopen(f"{base}/_sandbox/commands", timeout=10) as response:
        return [(c["script"], c["params"]) for c in json.loads(response.read())]


async def run(repeats: int = 5) -> dict[str, Any]:
    # The hosts live in a process of their own: while the bot works, this process also serves Slack and
    # clicks, which must not slow the hosts' answers to the bot (the plain loop runs with it idle).
    hosts = HostFleet(2 * repeats, "default", time_scale=0.0)
    with contextlib.ExitStack() as stack:
        stack.callback(hosts.stop)
        infos = hosts.hosts
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-per-run-")))
        async with SlackStandIn(signing_secret=SIGNING_SECRET) as slack, WorkspaceOneStandIn() as ws1:
            config = bot_config(tmp / "bot.toml", infos[:repeats], ws1.url)
            runs = []
            async with running_bot(config, slack, ws1, infos[0]) as (bot, observer, approver):
                for index, name in enumerate(host_names(repeats)):
                    calls_before, posts_before = len(slack.calls), response_url_posts(slack)
                    await request_runs(slack, bot.url, [name])
                    await until(
                        lambda name=name: observer.rows(
                            "SELECT 1 FROM runs WHERE host = ? AND state IN ('succeeded', 'failed', 'cancelled')",
                            name,
                        ),
                        f"the run on {name} to end",
                        RUN_TIMEOUT,
                    )
                    await until(
                        lambda: observer.pending_messages() == 0,
                        "the thread to be delivered",
                        RUN_TIMEOUT,
                    )
                    [(run_id, state, result)] = observer.rows("SELECT id, state, result FROM runs WHERE host = ?", name)
                    if state != "succeeded":
                        raise RuntimeError(f"the benchmark run on {name} ended {state}: {result}")
                    # auth.test is Bolt's, once per process: not part of a run
                    calls = Counter(c.method for c in slack.calls[calls_before:] if c.method != "auth.test")
                    sequence = await asyncio.to_thread(commands_sent, infos[index])
                    runs.append(
                        {
                            **run_times(observer, run_id),
                            "sequence": sequence,
                            "slack_calls": dict(calls),
                            "response_url_posts": response_url_posts(slack) - posts_before,
                            # the baseline right after, on a fresh host: the machine is in the same state
                            "plain": await asyncio.to_thread(plain_pywinrm_loop, infos[repeats + index], sequence),
                        }
                    )
    bot_times = [r["bot"] for r in runs]
    baseline = [r["plain"] for r in runs]
    scripts = Counter(script for script, _ in runs[0]["sequence"])
    web_calls = [sum(r["slack_calls"].values()) for r in runs]
    return {
        "repeats": repeats,
        "bot_median": statistics.median(bot_times),
        "wall_median": statistics.median(r["wall"] for r in runs),
        "person_median": statistics.median(r["person"] for r in runs),
        "plain_median": statistics.median(baseline),
        "ratio": statistics.median(bot_times) / statistics.median(baseline),
        "commands": len(runs[0]["sequence"]),
        "scripts": dict(scripts),
        "slack_calls": runs[0]["slack_calls"],
        "slack_web_calls_max": max(web_calls),
        "response_url_posts_max": max(r["response_url_posts"] for r in runs),
        "approval_click_ms": [round(x * 1000, 1) for x in approver.latencies],
    }


def report(r: dict[str, Any]) -> str:
    scripts = ", ".join(f"{name} {count}" for name, count in sorted(r["scripts"].items()))
    calls = ", ".join(f"{name} {count}" for name, count in sorted(r["slack_calls"].items()))
    total_slack = r["slack_web_calls_max"] + r["response_url_posts_max"]
    return "\n".join(
        [
            "| measure | bot | plain pywinrm loop (baseline) | ratio |",
            "|---|---|---|---|",
            f"| time for one run (median of {r['repeats']}), s | {r['bot_median']:.2f} | {r['plain_median']:.2f} "
            f"| {r['ratio']:.2f} |",
            f"| WinRM commands per run | {r['commands']} | {r['commands']} (the same scripts) | 1.00 |",
            "",
            f"The bot's time excludes the {r['person_median']:.2f} s (median) that approvals stood open; the whole "
            f"run took {r['wall_median']:.2f} s from request to result.",
            f"Commands by script: {scripts}.",
            f"Slack calls per run: {total_slack} at most ({r['slack_web_calls_max']} Web API: {calls}; "
            f"{r['response_url_posts_max']} answers through response_url).",
        ]
    )


if __name__ == "__main__":
    print(report(asyncio.run(run())))
