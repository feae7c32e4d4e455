"""CSV exports written by PostgreSQL (``COPY … TO STDOUT``) are byte for byte what the Python
writer produces: on awkward values of every column type the COPY path has a rule for, in
several time zones and delimiters, and on every dataset of the catalogue over real rows."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from citysense.settings import PublishSettings, Settings
from sinks.opendata import default_catalog
from sinks.opendata._catalog import FieldType
from sinks.opendata._csv_copy import copy_csv_rows, copy_statement, set_copy_session
from sinks.opendata._exports import ExportOptions, _csv, _csv_header
from sinks.opendata._query import RecordsRequest, build_export
from tests.sinks.opendata._db import opendata_database, window, write_windows

pytestmark = pytest.mark.integration

ZONES = ("UTC", "Europe/Paris", "America/St_Johns", "Asia/Kathmandu")


async def _python_csv(
    conn: psycopg.AsyncConnection[Any],
    query: sql.Composed | sql.SQL,
    params: Sequence[Any],
    columns: Sequence[tuple[str, FieldType]],
    options: ExportOptions,
) -> bytes:
    """The export as the Python writer makes it (the rows read as the export reads them)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('TimeZone', %s, true)", [str(options.tz)])
        rows = await (await conn.execute(query, params)).fetchall()

    async def blocks() -> AsyncIterator[list[tuple[Any, ...]]]:
        yield rows

    return b"".join([chunk async for chunk in _csv(blocks(), columns, options)])


async def _copy_csv(
    conn: psycopg.AsyncConnection[Any],
    query: sql.Composed | sql.SQL,
    params: Sequence[Any],
    columns: Sequence[tuple[str, FieldType]],
    options: ExportOptions,
) -> bytes | None:
    """The export written by PostgreSQL, None if the COPY path declines the columns."""
    async with conn.transaction():
        await set_copy_session(conn, str(options.tz))
        statement = await copy_statement(
            conn, query, params, [kind for _, kind in columns], options.delimiter
        )
        if statement is None:
            return None
        parts = [_csv_header(columns, options)]
        parts += [data async for data, _ in copy_csv_rows(conn, statement, params)]
    return b"".join(parts)


def _doubles() -> list[float | None]:
    rng = random.Random(7)
    bits = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(400)]
    sensors = [round(rng.uniform(20, 110), 2) for _ in range(200)]
    edges = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        4.35,
        100.0,
        1e-5,
        1e-4,
        0.00012,
        123456789.0,
        12345678901234.5,
        1e15,
        -1e15,
        1e15 + 0.5,
        1234567890123456.0,
        -1234567890123456.8,
        9999999999999998.0,
        1e16,
        1.5e16,
        1e22,
        5e-324,
        1.7976931348623157e308,
        float("nan"),
        float("inf"),
        float("-inf"),
        None,
    ]
    return edges + sensors + bits


def _column(values: Sequence[Any], n: int) -> list[Any]:
    return [values[i % len(values)] for i in range(n)]


def _synthetic(n: int) -> tuple[sql.Composed, list[Any], list[tuple[str, FieldType]]]:
    """A query over arrays (bound client-side by COPY, server-side by the plain query)."""
    start = datetime(2026, 3, 29, 0, 0, 0, tzinfo=UTC)
    stamps = [start + timedelta(minutes=37 * i, microseconds=(i % 3) * 250_001) for i in range(50)]
    stamps.append(None)  # type: ignore[arg-type]
    points: list[Any] = [
        Jsonb({"lon": 2.39, "lat": 48.85}),
        Jsonb({"lon": 2, "lat": 48}),
        Jsonb({"lon": 2.0, "lat": 48.1234567890123}),
        Jsonb({"lat": 48.8}),
        Jsonb({"lon": None, "lat": 1e-7}),
        None,
    ]
    texts = ["", None, "a;b", 'quote"d', "line\nbreak", "cr\rx", " space ", "accentué", "a,b"]
    numerics = [
        Decimal("5.00"),
        Decimal("-0.50"),
        Decimal("1.25"),
        Decimal("0.1"),
        None,
        Decimal("12345678901234567890"),
        Decimal("1e-7"),
        Decimal("-3"),
    ]
    arrays: list[tuple[str, FieldType, str, list[Any]]] = [
        ("x", "double", "float8", _column(_doubles(), n)),
        ("t", "datetime", "timestamptz", _column(stamps, n)),
        ("s", "text", "text", _column(texts, n)),
        ("i", "int", "int8", _column([0, -7, 2**62, None, 42], n)),
        ("b", "boolean", "bool", _column([True, False, None], n)),
        ("d", "date", "date", _column([date(2026, 1, 2), date(999, 12, 31), None], n)),
        ("m", "double", "numeric", _column(numerics, n)),
        ("r", "double", "float4", _column([0.1, 1e7, 3.4e38, 1.5, None, 1e-8], n)),
        ("p", "geo_point_2d", "jsonb", _column(points, n)),
    ]
    names = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(len(arrays)))
    unnests = sql.SQL(", ").join(
        sql.SQL("unnest(%s::{}[])").format(sql.SQL(kind)) for _, _, kind, _ in arrays
    )
    query = sql.SQL("SELECT {} FROM ROWS FROM ({}) WITH ORDINALITY AS u({}, n) ORDER BY n").format(
        names, unnests, names
    )
    return query, [a[3] for a in arrays], [(a[0], a[1]) for a in arrays]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("delimiter", [";", ","])
