"""End-to-end latency histogram: observed_at to commit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY
from psycopg._copy_base import format_row_binary
from psycopg.adapt import Transformer
from psycopg.postgres import types as pg_types
from psycopg.pq import Format

from schemas import encode
from sinks.timescale._latency import observe_committed, observe_committed_rows, observed_at_micros
from sinks.timescale._writer import MEASUREMENT_TABLES, Rows, add_record, decode_record, pg_micros
from tests.sinks._helpers import T0, noise_record, traffic_record


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


def _count(kind: str) -> float:
    labels = {"kind": kind}
    return REGISTRY.get_sample_value("citysense_sink_end_to_end_latency_seconds_count", labels) or 0


def _rows(*records: dict[str, Any]) -> Rows:
    rows = Rows()
    for record in records:
        add_record(rows, *decode_record(encode(_SCHEMAS[record["kind"]], record)))
    return rows


_SCHEMAS = {"noise": "NoiseMeasurement", "traffic": "TrafficMeasurement"}


def _copy_tuple(row: tuple[Any, ...]) -> bytes:
    """psycopg's binary COPY tuple of a noise row: what the compiled transcoder makes."""
    transformer = Transformer()
    columns = MEASUREMENT_TABLES["noise"].columns
    transformer.set_dumper_types([pg_types[c.copy_type].oid for c in columns], Format.BINARY)
    out = bytearray()
    format_row_binary(row, transformer, out)
    return bytes(out)


def test_event_times_are_read_from_tuples_and_binary_copy_rows() -> None:
    """A noise row is a tuple or the bytes of its COPY tuple, a traffic row a tuple built from
    the record dict: each gives observed_at, in µs since the Unix epoch."""
    tables = _rows(noise_record("lat-1", 3), traffic_record("lat-2", 1)).tables()
    [noise] = tables["noise_measurements"]
    [traffic] = tables["traffic_measurements"]
    assert isinstance(traffic, tuple)
    expected_noise = int((T0 + timedelta(seconds=3)).timestamp()) * 1_000_000
    expected_traffic = int((T0 + timedelta(minutes=1)).timestamp()) * 1_000_000
    assert observed_at_micros(noise) == expected_noise
    assert observed_at_micros(traffic) == expected_traffic
    row = _tuple_row(noise_record("lat-1", 3))
    assert observed_at_micros(row) == expected_noise
    assert observed_at_micros(_copy_tuple(row)) == expected_noise
    # A longer sensor id moves the time field: the length prefix is read, not assumed.
    long_row = _tuple_row(noise_record("a-much-longer-sensor-identifier", 3))
    assert observed_at_micros(_copy_tuple(long_row)) == expected_noise


def _tuple_row(record: dict[str, Any]) -> tuple[Any, ...]:
    rows = Rows()
    plain = {
        **record,
        "observed_at": pg_micros(record["observed_at"]),
        "received_at": pg_micros(record["received_at"]),
    }
    add_record(rows, "NoiseMeasurement", plain)
    [row] = rows.tables()["noise_measurements"]
    assert isinstance(row, tuple)
    return row


def test_every_committed_measurement_row_is_observed_once() -> None:
    """12 traffic count rows and an aggregate make no observation: one per measurement row."""
    tables = _rows(
        noise_record("lat-3", 1), noise_record("lat-3", 2), traffic_record("lat-4", 1)
    ).tables()
    assert len(tables["traffic_counts"]) == 12
    tables["noise_aggregates"] = [("not", "a", "measurement")]
    noise0, traffic0 = _count("noise"), _count("traffic")
    written = {table: len(rows) for table, rows in tables.items()}
    committed = (T0 + timedelta(minutes=5)).timestamp()
    assert observe_committed_rows(tables, written, committed) == 3
    assert _count("noise") == noise0 + 2
    assert _count("traffic") == traffic0 + 1


def test_a_replayed_table_is_not_observed() -> None:
    """Rows all present already (written 0): committed long ago, their age is not freshness."""
    tables = _rows(noise_record("lat-5", 1), traffic_record("lat-6", 1)).tables()
    noise0, traffic0 = _count("noise"), _count("traffic")
    written = {"noise_measurements": 0, "traffic_measurements": 1, "traffic_counts": 12}
    assert observe_committed_rows(tables, written, T0.timestamp() + 3600) == 1
    assert _count("noise") == noise0
    assert _count("traffic") == traffic0 + 1
