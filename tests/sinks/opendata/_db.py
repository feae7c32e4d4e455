"""Helpers of the dataset view tests: a migrated database with a small registry, and window
results written the way the sink writes them (Avro record → the writer's rows → upsert)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from citysense.registry import Registry, Sensor, Site
from citysense.settings import Settings
from schemas import encode
from sinks.timescale import migrate
from sinks.timescale._registry import sync_registry
from sinks.timescale._writer import Rows, add_record, decode_record, write_rows
from streams._grid import parse_cell_id
from tests.sinks._helpers import fresh_database

#: A small city: a square with noise and air sensors, a boulevard with a counting camera, a
#: radar without a site, a pool with two cameras and a pool without any data yet.
REGISTRY = Registry(
    sites=[
        Site(id="place", name="Place d'Essai", lat=48.85, lon=2.39),
        Site(id="bd", name="Boulevard Test", lat=48.84, lon=2.38),
        Site(
            id="piscine",
            name="Piscine Test",
            lat=48.86,
            lon=2.4,
            capacity=200,
            opening_hours=("07:00-12:00", "14:00-20:00"),
        ),
        Site(id="piscine-vide", name="Piscine sans données", lat=48.87, lon=2.41, capacity=50),
    ],
    sensors=[
        Sensor(id="noise-a", kind="noise", codec="milesight-ws302", site="place", lat=48.851,
               lon=2.391),
        Sensor(id="noise-b", kind="noise", codec="milesight-ws302", lat=48.852, lon=2.392),
        Sensor(id="air-a", kind="air", codec="milesight-am307", site="place", lat=48.853,
               lon=2.393),
        Sensor(id="cam-a", kind="traffic", codec="milesight-vs133", site="bd", lat=48.841,
               lon=2.381, line_classes={1: "pedestrian", 2: "bicycle"}),
        Sensor(id="radar-a", kind="traffic", codec="parametric-pcr2", lat=48.842, lon=2.382,
               line_classes={1: "car"}),
        Sensor(id="pool-a", kind="occupancy", codec="milesight-vs121", site="piscine",
               lat=48.861, lon=2.401, capacity=120),
        Sensor(id="pool-b", kind="occupancy", codec="milesight-vs121", site="piscine",
               lat=48.862, lon=2.402, capacity=80),
    ],
)  # fmt: skip

HOUR = timedelta(hours=1)


@contextlib.asynccontextmanager
async def opendata_database(
    settings: Settings, registry: Registry = REGISTRY
) -> AsyncIterator[str]:
    """A fresh database, migrated, with ``registry`` synced; yields its URL."""
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            await sync_registry(conn, registry)
        yield url


def window(
    key: str,
    kind: str,
    start: datetime,
    size_s: int,
    values: dict[str, float] | None = None,
    *,
    end: datetime | None = None,
    revision: int = 1,
    final: bool = True,
    sample_count: int = 10,
    counts: Sequence[dict[str, Any]] = (),
    regions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """An ``Aggregate`` record (schemas/avsc/Aggregate.avsc)."""
    return {
        "key": key,
        "kind": kind,
        "window_start": start,
        "window_end": end if end is not None else start + timedelta(seconds=size_s),
        "window_size_seconds": size_s,
        "revision": revision,
        "final": final,
        "values": values or {},
        "sample_count": sample_count,
        "counts": list(counts),
        "regions": list(regions),
    }


def count(line: int, direction: str, traffic_class: str, n: int | None) -> dict[str, Any]:
    """One (line, direction, class) entry of a traffic window; ``n`` None: cumulative only."""
    return {
        "line": line,
        "direction": direction,
        "traffic_class": traffic_class,
        "count": n,
        "cumulative": None if n is not None else 1234,
    }


async def write_windows(
    conn: psycopg.AsyncConnection[Any], records: Iterable[dict[str, Any]]
) -> int:
    """Write window results as the sink does, in the caller's transaction (or one of its own
    on an autocommit connection); returns that transaction's id."""
    rows = Rows()
    for record in records:
        name, decoded = decode_record(encode("Aggregate", record))
        add_record(rows, name, decoded)
    async with conn.transaction():
        await write_rows(conn, rows.tables())
        found = await (await conn.execute("SELECT pg_current_xact_id()::text")).fetchone()
    assert found is not None
    return int(found[0])


async def fetch(url: str, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows of ``query`` as dicts."""
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cursor,
    ):
        await cursor.execute(query, params)
        return await cursor.fetchall()


def cell(
    cell_id: str,
    start: datetime,
    size_s: int,
    mean: float,
    *,
    samples: int = 12,
    vehicles: int = 3,
    band: int | None = 2,
) -> dict[str, Any]:
    """A ``CellAggregate`` record (schemas/avsc/CellAggregate.avsc) as the grid stage sends it."""
    corners = parse_cell_id(cell_id).corners()
    return {
        "cell_id": cell_id,
        "resolution_m": 100,
        "window_start": start,
        "window_end": start + timedelta(seconds=size_s),
        "window_size_seconds": size_s,
        "revision": samples,
        "final": True,
        "sample_count": samples,
        "vehicle_count": vehicles,
        "pm2_5_ugm3_mean": mean,
        "pm2_5_ugm3_max": mean * 2,
        "eaqi_band": band,
        "corners": [{"lon": lon, "lat": lat} for lon, lat in corners],
    }


async def write_cells(url: str, records: list[dict[str, Any]]) -> None:
    rows = Rows()
    for record in records:
        name, decoded = decode_record(encode("CellAggregate", record))
        add_record(rows, name, decoded)
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        conn.transaction(),
    ):
        await write_rows(conn, rows.tables())
