"""A scratch database with spec-compatible live views, a view-only API role, and a test app.

The views follow the publication design's contract for live datasets (hidden ``_change_txid``
from a ``BEFORE INSERT OR UPDATE`` trigger setting ``pg_current_xact_id()`` on the aggregate
tables, and ``_change_key`` unique per row) over the real migrated aggregate tables, so the feed
is tested against hypertables written the way the sink writes them (insert, then upsert of a
higher revision). They carry the published fields the live feed and the display page use.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from citysense.settings import PublishSettings, Settings
from sinks.opendata._catalog import Catalog, Dataset, DatasetField, FieldType, LocalizedText
from sinks.opendata._changes import json_value
from sinks.opendata._live import close_change_hub
from sinks.opendata._live import router as live_router
from sinks.opendata._routes_page import router as page_router
from sinks.opendata._state import ApiError, Publication
from sinks.timescale import migrate
from tests.sinks._helpers import T0, fresh_database

__all__ = [
    "T0",
    "LiveDb",
    "api_app",
    "api_pool",
    "hour",
    "live_app",
    "live_catalog",
    "live_database",
    "publication_for",
    "seeded_live_database",
    "serve",
]

_LIVE_SQL = """
CREATE FUNCTION set_change_txid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_txid := pg_current_xact_id();
    RETURN NEW;
END
$$;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['noise_aggregates', 'air_aggregates', 'traffic_aggregates',
                             'occupancy_aggregates'] LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN change_txid xid8', t);
        EXECUTE format('CREATE INDEX ON %I (change_txid)', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %I FOR EACH ROW '
                       'EXECUTE FUNCTION set_change_txid()', t || '_change_txid', t);
    END LOOP;
END
$$;
CREATE TABLE test_sites (
    site text PRIMARY KEY, name text NOT NULL, lat float8, lon float8, capacity int
);
CREATE SCHEMA opendata;
CREATE VIEW opendata.noise_hourly AS
SELECT a.key AS sensor_id, s.site AS site_id, n.name AS site_name,
       a.bucket AS start_time, a.bucket_end AS end_time,
       (a.indicators->>'laeq_db')::float8 AS laeq_db,
       (a.indicators->>'lamax_db')::float8 AS lamax_db,
       a.sample_count::int AS sample_count,
       jsonb_build_object('lon', s.lon, 'lat', s.lat) AS geo_point_2d,
       a.change_txid AS _change_txid,
       a.key || '|' || a.window_seconds || '|'
           || (extract(epoch FROM a.bucket) * 1000000)::bigint AS _change_key
FROM noise_aggregates a
LEFT JOIN sensors s ON s.id = a.key
LEFT JOIN test_sites n ON n.site = s.site
WHERE a.window_seconds = 3600 AND a.key NOT LIKE 'site:%';
CREATE VIEW opendata.air_hourly AS
SELECT a.key AS sensor_id, s.site AS site_id, n.name AS site_name,
       a.bucket AS start_time, a.bucket_end AS end_time,
       (a.indicators->>'pm2_5_ugm3_mean')::float8 AS pm2_5_ugm3,
       (a.indicators->>'no2_ugm3_mean')::float8 AS no2_ugm3,
       (a.indicators->>'eaqi_band')::int AS eaqi_band,
       (ARRAY['Good', 'Fair', 'Moderate', 'Poor', 'Very poor', 'Extremely poor'])
           [(a.indicators->>'eaqi_band')::int] AS eaqi_label,
       jsonb_build_object('lon', s.lon, 'lat', s.lat) AS geo_point_2d,
       a.change_txid AS _change_txid,
       a.key || '|' || a.window_seconds || '|'
           || (extract(epoch FROM a.bucket) * 1000000)::bigint AS _change_key
