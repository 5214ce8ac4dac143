"""The benchmarks run (tiny sizes) so they do not rot; their figures are not asserted."""

from bench import ack_latency


async def test_ack_latency_benchmark_runs():
    results = await ack_latency.run(count=3)
    assert {"bare_bolt", "bot_help", "bot_status"} <= set(results)
    assert "p99 ratio to bare Bolt" in ack_latency.report(results)


def test_audit_scale_benchmark_runs():
    from bench import audit_scale

    rows = audit_scale.run((200, 400))
    assert [r["events"] for r in rows] == [200, 400]
    assert "verify peak MiB" in audit_scale.report(rows)
