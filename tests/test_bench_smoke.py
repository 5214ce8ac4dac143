"""The benchmarks run (tiny sizes) so they do not rot; their figures are not asserted."""

from bench import ack_latency


async def test_ack_latency_benchmark_runs():
    results = await ack_latency.run(count=3)
    assert {"bare_bolt", "bot_help", "bot_status"} <= set(results)
    assert "p99 ratio to bare Bolt" in ack_latency.report(results)
