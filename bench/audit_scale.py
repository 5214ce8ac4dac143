"""Audit export and verify at 10^4, 10^5, 10^6 events: time and peak memory, to show linear cost and
streaming (memory flat). The baseline is the same trail's plain `SELECT *` scan in the same process."""

from __future__ import annotations

import io
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from bot.store import audit
from bot.store.store import Store


class Sink(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def fill(store: Store, count: int) -> None:
    have = store.conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    with store.transaction():
        for i in range(have, count):
            audit.append(
                store.conn,
                "step.succeeded",
                actor="bot",
                run_id=f"run-{i // 20:08x}",
                step="install",
                detail={"reason": "installed", "exit_code": 0, "i": i},
            )


def measure(fn) -> tuple[float, float]:
    """Wall time of a plain run, then peak Python memory of a second run under tracemalloc (which is slow)."""
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1024 / 1024
    tracemalloc.stop()
    return seconds, peak


def run(sizes=(10_000, 100_000, 1_000_000)) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "audit.db")
        for size in sizes:
            fill(store, size)
            scan = measure(lambda: sum(1 for _ in store.conn.execute("SELECT * FROM audit")))
            export = measure(lambda: audit.export_json(store.conn, Sink()))
            verify = measure(lambda: audit.verify(store.conn))
            rows.append(
                {
                    "events": size,
                    "scan_s": scan[0],
                    "export_s": export[0],
                    "export_peak_mib": export[1],
                    "verify_s": verify[0],
                    "verify_peak_mib": verify[1],
                    "db_mib": os.path.getsize(Path(tmp) / "audit.db") / 1024 / 1024,
                }
            )
        store.close()
    return rows


def report(rows: list[dict]) -> str:
    lines = [
        "| events | plain scan s (baseline) | export s | export peak MiB | verify s | verify peak MiB | µs/event verify | db MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['events']:,} | {r['scan_s']:.2f} | {r['export_s']:.2f} | {r['export_peak_mib']:.2f} | "
            f"{r['verify_s']:.2f} | {r['verify_peak_mib']:.2f} | {r['verify_s'] / r['events'] * 1e6:.1f} | "
            f"{r['db_mib']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))
