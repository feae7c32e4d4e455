"""Scrapes and rates of ``citysense status`` on hand-written Prometheus expositions."""

from __future__ import annotations

import pytest

from citysense.status._metrics import (
    Scrape,
    counter_rate,
    merge_scrapes,
    parse_metrics,
    stage_rates,
)


def _ingest(received: tuple[int, int], start: float = 1000.5, rss: int = 50 << 20) -> str:
    """An ingest exposition: received messages in two families (labels), one gauge."""
    raw, lorawan = received
    return f"""\
# HELP citysense_ingest_received_messages_total MQTT messages received
# TYPE citysense_ingest_received_messages_total counter
citysense_ingest_received_messages_total{{family="raw"}} {raw}
citysense_ingest_received_messages_total{{family="chirpstack"}} {lorawan}
# HELP citysense_ingest_produced_records_total Records acknowledged by Kafka
# TYPE citysense_ingest_produced_records_total counter
# HELP citysense_aggregate_watermark_delay_seconds delay
# TYPE citysense_aggregate_watermark_delay_seconds gauge
citysense_aggregate_watermark_delay_seconds{{stage="window",kind="noise"}} 4.5
citysense_aggregate_watermark_delay_seconds{{stage="window",kind="air"}} 12.0
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds {start}
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes {rss}
"""


def test_parse_sums_labels_and_keeps_maxima_and_families() -> None:
    totals, maxima, families = parse_metrics(_ingest((30, 12)))
    assert totals["citysense_ingest_received_messages_total"] == 42
    # Summing delays over kinds means nothing: the view takes the largest.
    assert maxima["citysense_aggregate_watermark_delay_seconds"] == 12.0
    # Declared without a sample (no record produced yet): still known to be there.
    assert "citysense_ingest_produced_records" in families
    assert "citysense_ingest_produced_records_total" not in totals


def test_parse_refuses_garbage() -> None:
    with pytest.raises(ValueError):  # noqa: PT011  (the parser's own error, message varies)
        parse_metrics('this is { not "prometheus\n')


def test_rate_is_increase_over_elapsed_time() -> None:
    before = merge_scrapes(10.0, {"ingest@1": _ingest((100, 0))})
    after = merge_scrapes(14.0, {"ingest@1": _ingest((300, 200))})
    # (300 + 200 - 100) received in 4 s.
    assert counter_rate(before, after, "citysense_ingest_received_messages_total") == 100.0
    # Declared, no sample yet: 0 per second, not unknown.
    assert counter_rate(before, after, "citysense_ingest_produced_records_total") == 0.0
    assert counter_rate(before, after, "citysense_sink_records_total") is None


def test_restarted_process_counts_from_zero() -> None:
    before = merge_scrapes(0.0, {"ingest@1": _ingest((1000, 0))})
    after = merge_scrapes(2.0, {"ingest@1": _ingest((50, 0), start=2000.0)})
    assert counter_rate(before, after, "citysense_ingest_received_messages_total") == 25.0


def test_one_process_behind_two_ports_is_counted_once() -> None:
    text = _ingest((10, 0))
    merged = merge_scrapes(0.0, {"run@28080": text, "publish@28084": text})
    assert merged.total("citysense_ingest_received_messages_total") == 10
    assert list(merged.processes) == ["run@28080"]
    other = _ingest((5, 0), start=77.25, rss=1 << 20)
    both = merge_scrapes(0.0, {"ingest@28081": text, "sink@28083": other})
    assert both.total("citysense_ingest_received_messages_total") == 15
    assert both.processes == {"ingest@28081": 50 << 20, "sink@28083": 1 << 20}


def test_stage_rates_mark_stages_without_metrics_down() -> None:
    before = Scrape(at=0.0)
    after = merge_scrapes(5.0, {"ingest@1": _ingest((40, 10))})
    rates = {rate.stage: rate for rate in stage_rates(before, after)}
    assert rates["ingest"].running
    assert rates["ingest"].rate_in == 10.0  # 50 since nothing, in 5 s
    assert rates["ingest"].rate_out == 0.0
    assert rates["ingest"].total_in == 50
    for stage in ("aggregate", "sink", "publish"):
        assert not rates[stage].running
        assert rates[stage].rate_in is None
