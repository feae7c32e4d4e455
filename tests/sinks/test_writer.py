"""Pure parts of the TimescaleDB sink: row building, revision rule, error classes, settings."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from schemas import decode, typed_quantities
from sinks.timescale import MIGRATIONS, SinkSettings
from sinks.timescale._writer import (
    AGGREGATE_TABLES,
    MEASUREMENT_TABLES,
    QUANTITY_COLUMNS,
    TABLES,
    RowError,
    Rows,
    add_record,
    aggregate_wins,
    check_record,
    is_poison,
)
from tests.sinks._helpers import (
    aggregate_record,
    framed,
    noise_record,
    occupancy_record,
    traffic_record,
)


def _rows(schema: str, *records: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    rows = Rows()
    for _key, value in framed(schema, records):
        name, record = decode(value)
        check_record(name, record)
        add_record(rows, name, record)
    return rows.tables()


def _as_dict(table: str, row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(TABLES[table].column_names, row, strict=True))


@pytest.mark.parametrize("kind", ["noise", "air", "traffic", "occupancy"])
def test_every_typed_quantity_has_a_column(kind: str) -> None:
    assert typed_quantities(kind) == set(QUANTITY_COLUMNS[kind])


def test_every_table_is_created_by_a_migration() -> None:
    schema = "\n".join(m.sql for m in MIGRATIONS)
    for name, table in TABLES.items():
        assert f"CREATE TABLE {name} " in schema
        for column in table.column_names:
            assert column in schema


def test_noise_row_has_typed_columns_other_values_and_source() -> None:
    tables = _rows("NoiseMeasurement", noise_record("s1", 7))
    assert list(tables) == ["noise_measurements"]
    (row,) = tables["noise_measurements"]
    values = _as_dict("noise_measurements", row)
    record = noise_record("s1", 7)
    assert values["time"] == record["observed_at"]
    assert values["sensor_id"] == "s1"
    assert values["laeq_db"] == record["laeq_db"]
    assert values["lamax_db"] == 70.5
    assert values["laf_db"] is None
    # jsonb in its binary wire format: version byte 1, then the JSON text.
    assert values["other_values"] == b'\x01{"lz_16000hz_db":12.5}'
    assert (values["gateway_id"], values["rssi"], values["f_cnt"]) == ("gw-1", -80.0, 1)


def test_traffic_record_gives_one_measurement_row_and_one_row_per_count() -> None:
    tables = _rows("TrafficMeasurement", traffic_record("cam", 3))
    assert len(tables["traffic_measurements"]) == 1
    counts = [_as_dict("traffic_counts", r) for r in tables["traffic_counts"]]
    assert len(counts) == 12
    assert counts[0] == {
        "time": traffic_record("cam", 3)["observed_at"],
        "sensor_id": "cam",
        "line": 1,
        "direction": "in",
        "traffic_class": "pedestrian",
        "count": 4,
        "cumulative": 31,
    }


def test_occupancy_record_gives_one_row_per_region() -> None:
    tables = _rows("OccupancyMeasurement", occupancy_record("pool", 2))
    assert [r[2:] for r in tables["occupancy_regions"]] == [(1, 3), (2, 4), (3, 5)]


@pytest.mark.parametrize(
    ("incoming", "current", "current_final", "wins"),
    [
        (2, 1, True, True),  # newer revision
        (1, 2, True, False),  # older revision never overwrites
        (1, 2, False, False),
        (1, 1, True, False),  # replay of the same final emission
        (1, 1, False, True),  # a later emission of a window still open
    ],
)
def test_aggregate_revision_rule(
    incoming: int, current: int, current_final: bool, wins: bool
) -> None:
    assert aggregate_wins(incoming, current, current_final=current_final) is wins


def test_a_batch_keeps_one_winning_aggregate_per_identity() -> None:
    tables = _rows(
        "Aggregate",
        aggregate_record("k", 0, revision=2, laeq=70),
        aggregate_record("k", 0, revision=1, laeq=65),
        aggregate_record("k", 1, revision=0, final=False, laeq=50),
        aggregate_record("k", 1, revision=0, final=True, laeq=51),
        aggregate_record("k", 0, revision=0, laeq=1, window_s=3600),
    )
    rows = [_as_dict("noise_aggregates", r) for r in tables["noise_aggregates"]]
    assert sorted(
        (r["bucket"], r["window_seconds"], r["revision"], r["indicators"]) for r in rows
    ) == [
        (aggregate_record("k", 0)["window_start"], 60, 2, b'\x01{"laeq_db":70.0,"la90_db":65.0}'),
        (aggregate_record("k", 0)["window_start"], 3600, 0, b'\x01{"laeq_db":1.0,"la90_db":-4.0}'),
        (aggregate_record("k", 1)["window_start"], 60, 0, b'\x01{"laeq_db":51.0,"la90_db":46.0}'),
    ]


def test_records_without_a_table_are_row_errors() -> None:
    with pytest.raises(RowError, match="unknown kind"):
        check_record("Aggregate", aggregate_record("k", 0, kind="light"))
    with pytest.raises(RowError, match="no table"):
        check_record("DeadLetter", {})
    assert set(AGGREGATE_TABLES) == set(MEASUREMENT_TABLES)


@pytest.mark.parametrize(
    ("error", "poison"),
    [
        (psycopg.errors.CheckViolation("check"), True),
        (psycopg.errors.CharacterNotInRepertoire("nul"), True),
        (psycopg.errors.NumericValueOutOfRange("range"), True),
        (psycopg.errors.ProgramLimitExceeded("index row too big"), True),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), True),
        (psycopg.OperationalError("connection refused"), False),
        (psycopg.errors.ReadOnlySqlTransaction("read-only"), False),
        (psycopg.errors.AdminShutdown("terminating"), False),
        (psycopg.errors.UndefinedTable("no table"), False),
    ],
)
def test_only_data_errors_are_poison(error: Exception, poison: bool) -> None:
    assert is_poison(error) is poison


def test_settings_from_comma_separated_topics_and_checked_backoff() -> None:
    assert SinkSettings(topics="a, b").topics == ("a", "b")
    with pytest.raises(ValidationError, match="retry_max_s"):
        SinkSettings(retry_initial_s=5, retry_max_s=1)
    with pytest.raises(ValidationError, match="heartbeat"):
        SinkSettings(session_timeout_ms=3000, heartbeat_interval_ms=2000)
    with pytest.raises(ValidationError):
        SinkSettings(batch_size=3)  # type: ignore[call-arg]
    assert "secret" not in repr(SinkSettings(writer_password="secret"))
