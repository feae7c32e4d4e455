"""End-to-end latency histogram: observed_at to commit."""

from __future__ import annotations

from prometheus_client import REGISTRY

from sinks.timescale._latency import observe_committed


def test_latency_is_commit_time_minus_event_time() -> None:
    value = REGISTRY.get_sample_value
    labels = {"kind": "air"}
    count0 = value("citysense_sink_end_to_end_latency_seconds_count", labels) or 0
    sum0 = value("citysense_sink_end_to_end_latency_seconds_sum", labels) or 0
    low0 = value("citysense_sink_end_to_end_latency_seconds_bucket", {**labels, "le": "0.1"}) or 0
    committed = 1_700_000_100.0
    # 2 s, 40 s, and a device clock 5 s ahead (observed as 0).
    observed = [1_700_000_098_000_000, 1_700_000_060_000_000, 1_700_000_105_000_000]
    assert observe_committed("air", observed, committed) == 3
    assert value("citysense_sink_end_to_end_latency_seconds_count", labels) == count0 + 3
    total = value("citysense_sink_end_to_end_latency_seconds_sum", labels)
    assert total is not None
    assert abs(total - sum0 - 42.0) < 1e-6
    low = value("citysense_sink_end_to_end_latency_seconds_bucket", {**labels, "le": "0.1"})
    assert low == low0 + 1