FROM air_aggregates a
LEFT JOIN sensors s ON s.id = a.key
LEFT JOIN test_sites n ON n.site = s.site
WHERE a.window_seconds = 3600 AND a.key NOT LIKE 'site:%';
CREATE VIEW opendata.counts_hourly AS
SELECT substr(a.key, 6) AS site_id, n.name AS site_name,
       a.bucket AS start_time, a.bucket_end AS end_time, c.mode, c.count::int AS count,
       jsonb_build_object('lon', n.lon, 'lat', n.lat) AS geo_point_2d,
       a.change_txid AS _change_txid,
       a.key || '|' || a.window_seconds || '|'
           || (extract(epoch FROM a.bucket) * 1000000)::bigint || '|' || c.mode AS _change_key
FROM traffic_aggregates a
CROSS JOIN LATERAL (
    SELECT e->>'traffic_class' AS mode, sum((e->>'count')::bigint) AS count
    FROM jsonb_array_elements(a.counts) AS e GROUP BY 1
) AS c
LEFT JOIN test_sites n ON n.site = substr(a.key, 6)
WHERE a.window_seconds = 3600 AND a.key LIKE 'site:%';
CREATE VIEW opendata.pool_now AS
SELECT DISTINCT ON (a.key)
       substr(a.key, 6) AS site_id, n.name AS site_name, a.bucket_end AS observed_at,
       round((a.indicators->>'people_mean')::numeric)::int AS people, n.capacity,
       (a.indicators->>'occupancy_pct')::float8 AS occupancy_pct,
       (a.indicators->>'affluence')::int AS affluence,
       jsonb_build_object('lon', n.lon, 'lat', n.lat) AS geo_point_2d,
       a.change_txid AS _change_txid,
       a.key || '|' || a.window_seconds || '|'
           || (extract(epoch FROM a.bucket) * 1000000)::bigint AS _change_key