async def test_awkward_values_come_out_as_the_python_writer_writes_them(
    settings: Settings, zone: str, delimiter: str
) -> None:
    query, params, columns = _synthetic(700)
    options = ExportOptions(delimiter=delimiter, with_bom=True, tz=ZoneInfo(zone))
    url = settings.database.url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        expected = await _python_csv(conn, query, params, columns, options)
        got = await _copy_csv(conn, query, params, columns, options)
    assert got is not None
    assert expected.count(b"\r\n") > 700  # one line per row, and the quoted line breaks
    for line_got, line_expected in zip(got.split(b"\r\n"), expected.split(b"\r\n"), strict=True):
        assert line_got == line_expected
    assert got == expected


async def test_a_single_column_keeps_python_s_quoted_empty_cells(settings: Settings) -> None:
    query = sql.SQL("SELECT unnest(%s::text[]) AS c0")
    params = [["a", "", None, "b;c"]]
    options = ExportOptions(delimiter=";", with_bom=False, tz=ZoneInfo("UTC"))
    url = settings.database.url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        expected = await _python_csv(conn, query, params, [("s", "text")], options)
        got = await _copy_csv(conn, query, params, [("s", "text")], options)
    assert expected == b's\r\na\r\n""\r\n""\r\n"b;c"\r\n'
    assert got == expected


async def test_unhandled_types_and_delimiters_fall_back_to_the_python_writer(
    settings: Settings,
) -> None:
    url = settings.database.url.get_secret_value()
    shape = sql.SQL("""SELECT '{"type": "Point", "coordinates": [1, 2]}'::jsonb AS c0, 1 AS c1""")
    naive = sql.SQL("SELECT now()::timestamp AS c0")
    plain = sql.SQL("SELECT 1 AS c0")
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        assert await copy_statement(conn, shape, (), ["geo_shape", "int"], ";") is None
        assert await copy_statement(conn, naive, (), ["datetime"], ";") is None
        assert await copy_statement(conn, plain, (), ["int"], "é") is None
        assert await copy_statement(conn, plain, (), ["int"], ";") is not None


async def test_every_dataset_exports_the_same_bytes_either_way(settings: Settings) -> None:
    catalog = default_catalog(PublishSettings())
    start = datetime(2026, 3, 28, 22, tzinfo=UTC)
    windows = [
        window(
            sensor,
            "noise",
            start + timedelta(hours=h),
            3600,
            {"laeq_db": 40 + h * 0.37, "lamax_db": 50.0 + h},
        )
        for sensor in ("noise-a", "noise-b")
        for h in range(60)
    ]
    async with opendata_database(settings) as db_url:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await write_windows(conn, windows)
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            copied = 0
            for dataset in catalog:
                for zone in ("UTC", "Europe/Paris"):
                    compiled = build_export(dataset, RecordsRequest(limit=-1, timezone=zone))
                    columns = [(c.name, c.type) for c in compiled.columns]
                    options = ExportOptions(delimiter=";", with_bom=True, tz=ZoneInfo(zone))
                    args = (conn, compiled.query, compiled.params, columns, options)
                    expected = await _python_csv(*args)
                    got = await _copy_csv(*args)
                    if got is not None:
                        copied += 1
                        assert got == expected, dataset.id
            grouped = build_export(
                catalog.get("bruit-horaire"),
                RecordsRequest(
                    limit=-1,
                    select="sensor_id, avg(laeq_db) as mean, count(*) as n, max(start_time)",
                    group_by="sensor_id",
                ),
            )
            columns = [(c.name, c.type) for c in grouped.columns]
            options = ExportOptions(delimiter=";", with_bom=False, tz=ZoneInfo("Europe/Paris"))
            args = (conn, grouped.query, grouped.params, columns, options)
            expected = await _python_csv(*args)
            assert expected.count(b"\r\n") == 3
            assert await _copy_csv(*args) == expected
    assert copied >= len(catalog)  # most datasets take the COPY path
