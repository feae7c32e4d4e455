"""End-to-end latency: a measurement's event time (``observed_at``) to its row's commit.

docs/architecture.md#observability asks for it: the one number that says whether the city's data are
fresh, covering the sensor's own buffering, the LoRaWAN network server, MQTT, ingest, Kafka and the
sink's batching. It includes the device clock's error, so the lowest bucket is 100 ms; the highest,
one hour, is where LoRaWAN devices replaying a backlog after an outage land. A bound at 2 s, the
end-to-end target of the product issue (p99 under 2 s), makes that target readable exactly: it is
met when at least 99 % of the observations are in the buckets up to 2 s.

Hook: the sink calls :func:`observe_committed_rows` after each successful COMMIT with the rows
the batch wrote; it reads the event time of each row of a ``<kind>_measurements`` table (the
aggregate tables have window times, not event times) and calls :func:`observe_committed`. A
table whose rows were all in the database already (a topic replayed into it) is left out: those
rows were committed long ago and their age says nothing about freshness.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

from prometheus_client import Histogram

from sinks.timescale._writer import MEASUREMENT_TABLES, PG_EPOCH_MICROS, Row

__all__ = [
    "END_TO_END_LATENCY",
    "observe_committed",
    "observe_committed_rows",
    "observed_at_micros",
]

#: Measurement table → kind.
_KINDS: Final = {table.name: kind for kind, table in MEASUREMENT_TABLES.items()}
#: A binary COPY tuple (PostgreSQL documentation, "COPY", "Binary Format"): an int16 field count,
#: then per field an int32 length and its bytes. A measurement row's first field is
#: ``sensor_id`` (text), its second ``time`` (timestamptz: an int8 of µs since 2000-01-01).
_LENGTH: Final = struct.Struct(">i")
_MICROS: Final = struct.Struct(">q")

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


def observed_at_micros(row: Row) -> int:
    """A measurement row's event time in µs since the Unix epoch.

    ``row`` is as the writer holds it: a tuple (``time`` second, µs since 2000) or the bytes of
    its binary COPY tuple (field 0 ``sensor_id``, field 1 ``time``).
    """
    if type(row) is bytes:
        (length,) = _LENGTH.unpack_from(row, 2)
        (micros,) = _MICROS.unpack_from(row, 2 + 4 + length + 4)
        return int(micros) + PG_EPOCH_MICROS
    assert isinstance(row, tuple)
    return int(row[1]) + PG_EPOCH_MICROS


def _event_times(rows: Sequence[Row]) -> Iterator[int]:
    for row in rows:
        yield observed_at_micros(row)


def observe_committed_rows(
    tables: Mapping[str, Sequence[Row]], written: Mapping[str, int], committed_at_s: float
) -> int:
    """Observe every committed measurement row of ``tables``; returns how many.

    ``written`` is what :func:`~sinks.timescale._writer.write_rows` returned (rows added per
    table): a table with none added was a replay and is skipped.
    """
    n = 0
    for table, rows in tables.items():
        kind = _KINDS.get(table)
        if kind is not None and rows and written.get(table, 0):
            n += observe_committed(kind, _event_times(rows), committed_at_s)
    return n
