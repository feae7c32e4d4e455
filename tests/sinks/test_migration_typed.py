"""Migration 0005 on the real TimescaleDB: the typed indicator columns give every dataset view
exactly what 0003's jsonb extraction gave, on a database upgraded with rows in it and for rows
written afterwards; no built-in view reads ``indicators`` any more; and the SQL the API compiles
for a year's mean per sensor reads the typed column."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from citysense.settings import PublishSettings, Settings
from sinks.opendata import default_catalog
from sinks.opendata._catalog import Dataset
from sinks.opendata._csv_copy import copy_csv_rows, copy_statement, set_copy_session
from sinks.opendata._datasets import BUILTIN_DATASETS
from sinks.opendata._query import RecordsRequest, build_export, build_records
from sinks.timescale import _migrations, migrate
from sinks.timescale._registry import sync_registry
from tests.sinks._helpers import fresh_database
from tests.sinks.opendata._db import REGISTRY, window, write_windows

pytestmark = pytest.mark.integration

T = datetime(2026, 2, 2, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
#: Values whose double and decimal forms round differently, halves, signs, extremes: a typed
#: column computed another way than the view's own expression would differ on one of them.
AWKWARD = (2.4999999999999996, 2.5, 3.5, -2.5, -0.0, 0.1 + 0.2, 1e-300, 1.7976931348623157e308)


def _values(kind: str, i: int, shift: float = 0.0) -> dict[str, float]:
    v = AWKWARD[i % len(AWKWARD)] + shift
    names: tuple[str, ...]
    if kind == "noise":
        names = ("laeq_db", "lamax_db", "l10_db", "l50_db", "l90_db", "coverage", "lden_db")
        names += ("ld_db", "le_db", "ln_db")
    elif kind == "air":
        names = ("pm2_5_ugm3_mean", "pm10_ugm3_mean", "no2_ugm3_mean", "o3_ugm3_mean")
        names += ("so2_ugm3_mean",)
        # The band indexes an array of six labels: keep it a band, halves included.
        return {**dict.fromkeys(names, v), "eaqi_band": 1.5 + i % 5}
    else:
        # Some are rounded to integers: in range, where 0003's views gave a value (not an
        # error; see test_an_indicator_beyond_the_integer_range_is_null_not_a_failed_write).
        v = v if abs(v) < 2**31 else 2147483647.4
        names = ("people_mean", "people_max", "occupancy_pct", "affluence")
    # Every other window leaves one indicator out: the column must be null, as the view was.
    values = dict.fromkeys(names, v)
    if i % 2:
        values.pop(names[i % len(names)])
    return values


def _windows(shift: float = 0.0, revision: int = 1) -> list[dict[str, Any]]:
    shapes = [
        ("noise-a", "noise", 3600),
        ("noise-b", "noise", 86400),
        ("air-a", "air", 3600),
        ("site:piscine", "occupancy", 60),
        ("site:piscine", "occupancy", 900),
    ]
    return [
        window(key, kind, T + i * HOUR, size, _values(kind, i, shift), revision=revision)
        for i in range(2 * len(AWKWARD))
        for key, kind, size in shapes
    ]


async def _rows(conn: psycopg.AsyncConnection[Any], relation: str) -> list[str]:
    """Every row of ``relation`` as PostgreSQL's text (shortest exact float text), sorted."""
    rows = await (await conn.execute(f"SELECT t::text FROM {relation} AS t")).fetchall()
    return sorted(str(r[0]) for r in rows)


async def _csv_lines(conn: psycopg.AsyncConnection[Any], dataset: Dataset) -> list[bytes]:
    """The dataset's CSV export as PostgreSQL writes it (per-type formatting), lines sorted."""
    compiled = build_export(dataset, RecordsRequest(limit=-1))
    types = [c.type for c in compiled.columns]
    async with conn.transaction():
        await set_copy_session(conn, "Europe/Paris")
        statement = await copy_statement(conn, compiled.query, compiled.params, types, ";")
        if statement is None:  # a geo_shape column: the Python writer, same bytes
            return []
        chunks = [data async for data, _ in copy_csv_rows(conn, statement, compiled.params)]
    return sorted(b"".join(chunks).split(b"\r\n"))


