"""Fleet progress at Slack's real pace: one request of 10, 50 and 200 hosts, the fleet card against today's.

The Slack stand-in enforces Slack's own limits (chat.postMessage 1 a second per channel, chat.update Tier 3:
50 a minute; 429 with Retry-After beyond them) and the bot runs with `messages_per_second = 1`. The fleet is
one `/idm-upgrade g01 g02 …`: min(hosts, 20) groups in the same channel, side by side (max_parallel 20), each
one host after another. Each size runs twice, each in a fresh bot process and database: `fleet_progress =
"card"` (the fleet card, lean host threads, edits on their own Tier 3 budget) and `"threads"` (the baseline:
every run its full thread, every call on the channel's one pace, as before issue 20). Measured, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fleet import poll_seconds
from bench.rig import SIGNING_SECRET, HostFleet, at, bot_config, host_names, percentiles, running_bot, until
from sandbox.slack import SlackStandIn
from sandbox.slack_state import OPS_CHANNEL, REQUESTER
from sandbox.workspace_one import WorkspaceOneStandIn

SIZES = (10, 50, 200)
MAX_PARALLEL = 20
TIME_SCALE = 0.15  # as the fleet section: the hosts' work compressed, so Slack's pace weighs more than in life
AFTER_END_SECONDS = 60.0
FLEET_TIMEOUT = 1800.0
TARGETS = {"approval_p99_s": 5.0, "lag_p99_s": 60.0, "pending_after_60s": 0}


def groups_of(names: list[str]) -> dict[str, list[str]]:
    count = min(len(names), MAX_PARALLEL)
    groups: dict[str, list[str]] = {f"g{i + 1:02d}": [] for i in range(count)}
    for index, name in enumerate(names):
        groups[f"g{index % count + 1:02d}"].append(name)
    return groups


async def one_fleet(size: int, mode: str, time_scale: float, after_end: float = AFTER_END_SECONDS) -> dict[str, Any]:
    hosts = HostFleet(size, "default", time_scale)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(hosts.stop)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pace-")))
        async with SlackStandIn(signing_secret=SIGNING_SECRET) as slack, WorkspaceOneStandIn() as ws1:
            names = host_names(size)
            groups = groups_of(names)
            tables = "".join(f"[groups.{g}]\nhosts = {json.dumps(members)}\n" for g, members in groups.items())
            config = bot_config(
                tmp / "bot.toml",
                hosts.hosts,
                ws1.url,
                max_parallel=MAX_PARALLEL,
                messages_per_second=1,
                poll_seconds=poll_seconds(time_scale),
                slack_extra=f'fleet_progress = "{mode}"\nupdates_per_minute = 50',
                tables_extra=tables,
            )
            slack.real_pace()
            bot, observer, _ = await stack.enter_async_context(running_bot(config, slack, ws1, hosts.hosts[0]))
            offset = time.time() - time.monotonic()  # the stand-in's call times (monotonic) as wall-clock
            calls_before = len(slack.calls)
            started = time.monotonic()
            result = await slack.sender(bot.url, SIGNING_SECRET).send_slash_command(REQUESTER, " ".join(groups))
            if result.status != 200:
                raise RuntimeError(f"/idm-upgrade answered {result.status}")
            await until(lambda: sum(observer.states().values()) == size, "the fleet's runs", 60)
            await until(lambda: observer.active() == 0, f"{size} runs to end", FLEET_TIMEOUT, interval=0.2)
            fleet_seconds = time.monotonic() - started
            backlog_at_end = observer.pending_messages()
            await asyncio.sleep(after_end)
            pending_after = observer.pending_messages()
            calls = slack.calls[calls_before:]
            lags = [
                at(sent) - at(created)
                for created, sent in observer.rows("SELECT created_at, sent_at FROM outbox WHERE state = 'sent'")
            ]
            requested = {
                json.loads(detail)["approval_id"]: at(when)
                for when, detail in observer.rows("SELECT at, detail FROM audit WHERE event = 'approval.requested'")
            }
            received: dict[str, float] = {}
            for call in calls:
                if call.method != "chat.postMessage" or not call.ok:
                    continue
                blocks = call.params.get("blocks")
                blocks = json.loads(blocks) if isinstance(blocks, str) else blocks or []
                for block in blocks:
                    block_id = str(block.get("block_id", ""))
                    if block_id.startswith("decide-"):
                        received.setdefault(block_id.removeprefix("decide-"), call.time + offset)
            delivery = [received[a] - t for a, t in requested.items() if a in received]
            states = observer.states()
    by_method: dict[str, int] = {}
    for call in calls:
        by_method[call.method] = by_method.get(call.method, 0) + 1
    return {
        "hosts": size,
        "mode": mode,
        "states": states,
        "fleet_s": fleet_seconds,
        "calls_per_host": len([c for c in calls if c.ok]) / size,
        "posts_per_host": len([c for c in calls if c.ok and c.method == "chat.postMessage"]) / size,
        "updates_per_host": len([c for c in calls if c.ok and c.method == "chat.update"]) / size,
        "ratelimited": len([c for c in calls if c.status == 429]),
        "lag": percentiles(lags),
        "approvals": len(requested),
        "approvals_delivered": len(delivery),
        "approval": percentiles(delivery),
        "backlog_at_end": backlog_at_end,
        "pending_after_60s": pending_after,
        "channel": OPS_CHANNEL,
        "time_scale": time_scale,
    }


async def run(
    sizes: tuple[int, ...] = SIZES,
    time_scale: float = TIME_SCALE,
    modes: tuple[str, ...] = ("card", "threads"),
    after_end: float = AFTER_END_SECONDS,
) -> list[dict[str, Any]]:
    return [await one_fleet(size, mode, time_scale, after_end) for size in sizes for mode in modes]


def verdict(row: dict[str, Any]) -> str:
    met = []
    met.append(("approvals ≤ 5 s p99", row["approval"]["p99"] / 1000 <= TARGETS["approval_p99_s"]))
    if row["hosts"] == 50:
        met.append(("lag p99 < 60 s", row["lag"]["p99"] / 1000 < TARGETS["lag_p99_s"]))
        met.append(("nothing pending 60 s after", row["pending_after_60s"] == 0))
    return "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in met)


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| hosts | progress | fleet s | Slack calls per host (posts + edits) | 429s | thread lag p50 / p99 s "
        "| approval delivery p99 s (n) | backlog at the end | pending 60 s later | targets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = "fleet card" if r["mode"] == "card" else "threads (before, baseline)"
        lines.append(
            f"| {r['hosts']} | {label} | {r['fleet_s']:.0f} | {r['calls_per_host']:.1f} ({r['posts_per_host']:.1f} + "
            f"{r['updates_per_host']:.1f}) | {r['ratelimited']} | {r['lag']['p50'] / 1000:.1f} / "
            f"{r['lag']['p99'] / 1000:.1f} | {r['approval']['p99'] / 1000:.1f} ({r['approvals_delivered']} of "
            f"{r['approvals']}) | {r['backlog_at_end']} | {r['pending_after_60s']} | {verdict(r)} |"
        )
    lines += [
        "",
        f"Slack stand-in at Slack's real pace (chat.postMessage 1/s per channel, chat.update 50/min; 429 with "
        f"Retry-After beyond), `messages_per_second = 1`, `updates_per_minute = 50`; one request of min(hosts, "
        f"{MAX_PARALLEL}) groups side by side in one channel, max_parallel {MAX_PARALLEL}, hosts at time scale "
        f"{rows[0].get('time_scale', TIME_SCALE)}; approvals clicked once delivered. "
        "Lag: outbox row stored → Slack accepted it; approval delivery: `approval.requested` in the audit → the "
        "stand-in received the post. Targets (issue 20): approvals within 5 s p99; at 50 hosts thread lag p99 "
        "under 60 s and nothing pending 60 s after the fleet ended.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sizes = tuple(int(a) for a in sys.argv[1:] if a.isdigit()) or SIZES
    modes = tuple(a for a in sys.argv[1:] if a in ("card", "threads")) or ("card", "threads")
    print(report(asyncio.run(run(sizes, modes=modes))))
