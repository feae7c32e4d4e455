"""Prometheus metrics of the aggregator: ``citysense_aggregate_*``, base units, no sensor label."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "EMIT_DELAY",
    "GRID_CELLS",
    "GRID_OPEN_CELLS",
    "GRID_RECORDS",
    "LATE_RECORDS",
    "OPEN_WINDOWS",
    "READY",
    "RECORDS",
    "REVISIONS",
    "STATE_BYTES",
    "WATERMARK_DELAY",
    "WINDOWS_EMITTED",
]

RECORDS = Counter(
    "citysense_aggregate_records_total",
    "Records consumed and folded into windows (late and dead-lettered ones included).",
    ["topic"],
)
WINDOWS_EMITTED = Counter(
    "citysense_aggregate_windows_emitted_total",
    "Window results sent (first emissions, revisions and updates).",
    ["kind", "window"],
)
REVISIONS = Counter(
    "citysense_aggregate_revisions_total",
    "Window results sent again with a higher revision because late records changed them.",
    ["kind", "window"],
)
LATE_RECORDS = Counter(
    "citysense_aggregate_late_records_total",
    "Records sent to the late topic, by reason.",
    ["kind", "reason"],
)
DEAD_LETTERS = Counter(
    "citysense_aggregate_dead_letters_total",
    "Records the aggregator could not read, sent to the dead-letter topic.",
    ["reason"],
)
WATERMARK_DELAY = Gauge(
    "citysense_aggregate_watermark_delay_seconds",
    "Wall clock minus the stage's watermark (event time), per stage and kind.",
    ["stage", "kind"],
)
CONSUMER_LAG = Gauge(
    "citysense_aggregate_consumer_lag_records",
    "Records in Kafka past the stage's read position (end offset minus next offset to read), "
    "summed over the partitions assigned to this process, per stage and topic.",
    ["stage", "topic"],
)
OPEN_WINDOWS = Gauge(
    "citysense_aggregate_open_windows",
    "Windows held in memory (open, or closed and still within their allowed lateness).",
    ["kind", "window"],
)
STATE_BYTES = Gauge(
    "citysense_aggregate_state_bytes",
    "Bytes of window state held by the stage's numpy columns.",
)
EMIT_DELAY = Histogram(
    "citysense_aggregate_emit_delay_seconds",
    "Wall time from the poll at which a window became due to the acknowledgement of its result.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
GRID_RECORDS = Counter(
    "citysense_aggregate_grid_records_total",
    "Mobile air sensors' records seen by the grid stage, by outcome: gridded, or left out of the "
    "map (no_position, inaccurate, no_pm2_5, outside_grid, late).",
    ["outcome"],
)
GRID_CELLS = Counter(
    "citysense_aggregate_grid_cells_total",
    "Cell windows closed by the grid stage: published, revised (sent again), or suppressed "
    "(below the privacy thresholds).",
    ["window", "outcome"],
)
GRID_OPEN_CELLS = Gauge(
    "citysense_aggregate_grid_open_cells",
    "Cell windows held by the grid stage (open, or closed and within their allowed lateness).",
    ["window"],
)
READY = Gauge("citysense_aggregate_ready", "1 while the aggregator's dependencies are reachable.")