async def test_typed_columns_give_every_view_what_the_jsonb_gave(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    views = sorted({d.view for d in BUILTIN_DATASETS})
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            # A database of the previous version, with window results in it.
            before = tuple(m for m in _migrations.MIGRATIONS if m.version < 5)
            monkeypatch.setattr(_migrations, "MIGRATIONS", before)
            await migrate(conn)
            await sync_registry(conn, REGISTRY)
            await write_windows(conn, _windows())
            # 0003's views, kept aside as the reference.
            await conn.execute("CREATE SCHEMA reference")
            for view in views:
                row = await (
                    await conn.execute("SELECT pg_get_viewdef(%s::regclass)", (f"opendata.{view}",))
                ).fetchone()
                assert row is not None
                await conn.execute(f"CREATE VIEW reference.{view} AS {row[0]}")
            old = {view: await _rows(conn, f"opendata.{view}") for view in views}
            old_csv = {d.id: await _csv_lines(conn, d) for d in BUILTIN_DATASETS}

            monkeypatch.undo()
            applied = [m.version for m in await migrate(conn)]
            assert applied == [m.version for m in _migrations.MIGRATIONS if m.version >= 5]
            assert applied[0] == 5
            for view in views:
                # The upgrade computed the columns of the rows already there.
                assert await _rows(conn, f"opendata.{view}") == old[view], view
            for dataset in BUILTIN_DATASETS:
                assert await _csv_lines(conn, dataset) == old_csv[dataset.id], dataset.id
            assert len(old_csv["bruit-horaire"]) > 2 * len(AWKWARD)
            # Rows written afterwards: new ones, and the old ones replaced by a higher revision
            # (the sink's upsert, an UPDATE that recomputes the columns).
            later = [
                {**w, "window_start": w["window_start"] + 100 * HOUR,
                 "window_end": w["window_end"] + 100 * HOUR}
                for w in _windows()
            ]  # fmt: skip
            await write_windows(conn, later + _windows(shift=1.0, revision=2))
            for view in views:
                new = await _rows(conn, f"opendata.{view}")
                assert new == await _rows(conn, f"reference.{view}"), view
                if view in {"noise_hourly", "noise_daily", "air_hourly", "pool_15min"}:
                    assert len(new) == 2 * len(old[view]) > 0, view
                    assert new != old[view] + old[view]
            # A column that disagreed with its jsonb value would show here too.
            stale = await (
                await conn.execute(
                    "SELECT count(*) FROM noise_aggregates "
                    "WHERE laeq_db IS DISTINCT FROM (indicators ->> 'laeq_db')::double precision"
                )
            ).fetchone()
            assert stale == (0,)


async def test_no_dataset_view_reads_the_indicators_jsonb(settings: Settings) -> None:
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            for dataset in BUILTIN_DATASETS:
                row = await (
                    await conn.execute(
                        "SELECT pg_get_viewdef(%s::regclass)", (f"opendata.{dataset.view}",)
                    )
                ).fetchone()
                assert row is not None
                assert not re.search(r"indicators\s*->", row[0]), dataset.view
            generated = await (
                await conn.execute(
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name LIKE '%\\_aggregates' "
                    "AND is_generated = 'ALWAYS'"
                )
            ).fetchone()
            assert generated == (21,)


async def test_a_year_mean_per_sensor_reads_the_typed_column(settings: Settings) -> None:
    dataset = default_catalog(PublishSettings()).get("bruit-horaire")
    compiled = build_records(
        dataset,
        RecordsRequest(select="sensor_id, avg(laeq_db) as mean", group_by="sensor_id"),
    )
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            await write_windows(conn, [window("noise-a", "noise", T, 3600, {"laeq_db": 50.0})])
            await conn.execute("ANALYZE")
            explain = psycopg.sql.SQL("EXPLAIN (VERBOSE, FORMAT JSON) {}").format(compiled.query)
            row = await (await conn.execute(explain, compiled.params)).fetchone()
            assert row is not None
            plan = str(row[0])
            assert "indicators" not in plan
            assert "avg(" in plan
            assert ".laeq_db)" in plan
            result = await (await conn.execute(compiled.query, compiled.params)).fetchall()
            assert [r[:2] for r in result] == [("noise-a", 50.0)]


async def test_an_indicator_beyond_the_integer_range_is_null_not_a_failed_write(
    settings: Settings,
) -> None:
    """0003's view raised an error for the whole query on such a value; a generated column that
    raised would instead make the sink's write of the row fail, so it is null."""
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            await sync_registry(conn, REGISTRY)
            values = {"people_mean": 3e9, "people_max": -3e9, "affluence": 2147483647.4}
            await write_windows(conn, [window("site:piscine", "occupancy", T, 900, values)])
            row = await (
                await conn.execute(
                    "SELECT people_mean, people_max, affluence FROM opendata.pool_15min"
                )
            ).fetchone()
            assert row == (3e9, None, 2147483647)