FROM occupancy_aggregates a
LEFT JOIN test_sites n ON n.site = substr(a.key, 6)
WHERE a.window_seconds = 60 AND a.key LIKE 'site:%'
ORDER BY a.key, a.bucket DESC;
-- Not live: no hidden columns.
CREATE VIEW opendata.sites AS SELECT site AS site_id, name AS site_name FROM test_sites;
"""

_VIEWS = ("noise_hourly", "air_hourly", "counts_hourly", "pool_now", "sites")


def _field(name: str, kind: FieldType) -> DatasetField:
    return DatasetField(name=name, type=kind, label=LocalizedText(fr=name, en=name))


def _dataset(
    dataset_id: str,
    view: str,
    fields: Iterable[tuple[str, FieldType]],
    *,
    live: bool = True,
    key_fields: tuple[str, ...] = (),
    timestamp_field: str | None = None,
) -> Dataset:
    return Dataset(
        id=dataset_id,
        view=view,
        title=LocalizedText(fr=dataset_id, en=dataset_id),
        description=LocalizedText(fr=dataset_id, en=dataset_id),
        fields=tuple(_field(n, t) for n, t in fields),
        live=live,
        key_fields=key_fields,
        timestamp_field=timestamp_field,
    )


def live_catalog() -> Catalog:
    """The datasets over the test views (ids and field names of the publication design)."""
    return Catalog(
        [
            _dataset(
                "bruit-horaire",
                "noise_hourly",
                [
                    ("sensor_id", "text"),
                    ("site_id", "text"),
                    ("site_name", "text"),
                    ("start_time", "datetime"),
                    ("end_time", "datetime"),
                    ("laeq_db", "double"),
                    ("lamax_db", "double"),
                    ("sample_count", "int"),
                    ("geo_point_2d", "geo_point_2d"),
                ],
                key_fields=("sensor_id", "start_time"),
                timestamp_field="start_time",
            ),
            _dataset(
                "qualite-air-horaire",
                "air_hourly",
                [
                    ("sensor_id", "text"),
                    ("site_id", "text"),
                    ("site_name", "text"),
                    ("start_time", "datetime"),
                    ("end_time", "datetime"),
                    ("pm2_5_ugm3", "double"),
                    ("no2_ugm3", "double"),
                    ("eaqi_band", "int"),
                    ("eaqi_label", "text"),
                    ("geo_point_2d", "geo_point_2d"),
                ],
                key_fields=("sensor_id", "start_time"),
                timestamp_field="start_time",
            ),
            _dataset(
                "comptage-horaire-par-mode",
                "counts_hourly",
                [
                    ("site_id", "text"),
                    ("site_name", "text"),
                    ("start_time", "datetime"),
                    ("end_time", "datetime"),
                    ("mode", "text"),
                    ("count", "int"),
                    ("geo_point_2d", "geo_point_2d"),
                ],
                key_fields=("site_id", "start_time", "mode"),
                timestamp_field="start_time",
            ),
            _dataset(
                "affluence-piscine-temps-reel",
                "pool_now",
                [
                    ("site_id", "text"),
                    ("site_name", "text"),
                    ("observed_at", "datetime"),
                    ("people", "int"),
                    ("capacity", "int"),
                    ("occupancy_pct", "double"),
                    ("affluence", "int"),
                    ("geo_point_2d", "geo_point_2d"),
                ],
                key_fields=("site_id",),
                timestamp_field="observed_at",
            ),
            _dataset("sites", "sites", [("site_id", "text"), ("site_name", "text")], live=False),
        ]
    )


@dataclass(frozen=True)
class LiveDb:
    """The scratch database: the owner's URL (writes) and the view-only API role's URL."""

    owner_url: str
    api_url: str
    api_role: str

    async def execute(self, query: str, params: Any = None) -> None:
        async with await psycopg.AsyncConnection.connect(self.owner_url, autocommit=True) as c:
            await c.execute(query, params)

    async def add_site(
        self, site: str, name: str, lat: float, lon: float, capacity: int | None = None
    ) -> None:
        await self.execute(
            "INSERT INTO test_sites VALUES (%s, %s, %s, %s, %s)", (site, name, lat, lon, capacity)
        )

    async def add_sensor(self, sensor: str, kind: str, site: str) -> None:
        await self.execute(
            "INSERT INTO sensors (id, kind, codec, site, lat, lon) "
            "SELECT %s, %s, 'test', site, lat, lon FROM test_sites WHERE site = %s",
            (sensor, kind, site),
        )

    async def upsert(
        self,
        conn: psycopg.AsyncConnection[Any] | None,
        kind: str,
        key: str,
        window_s: int,
        start: datetime,
        indicators: dict[str, float],
        *,
        revision: int = 0,
        counts: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write one aggregate row as the sink does (an upsert of a higher revision), in
        ``conn``'s transaction, or in a transaction of its own when ``conn`` is None."""
        query = sql.SQL(
            "INSERT INTO {table} (bucket, bucket_end, window_seconds, key, revision, final, "
            "sample_count, indicators, counts) VALUES (%s, %s, %s, %s, %s, true, 60, %s, %s) "
            "ON CONFLICT (key, window_seconds, bucket) DO UPDATE SET revision = "
            "EXCLUDED.revision, indicators = EXCLUDED.indicators, counts = EXCLUDED.counts "
            "WHERE {table}.revision < EXCLUDED.revision"
        ).format(table=sql.Identifier(f"{kind}_aggregates"))
        params = (
            start,
            start + timedelta(seconds=window_s),
            window_s,
            key,
            revision,
            orjson.dumps(indicators).decode(),
            None if counts is None else orjson.dumps(counts).decode(),
        )
        if conn is not None:
            await conn.execute(query, params)
            return
        async with await psycopg.AsyncConnection.connect(self.owner_url, autocommit=True) as c:
            await c.execute(query, params)


