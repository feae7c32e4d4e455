"""Prometheus metrics of the publication API: ``citysense_publish_*``, base units.

Routes are labelled by their path template (``/catalog/datasets/{dataset_id}/records``), never
by the requested URL, so the label set stays bounded whatever clients send.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["DURATION", "EXPORTED_ROWS", "QUERY_TIMEOUTS", "REQUESTS"]

REQUESTS = Counter(
    "citysense_publish_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["route", "status"],
)
DURATION = Histogram(
    "citysense_publish_request_duration_seconds",
    "Time to answer a request (for exports: until the response starts streaming).",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
QUERY_TIMEOUTS = Counter(
    "citysense_publish_query_timeouts_total",
    "Queries cancelled by the statement timeout (answered 503).",
)
EXPORTED_ROWS = Counter(
    "citysense_publish_exported_rows_total",
    "Rows written by streamed exports, by format.",
    ["format"],
)
