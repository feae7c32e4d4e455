"""The TimescaleDB sink on the real stack: schema, exactly-once rows, revisions, failures."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from pydantic import SecretStr

from citysense.clients import connect_database, kafka_consumer
from citysense.settings import Settings
from citysense.stack import Stack, free_port
from schemas import decode
from sinks.timescale import (
    MIGRATIONS,
    SinkSettings,
    TimescaleSink,
    db_migrate,
    db_status,
    migrate,
)
from sinks.timescale._writer import (
    TABLES,
    Row,
    Rows,
    add_record,
    decode_record,
    prepare_connection,
    store_offsets,
    write_rows,
)
from tests.sinks._helpers import (
    T0,
    aggregate_record,
    framed,
    fresh_database,
    noise_record,
    occupancy_record,
    postgres_proxy,
    produce,
    scalar,
    through_proxy,
    traffic_record,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration


def sink_settings(*topics: str, **overrides: Any) -> SinkSettings:
    """Fast settings for tests: short batches, quick group membership, short backoff."""
    values: dict[str, Any] = {
        "group_id": unique("sink-test"),
        "topics": topics,
        "dead_letter_topic": unique("test.deadletter"),
        "batch_max_records": 500,
        "batch_max_wait_s": 0.1,
        "retry_initial_s": 0.1,
        "retry_max_s": 1.0,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "kafka_commit_interval_s": 0,
    }
    values.update(overrides)
    return SinkSettings(**values)


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Settings]:
    async with fresh_database(settings) as db_settings:
        yield db_settings


@contextlib.asynccontextmanager
async def migrated_database(settings: Settings) -> AsyncIterator[str]:
    """A new database with the sink's migrations applied; yields its URL."""
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
        yield url


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's high watermark, as a fetch reports it (Tansu's ListOffsets answers
    with the last batch's base offset + 1, so ``end_offsets()`` is not used)."""
    consumer = kafka_consumer(settings.kafka, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        async with asyncio.timeout(20):
            while any(consumer.highwater(tp) is None for tp in partitions):
                await consumer.getmany(timeout_ms=200, max_records=1)
        return {tp.partition: int(consumer.highwater(tp)) for tp in partitions}
    finally:
        await consumer.stop()


async def stored_offsets(url: str, group: str, topic: str) -> dict[int, int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            rows = await (
                await conn.execute(
                    'SELECT "partition", next_offset FROM consumer_offsets '
                    "WHERE group_id = %s AND topic = %s",
                    (group, topic),
                )
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # the sink has not migrated yet
            return {}
    return {int(p): int(o) for p, o in rows}


async def caught_up(settings: Settings, url: str, group: str, *topics: str) -> bool:
    for topic in topics:
        ends = {p: o for p, o in (await end_offsets(settings, topic)).items() if o}
        stored = await stored_offsets(url, group, topic)
        if any(stored.get(p, 0) < o for p, o in ends.items()):
            return False
    return True


async def count(url: str, table: str, where: str = "TRUE") -> int:
    try:
        return int(await scalar(url, f"SELECT count(*) FROM {table} WHERE {where}"))
    except psycopg.errors.UndefinedTable:  # the sink has not migrated yet
        return 0


async def read_topic(
    settings: Settings, topic: str, expected: int
) -> list[tuple[str, dict[str, Any]]]:
    consumer = kafka_consumer(settings.kafka, topic, group_id=None)
    await consumer.start()
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend(decode(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


# --- schema ----------------------------------------------------------------------------------


async def test_migrations_create_hypertables_views_roles_and_are_idempotent(
    settings: Settings,
) -> None:
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert [m.version for m in await migrate(conn)] == [m.version for m in MIGRATIONS]
            assert await migrate(conn) == []
            hypertables = {
                name: interval
                for name, interval in await (
                    await conn.execute(
                        "SELECT hypertable_name, time_interval "
                        "FROM timescaledb_information.dimensions"
                    )
                ).fetchall()
            }
            columns: dict[str, list[str]] = {}
            for table, column in await (
                await conn.execute(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND is_generated = 'NEVER' "
                    "ORDER BY table_name, ordinal_position"
                )
            ).fetchall():
                columns.setdefault(table, []).append(column)
            views = {
                r[0]
                for r in await (
                    await conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
                ).fetchall()
            }
        # The writer's columns are the tables' (plus updated_at and the aggregates' change_txid,
        # filled by the database, and the typed indicators of migration 0005, generated by it);
        # a COPY names them in the Avro records' order, which is not always the tables'.
        filled = {"updated_at", "change_txid"}
        for name, table in TABLES.items():
            assert name in hypertables
            assert sorted(c for c in columns[name] if c not in filled) == sorted(table.column_names)
        assert str(hypertables["noise_measurements"]) == "1 day, 0:00:00"
        assert str(hypertables["noise_aggregates"]) == "30 days, 0:00:00"
        assert {"noise_latest", "air_latest", "traffic_latest", "occupancy_latest"} <= views
        assert {"sensors", "consumer_offsets"} <= set(columns)

        # Roles: the writer inserts, the reader only reads and never sees the offsets.
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SET ROLE citysense_reader")
            await conn.execute("SELECT count(*) FROM noise_latest")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT * FROM consumer_offsets")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("INSERT INTO sensors (id, kind, codec) VALUES ('x', 'air', 'c')")
            await conn.execute("RESET ROLE")
            await conn.execute("SET ROLE citysense_writer")
            await conn.execute(
                'INSERT INTO consumer_offsets (group_id, topic, "partition", next_offset) '
                "VALUES ('g', 't', 0, 1)"
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("DELETE FROM noise_measurements")


async def test_db_migrate_and_status_commands_and_role_passwords(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with database(settings) as db:
        password = "writer-secret-Zq8"
        db = Settings(
            kafka=db.kafka,
            database=db.database,
            sink=SinkSettings(writer_password=SecretStr(password)),
        )
        assert await asyncio.to_thread(db_status, db) == 1
        assert await asyncio.to_thread(db_migrate, db) == 0
        assert await asyncio.to_thread(db_status, db) == 0
        out = capsys.readouterr().out
        assert "applied 0001_schema" in out
        assert "password set for role citysense_writer" in out
        assert password not in out
        assert db.database.url.get_secret_value().split("@")[0].split(":")[-1] not in out
        # The writer can now log in with its password and write.
        url = db.database.url.get_secret_value()
        host = url.split("@", 1)[1]
        writer_url = f"postgresql://citysense_writer:{password}@{host}"
        async with await psycopg.AsyncConnection.connect(writer_url, autocommit=True) as conn:
            await conn.execute(
                'INSERT INTO consumer_offsets (group_id, topic, "partition", next_offset) '
                "VALUES ('g', 't', 0, 1)"
            )


# --- exactly once ----------------------------------------------------------------------------


async def test_replaying_the_same_records_twice_leaves_one_row_each(
    settings: Settings, lean: str
) -> None:
    noise, traffic, occupancy, aggregates = (
        unique("test.noise"),
        unique("test.traffic"),
        unique("test.occupancy"),
        unique("test.aggregates"),
    )
    await produce(
        settings,
        noise,
        framed("NoiseMeasurement", (noise_record(f"n{i % 20}", i) for i in range(3000))),
    )
    await produce(
        settings,
        traffic,
        framed("TrafficMeasurement", (traffic_record(f"t{i % 4}", i) for i in range(200))),
    )
    await produce(
        settings,
        occupancy,
        framed("OccupancyMeasurement", (occupancy_record("pool-1", i) for i in range(100))),
    )
    await produce(
        settings,
        aggregates,
        framed("Aggregate", (aggregate_record(f"n{i % 5}", i) for i in range(100))),
    )
    topics = (noise, traffic, occupancy, aggregates)
    expected = {
        "noise_measurements": 3000,
        "traffic_measurements": 200,
        "traffic_counts": 2400,
        "occupancy_measurements": 100,
        "occupancy_regions": 300,
        "noise_aggregates": 100,
    }
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        for run in range(2):
            # A new group has no stored offsets: it reads every record again.
            config = sink_settings(*topics)
            async with TimescaleSink(db.model_copy(update={"lean": lean}), config) as sink:

                async def done(group: str = config.group_id) -> bool:
                    return await caught_up(db, url, group, *topics)

                await wait_until(done, 60, f"run {run}")
                assert sink.ready()
            for table, rows in expected.items():
                assert await count(url, table) == rows, (run, table)
        # Typed columns, other quantities, traffic counts, latest views.
        row = await scalar(
            url,
            "SELECT row(laeq_db, lamax_db, battery_pct, other_values->>'lz_16000hz_db', gateway_id)"
            "::text FROM noise_measurements WHERE sensor_id = 'n0' AND time = %s",
            (noise_record("n0", 0)["observed_at"],),
        )
        assert row == "(40,70.5,99,12.5,gw-1)"
        assert await count(url, "noise_latest") == 20
        newest = await scalar(url, "SELECT laeq_db FROM noise_latest WHERE sensor_id = 'n7'")
        assert newest == noise_record("n7", 2987)["laeq_db"]
        assert await count(url, "traffic_latest") == 4 * 12
        assert await count(url, "occupancy_latest") == 3
        total = await scalar(url, "SELECT sum(count) FROM traffic_counts WHERE sensor_id = 't1'")
        assert total == sum(
            c["count"] for i in range(200) if i % 4 == 1 for c in traffic_record("t1", i)["counts"]
        )


async def test_poll_interval_spaces_the_polls_that_fetch_again(settings: Settings) -> None:
    """``sink.poll_interval_ms``: after a poll that took every record fetched so far, the next
    poll (the one that makes the consumer fetch again) waits that long; every record still
    arrives."""
    topic = unique("test.noise")
    await produce(
        settings, topic, framed("NoiseMeasurement", (noise_record("n0", i) for i in range(50)))
    )
    config = sink_settings(topic, poll_interval_ms=300)
    polls: list[tuple[float, int, int]] = []  # (when, asked, returned)
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        async with TimescaleSink(db, config) as sink:
            consumer = sink._consumer
            assert consumer is not None
            getmany = consumer.getmany

            async def spied(
                *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
            ) -> Any:
                when = time.monotonic()
                fetched = await getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
                polls.append((when, max_records or 0, sum(map(len, fetched.values()))))
                return fetched

            consumer.getmany = spied
            await wait_until(lambda: _rows_at_least(url, 50), 60, "first records")
            await produce(
                settings,
                topic,
                framed("NoiseMeasurement", (noise_record("n1", i) for i in range(50, 90))),
            )
            await wait_until(lambda: _rows_at_least(url, 90), 60, "second records")
    gaps = [
        later[0] - earlier[0]
        for earlier, later in itertools.pairwise(polls)
        if earlier[2] < earlier[1]
    ]
    assert len(gaps) >= 3
    assert min(gaps) >= 0.29


async def _rows_at_least(url: str, rows: int) -> bool:
    return await count(url, "noise_measurements") >= rows


async def test_a_duplicate_turns_the_direct_copy_into_an_insert_on_conflict(
    settings: Settings,
) -> None:
    """Raw rows are copied straight into their table; a batch meeting a row already there, or
    holding a duplicate, falls back to staging + ON CONFLICT DO NOTHING in the same transaction
    and counts only the rows it added."""

    def rows_of(*indexes: int) -> dict[str, list[Row]]:
        rows = Rows()
        for _key, value in framed(
            "TrafficMeasurement", (traffic_record(f"t{i % 3}", i) for i in indexes)
        ):
            add_record(rows, *decode_record(value))
        return rows.tables()

    async with migrated_database(settings) as url:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            written = await write_rows(conn, rows_of(*range(10)))
            await conn.commit()
            assert written == {"traffic_measurements": 10, "traffic_counts": 120}
            # 5 already stored, 5 new, one of them twice in the batch.
            written = await write_rows(conn, rows_of(*range(5, 15), 12))
            await store_offsets(conn, "g", {("t", 0): 15})
            await conn.commit()
            assert written == {"traffic_measurements": 5, "traffic_counts": 60}
        assert await count(url, "traffic_measurements") == 15
        assert await count(url, "traffic_counts") == 180
        assert await scalar(url, "SELECT next_offset FROM consumer_offsets") == 15


async def test_a_duplicate_in_one_raw_table_leaves_the_others_on_the_direct_copy(
    settings: Settings,
) -> None:
    """All raw COPYs of a batch share one savepoint; a duplicate in one table rolls them all
    back, then every raw table is written again in its own savepoint: each row lands once, the
    counts are the rows added, and the offsets commit with them."""

    def batch(noise: range, traffic: range) -> dict[str, list[Row]]:
        rows = Rows()
        values = [v for _, v in framed("NoiseMeasurement", (noise_record("n", i) for i in noise))]
        values += [
            v for _, v in framed("TrafficMeasurement", (traffic_record("t", i) for i in traffic))
        ]
        for value in values:
            add_record(rows, *decode_record(value))
        return rows.tables()

    async with (
        migrated_database(settings) as url,
        await psycopg.AsyncConnection.connect(url) as conn,
    ):
        assert await write_rows(conn, batch(range(10), range(10))) == {
            "noise_measurements": 10,
            "traffic_measurements": 10,
            "traffic_counts": 120,
        }
        await conn.commit()
        # New noise rows; traffic rows 5..9 stored already.
        written = await write_rows(conn, batch(range(10, 20), range(5, 15)))
        await store_offsets(conn, "g", {("t", 0): 40})
        await conn.commit()
        assert written == {
            "noise_measurements": 10,
            "traffic_measurements": 5,
            "traffic_counts": 60,
        }
        assert await count(url, "noise_measurements") == 20
        assert await count(url, "traffic_measurements") == 15
        assert await count(url, "traffic_counts") == 180
        assert await scalar(url, "SELECT next_offset FROM consumer_offsets") == 40


async def test_staging_tables_made_once_per_session_outlive_a_rolled_back_batch(
    settings: Settings,
) -> None:
    """prepare_connection (the sink pool's ``configure``) creates and commits the aggregates'
    staging tables: a batch rolled back afterwards does not take them away, and later batches
    upsert through them without creating them."""
    async with (
        migrated_database(settings) as url,
        await psycopg.AsyncConnection.connect(url) as conn,
    ):
        await prepare_connection(conn)
        temporary = (
            "SELECT count(*) FROM pg_class WHERE relpersistence = 't' "
            "AND relname LIKE 'citysense_stage_%'"
        )
        aggregates = [t for t in TABLES.values() if t.mode == "aggregate"]
        assert (await (await conn.execute(temporary)).fetchone()) == (len(aggregates),)
        await conn.commit()

        def batch(revision: int) -> dict[str, list[Row]]:
            rows = Rows()
            for _, value in framed("Aggregate", [aggregate_record("k", 0, revision=revision)]):
                add_record(rows, *decode_record(value))
            return rows.tables()

        await write_rows(conn, batch(1))
        await conn.rollback()
        assert (await (await conn.execute(temporary)).fetchone()) == (len(aggregates),)
        await conn.commit()
        assert await write_rows(conn, batch(2)) == {"noise_aggregates": 1}
        await conn.commit()
        assert await scalar(url, "SELECT revision FROM noise_aggregates WHERE key = 'k'") == 2


async def test_count_and_region_keys_lead_with_sensor_and_time(settings: Settings) -> None:
    """Migration 0006: each count or region row goes into two indexes (its key, led by the
    sensor and time, and TimescaleDB's time index), and the key still refuses a second row of
    the same natural key."""
    async with migrated_database(settings) as url:
        for table, key in (
            ("traffic_counts", '(sensor_id, "time", line, direction, traffic_class)'),
            ("occupancy_regions", '(sensor_id, "time", region)'),
        ):
            definitions = await scalar(
                url,
                "SELECT array_agg(indexdef ORDER BY indexname) FROM pg_indexes "
                "WHERE schemaname = 'public' AND tablename = %s",
                (table,),
            )
            assert len(definitions) == 2, definitions
            assert any(d.endswith(f"USING btree {key}") and "UNIQUE" in d for d in definitions)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            insert = "INSERT INTO occupancy_regions VALUES (%s, 'o', 1, 2)"
            await conn.execute(insert, (T0,))
            with pytest.raises(psycopg.errors.UniqueViolation):
                await conn.execute(insert, (T0,))


async def test_timestamps_sent_as_micros_arrive_as_the_records_instants(
    settings: Settings,
) -> None:
    """The sink decodes timestamps to µs since 2000 and COPYs them as int8 into timestamptz
    columns: the database holds the records' instants to the microsecond, before 2000 too,
    through the direct COPY and through the staging table alike."""
    odd = timedelta(microseconds=123_457)
    instants = [T0 + odd, datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), T0 - odd]
    noise = [
        dict(noise_record(f"ts{i}", i), observed_at=at, received_at=at + odd)
        for i, at in enumerate(instants)
    ]
    aggregates = [
        dict(aggregate_record(f"ts{i}", 0), window_start=at, window_end=at + odd)
        for i, at in enumerate(instants)
    ]

    def tables() -> dict[str, list[Row]]:
        rows = Rows()
        for value in [v for _, v in framed("NoiseMeasurement", noise)] + [
            v for _, v in framed("Aggregate", aggregates)
        ]:
            add_record(rows, *decode_record(value))
        return rows.tables()

    async with (
        migrated_database(settings) as url,
        await psycopg.AsyncConnection.connect(url) as conn,
    ):
        for copy_direct in (True, False):
            await write_rows(conn, tables(), copy_direct=copy_direct)
            await conn.commit()
        cursor = await conn.execute(
            "SELECT sensor_id, time, received_at FROM noise_measurements ORDER BY sensor_id"
        )
        assert await cursor.fetchall() == [
            (r["sensor_id"], r["observed_at"], r["received_at"]) for r in noise
        ]
        cursor = await conn.execute(
            "SELECT key, bucket, bucket_end FROM noise_aggregates ORDER BY key"
        )
        assert await cursor.fetchall() == [
            (a["key"], a["window_start"], a["window_end"]) for a in aggregates
        ]


async def test_an_older_aggregate_revision_never_overwrites_a_newer_one(settings: Settings) -> None:
    topic = unique("test.aggregates")
    config = sink_settings(topic)
    async with database(settings) as db:
        url = db.database.url.get_secret_value()

        async def stored(key: str) -> str:
            return str(
                await scalar(
                    url,
                    "SELECT row(revision, final, (indicators->>'laeq_db')::float)::text "
                    "FROM noise_aggregates WHERE key = %s",
                    (key,),
                )
            )

        async with TimescaleSink(db, config):
            # In one batch: newest revision first, then older ones.
            await produce(settings, topic, framed("Aggregate", [
                aggregate_record("a", 0, revision=2, laeq=70.0),
                aggregate_record("a", 0, revision=1, laeq=65.0),
                aggregate_record("a", 0, revision=0, laeq=60.0),
                # An intermediate emission, then the final one of the same revision.
                aggregate_record("b", 0, revision=0, final=False, laeq=50.0),
                aggregate_record("b", 0, revision=0, final=True, laeq=51.0),
                aggregate_record("c", 0, revision=0, laeq=40.0),
            ]))  # fmt: skip
            await wait_until(lambda: caught_up(db, url, config.group_id, topic), 60, "batch 1")
            assert await stored("a") == "(2,t,70)"
            assert await stored("b") == "(0,t,51)"
            # Later batches: an older revision, a stale intermediate, then a newer revision.
            await produce(settings, topic, framed("Aggregate", [
                aggregate_record("a", 0, revision=1, laeq=99.0),
                aggregate_record("b", 0, revision=0, final=False, laeq=99.0),
                aggregate_record("c", 0, revision=3, laeq=43.0),
            ]))  # fmt: skip
            await wait_until(lambda: caught_up(db, url, config.group_id, topic), 60, "batch 2")
            assert await stored("a") == "(2,t,70)"
            assert await stored("b") == "(0,t,51)"
            assert await stored("c") == "(3,t,43)"
        assert await count(url, "noise_aggregates") == 3


async def test_rejected_and_undecodable_records_go_to_the_dead_letter_topic(
    settings: Settings,
) -> None:
    noise, aggregates = unique("test.noise"), unique("test.aggregates")
    good = framed("NoiseMeasurement", (noise_record("n1", i) for i in range(200)))
    nul = framed("NoiseMeasurement", [noise_record("bad\x00sensor", 1)])
    zero_window = framed("Aggregate", [aggregate_record("k", 0, window_s=0)])
    await produce(settings, noise, [*good[:100], *nul, (b"x", b"not avro"), *good[100:]])
    await produce(
        settings, aggregates, [*framed("Aggregate", [aggregate_record("k", 1)]), *zero_window]
    )
    config = sink_settings(noise, aggregates)
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        async with TimescaleSink(db, config) as sink:
            await wait_until(
                lambda: caught_up(db, url, config.group_id, noise, aggregates), 60, "sink"
            )
            assert sink.ready()
        assert await count(url, "noise_measurements") == 200
        assert await count(url, "noise_aggregates") == 1
    letters = await read_topic(settings, config.dead_letter_topic, 3)
    assert {name for name, _ in letters} == {"DeadLetter"}
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for _, letter in letters:
        by_reason.setdefault(letter["reason"], []).append(letter)
    assert len(by_reason["undecodable"]) == 1
    assert by_reason["undecodable"][0]["payload"] == b"not avro"
    rejected = sorted(by_reason["rejected_by_database"], key=lambda d: d["original_topic"])
    assert [d["original_topic"] for d in rejected] == sorted([noise, aggregates])
    assert {d["error_class"] for d in rejected} >= {"CheckViolation"}
    assert (
        decode(rejected[[d["original_topic"] for d in rejected].index(noise)]["payload"])[1][
            "sensor_id"
        ]
        == "bad\x00sensor"
    )


async def test_stored_offset_beyond_the_partition_end_restarts_from_the_beginning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = unique("test.noise")
    await produce(
        settings, topic, framed("NoiseMeasurement", (noise_record("n", i) for i in range(60)))
    )
    config = sink_settings(topic)
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            for partition in range(settings.kafka.partitions):
                await conn.execute(
                    "INSERT INTO consumer_offsets VALUES (%s, %s, %s, 1000000)",
                    (config.group_id, topic, partition),
                )
        with caplog.at_level(logging.WARNING, logger="citysense.sink.timescale"):
            async with TimescaleSink(db, config):
                await wait_until(lambda: _eq(url, 60), 60, "rows")
                await wait_until(lambda: caught_up(db, url, config.group_id, topic), 60, "offsets")
        assert any("beyond the end" in r.getMessage() for r in caplog.records)
        # The stale offsets were reset in the database at once, not only in memory.
        assert max((await stored_offsets(url, config.group_id, topic)).values()) == 60


async def _eq(url: str, rows: int) -> bool:
    return await count(url, "noise_measurements") == rows


# --- failures --------------------------------------------------------------------------------


async def test_database_outage_of_30_s_under_load_loses_and_duplicates_nothing(
    settings: Settings, stack: Stack, caplog: pytest.LogCaptureFixture, lean: str
) -> None:
    topic = unique("test.noise")
    config = sink_settings(topic)
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        proxy = postgres_proxy(stack.postgres_port)
        sink_db = through_proxy(db, proxy, lean=lean)
        produced = 0

        async def load(seconds: float) -> None:
            nonlocal produced
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                batch = [noise_record(f"s{i % 50}", produced + i) for i in range(200)]
                await produce(settings, topic, framed("NoiseMeasurement", batch))
                produced += len(batch)
                await asyncio.sleep(0.2)

        try:
            with caplog.at_level(logging.INFO):
                async with TimescaleSink(sink_db, config) as sink:
                    loader = asyncio.create_task(load(38))
                    await wait_until(lambda: _nonzero(url), 30, "first rows")
                    assert sink.ready()
                    proxy.refuse()
                    cut_at = time.monotonic()
                    await wait_until(lambda: _not_ready(sink), 10, "sink not ready")
                    rows_during_cut = await count(url, "noise_measurements")
                    await asyncio.sleep(30 - (time.monotonic() - cut_at))
                    # Nothing could be written while the database was away.
                    assert await count(url, "noise_measurements") == rows_during_cut
                    assert not sink.ready()
                    proxy.restore()
                    # An attempt that started into the black hole just before the restore is
                    # abandoned only after the sink's 30 s attempt timeout, then backs off.
                    await wait_until(lambda: _ready(sink), 60, "sink ready again")
                    await loader
                    await wait_until(
                        lambda: caught_up(db, url, config.group_id, topic), 60, "catch-up"
                    )
        finally:
            proxy.stop()
        assert produced > 10_000
        assert await count(url, "noise_measurements") == produced
        assert (
            await count(url, "(SELECT DISTINCT sensor_id, time FROM noise_measurements) d")
            == produced
        )
        ends = await end_offsets(settings, topic)
        assert await stored_offsets(url, config.group_id, topic) == {
            p: o for p, o in ends.items() if o
        }
    password = url.split("@")[0].rsplit(":", 1)[1]
    assert password not in caplog.text
    assert "consumption paused" in caplog.text


async def test_partitions_reassigned_while_the_database_is_away_do_not_fail_the_sink(
    settings: Settings, stack: Stack
) -> None:
    """Regression: partitions handed back by a rebalance while the database is away cannot be
    positioned from the stored offsets yet; aiokafka's fetcher then finds no offset committed
    to Kafka (the sink keeps its offsets in the database) and raised NoOffsetForPartitionError
    out of getmany(), which failed the stage. They must wait for the database instead."""
    topic = unique("test.noise")
    config = sink_settings(topic)
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        proxy = postgres_proxy(stack.postgres_port)
        sink_db = through_proxy(db, proxy)
        first = [noise_record(f"s{i % 12}", i) for i in range(600)]
        await produce(settings, topic, framed("NoiseMeasurement", first))
        try:
            async with TimescaleSink(sink_db, config) as sink:
                await wait_until(
                    lambda: caught_up(db, url, config.group_id, topic), 30, "first records"
                )
                proxy.refuse()
                # A second member takes some partitions, then leaves: the sink gets them back
                # while it cannot read its stored offsets.
                other = kafka_consumer(
                    settings.kafka,
                    topic,
                    group_id=config.group_id,
                    session_timeout_ms=6000,
                    heartbeat_interval_ms=500,
                )
                await other.start()
                try:
                    await wait_until(lambda: _has_assignment(other), 30, "second member joins")
                finally:
                    await other.stop()
                second = [noise_record(f"s{i % 12}", 600 + i) for i in range(600)]
                await produce(settings, topic, framed("NoiseMeasurement", second))
                await wait_until(
                    lambda: _owns_every_partition(sink, settings, topic), 30, "reassignment"
                )
                await asyncio.sleep(3)  # several polls with the partitions unpositioned
                assert sink.failure is None
                proxy.restore()
                await wait_until(lambda: caught_up(db, url, config.group_id, topic), 60, "catch-up")
                assert sink.failure is None
        finally:
            proxy.stop()
        assert await count(url, "noise_measurements") == 1200


async def _has_assignment(consumer: Any) -> bool:
    return bool(consumer.assignment())


async def _owns_every_partition(sink: TimescaleSink, settings: Settings, topic: str) -> bool:
    assert sink.failure is None, sink.failure
    consumer = sink._consumer
    return (
        consumer is not None
        and len({tp for tp in consumer.assignment() if tp.topic == topic})
        == settings.kafka.partitions
    )


async def _nonzero(url: str) -> bool:
    return await count(url, "noise_measurements") > 0


async def _not_ready(sink: TimescaleSink) -> bool:
    return not sink.ready()


async def _ready(sink: TimescaleSink) -> bool:
    return sink.ready()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  (loopback only)
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _spawn_sink(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "sinks.timescale"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=Path(__file__).resolve().parents[2],
        )


async def test_kill_9_mid_batch_and_restart_writes_every_record_exactly_once(
    settings: Settings, tmp_path: Path, lean: str
) -> None:
    topic = unique("test.noise")
    records = [
        noise_record(f"k{i % 100}", i, laeq=30.0 + (i * 7919 % 1000) / 10) for i in range(40_000)
    ]
    await produce(settings, topic, framed("NoiseMeasurement", records))
    checksum = round(sum(r["laeq_db"] for r in records), 3)
    config = sink_settings(topic)
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
        env.update(
            CITYSENSE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
            CITYSENSE_KAFKA_IDEMPOTENCE="false",
            CITYSENSE_LEAN=lean,
            CITYSENSE_DATABASE_URL=url,
            CITYSENSE_HTTP_PORT=str(port),
            CITYSENSE_STACK_DIR=str(tmp_path),
            CITYSENSE_SINK_TOPICS=topic,
            CITYSENSE_SINK_GROUP_ID=config.group_id,
            CITYSENSE_SINK_DEAD_LETTER_TOPIC=config.dead_letter_topic,
            CITYSENSE_SINK_BATCH_MAX_RECORDS="1000",
            CITYSENSE_SINK_SESSION_TIMEOUT_MS="6000",
            CITYSENSE_SINK_HEARTBEAT_INTERVAL_MS="500",
        )
        log = tmp_path / "sink.log"
        proc = _spawn_sink(env, log)
        try:
            await wait_until(lambda: _more_than(url, 5000), 60, "first batches")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_at = await count(url, "noise_measurements")
            assert killed_at < len(records), "killed too late to test anything"
            proc = _spawn_sink(env, log)
            await wait_until(lambda: caught_up(db, url, config.group_id, topic), 90, "restart")
            status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
            assert status == 200, body
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert await count(url, "noise_measurements") == len(records)
        assert (
            round(float(await scalar(url, "SELECT sum(laeq_db) FROM noise_measurements")), 3)
            == checksum
        )
        assert int(
            await scalar(url, "SELECT count(DISTINCT (sensor_id, time)) FROM noise_measurements")
        ) == len(records)
    password = url.split("@")[0].rsplit(":", 1)[1]
    assert password not in log.read_text()


async def _more_than(url: str, rows: int) -> bool:
    return await count(url, "noise_measurements") > rows


async def _terminate_sessions(admin_url: str, database_name: str) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database_name,),
        )


def _latency_count() -> float:
    """Observations of the end-to-end latency histogram for noise rows so far."""
    value = REGISTRY.get_sample_value(
        "citysense_sink_end_to_end_latency_seconds_count", {"kind": "noise"}
    )
    return value or 0.0


async def _latency_is(expected: float) -> bool:
    count = _latency_count()
    assert count <= expected, f"{count} latency observations, {expected} rows"
    return count == expected


async def test_read_only_database_pauses_the_sink_until_it_is_writable_again(
    settings: Settings,
    lean: str,
) -> None:
    """Also: the end-to-end latency is observed once per committed row, and the failed
    transactions in between observe nothing (each of the 299 rows counts once, not per retry)."""
    topic = unique("test.noise")
    config = sink_settings(topic)
    admin_url = settings.database.url.get_secret_value()
    latency0 = _latency_count()
    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        name = url.rsplit("/", 1)[1]
        async with TimescaleSink(db.model_copy(update={"lean": lean}), config) as sink:
            await produce(settings, topic, framed("NoiseMeasurement", [noise_record("ro", 0)]))
            await wait_until(lambda: _eq(url, 1), 30, "first row")
            await wait_until(lambda: _latency_is(latency0 + 1), 5, "the first row's latency")
            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
                await conn.execute(
                    f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
                )
            await _terminate_sessions(admin_url, name)  # new sessions are read-only
            await produce(
                settings,
                topic,
                framed("NoiseMeasurement", (noise_record("ro", i) for i in range(1, 300))),
            )
            await wait_until(lambda: _not_ready(sink), 15, "sink not ready")
            assert await count(url, "noise_measurements") == 1
            assert _latency_count() == latency0 + 1
            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
                await conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            await _terminate_sessions(admin_url, name)
            await wait_until(lambda: _eq(url, 300), 30, "every row after the database is writable")
            assert sink.ready()
            await wait_until(lambda: _latency_is(latency0 + 300), 5, "every row's latency")


async def test_apache_retention_drops_old_chunks_only(settings: Settings) -> None:
    from datetime import UTC, datetime, timedelta

    from sinks.timescale._policies import apply_policies, drop_old_chunks

    async with database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            now = datetime.now(UTC)
            for age_days in (1, 100):
                await conn.execute(
                    "INSERT INTO noise_measurements (time, sensor_id, received_at, codec) "
                    "VALUES (%s, 'r', %s, 'c')",
                    (now - timedelta(days=age_days), now),
                )
                await conn.execute(
                    "INSERT INTO noise_aggregates (bucket, bucket_end, window_seconds, key, "
                    "revision, final, sample_count) VALUES (%s, %s, 60, 'r', 0, true, 1)",
                    (now - timedelta(days=age_days), now),
                )
            config = SinkSettings(raw_retention_days=90, aggregate_retention_days=None)
            report = await apply_policies(conn, config)
            assert report.licence == "apache"
            assert not report.retention_by_jobs
            assert not report.compression
            assert await drop_old_chunks(conn, config) == 1
        assert await count(url, "noise_measurements") == 1
        assert await count(url, "noise_aggregates") == 2  # aggregates kept forever by default


async def test_the_registry_fills_the_sensors_table(settings: Settings) -> None:
    from citysense.registry import load_registry, scenario_path
    from sinks.timescale._registry import sync_sensors

    registry = load_registry(scenario_path("nation"))
    async with database(settings) as db:
        conn = await connect_database(db.database, autocommit=True)
        try:
            await migrate(conn)
            assert await sync_sensors(conn, registry) == len(registry)
            assert await sync_sensors(conn, registry) == 0  # unchanged rows are not rewritten
            row = await (
                await conn.execute(
                    "SELECT kind, site, capacity, regions->>'1' FROM sensors WHERE id = 'pool-001'"
                )
            ).fetchone()
            assert row == ("occupancy", "piscine-nation", 150, "basin-1/lane-1")
            count = await (await conn.execute("SELECT count(*) FROM sensors")).fetchone()
            assert count == (len(registry),)
        finally:
            await conn.close()