@contextlib.asynccontextmanager
async def live_database(settings: Settings) -> AsyncIterator[LiveDb]:
    """A migrated scratch database with the live views, and a login role that may read the
    ``opendata`` views and nothing else (like the API role: views run with their owner's
    rights, so the feed must work through them alone)."""
    async with fresh_database(settings) as db_settings:
        url = db_settings.database.url.get_secret_value()
        role = f"live_api_{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            await conn.execute(_LIVE_SQL)
            await conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            await conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA opendata TO {}").format(sql.Identifier(role))
            )
            for view in _VIEWS:
                await conn.execute(
                    sql.SQL("GRANT SELECT ON {} TO {}").format(
                        sql.Identifier("opendata", view), sql.Identifier(role)
                    )
                )
        api_url = make_conninfo(url, user=role, password=password)
        try:
            yield LiveDb(owner_url=url, api_url=api_url, api_role=role)
        finally:
            admin_url = settings.database.url.get_secret_value()
            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
                # The database goes first (fresh_database drops it with FORCE); the role's
                # grants live in it, so drop its sessions and grants there.
                await c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
                await c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
                await c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def hour(i: int) -> datetime:
    """The start of the hour ``i`` hours before T0."""
    return T0 - timedelta(hours=i)


@contextlib.asynccontextmanager
async def seeded_live_database(settings: Settings) -> AsyncIterator[LiveDb]:
    """:func:`live_database` with a site ("nation", capacity 300) and three noise sensors."""
    async with live_database(settings) as live_db:
        await live_db.add_site("nation", "Place de la Nation", 48.8483, 2.3959, 300)
        for sensor in ("nation-1", "nation-2", "nation-3"):
            await live_db.add_sensor(sensor, "noise", "nation")
        # The hypertable's chunks for the test hours exist before the tests' concurrent
        # transactions: TimescaleDB makes a second writer into a chunk another open
        # transaction is creating wait for it. 1-minute windows are in no hourly view.
        async with await psycopg.AsyncConnection.connect(live_db.owner_url) as conn:
            for i in range(0, 100, 6):
                await live_db.upsert(conn, "noise", "seed", 60, hour(i), {"laeq_db": 0.0})
            await conn.commit()
        yield live_db


@contextlib.asynccontextmanager
async def api_pool(db: LiveDb) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        db.api_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


def publication_for(
    pool: AsyncConnectionPool[Any], *, poll_interval_s: float = 0.05
) -> Publication:
    return Publication(
        settings=PublishSettings(live_poll_interval_s=poll_interval_s),
        catalog=live_catalog(),
        pool=pool,
        public_url="http://127.0.0.1",
    )


def api_app() -> FastAPI:
    """An app answering :class:`ApiError` with the portal's error body, as the publication's."""
    app = FastAPI()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    return app


def live_app(state: Publication, *, records_stand_in: bool = False) -> FastAPI:
    """The live and page routers on an app like the publication's, with its error body.

    ``records_stand_in`` adds a minimal records route (``order_by=<field> desc``, ``limit``),
    standing in for the Explore API's, which this branch does not have.
    """
    app = api_app()
    app.state.publication = state
    app.include_router(live_router)
    app.include_router(page_router)
    if records_stand_in:

        @app.get("/api/explore/v2.1/catalog/datasets/{dataset_id}/records")
        async def _records(dataset_id: str, order_by: str, limit: int = 10) -> Response:
            dataset = state.catalog.get(dataset_id)
            name, _, direction = order_by.partition(" ")
            assert name in dataset.field_types
            assert direction.lower() in ("", "asc", "desc")
            query = sql.SQL("SELECT {} FROM {} ORDER BY {} {} LIMIT %s").format(
                sql.SQL(", ").join(sql.Identifier(f.name) for f in dataset.fields),
                sql.Identifier("opendata", dataset.view),
                sql.Identifier(name),
                sql.SQL("DESC" if direction.lower() == "desc" else "ASC"),
            )
            async with state.pool.connection() as conn:
                rows = await (await conn.execute(query, (min(limit, 100),))).fetchall()
            results = [
                {f.name: json_value(v, f.type) for f, v in zip(dataset.fields, row, strict=True)}
                for row in rows
            ]
            return Response(
                orjson.dumps({"total_count": len(results), "results": results}),
                media_type="application/json",
            )

    return app


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on a real uvicorn server on a free loopback port; its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="test-uvicorn")
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await close_change_hub(app)
        server.should_exit = True
        await task
