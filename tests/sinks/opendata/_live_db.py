"""A migrated scratch database (the real ``opendata`` views and API role), a connection pool
set up as the publication's, the publication's app with the live and page routers, and uvicorn.

Window results are written into the real aggregate hypertables the way the sink writes them
(an insert, then upserts of higher revisions), so the feed is tested against the real views'
change positions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from citysense.settings import PublishSettings, Settings
from sinks.opendata._app import create_app
from sinks.opendata._datasets import default_catalog
from sinks.opendata._live import close_change_hub
from sinks.opendata._state import Publication
from sinks.timescale import migrate
from tests.sinks._helpers import fresh_database

__all__ = [
    "LiveDb",
    "api_pool",
    "hour",
    "live_app",
    "live_database",
    "publication_for",
    "seeded_live_database",
    "serve",
]


@dataclass(frozen=True)
class LiveDb:
    """The scratch database, by its owner's URL (the writes of the tests)."""

    owner_url: str

    async def execute(self, query: str, params: Any = None) -> None:
        async with await psycopg.AsyncConnection.connect(self.owner_url, autocommit=True) as c:
            await c.execute(query, params)

    async def add_site(
        self, site: str, name: str, lat: float, lon: float, capacity: int | None = None
    ) -> None:
        await self.execute(
            "INSERT INTO sites (id, name, lat, lon, capacity) VALUES (%s, %s, %s, %s, %s)",
            (site, name, lat, lon, capacity),
        )

    async def add_sensor(self, sensor: str, kind: str, site: str) -> None:
        await self.execute(
            "INSERT INTO sensors (id, kind, codec, site, lat, lon) "
            "SELECT %s, %s, 'test', id, lat, lon FROM sites WHERE id = %s",
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
    """A fresh database with every migration applied (the ``opendata`` views, the change
    positions on the aggregate tables, the ``citysense_api`` role)."""
    async with fresh_database(settings) as db_settings:
        url = db_settings.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
        global _t0
        _t0 = _four_hours_ago()
        yield LiveDb(owner_url=url)


def _four_hours_ago() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)


#: The base of :func:`hour`, pinned when each test's database is made: the display page dims a
#: tile whose window ended more than two hours ago, so "recent" must be recent when the test
#: runs, not when the session started (the suite lasts long enough to cross an hour).
_t0 = _four_hours_ago()


def hour(i: int) -> datetime:
    """The start of the hour ``i`` hours before the current test's base (four whole hours
    before its database was made)."""
    return _t0 - timedelta(hours=i)


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
            for i in range(-6, 100, 6):
                await live_db.upsert(conn, "noise", "seed", 60, hour(i), {"laeq_db": 0.0})
            await conn.commit()
        yield live_db


async def _as_api_role(conn: psycopg.AsyncConnection[Any]) -> None:
    """Each pooled connection as the publication's: the API role, read-only transactions."""
    async with conn.transaction():
        await conn.execute("SET ROLE citysense_api")
        await conn.execute("SET default_transaction_read_only = on")
        await conn.execute("SET statement_timeout = 10000")
    await conn.set_autocommit(False)


@contextlib.asynccontextmanager
async def api_pool(db: LiveDb) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """Connections set up like the publication's pool (sinks/opendata/_service.py)."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        db.owner_url,
        min_size=1,
        max_size=6,
        open=False,
        configure=_as_api_role,
        kwargs={"autocommit": True},
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


def publication_for(
    pool: AsyncConnectionPool[Any], *, poll_interval_s: float = 0.05
) -> Publication:
    settings = PublishSettings(live_poll_interval_s=poll_interval_s, rate_limit="1000/second")
    return Publication(
        settings=settings,
        catalog=default_catalog(settings),
        pool=pool,
        public_url="http://127.0.0.1",
    )


def live_app(state: Publication) -> FastAPI:
    """The publication's application (records API, live feed, page and all)."""
    return create_app(state)


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
