"""Prometheus metrics of the live feed and the realtime push: ``citysense_publish_live_*`` and
``citysense_publish_push_*``, base units, labelled by dataset (a handful), never by sensor."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "LIVE_CHANGES",
    "LIVE_DISCONNECTS",
    "LIVE_POLL_ERRORS",
    "LIVE_SUBSCRIBERS",
    "PUSH_BATCH_ROWS",
    "PUSH_POSITION_TXID",
    "PUSH_REQUESTS",
    "PUSH_REQUEST_DURATION",
    "PUSH_ROWS",
    "PUSH_SKIPPED_ROWS",
]

LIVE_SUBSCRIBERS = Gauge(
    "citysense_publish_live_subscribers",
    "Clients following a dataset's live feed (server-sent events) right now.",
    ["dataset"],
)
LIVE_CHANGES = Counter(
    "citysense_publish_live_changes_total",
    "New or revised rows the shared poller of a dataset read and fanned out.",
    ["dataset"],
)
LIVE_DISCONNECTS = Counter(
    "citysense_publish_live_disconnects_total",
    "Live clients cut off by the server: 'slow' (its queue filled up), 'backlog' (its resume "
    "position was too far behind, told to reload).",
    ["reason"],
)
LIVE_POLL_ERRORS = Counter(
    "citysense_publish_live_poll_errors_total",
    "Polls of a dataset's view that failed (database unreachable, timeout); retried.",
    ["dataset"],
)
PUSH_ROWS = Counter(
    "citysense_publish_push_rows_total",
    "Rows the external portal acknowledged.",
    ["dataset"],
)
PUSH_SKIPPED_ROWS = Counter(
    "citysense_publish_push_skipped_rows_total",
    "Rows the portal refused for good (a 4xx answer other than 429, or a row over 5 MB).",
    ["dataset"],
)
PUSH_REQUESTS = Counter(
    "citysense_publish_push_requests_total",
    "Push requests by outcome: ok, rejected (4xx, skipped), throttled (429), server_error "
    "(5xx), timeout, connection_error (the last three and throttled are retried).",
    ["outcome"],
)
PUSH_REQUEST_DURATION = Histogram(
    "citysense_publish_push_request_duration_seconds",
    "Time from sending a push request to its answer (or its failure).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PUSH_BATCH_ROWS = Histogram(
    "citysense_publish_push_batch_rows",
    "Rows per push request.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 100_000),
)
PUSH_POSITION_TXID = Gauge(
    "citysense_publish_push_position_txid",
    "Transaction id of the newest row acknowledged by the portal, per dataset (its progress).",
    ["dataset"],
)
