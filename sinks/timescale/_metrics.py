"""Prometheus metrics of the TimescaleDB sink: ``citysense_sink_*``, base units, no sensor label."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_DURATION",
    "BATCH_RECORDS",
    "COMMIT_DURATION",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "READY",
    "RECORDS_CONSUMED",
    "RETRIES",
    "ROWS_WRITTEN",
]

ROWS_WRITTEN = Counter(
    "citysense_sink_rows_written_total",
    "Rows added to a table (rows already present, i.e. replays, are not counted).",
    ["table"],
)
RECORDS_CONSUMED = Counter(
    "citysense_sink_records_total",
    "Kafka records committed to the database, dead letters included.",
    ["topic"],
)
BATCH_RECORDS = Histogram(
    "citysense_sink_batch_records",
    "Kafka records per written batch.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000),
)
BATCH_DURATION = Histogram(
    "citysense_sink_batch_duration_seconds",
    "Time to decode, stage, insert and commit one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMMIT_DURATION = Histogram(
    "citysense_sink_commit_duration_seconds",
    "Latency of the COMMIT of a batch's transaction (rows and offsets).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
RETRIES = Counter(
    "citysense_sink_retries_total",
    "Write or positioning attempts that failed and will be retried.",
    ["reason"],
)
DEAD_LETTERS = Counter(
    "citysense_sink_dead_letters_total",
    "Records sent to the dead-letter topic instead of a table.",
    ["reason"],
)
CONSUMER_LAG = Gauge(
    "citysense_sink_consumer_lag_records",
    "Records between the sink's position and the end of its partitions, per topic.",
    ["topic"],
)
READY = Gauge("citysense_sink_ready", "1 while the sink can write to the database, else 0.")
