"""The transcoder (``sinks.timescale._copyrow``) writes the COPY tuple psycopg writes for the row
the ordinary path (decoder, row builder) builds, and leaves every other body to that path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg._copy_base import format_row_binary
from psycopg.adapt import Transformer
from psycopg.postgres import types as pg_types
from psycopg.pq import Format

import schemas
from citysense.settings import Settings
from schemas import SchemaError
from sinks.timescale import _copyrow, migrate
from sinks.timescale._writer import (
    _FLAT_ROWS,
    _PROGRAMS,
    MEASUREMENT_TABLES,
    Rows,
    _copy_program,
    _decode,
    add_record,
    decode_record,
    is_poison,
    record_labels,
    row_values,
    write_rows,
)
from tests._source import plain_python
from tests.schemas._strategies import STRATEGIES
from tests.sinks._helpers import fresh_database, noise_record

CopyRow = Callable[[bytes, int, bytes, int], bytes | None]


def _plain_python() -> CopyRow:
    copy_row: CopyRow = plain_python(_copyrow).copy_row
    return copy_row


COPY_ROWS = {"imported": _copyrow.copy_row, "source": _plain_python()}
KINDS = {"NoiseMeasurement": "noise", "AirMeasurement": "air"}


def _formatter(schema: str) -> Callable[[tuple[Any, ...]], bytes]:
    """psycopg's binary COPY tuple of a row of ``schema``'s table, as ``write_rows`` sends it."""
    transformer = Transformer()
    table = MEASUREMENT_TABLES[KINDS[schema]]
    oids = [pg_types[c.copy_type].oid for c in table.columns]
    transformer.set_dumper_types(oids, Format.BINARY)

    def format_row(row: tuple[Any, ...]) -> bytes:
        out = bytearray()
        format_row_binary(row, transformer, out)
        return bytes(out)

    return format_row


FORMATTERS = {schema: _formatter(schema) for schema in KINDS}


def _ordinary(value: bytes) -> tuple[str, bytes]:
    """What the ordinary path sends for ``value``: schema name and formatted COPY tuple."""
    name, record = _decode(value)
    row = _FLAT_ROWS[name](record)
    assert isinstance(row, tuple)
    return name, FORMATTERS[name](row)


def _transcode(copy_row: CopyRow, value: bytes) -> bytes | None:
    return copy_row(value, 10, *_program(value))


#: The sink transcodes only when the transcoder is compiled (``make native``).
native = pytest.mark.skipif(not _PROGRAMS, reason="sinks.timescale._copyrow is not compiled")


def _program(value: bytes) -> tuple[bytes, int]:
    """The program of ``value``'s schema, compiled from the schema even when the sink has none."""
    name = schemas.version_by_fingerprint(value[2:10]).name
    program = _copy_program(schemas.version(name).parsed, MEASUREMENT_TABLES[KINDS[name]])
    assert program is not None
    return program, len(MEASUREMENT_TABLES[KINDS[name]].columns)


@native
def test_current_noise_and_air_schemas_have_a_program() -> None:
    assert sorted(name for name, _, _ in _PROGRAMS.values()) == sorted(KINDS)


