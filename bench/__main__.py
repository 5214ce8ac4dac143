"""`make bench`: run the benchmarks and write bench/RESULTS.md with the machine's details.

`python -m bench --smoke` runs them at tiny sizes (CI keeps them from rotting) and writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import ack_latency, audit_scale, fleet, fleet_pace, per_run, stranger_load


def machine() -> str:
    cpus = os.cpu_count()
    memory = ""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(line for line in lines if line.startswith("MemTotal")).split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return f"{platform.platform()}, Python {platform.python_version()}, {cpus} CPUs{memory}"


def main(argv: list[str]) -> int:
    # The simulated hosts drop connections when they reboot; aiohttp's server logs each one.
    logging.basicConfig(level=logging.CRITICAL)
    smoke = "--smoke" in argv
    started = time.monotonic()
    sections = []
    ack = asyncio.run(ack_latency.run(5, (0, 2)) if smoke else ack_latency.run())
    sections.append(("Ack latency (signed HTTP, bot and bare Bolt each in its own process)", ack_latency.report(ack)))
    one = asyncio.run(per_run.run(1 if smoke else 9))
    sections.append(("Per-run overhead (zero-time host, approvals clicked at once)", per_run.report(one)))
    fleets = asyncio.run(fleet.run((2, 3), time_scale=0.02) if smoke else fleet.run())
    sections.append(("Fleet, pace and thread lag", fleet.report(fleets)))
    paced = asyncio.run(fleet_pace.run((2,), time_scale=0.02, after_end=1.0) if smoke else fleet_pace.run())
    sections.append(
        ("Fleet progress at Slack's real pace (fleet card against per-run threads)", fleet_pace.report(paced))
    )
    strangers = asyncio.run(stranger_load.run(20, 6, 10, time_scale=0.02) if smoke else stranger_load.run())
    sections.append(
        ("Stranger load (signed requests and a run under 1,000 hostile connections)", stranger_load.report(strangers))
    )
    audit_rows = audit_scale.run((1_000, 5_000) if smoke else (10_000, 100_000, 1_000_000))
    sections.append(
        ("Audit export and verify (streaming: peak memory flat, time linear)", audit_scale.report(audit_rows))
    )
    body = "\n\n".join(f"## {title}\n\n{text}" for title, text in sections)
    text = (
        f"# Benchmark results\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; "
        f"`make bench` took {time.monotonic() - started:.0f} s.\n\n{body}\n"
    )
    print(text)
    if not smoke:
        Path(__file__).with_name("RESULTS.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
