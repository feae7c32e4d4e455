"""Pure parts of the TimescaleDB sink: row building, revision rule, error classes, settings."""

from __future__ import annotations

from datetime import datetime
from io import BytesIO
from typing import Any

import fastavro
import psycopg
import pytest
from pydantic import ValidationError

import schemas
from schemas import typed_quantities
from sinks.timescale import MIGRATIONS, SinkSettings
from sinks.timescale._writer import (
    _MEASUREMENTS,
    _PROGRAMS,
    AGGREGATE_TABLES,
    MEASUREMENT_TABLES,
    QUANTITY_COLUMNS,
    TABLES,
    Row,
    RowError,
    Rows,
    _flat_row_builder,
    _measurement_builder,
    add_record,
    aggregate_wins,
    check_record,
    decode_record,
    is_poison,
    pg_micros,
    record_labels,
    row_values,
)
from tests.schemas._samples import sample_records
from tests.sinks._helpers import (
    aggregate_record,
    framed,
    noise_record,
    occupancy_record,
    traffic_record,
)


def _rows(schema: str, *records: dict[str, Any]) -> dict[str, list[Row]]:
    rows = Rows()
    for _key, value in framed(schema, records):
        name, record = decode_record(value)
        check_record(name, record)
        add_record(rows, name, record)
    return rows.tables()


def _as_dict(table: str, row: Row) -> dict[str, Any]:
    return dict(zip(TABLES[table].column_names, row_values(table, row), strict=True))


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
    # timestamptz as its binary wire format: µs since 2000-01-01 UTC.
    assert values["time"] == pg_micros(record["observed_at"])
    assert values["received_at"] == pg_micros(record["received_at"])
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
        "time": pg_micros(traffic_record("cam", 3)["observed_at"]),
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
        (
            pg_micros(aggregate_record("k", 0)["window_start"]),
            60,
            2,
            b'\x01{"laeq_db":70.0,"la90_db":65.0}',
        ),
        (
            pg_micros(aggregate_record("k", 0)["window_start"]),
            3600,
            0,
            b'\x01{"laeq_db":1.0,"la90_db":-4.0}',
        ),
        (
            pg_micros(aggregate_record("k", 1)["window_start"]),
            60,
            0,
            b'\x01{"laeq_db":51.0,"la90_db":46.0}',
        ),
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


# --- decoding straight to rows -----------------------------------------------------------------


def _as_dict_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as :func:`decode_record` reads timestamps, for the dict row builders."""
    return {k: pg_micros(v) if isinstance(v, datetime) else v for k, v in record.items()}


def _measurements() -> list[tuple[str, dict[str, Any]]]:
    samples = sample_records()
    noise = noise_record("s1", 7)
    return [
        ("NoiseMeasurement", noise),
        ("NoiseMeasurement", noise_record("s2", 14)),  # other_values, and i % 7 == 0
        ("NoiseMeasurement", dict(noise, other_values={})),
        ("NoiseMeasurement", dict(noise, sensor_id="", partial=True)),
        ("NoiseMeasurement", samples["NoiseMeasurement"]),
        ("AirMeasurement", samples["AirMeasurement"]),
    ]


@pytest.mark.parametrize(("schema", "record"), _measurements())
def test_flat_measurements_decode_straight_to_their_row(
    schema: str, record: dict[str, Any]
) -> None:
    value = schemas.encode(schema, record)
    name, row = decode_record(value)
    assert name == schema
    # The current schema: its COPY tuple when the transcoder is compiled (see test_copyrow).
    assert type(row) is (bytes if _PROGRAMS else tuple)
    _, table, build = _MEASUREMENTS[schema]
    _, as_dict = schemas.decode(value)
    assert row_values(table, row) == build(_as_dict_record(as_dict))
    rows = Rows()
    add_record(rows, name, row)
    assert rows.tables() == {table: [row]}
    check_record(name, row)
    assert record_labels(name, row) == (as_dict["codec"], as_dict["sensor_id"] or None)


def test_an_older_version_decodes_to_the_current_row() -> None:
    old = schemas.all_versions()["NoiseMeasurement.v0"]
    record = {k: v for k, v in sample_records()["NoiseMeasurement"].items() if k != "lcpeak_db"}
    body = BytesIO()
    fastavro.schemaless_writer(body, old.parsed, record)
    value = old.header + body.getvalue()
    _, as_dict = schemas.decode(value)
    name, row = decode_record(value)
    assert row == _MEASUREMENTS[name][2](_as_dict_record(as_dict))


def test_other_records_decode_to_dicts_with_micros() -> None:
    for schema, record in (
        ("TrafficMeasurement", traffic_record("cam", 3)),
        ("Aggregate", aggregate_record("k", 0)),
    ):
        ((_key, value),) = framed(schema, [record])
        name, decoded = decode_record(value)
        assert name == schema
        assert decoded == _as_dict_record(schemas.decode(value)[1])
    assert record_labels("Aggregate", decoded) == (None, "k")


def test_a_row_of_a_schema_without_flat_rows_is_a_row_error() -> None:
    with pytest.raises(RowError, match="no table"):
        add_record(Rows(), "TrafficMeasurement", (1, 2))


def test_typed_quantities_without_a_column_spill_into_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A schema newer than the migrations: the quantities it types that the table lacks go to
    other_values, in the flat row builder as in the dict one."""
    columns = dict(QUANTITY_COLUMNS)
    columns["noise"] = tuple(c for c in columns["noise"] if c not in ("laeq_db", "laf_db"))
    monkeypatch.setattr("sinks.timescale._writer.QUANTITY_COLUMNS", columns)
    fields, flat = _flat_row_builder("noise")
    build = _measurement_builder("noise")
    for record in (noise_record("s1", 7), noise_record("s1", 14), noise_record("s1", 1, 0.0)):
        as_dict = _as_dict_record(dict(record, laf_db=None))
        row = flat(tuple(as_dict[f] for f in fields))
        assert row == build(as_dict)
        assert b"laeq_db" in row[len(columns["noise"]) + 5]
