"""The benchmarks run end to end at tiny sizes, so they do not rot; their figures are not asserted."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_at_tiny_sizes():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=420
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in (
        "Ack latency",
        "Per-run overhead",
        "Fleet, pace and thread lag",
        "Fleet progress at Slack's real pace",
        "Stranger load",
        "Audit export and verify",
    ):
        assert f"## {heading}" in done.stdout
    assert "| 2 (seen" in done.stdout  # ack latency was measured with runs in flight
    assert "plain pywinrm loop" in done.stdout
    assert "| 2 | fleet card |" in done.stdout and "| 2 | threads (before, baseline) |" in done.stdout
    assert "slow-loris" in done.stdout and "succeeded in" in done.stdout  # the run under strangers' load ended
