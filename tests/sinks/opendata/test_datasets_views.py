"""The dataset views on the real TimescaleDB: what each one publishes from the window results.

One database for the module: the registry of ``_db.REGISTRY`` synced, window results written
through the sink's writer. Expected rows are written out from the scenario below, not read
back from the views.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from citysense.settings import PublishSettings, Settings
from sinks.opendata._catalog import Catalog, Dataset, DatasetField, LocalizedText
from sinks.opendata._datasets import default_catalog
from sinks.opendata._viewcheck import check_views
from tests.sinks.opendata._db import HOUR, count, fetch, opendata_database, window, write_windows

pytestmark = pytest.mark.integration

T = datetime(2026, 6, 1, 8, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PARIS = ZoneInfo("Europe/Paris")


def paris_day(year: int, month: int, day: int) -> tuple[datetime, datetime]:
    """The UTC bounds of a Paris calendar day, as the rollup stage writes daily windows."""
    start = datetime(year, month, day, tzinfo=PARIS)
    end = start.date() + timedelta(days=1)
    return (
        start.astimezone(UTC),
        datetime(end.year, end.month, end.day, tzinfo=PARIS).astimezone(UTC),
    )


SPRING = paris_day(2026, 3, 29)  # 23 hours
AUTUMN = paris_day(2026, 10, 25)  # 25 hours
SUMMER = paris_day(2026, 6, 1)

NOISE_A = {
    "laeq_db": 55.25,
    "lamax_db": 80.1,
    "lamin_db": 41.0,
    "l10_db": 60.3,
    "l50_db": 54.2,
    "l90_db": 48.7,
    "coverage": 0.95,
}

WINDOWS = [
    # noise: per-sensor hours (published), and what must stay out.
    window("noise-a", "noise", T, 3600, NOISE_A, sample_count=57),
    window("noise-a", "noise", T + HOUR, 3600, NOISE_A, final=False),  # still open
    window("noise-a", "noise", T, 60, NOISE_A),  # a minute
    window("site:place", "noise", T, 3600, {"laeq_db": 57.0, "coverage": 0.5}),  # a site
    window("noise-b", "noise", T, 3600, {"laeq_db": 61.0, "coverage": 1.0}, sample_count=60),
    window("ghost:0001", "noise", T, 3600, {"laeq_db": 70.0}, sample_count=3),  # unregistered
    # noise: days (Paris), with a DST day each way; Lden only when all periods were measured.
    window(
        "noise-a",
        "noise",
        SPRING[0],
        86400,
        {"lden_db": 62.5, "ld_db": 58.0, "le_db": 56.1, "ln_db": 50.2, "laeq_db": 57.0},
        end=SPRING[1],
    ),
    window(
        "noise-a",
        "noise",
        AUTUMN[0],
        86400,
        {"ld_db": 58.5, "le_db": 55.0, "laeq_db": 57.5},
        end=AUTUMN[1],
    ),
    window("noise-b", "noise", SUMMER[0], 86400, {"lden_db": 66.0}, end=SUMMER[1]),
    window("site:place", "noise", SUMMER[0], 86400, {"lden_db": 64.0}, end=SUMMER[1]),
    # air: one hour per EAQI band, and one without a band.
    *[
        window(
            "air-a",
            "air",
            T + i * HOUR,
            3600,
            {
                "pm2_5_ugm3_mean": 4.5 + i,
                "pm2_5_ugm3_max": 30.0,
                "pm2_5_ugm3_count": 60.0,
                "pm10_ugm3_mean": 10.25 + i,
                "no2_ugm3_mean": 20.0,
                "o3_ugm3_mean": 41.5,
                "so2_ugm3_mean": 2.0,
                "eaqi_band": float(i + 1),
            },
        )
        for i in range(6)
    ],
    window("air-a", "air", T + 6 * HOUR, 3600, {"pm10_ugm3_mean": 12.0}),
    window("site:place", "air", T, 3600, {"pm10_ugm3_mean": 12.0, "eaqi_band": 1.0}),
    # traffic: a site's hour (line 0 = all lines), a sensor's hour, a site's minute.
    window(
        "site:bd",
        "traffic",
        T,
        3600,
        {"pedestrian_count": 19.0},
        counts=[
            count(0, "in", "pedestrian", 12),
            count(0, "out", "pedestrian", 7),
            count(0, "in", "bicycle", 0),
            count(0, "out", "car", 3),
            count(0, "in", "truck", None),  # a cumulative reading only: no measurement
        ],
    ),
    window("cam-a", "traffic", T, 3600, counts=[count(1, "in", "pedestrian", 12)]),
    window("site:bd", "traffic", T, 60, counts=[count(0, "in", "pedestrian", 1)]),
    # occupancy: a pool's quarters of an hour and minutes.
    window(
        "site:piscine",
        "occupancy",
        T,
        900,
        {"people_mean": 83.5, "people_max": 97.0, "occupancy_pct": 41.75, "affluence": 2.0},
    ),
    window("pool-a", "occupancy", T, 900, {"people_mean": 50.0}),
    window("site:piscine", "occupancy", T + 15 * MINUTE, 900, {"people_mean": 10.0}, final=False),
    window(
        "site:piscine",
        "occupancy",
        T,
        60,
        {"people_mean": 80.0, "occupancy_pct": 40.0, "affluence": 2.0},
    ),
    window(
        "site:piscine",
        "occupancy",
        T + MINUTE,
        60,
        {"people_mean": 90.0, "occupancy_pct": 45.0, "affluence": 2.0},
    ),
    window(  # the newest minute, still open: the freshest state
        "site:piscine",
        "occupancy",
        T + 2 * MINUTE,
        60,
        {"people_mean": 100.5, "occupancy_pct": 50.25, "affluence": 3.0},
        final=False,
    ),
    window("pool-a", "occupancy", T + 3 * MINUTE, 60, {"people_mean": 7.0}),  # a sensor
]


@pytest.fixture(scope="module")
async def url(settings: Settings) -> AsyncIterator[str]:
    async with opendata_database(settings) as db_url:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await write_windows(conn, WINDOWS)
        yield db_url


def point(lat: float, lon: float) -> dict[str, float]:
    return {"lon": lon, "lat": lat}


def visible(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


async def test_every_builtin_dataset_has_exactly_its_fields_as_columns(url: str) -> None:
    catalog = default_catalog(PublishSettings())
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        assert await check_views(conn, catalog) == []
    for dataset in catalog:
        rows = await fetch(url, f"SELECT * FROM opendata.{dataset.view} LIMIT 0")
        assert rows == []
        columns = await fetch(
            url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'opendata' AND table_name = %s ORDER BY ordinal_position",
            (dataset.view,),
        )
        names = [c["column_name"] for c in columns if not c["column_name"].startswith("_")]
        assert names == [f.name for f in dataset.fields], dataset.id
        hidden = {c["column_name"] for c in columns} - set(names)
        assert hidden == ({"_change_txid", "_change_key"} if dataset.live else set()), dataset.id


async def test_the_view_check_reports_a_wrong_type_a_missing_column_and_a_missing_view(
    url: str,
) -> None:
    def field(name: str, field_type: Any) -> DatasetField:
        return DatasetField(name=name, type=field_type, label=LocalizedText(fr=name, en=name))

    def dataset(dataset_id: str, view: str, fields: tuple[DatasetField, ...]) -> Dataset:
        text = LocalizedText(fr="x", en="y")
        return Dataset(id=dataset_id, view=view, title=text, description=text, fields=fields)

    catalog = Catalog(
        [
            dataset(
                "a",
                "pool_now",
                (field("site_id", "int"), field("people", "int"), field("nobody", "text")),
            ),
            dataset("b", "no_such_view", (field("x", "text"),)),
        ]
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        problems = await check_views(conn, catalog)
    assert any("'a'" in p and "'site_id' is int but the column is text" in p for p in problems)
    assert any("'a'" in p and "no column for field 'nobody'" in p for p in problems)
    assert any("'a'" in p and "column 'capacity' is not a field" in p for p in problems)
    assert not any("'people'" in p for p in problems)
    assert any("'b'" in p and "does not exist" in p for p in problems)


async def test_noise_hourly_has_closed_per_sensor_hours_with_names_and_positions(url: str) -> None:
    rows = await fetch(url, "SELECT * FROM opendata.noise_hourly ORDER BY sensor_id")
    assert visible(rows) == [
        {
            "sensor_id": "ghost:0001",
            "site_id": None,
            "site_name": None,
            "start_time": T,
            "end_time": T + HOUR,
            "laeq_db": 70.0,
            "lamax_db": None,
            "l10_db": None,
            "l50_db": None,
            "l90_db": None,
            "coverage": None,
            "sample_count": 3,
            "geo_point_2d": None,
        },
        {
            "sensor_id": "noise-a",
            "site_id": "place",
            "site_name": "Place d'Essai",
            "start_time": T,
            "end_time": T + HOUR,
            "laeq_db": 55.25,
            "lamax_db": 80.1,
            "l10_db": 60.3,
            "l50_db": 54.2,
            "l90_db": 48.7,
            "coverage": 0.95,
            "sample_count": 57,
            "geo_point_2d": point(48.851, 2.391),
        },
        {
            "sensor_id": "noise-b",
            "site_id": None,
            "site_name": None,
            "start_time": T,
            "end_time": T + HOUR,
            "laeq_db": 61.0,
            "lamax_db": None,
            "l10_db": None,
            "l50_db": None,
            "l90_db": None,
            "coverage": 1.0,
            "sample_count": 60,
            "geo_point_2d": point(48.852, 2.392),
        },
    ]
    # Change keys: key|window seconds|bucket in µs since the epoch.
    micros = int(T.timestamp()) * 1_000_000
    assert rows[1]["_change_key"] == f"noise-a|3600|{micros}"


async def test_noise_daily_dates_are_paris_days_also_on_dst_days(url: str) -> None:
    rows = await fetch(url, "SELECT * FROM opendata.noise_daily ORDER BY sensor_id, date")
    assert [(r["sensor_id"], r["date"].isoformat()) for r in rows] == [
        ("noise-a", "2026-03-29"),
        ("noise-a", "2026-10-25"),
        ("noise-b", "2026-06-01"),
    ]
    assert (SPRING[1] - SPRING[0], AUTUMN[1] - AUTUMN[0]) == (23 * HOUR, 25 * HOUR)
    spring, autumn, summer = rows
    assert (spring["lden_db"], spring["ld_db"], spring["le_db"], spring["ln_db"]) == (
        62.5,
        58.0,
        56.1,
        50.2,
    )
    assert (autumn["lden_db"], autumn["ln_db"], autumn["ld_db"]) == (None, None, 58.5)
    assert spring["site_name"] == "Place d'Essai"
    assert summer["geo_point_2d"] == point(48.852, 2.392)


async def test_air_hourly_has_the_means_and_the_eaqi_band_with_its_eea_name(url: str) -> None:
    rows = await fetch(url, "SELECT * FROM opendata.air_hourly ORDER BY start_time")
    assert [r["sensor_id"] for r in rows] == ["air-a"] * 7  # the site's hour is not published
    # The EEA's band names, 1 to 6 (European Air Quality Index, 2024 revision).
    names = ["Good", "Fair", "Moderate", "Poor", "Very poor", "Extremely poor", None]
    assert [(r["eaqi_band"], r["eaqi_label"]) for r in rows] == [
        (band, name) for band, name in zip([1, 2, 3, 4, 5, 6, None], names, strict=True)
    ]
    first = visible(rows)[0]
    assert first == {
        "sensor_id": "air-a",
        "site_id": "place",
        "site_name": "Place d'Essai",
        "start_time": T,
        "end_time": T + HOUR,
        "pm2_5_ugm3": 4.5,
        "pm10_ugm3": 10.25,
        "no2_ugm3": 20.0,
        "o3_ugm3": 41.5,
        "so2_ugm3": 2.0,
        "eaqi_band": 1,
        "eaqi_label": "Good",
        "geo_point_2d": point(48.853, 2.393),
    }
    assert rows[6]["pm2_5_ugm3"] is None
    assert rows[6]["pm10_ugm3"] == 12.0


async def test_counts_hourly_sums_a_site_hour_per_mode_over_directions(url: str) -> None:
    rows = await fetch(url, "SELECT * FROM opendata.counts_hourly ORDER BY mode")
    common = {
        "site_id": "bd",
        "site_name": "Boulevard Test",
        "start_time": T,
        "end_time": T + HOUR,
        "geo_point_2d": point(48.84, 2.38),
    }
    # pedestrian 12 in + 7 out; bicycle counted zero; car 3; the truck had no measurement.
    assert visible(rows) == [
        {**common, "mode": "bicycle", "count": 0},
        {**common, "mode": "car", "count": 3},
        {**common, "mode": "pedestrian", "count": 19},
    ]
    assert len({r["_change_key"] for r in rows}) == 3


async def test_pool_15min_has_a_site_quarter_with_the_registry_capacity(url: str) -> None:
    rows = await fetch(url, "SELECT * FROM opendata.pool_15min")
    assert visible(rows) == [
        {
            "site_id": "piscine",
            "site_name": "Piscine Test",
            "start_time": T,
            "end_time": T + 15 * MINUTE,
            "people_mean": 83.5,
            "people_max": 97,
            "capacity": 200,
            "occupancy_pct": 41.75,
            "affluence": 2,
            "geo_point_2d": point(48.86, 2.4),
        }
    ]


async def test_pool_now_has_each_pool_newest_minute(url: str) -> None:
    rows = await fetch(url, "SELECT * FROM opendata.pool_now")
    # 100.5 people on average in the newest minute: 101 (halves away from zero). The pool
    # without any data has no row.
    assert visible(rows) == [
        {
            "site_id": "piscine",
            "site_name": "Piscine Test",
            "observed_at": T + 3 * MINUTE,
            "people": 101,
            "capacity": 200,
            "occupancy_pct": 50.25,
            "affluence": 3,
            "geo_point_2d": point(48.86, 2.4),
        }
    ]


async def test_the_sites_table_mirrors_the_registry(url: str) -> None:
    rows = await fetch(url, "SELECT id, name, lat, lon, capacity, opening_hours FROM sites")
    assert sorted(rows, key=lambda r: r["id"]) == [
        {"id": "bd", "name": "Boulevard Test", "lat": 48.84, "lon": 2.38, "capacity": None,
         "opening_hours": []},
        {"id": "piscine", "name": "Piscine Test", "lat": 48.86, "lon": 2.4, "capacity": 200,
         "opening_hours": ["07:00-12:00", "14:00-20:00"]},
        {"id": "piscine-vide", "name": "Piscine sans données", "lat": 48.87, "lon": 2.41,
         "capacity": 50, "opening_hours": []},
        {"id": "place", "name": "Place d'Essai", "lat": 48.85, "lon": 2.39, "capacity": None,
         "opening_hours": []},
    ]  # fmt: skip