@pytest.mark.parametrize("copy_row", COPY_ROWS.values(), ids=list(COPY_ROWS))
@pytest.mark.parametrize("schema", sorted(KINDS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_record_transcodes_to_the_ordinary_rows_copy_tuple(
    copy_row: CopyRow, schema: str, data: st.DataObject
) -> None:
    value = schemas.encode(schema, data.draw(STRATEGIES[schema]))
    row = _transcode(copy_row, value)
    assert row is not None
    assert (schema, row) == _ordinary(value)


@pytest.mark.parametrize("copy_row", COPY_ROWS.values(), ids=list(COPY_ROWS))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_damaged_body_is_left_to_the_ordinary_path(
    copy_row: CopyRow, data: st.DataObject
) -> None:
    """Truncated, extended or altered bodies: the transcoder returns None or the ordinary row;
    whenever the ordinary path raises, it returns None (and decode_record raises the same)."""
    schema = data.draw(st.sampled_from(sorted(KINDS)))
    value = bytearray(schemas.encode(schema, data.draw(STRATEGIES[schema])))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(10, len(value) - 1))
        change = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if change == "set":
            value[where] = data.draw(st.integers(0, 255))
        elif change == "cut":
            del value[where:]
            if len(value) <= 10:
                break
        else:
            value[where:where] = data.draw(st.binary(min_size=1, max_size=3))
    damaged = bytes(value)
    row = _transcode(copy_row, damaged)
    try:
        expected = _ordinary(damaged)
    except SchemaError as exc:
        error = str(exc)
    else:
        assert row is None or (expected[0], row) == expected
        return
    assert row is None
    with pytest.raises(SchemaError) as raised:
        decode_record(damaged)
    assert str(raised.value) == error


def test_unusual_encodings_are_read_by_the_ordinary_path() -> None:
    value = schemas.encode("NoiseMeasurement", noise_record("s1", 7))
    sensor = value.index(b"s1") - 1
    # The sensor id's length as a 2-byte varint: valid Avro, not what the transcoder reads.
    long_length = value[:sensor] + bytes([value[sensor] | 0x80, 0]) + value[sensor + 1 :]
    assert _transcode(_copyrow.copy_row, long_length) == _ordinary(value)[1]
    not_utf8 = value.replace(b"s1", b"s\xff")
    assert _transcode(_copyrow.copy_row, not_utf8) is None
    with pytest.raises(SchemaError, match="not UTF-8"):
        decode_record(not_utf8)


@native
def test_a_transcoded_row_has_labels_and_values() -> None:
    record = noise_record("s1", 14)
    value = schemas.encode("NoiseMeasurement", record)
    name, row = decode_record(value)
    assert type(row) is bytes
    assert record_labels(name, row) == ("test", "s1")
    ordinary = _FLAT_ROWS[name](_decode(value)[1])
    assert row_values("noise_measurements", row) == ordinary
    for other in (bytearray(value), memoryview(value)):  # the ordinary path, as before
        assert decode_record(other) == (name, ordinary)  # type: ignore[arg-type]


@native
async def test_transcoded_rows_store_what_the_ordinary_rows_store(settings: Settings) -> None:
    """Both paths, and both in one COPY, through write_rows into the database, in a UTF-8
    session and in a LATIN1 one (where the COPY tuples are parsed back and formatted by psycopg);
    a NUL in a text value is a rejection (poison)."""
    records = [noise_record(f"sé-{i % 3}", i) for i in range(40)]
    values = [schemas.encode("NoiseMeasurement", r) for r in records]
    transcoded = [decode_record(v) for v in values]
    assert all(type(row) is bytes for _, row in transcoded)
    ordinary = [(n, _FLAT_ROWS[n](r)) for n, r in map(_decode, values)]
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
        stored = []
        mixed = transcoded[::2] + ordinary[1::2]
        for encoding, decoded in (
            ("UTF8", ordinary),
            ("UTF8", transcoded),
            ("UTF8", mixed),
            ("LATIN1", transcoded),
        ):
            rows = Rows()
            for name, row in decoded:
                add_record(rows, name, row)
            async with await psycopg.AsyncConnection.connect(url) as conn:
                await conn.execute(f"SET client_encoding TO {encoding}")
                written = await write_rows(conn, rows.tables())
                await conn.commit()
                assert written == {"noise_measurements": 40}
                await conn.execute("SET client_encoding TO UTF8")
                cursor = await conn.execute(
                    "SELECT * FROM noise_measurements ORDER BY sensor_id, time"
                )
                stored.append(await cursor.fetchall())
                await conn.execute("TRUNCATE noise_measurements")
                await conn.commit()
        assert stored[0] == stored[1] == stored[2] == stored[3]
        assert stored[0][0][1] == "sé-0"
        poison = schemas.encode("NoiseMeasurement", noise_record("nul\x00", 1))
        name, row = decode_record(poison)
        assert type(row) is bytes
        rows = Rows()
        add_record(rows, name, row)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            with pytest.raises(psycopg.Error) as rejected:
                await write_rows(conn, rows.tables())
            assert is_poison(rejected.value)
