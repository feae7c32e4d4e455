"""Migration 0003 on the real TimescaleDB: the sites table and its sync, change positions on the
window results, the API role's rights, and its password through ``citysense db migrate``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest
from pydantic import SecretStr

from citysense.registry import Registry, Site
from citysense.settings import Settings
from sinks.opendata._datasets import BUILTIN_DATASETS
from sinks.timescale import API_ROLE, SinkSettings, db_migrate
from sinks.timescale._registry import sync_sites
from tests.sinks._helpers import fresh_database
from tests.sinks.opendata._db import (
    REGISTRY,
    count,
    fetch,
    opendata_database,
    window,
    write_windows,
)

pytestmark = pytest.mark.integration

T = datetime(2026, 2, 2, 10, tzinfo=UTC)
KINDS = ("noise", "air", "traffic", "occupancy")


async def change_txid(conn: psycopg.AsyncConnection, kind: str, key: str) -> int | None:
    row = await (
        await conn.execute(
            f"SELECT change_txid::text FROM {kind}_aggregates WHERE key = %s",
            (key,),
        )
    ).fetchone()
    assert row is not None
    return None if row[0] is None else int(row[0])


async def test_every_write_of_a_window_result_records_its_transaction(settings: Settings) -> None:
    async with (
        opendata_database(settings) as url,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        for kind in KINDS:
            inserted = await write_windows(conn, [window("k", kind, T, 3600, revision=1)])
            assert await change_txid(conn, kind, "k") == inserted
            # A higher revision updates the row (the sink's upsert): a new position.
            updated = await write_windows(conn, [window("k", kind, T, 3600, revision=2)])
            assert updated > inserted
            assert await change_txid(conn, kind, "k") == updated
            # An older revision changes nothing, so the position stays.
            await write_windows(conn, [window("k", kind, T, 3600, revision=1)])
            assert await change_txid(conn, kind, "k") == updated
            # A plain UPDATE (an operator's correction) moves it too.
            async with conn.transaction():
                await conn.execute(
                    f"UPDATE {kind}_aggregates SET sample_count = 0",
                )
                now = await (await conn.execute("SELECT pg_current_xact_id()::text")).fetchone()
            assert now is not None
            assert await change_txid(conn, kind, "k") == int(now[0])


async def test_rows_committed_ahead_of_an_open_transaction_wait_below_the_snapshot_xmin(
    settings: Settings,
) -> None:
    """The reader's rule: rows with ``_change_txid < pg_snapshot_xmin(pg_current_snapshot())``.
    A later transaction that commits first stays out until the earlier one has ended, so a
    reader never moves past a position below which a row can still appear."""
    ready = (
        "SELECT sensor_id FROM opendata.noise_hourly "
        "WHERE _change_txid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY sensor_id"
    )
    async with (
        opendata_database(settings) as url,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        # The chunk first: a transaction creating it would hold the other's insert.
        await write_windows(conn, [window("site:place", "noise", T, 3600)])
        early = await psycopg.AsyncConnection.connect(url)
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as late:
                await early.execute("SELECT 1")  # a transaction in progress: the write stays in it
                await write_windows(early, [window("noise-a", "noise", T, 3600)])
                await write_windows(late, [window("noise-b", "noise", T, 3600)])  # commits
                assert await fetch(url, ready) == []
                await early.commit()
                rows = await fetch(url, ready)
                assert [r["sensor_id"] for r in rows] == ["noise-a", "noise-b"]
        finally:
            await early.close()


async def test_the_api_role_reads_the_dataset_views_and_no_table(settings: Settings) -> None:
    async with (
        opendata_database(settings) as url,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        await write_windows(conn, [window("noise-a", "noise", T, 3600, {"laeq_db": 50.0})])
        await conn.execute(f"SET ROLE {API_ROLE}")
        for dataset in BUILTIN_DATASETS:
            await conn.execute(f"SELECT * FROM opendata.{dataset.view} LIMIT 1")
        laeq = await (await conn.execute("SELECT laeq_db FROM opendata.noise_hourly")).fetchall()
        assert laeq == [(50.0,)]
        for table in (
            "sensors",
            "sites",
            "noise_measurements",
            "traffic_counts",
            "noise_aggregates",
            "occupancy_aggregates",
            "noise_latest",
            "consumer_offsets",
            "schema_migrations",
            "mobility_channel_spans",
            "mobility_measure_slots",
            "mobility_counters",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(f"SELECT * FROM {table} LIMIT 1")
        await conn.execute("RESET ROLE")
        for dataset in BUILTIN_DATASETS:
            rights = await (
                await conn.execute(
                    "SELECT has_table_privilege(%s, %s, 'SELECT'), "
                    "has_table_privilege(%s, %s, 'INSERT, UPDATE, DELETE, TRUNCATE')",
                    (API_ROLE, f"opendata.{dataset.view}") * 2,
                )
            ).fetchone()
            assert rights == (True, False), dataset.view
        # The read-only analysts' role keeps its rights and reads the new ones too.
        await conn.execute("SET ROLE citysense_reader")
        await conn.execute("SELECT * FROM noise_latest, sites LIMIT 1")
        await conn.execute("SELECT * FROM opendata.mobility_measures LIMIT 1")
        await conn.execute("RESET ROLE")
        # The writer mirrors the registry's sites.
        await conn.execute("SET ROLE citysense_writer")
        await sync_sites(conn, Registry([], [Site(id="x", name="X", lat=1.0, lon=2.0)]))
        # The writer has no right on the measure slots; its traffic results still fill them.
        traffic = window("cam-a", "traffic", T, 3600, counts=[count(1, "in", "pedestrian", 4)])
        await write_windows(conn, [traffic])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT * FROM mobility_measure_slots")
        await conn.execute("RESET ROLE")
        measures = await fetch(url, "SELECT channel_id, count FROM opendata.mobility_measures")
        assert measures == [{"channel_id": "cam-a-1-in-pedestrian", "count": 4}]


async def test_db_migrate_gives_the_api_role_a_login_and_syncs_the_sites(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "api-secret-Kp4"
    async with fresh_database(settings) as db:
        config = Settings(
            kafka=db.kafka,
            database=db.database,
            sink=SinkSettings(api_password=SecretStr(password)),
        )
        assert await asyncio.to_thread(db_migrate, config, None, REGISTRY) == 0
        out = capsys.readouterr().out
        assert "applied 0003_opendata" in out
        assert f"password set for role {API_ROLE}" in out
        assert "sites table: 4 of 4 sites changed" in out
        assert password not in out
        host = db.database.url.get_secret_value().split("@", 1)[1]
        api_url = f"postgresql://{API_ROLE}:{password}@{host}"
        async with await psycopg.AsyncConnection.connect(api_url, autocommit=True) as conn:
            await conn.execute("SELECT * FROM opendata.pool_now")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT * FROM sites")


async def test_sites_sync_writes_only_what_changed(settings: Settings) -> None:
    async with (
        opendata_database(settings) as url,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        assert await sync_sites(conn, REGISTRY) == 0  # synced by opendata_database
        moved = Site(id="bd", name="Boulevard renommé", lat=48.0, lon=2.0, capacity=3)
        others = [s for s in REGISTRY.sites.values() if s.id != "bd"]
        assert await sync_sites(conn, Registry([], [*others, moved])) == 1
        rows = await fetch(url, "SELECT name, lat, lon, capacity FROM sites WHERE id = 'bd'")
        assert rows == [{"name": "Boulevard renommé", "lat": 48.0, "lon": 2.0, "capacity": 3}]
