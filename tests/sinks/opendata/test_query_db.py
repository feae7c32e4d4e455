"""Compiled queries run on the real PostgreSQL as a role that can read the dataset's view only;
every expected answer is computed here in Python from the generated rows."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from citysense.settings import Settings
from sinks.opendata._query import (
    CompiledExport,
    CompiledRecords,
    RecordsRequest,
    build_export,
    build_records,
    build_v1_search,
)
from tests.sinks.opendata._query_db import (
    CENTRE,
    DATASET,
    ROWS,
    SENSORS,
    Row,
    ScratchDatabase,
    scratch_database,
)

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(scope="module")
def db(settings: Settings) -> Iterator[ScratchDatabase]:
    with scratch_database(settings) as scratch:
        yield scratch


def run(db: ScratchDatabase, compiled: CompiledRecords) -> tuple[list[dict[str, Any]], int]:
    """As the app runs it: one transaction, the request's timezone set locally."""
    with psycopg.connect(db.api_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('TimeZone', %s, true)", [compiled.timezone])
        counted = conn.execute(compiled.count_query, compiled.count_params).fetchone()
        rows = conn.execute(compiled.query, compiled.params).fetchall()
    names = [c.name for c in compiled.columns]
    assert counted is not None
    return [dict(zip(names, row, strict=True)) for row in rows], counted[0]


def records(db: ScratchDatabase, **params: Any) -> tuple[list[dict[str, Any]], int]:
    return run(db, build_records(DATASET, RecordsRequest(**params)))


def ids(rows: list[dict[str, Any]]) -> set[tuple[str, datetime]]:
    return {(r["sensor_id"], r["start_time"]) for r in rows}


def expected_ids(keep: Callable[[Row], bool]) -> set[tuple[str, datetime]]:
    return keys_of(r for r in ROWS if keep(r))


def keys_of(selected: Iterable[Row]) -> set[tuple[str, datetime]]:
    return {(r.sensor_id, r.start_time) for r in selected}


def export(db: ScratchDatabase, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("limit", -1)  # the export route's default: every row
    compiled: CompiledExport = build_export(DATASET, RecordsRequest(**params))
    with psycopg.connect(db.api_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('TimeZone', %s, true)", [compiled.timezone])
        rows = conn.execute(compiled.query, compiled.params).fetchall()
    names = [c.name for c in compiled.columns]
    return [dict(zip(names, row, strict=True)) for row in rows]


# --- where --------------------------------------------------------------------------------


def test_where_combines_numbers_text_booleans_and_nulls(db: ScratchDatabase) -> None:
    rows = export(
        db,
        where="(laeq_db >= 55 and ok) or (sample_count is null and sensor_id != 's4')",
    )
    assert ids(rows) == expected_ids(
        lambda r: (
            (r.laeq_db is not None and r.laeq_db >= 55 and r.ok)
            or (r.sample_count is None and r.sensor_id != "s4")
        )
    )


def test_in_like_and_not(db: ScratchDatabase) -> None:
    rows = export(db, where="sensor_id in ('s1', 's3') and not site_name like 'nord'")
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s3")
    # ``_`` and ``%`` in a like text are themselves; ``*`` is the wildcard
    rows = export(db, where="site_name like 'bastille_50%'")
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s3")
    assert export(db, where="site_name like 'bastilleX50'") == []
    rows = export(db, where="site_name like 'n*sud'")
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s2")


def test_like_with_several_words_matches_each_word_anywhere(db: ScratchDatabase) -> None:
    # OpenDataSoft: ``like "star wars"`` matches values containing "star" and "wars"
    rows = export(db, where="site_name like 'nord NATION'")
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s1")
    rows = export(db, where="sensor_id in ('s1', 's2') and not site_name like 'sud  nation'")
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s1")
    assert export(db, where="site_name like 'nord sud'") == []


def test_full_text_search(db: ScratchDatabase) -> None:
    rows = export(db, where='"NATION" and not search(site_name, "sud")')
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s1")
    rows = export(db, where='startswith(site_name, "vin")')
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s4")


def test_date_literals_are_read_in_the_request_timezone(db: ScratchDatabase) -> None:
    paris_midnight = datetime(2026, 3, 29, tzinfo=PARIS)
    utc_midnight = datetime(2026, 3, 29, tzinfo=UTC)
    assert paris_midnight != utc_midnight
    for timezone, boundary in (("Europe/Paris", paris_midnight), ("UTC", utc_midnight)):
        rows = export(db, where="start_time >= date'2026-03-29'", timezone=timezone)
        assert ids(rows) == keys_of(r for r in ROWS if r.start_time >= boundary)
        rows = export(db, where="start_time < '2026-03-29'", timezone=timezone)
        assert ids(rows) == keys_of(r for r in ROWS if r.start_time < boundary)


def test_date_fields_compare_as_days_and_with_instants(db: ScratchDatabase) -> None:
    rows = export(db, where="day = date'2026/03/30'")
    assert ids(rows) == expected_ids(lambda r: r.day.isoformat() == "2026-03-30")
    rows = export(db, where="day >= date'2026-03-30T00:00:00+02:00'", timezone="UTC")
    # a day compared with an instant starts at its midnight in the request's timezone (UTC)
    assert ids(rows) == expected_ids(
        lambda r: (
            datetime(r.day.year, r.day.month, r.day.day, tzinfo=UTC)
            >= datetime(2026, 3, 29, 22, tzinfo=UTC)
        )
    )


def test_now_moves_with_the_clock(db: ScratchDatabase) -> None:
    newest = max(r.start_time for r in ROWS)
    days_ago = (datetime.now(UTC) - newest).days
    assert days_ago > 2
    assert export(db, where=f"start_time > now(days=-{days_ago + 1})") != []
    assert export(db, where=f"start_time > now(days=-{days_ago - 1})") == []


def test_within_distance_and_in_bbox(db: ScratchDatabase) -> None:
    point = f"geom'POINT({CENTRE[0]} {CENTRE[1]})'"
    for radius, sensors in (
        ("500m", {"s1", "s2"}),
        ("0.35km", {"s1"}),
        ("1km", {"s1", "s2", "s3"}),
    ):
        rows = export(db, where=f"within_distance(geo_point_2d, {point}, {radius})")
        assert ids(rows) == keys_of(r for r in ROWS if r.sensor_id in sensors)
    lat_400m = CENTRE[1] + 400 / (6_371_008.8 * math.pi / 180)
    rows = export(
        db,
        where=f"in_bbox(geo_point_2d, {CENTRE[1]}, {CENTRE[0] - 0.01}, {lat_400m}, "
        f"{CENTRE[0] + 0.01})",
    )
    assert ids(rows) == expected_ids(lambda r: r.sensor_id == "s1")


def test_distance_in_select_is_metres(db: ScratchDatabase) -> None:
    rows, _ = records(
        db,
        select=f"sensor_id, distance(geo_point_2d, geom'POINT({CENTRE[0]} {CENTRE[1]})') as m",
        where="start_time = date'2026-03-28T18:00Z'",
        order_by="sensor_id",
    )
    by_sensor = {r["sensor_id"]: r["m"] for r in rows}
    for sensor, (_, north) in SENSORS.items():
        if north is None:
            assert by_sensor[sensor] is None
        else:
            assert by_sensor[sensor] == pytest.approx(north, abs=0.01)


# --- refine / exclude ---------------------------------------------------------------------


def test_refine_a_day_in_the_request_timezone_and_exclude(db: ScratchDatabase) -> None:
    rows = export(
        db,
        refine=('start_time:"2026/03/29"',),
        exclude=("sensor_id:s1", "laeq_db:51.25"),
        timezone="Europe/Paris",
    )
    assert ids(rows) == expected_ids(
        lambda r: (
            r.start_time.astimezone(PARIS).date().isoformat() == "2026-03-29"
            and r.sensor_id != "s1"
            and r.laeq_db != 51.25
        )
    )
    assert any(r.laeq_db == 51.25 for r in ROWS)  # the exclude has something to remove
    assert any(r["laeq_db"] is None for r in rows)  # exclude keeps nulls


# --- order, pages, counts ------------------------------------------------------------------


def test_pages_in_the_default_order_cover_every_row_once(db: ScratchDatabase) -> None:
    seen: list[tuple[str, datetime]] = []
    total = None
    for offset in range(0, len(ROWS) + 7, 7):
        rows, total = records(db, limit=7, offset=offset)
        seen.extend((r["sensor_id"], r["start_time"]) for r in rows)
    assert total == len(ROWS)
    assert seen == sorted(
        ((r.sensor_id, r.start_time) for r in ROWS), key=lambda k: (-k[1].timestamp(), k[0])
    )


def test_order_by_expressions_with_nulls_last(db: ScratchDatabase) -> None:
    rows = export(
        db, select="sensor_id, start_time, laeq_db", order_by="laeq_db desc, sensor_id, start_time"
    )
    levels = [r["laeq_db"] for r in rows]
    known = sorted((r.laeq_db for r in ROWS if r.laeq_db is not None), reverse=True)
    assert levels == known + [None] * sum(r.laeq_db is None for r in ROWS)


def test_total_count_counts_matching_rows_not_the_page(db: ScratchDatabase) -> None:
    rows, total = records(db, where="ok", limit=3)
    assert len(rows) == 3
    assert total == sum(r.ok for r in ROWS)


# --- aggregations and group_by ------------------------------------------------------------


def test_group_by_field_with_aggregations(db: ScratchDatabase) -> None:
    rows, total = records(
        db,
        select="sensor_id, count(*) as n, count(laeq_db) as measured, avg(laeq_db) as mean, "
        "sum(sample_count) as samples, max(start_time) as last, min(laeq_db) * 2 as twice_min",
        group_by="sensor_id",
        order_by="sensor_id",
    )
    assert total == len(SENSORS)
    for row in rows:
        mine = [r for r in ROWS if r.sensor_id == row["sensor_id"]]
        levels = [r.laeq_db for r in mine if r.laeq_db is not None]
        assert row["n"] == len(mine)
        assert row["measured"] == len(levels)
        assert row["mean"] == pytest.approx(sum(levels) / len(levels))
        assert row["samples"] == sum(r.sample_count for r in mine if r.sample_count is not None)
        assert row["last"] == max(r.start_time for r in mine)
        assert row["twice_min"] == pytest.approx(2 * min(levels))


def test_aggregations_without_group_by_give_one_row(db: ScratchDatabase) -> None:
    rows, total = records(db, select="count(*), median(sample_count)", where="sensor_id = 's2'")
    samples = sorted(r.sample_count for r in ROWS if r.sensor_id == "s2" and r.sample_count)
    middle = len(samples) // 2
    median = samples[middle] if len(samples) % 2 else (samples[middle - 1] + samples[middle]) / 2
    assert total == 1
    assert rows == [{"count(*)": HOURS_PER_SENSOR, "median(sample_count)": median}]


HOURS_PER_SENSOR = len(ROWS) // len(SENSORS)


def test_group_by_date_format_in_the_request_timezone(db: ScratchDatabase) -> None:
    for timezone in ("Europe/Paris", "UTC"):
        rows, total = records(
            db,
            select="date_format(start_time, 'yyyy-MM-dd HH') as hour, count(*) as n",
            group_by="date_format(start_time, 'yyyy-MM-dd HH') as hour",
            timezone=timezone,
            limit=100,
        )
        zone = ZoneInfo(timezone)
        expected = Counter(r.start_time.astimezone(zone).strftime("%Y-%m-%d %H") for r in ROWS)
        assert {r["hour"]: r["n"] for r in rows} == expected
        assert total == len(expected)
        if timezone == "Europe/Paris":
            # summer time starts at 02:00 on 29 March 2026: that hour does not exist in Paris
            hours = {r["hour"] for r in rows}
            assert "2026-03-29 01" in hours
            assert "2026-03-29 02" not in hours
            assert "2026-03-29 03" in hours


def test_group_by_day_range_in_the_request_timezone(db: ScratchDatabase) -> None:
    rows, _ = records(
        db,
        select="range(start_time, 1 day) as d, count(*) as n",
        group_by="range(start_time, 1 day) as d",
        timezone="Europe/Paris",
    )
    expected: Counter[datetime] = Counter()
    for r in ROWS:
        local = r.start_time.astimezone(PARIS)
        expected[datetime(local.year, local.month, local.day, tzinfo=PARIS)] += 1
    assert {r["d"]: r["n"] for r in rows} == expected


def test_group_by_numeric_range_and_year(db: ScratchDatabase) -> None:
    rows, _ = records(
        db,
        select="range(laeq_db, 5) as bucket, year(start_time) as y, count(*) as n",
        group_by="range(laeq_db, 5) as bucket, year(start_time) as y",
        limit=100,
    )
    expected: Counter[tuple[float | None, int]] = Counter(
        (None if r.laeq_db is None else math.floor(r.laeq_db / 5) * 5.0, 2026) for r in ROWS
    )
    assert {(r["bucket"], r["y"]): r["n"] for r in rows} == expected
    assert rows[-1]["bucket"] is None  # null values are one group, last


def test_group_by_orders_by_an_aggregate(db: ScratchDatabase) -> None:
    rows, _ = records(
        db,
        select="site_name, avg(laeq_db) as mean",
        group_by="site_name",
        order_by="avg(laeq_db) desc",
    )
    means: defaultdict[str, list[float]] = defaultdict(list)
    for r in ROWS:
        if r.laeq_db is not None:
            means[r.site_name].append(r.laeq_db)
    expected = sorted(means, key=lambda s: -sum(means[s]) / len(means[s]))
    assert [r["site_name"] for r in rows] == expected


# --- v1 search ----------------------------------------------------------------------------


def test_v1_search_rows_count_and_facets(db: ScratchDatabase) -> None:
    compiled = build_v1_search(
        DATASET,
        q="nation",
        rows=5,
        sort="-laeq_db",
        refine={"sensor_id": ["s1", "s2", "s3"]},
        exclude={"ok": ["false"]},
        facets=["sensor_id", "ok"],
        timezone="Europe/Paris",
    )
    keep = [r for r in ROWS if r.sensor_id in ("s1", "s2") and r.ok]
    with psycopg.connect(db.api_url) as conn, conn.transaction():
        rows = conn.execute(compiled.query, compiled.params).fetchall()
        total = conn.execute(compiled.count_query, compiled.count_params).fetchone()
        facets = {f.field: conn.execute(f.query, f.params).fetchall() for f in compiled.facets}
    assert total == (len(keep),)
    names = [c.name for c in compiled.columns]
    levels = [dict(zip(names, row, strict=True))["laeq_db"] for row in rows]
    known = sorted(r.laeq_db for r in keep if r.laeq_db is not None)
    assert levels == known[:5]  # "-laeq_db" is ascending in v1
    counts = Counter(r.sensor_id for r in keep)
    assert facets["sensor_id"] == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert facets["ok"] == [(True, len(keep))]


# --- the role reads the view only ---------------------------------------------------------


def test_the_api_role_cannot_read_the_base_table_directly(db: ScratchDatabase) -> None:
    with psycopg.connect(db.api_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM public.sensors")


def test_results_keep_types(db: ScratchDatabase) -> None:
    rows, _ = records(db, where="sensor_id = 's1' and start_time = date'2026-03-28T18:00Z'")
    (row,) = rows
    original = next(r for r in ROWS if r.sensor_id == "s1" and r.start_time == row["start_time"])
    assert row["day"] == original.day
    assert row["geo_point_2d"] == {"lon": original.lon, "lat": original.lat}
    assert row["start_time"] - original.start_time == timedelta(0)


@pytest.mark.parametrize(
    "where",
    [
        "start_time > date'0001-01-01'",
        "start_time < date'9999-12-31T23:59:59'",
        "day > '0001/01/01' and day < date'9999-12-31T23:00+14:00'",
        "start_time > now(years=-999) and start_time < now(years=999)",
        "laeq_db / 0 is null and laeq_db * 0.000001 < 1e300",
    ],
)
def test_extreme_values_run_without_database_errors(db: ScratchDatabase, where: str) -> None:
    rows, total = records(db, where=where.replace("1e300", "1" + "0" * 300), limit=1)
    assert total == len(ROWS) or total == sum(r.laeq_db is not None for r in ROWS)
    assert len(rows) == 1


@pytest.mark.parametrize(
    "refine", ["start_time:9999", "start_time:9999/12", "day:9999/12/31", "start_time:0001/01/01"]
)
def test_refines_at_the_ends_of_the_calendar_run(db: ScratchDatabase, refine: str) -> None:
    rows, total = records(db, refine=(refine,))
    assert (rows, total) == ([], 0)
