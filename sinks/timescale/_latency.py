"""End-to-end latency: a measurement's event time (``observed_at``) to its row's commit.

docs/architecture.md#observability asks for it: the one number that says whether the city's data are
fresh, covering the sensor's own buffering, the LoRaWAN network server, MQTT, ingest, Kafka and the
sink's batching. It includes the device clock's error, so the lowest bucket is 100 ms; the highest,
one hour, is where LoRaWAN devices replaying a backlog after an outage land. A bound at 2 s, the
end-to-end target of the product issue (p99 under 2 s), makes that target readable exactly: it is
met when at least 99 % of the observations are in the buckets up to 2 s.

Hook: the sink calls :func:`observe_committed` after each successful COMMIT, with the event times
of the raw records the batch held (the aggregates topic has window times, not event times).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Histogram

__all__ = ["END_TO_END_LATENCY", "observe_committed"]

END_TO_END_LATENCY = Histogram(
    "citysense_sink_end_to_end_latency_seconds",
    "Time from a measurement's observed_at to the commit of its row, per kind.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)


def observe_committed(kind: str, observed_at_us: Iterable[int], committed_at_s: float) -> int:
    """Observe each event time (µs since the epoch, as in the Avro records); returns how many.

    A device clock ahead of the sink's gives a negative latency; it is observed as 0 (the lowest
    bucket) rather than dropped, so the count still matches the rows written.
    """
    child = END_TO_END_LATENCY.labels(kind)
    n = 0
    for observed in observed_at_us:
        child.observe(max(0.0, committed_at_s - observed / 1e6))
        n += 1
    return n
