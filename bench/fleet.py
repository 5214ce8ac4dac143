"""Fleet: 10, 50 and 200 hosts with winrm.max_parallel 20, one `/idm-upgrade HOST` per host.

Each size gets a fresh bot process, hosts process and database. First one host is upgraded to warm the
bot up (first connections, the Workspace ONE token), then three others one at a time: the median of their
times is the baseline, and the ideal for the fleet is ceil(hosts / max_parallel) times it. Then the fleet
is requested at once. Sampled every SAMPLE_SECONDS: the bot's RSS, the runs in flight, and the hosts
mid-upgrade (a step started, the run not ended). The Slack calls per channel per second and the thread
lag (outbox row stored -> delivered) come from the same run. Measured, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.rig import (
    SIGNING_SECRET,
    HostFleet,
    Observer,
    at,
    bot_config,
    host_names,
    percentiles,
    process_cpu,
    request_runs,
    running_bot,
    until,
)
from sandbox.slack import SlackStandIn
from sandbox.slack_state import OPS_CHANNEL
from sandbox.workspace_one import WorkspaceOneStandIn

SIZES = (10, 50, 200)
MAX_PARALLEL = 20
# The simulated install takes 7 s and the reboot 4.5 s (real ones take minutes): the hosts' time dominates,
# as it does in production, while 200 hosts still fit in a few minutes.
TIME_SCALE = 0.15
MESSAGES_PER_SECOND = 10.0
SOLO_RUNS = 3  # the baseline: the median of this many runs of one host alone
SAMPLE_SECONDS = 0.25
FLEET_TIMEOUT = 600.0
DRAIN_SECONDS = 15.0  # after the fleet ends, the thread backlog is given this long, then measured as is


def poll_seconds(time_scale: float) -> float:
    """winrm.poll_seconds (5 s as shipped) scaled like the hosts' time, so a run polls its host as often
    relative to the work as it would in production."""
    return max(0.2, 5.0 * time_scale)


def run_span(observer: Observer, hosts: list[str]) -> float:
    marks = ",".join("?" * len(hosts))
    [(first, last)] = observer.rows(
        "SELECT MIN(a.at), MAX(a.at) FROM audit a JOIN runs r ON r.id = a.run_id "
        f"WHERE r.host IN ({marks}) AND a.event IN ('run.requested', 'run.succeeded', 'run.failed')",
        *hosts,
    )
    return at(last) - at(first)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def max_per_window(times: list[float], window: float = 1.0) -> int:
    """The most calls in any `window` seconds (a sliding window over the call times)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def one_fleet(size: int, time_scale: float) -> dict[str, Any]:
    hosts = HostFleet(size + 1 + SOLO_RUNS, "default", time_scale)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(hosts.stop)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        async with SlackStandIn(signing_secret=SIGNING_SECRET) as slack, WorkspaceOneStandIn() as ws1:
            config = bot_config(
                tmp / "bot.toml",
                hosts.hosts,
                ws1.url,
                max_parallel=MAX_PARALLEL,
                messages_per_second=MESSAGES_PER_SECOND,
                poll_seconds=poll_seconds(time_scale),
            )
            bot, observer, _ = await stack.enter_async_context(running_bot(config, slack, ws1, hosts.hosts[0]))
            names = host_names(size + 1 + SOLO_RUNS)
            warm_up, solo, fleet = names[:1], names[1 : 1 + SOLO_RUNS], names[1 + SOLO_RUNS :]
            for alone in [warm_up] + [[name] for name in solo]:
                await request_runs(slack, bot.url, alone)
                await until(lambda: observer.active() == 0 and observer.states(), "a single run to end", 120)
                await until(
                    lambda: observer.pending_messages() == 0,
                    "a single run's thread",
                    120,
                )
            one_host = statistics.median(run_span(observer, [name]) for name in solo)
            idle_kib = bot.memory_kib()["VmRSS"]
            db_before = bot.database_bytes()
            calls_before = len(slack.calls)
            samples: list[tuple[float, int, int, int]] = []  # (t, rss KiB, in flight, mid-upgrade)

            async def sample() -> None:
                while True:
                    in_flight = observer.active()
                    mid = observer.rows(
                        "SELECT COUNT(DISTINCT s.run_id) FROM steps s JOIN runs r ON r.id = s.run_id "
                        "WHERE r.state IN ('running', 'waiting_approval') AND s.state != 'pending'"
                    )
                    samples.append((time.monotonic(), bot.memory_kib()["VmRSS"], in_flight, mid[0][0] if mid else 0))
                    await asyncio.sleep(SAMPLE_SECONDS)

            sampling = asyncio.get_running_loop().create_task(sample())
            cpu_before = bot.cpu_seconds()
            others_before = process_cpu(hosts.process.pid) + time.process_time()
            machine_before = machine_busy()
            started = time.monotonic()
            ack = await request_runs(slack, bot.url, fleet)
            await until(
                lambda: observer.active() == 0 and sum(observer.states().values()) == size + 1 + SOLO_RUNS,
                f"{size} runs to end",
                FLEET_TIMEOUT,
                interval=0.2,
            )
            wall = time.monotonic() - started
            cpu = bot.cpu_seconds() - cpu_before
            others = process_cpu(hosts.process.pid) + time.process_time() - others_before
            machine = machine_busy()
            busy = (machine[0] - machine_before[0]) / max(1e-9, machine[1] - machine_before[1])
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
            backlog_at_end = observer.pending_messages()
            with contextlib.suppress(TimeoutError):
                await until(
                    lambda: observer.pending_messages() == 0,
                    "the threads",
                    DRAIN_SECONDS,
                )
            peak_kib = bot.memory_kib()["VmHWM"]
            states = observer.states()
            lags = [
                at(sent) - at(created)
                for created, sent in observer.rows(
                    "SELECT created_at, sent_at FROM outbox WHERE state = 'sent' AND run_id IN "
                    f"(SELECT id FROM runs WHERE host IN ({','.join('?' * size)}))",
                    *fleet,
                )
            ]
            pending = observer.pending_messages()
            calls = slack.calls[calls_before:]
            channel_times = sorted(c.time for c in calls if c.channel == OPS_CHANNEL)
            span = run_span(observer, fleet)
            run_seconds = [
                at(end) - at(start)
                for start, end in observer.rows(
                    "SELECT MIN(a.at), MAX(a.at) FROM audit a JOIN runs r ON r.id = a.run_id "
                    f"WHERE r.host IN ({','.join('?' * size)}) AND a.event IN ('run.started', 'run.succeeded') "
                    "GROUP BY a.run_id",
                    *fleet,
                )
            ]
            db_bytes = bot.database_bytes()
    ideal = math.ceil(size / MAX_PARALLEL) * one_host
    peak_flight = max(s[2] for s in samples) if samples else 0
    rss_peak_sampled = max(s[1] for s in samples) if samples else idle_kib
    return {
        "hosts": size,
        "time_scale": time_scale,
        "states": states,
        "one_host_s": one_host,
        "fleet_s": span,
        "run_median_s": statistics.median(run_seconds) if run_seconds else 0.0,
        "wall_s": wall,
        "ideal_s": ideal,
        "vs_ideal": span / ideal,
        "cpu_s": cpu,
        "others_cpu_s": others,
        "machine_busy": busy,
        "idle_mib": idle_kib / 1024,
        "peak_rss_mib": peak_kib / 1024,
        "per_run_kib": (rss_peak_sampled - idle_kib) / max(1, peak_flight),
        "peak_in_flight": peak_flight,
        "peak_mid_upgrade": max(s[3] for s in samples) if samples else 0,
        "db_mib": db_bytes / 2**20,
        "db_kib_per_run": (db_bytes - db_before) / 1024 / size,
        "ack_p99_ms": percentiles(ack)["p99"],
        "slack_calls": len(calls),
        "max_calls_per_second": max_per_window(channel_times),
        "pace": MESSAGES_PER_SECOND,
        "lag": percentiles(lags),
        "backlog_at_end": backlog_at_end,
        "pending_after_drain": pending,
    }


async def run(sizes: tuple[int, ...] = SIZES, time_scale: float = TIME_SCALE) -> list[dict[str, Any]]:
    return [await one_fleet(size, time_scale) for size in sizes]


def slope(rows: list[dict[str, Any]], key: str) -> float:
    """Least-squares slope of `key` per host."""
    xs = [r["hosts"] for r in rows]
    ys = [r[key] for r in rows]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs) or 1
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| hosts | one host alone s (baseline) | a run in the fleet, median s | fleet s | ideal s | fleet / ideal "
        "| bot CPU s | peak RSS MiB "
        "| KiB per run in flight | peak in flight | peak mid-upgrade | DB MiB | DB KiB per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['hosts']} | {r['one_host_s']:.2f} | {r['run_median_s']:.2f} | {r['fleet_s']:.2f} | {r['ideal_s']:.2f} | {r['vs_ideal']:.2f} "
            f"| {r['cpu_s']:.1f} | {r['peak_rss_mib']:.1f} | {r['per_run_kib']:.0f} | {r['peak_in_flight']} "
            f"| {r['peak_mid_upgrade']} | {r['db_mib']:.2f} | {r['db_kib_per_run']:.0f} |"
        )
    lines.append("")
    if len(rows) > 1:
        lines.append(
            f"Slopes per host (least squares): fleet time {slope(rows, 'fleet_s'):.3f} s, bot CPU "
            f"{slope(rows, 'cpu_s'):.3f} s, peak RSS {slope(rows, 'peak_rss_mib') * 1024:.0f} KiB, "
            f"database {slope(rows, 'db_mib') * 1024:.0f} KiB."
        )
    lines.append(
        "CPU while the fleet ran: "
        + "; ".join(
            f"{r['hosts']} hosts: bot {r['cpu_s']:.1f} s, simulated hosts and stand-ins {r['others_cpu_s']:.1f} s, "
            f"machine {r['machine_busy'] * 100:.0f} % busy"
            for r in rows
        )
        + "."
    )
    lines.append(
        f"max_parallel {MAX_PARALLEL}; hosts of the default scenario at time scale {rows[0]['time_scale']}, "
        f"winrm.poll_seconds {poll_seconds(rows[0]['time_scale']):g} (5 s scaled alike); approvals "
        "clicked the moment they open. 'Mid-upgrade': runs with a step started and not ended."
    )
    lines += [
        "",
        f"Pace and thread lag (slack.messages_per_second = {rows[0]['pace']:g} for the channel):",
        "",
        "| hosts | Slack calls | most calls in any 1 s in the channel | lag p50 s | lag p99 s | lag max s "
        "| backlog when the fleet ended | still pending after "
        f"{DRAIN_SECONDS:.0f} s more |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lag = r["lag"]
        lines.append(
            f"| {r['hosts']} | {r['slack_calls']} | {r['max_calls_per_second']} | {lag['p50'] / 1000:.1f} "
            f"| {lag['p99'] / 1000:.1f} | {lag['max'] / 1000:.1f} | {r['backlog_at_end']} "
            f"| {r['pending_after_drain']} |"
        )
    lines.append("")
    lines.append("Lag is over the messages delivered; those still pending are counted in the last column.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(asyncio.run(run())))
