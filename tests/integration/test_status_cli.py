"""``citysense status`` against the real stack: a real sink process, Kafka and TimescaleDB.

Setting: a fresh database with seeded per-site window results, a topic holding N noise records
and two undecodable ones. Before the sink runs, the view must show every record as lag and the
sink down; after ``citysense sink`` has written them, the sink running with N + 2 records in, no
lag, the two dead letters, and each site's newest shortest window.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from citysense.clients import ensure_topics, kafka_producer
from citysense.settings import Settings
from citysense.stack import free_port
from sinks.timescale import migrate
from tests.sinks._helpers import framed, fresh_database, noise_record, unique, wait_until

#: The command line of the code under test (the installed script may belong to another checkout).
ROOT = Path(__file__).resolve().parents[2]
CITYSENSE = [sys.executable, "-c", "from citysense.cli import main; main()"]
RECORDS = 300
GARBAGE = 2

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, settings: Settings, topic: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(
        CITYSENSE_STACK_DIR=str(tmp_path),
        CITYSENSE_HTTP_PORT=str(port),
        CITYSENSE_PUBLISH_PORT=str(free_port()),
        CITYSENSE_MQTT_URL=settings.mqtt.url.get_secret_value(),
        CITYSENSE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        CITYSENSE_KAFKA_IDEMPOTENCE="false",
        CITYSENSE_DATABASE_URL=settings.database.url.get_secret_value(),
        CITYSENSE_SINK_TOPICS=topic,
        CITYSENSE_SINK_GROUP_ID=f"{topic}-sink",
        CITYSENSE_SINK_DEAD_LETTER_TOPIC=f"{topic}.dead",
        CITYSENSE_AGGREGATE_GROUP_ID=f"{topic}-aggregate",
        CITYSENSE_AGGREGATE_ROLLUP_GROUP_ID=f"{topic}-rollup",
    )
    return env


async def _status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*CITYSENSE, "status", "--interval", "0.5", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def _seed_sites(url: str, now: datetime) -> None:
    """Two windows and an older bucket for the Nation square (noise), one pool window."""
    minute = now.replace(second=0, microsecond=0)
    rows: list[tuple[str, str, int, datetime, dict[str, float]]] = [
        ("noise", "site:nation", 60, minute - timedelta(minutes=2), {"laeq_db": 58.04}),
        ("noise", "site:nation", 60, minute - timedelta(minutes=1), {"laeq_db": 63.47}),
        ("noise", "site:nation", 3600, minute - timedelta(hours=1), {"laeq_db": 49.0}),
        ("occupancy", "site:piscine-nation", 900, minute - timedelta(minutes=15),
         {"people_mean": 81.26, "occupancy_pct": 32.5}),
        # A sensor's own window is not a site's.
        ("noise", "noise-001", 60, minute - timedelta(minutes=1), {"laeq_db": 90.0}),
    ]  # fmt: skip
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for kind, key, size, start, values in rows:
            await conn.execute(
                f"INSERT INTO {kind}_aggregates (bucket, bucket_end, window_seconds, key, "
                "revision, final, sample_count, indicators) VALUES (%s, %s, %s, %s, 0, true, 1, "
                "%s)",
                (start, start + timedelta(seconds=size), size, key, json.dumps(values)),
            )


async def _produce(settings: Settings, topic: str) -> None:
    await ensure_topics(settings.kafka, [topic])
    producer = kafka_producer(settings.kafka)
    await producer.start()
    try:
        records = framed(
            "NoiseMeasurement", (noise_record(f"noise-{i % 7}", i) for i in range(RECORDS))
        )
        garbage = [(b"bad", b"not avro at all")] * GARBAGE
        futures = [await producer.send(topic, value, key=key) for key, value in records + garbage]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _lag(snapshot: dict[str, Any], stage: str) -> Any:
    return next(lag for lag in snapshot["lags"] if lag["stage"] == stage)


async def test_status_before_and_after_the_sink_has_caught_up(
    tmp_path: Path, settings: Settings
) -> None:
    topic = unique("status")
    port = free_port()
    async with fresh_database(settings) as db:
        url = db.database.url.get_secret_value()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
        await _seed_sites(url, datetime.now(UTC))
        await _produce(settings, topic)
        env = _env(tmp_path, db, topic, port)

        before = await _status(env, "--json")
        assert before.returncode == 0, before.stderr
        snapshot = json.loads(before.stdout)
        assert snapshot["problems"] == []
        stages = {stage["stage"]: stage for stage in snapshot["stages"]}
        assert not stages["sink"]["running"]
        assert _lag(snapshot, "sink")["records"] == RECORDS + GARBAGE
        sites = {(s["site"], s["kind"]): s for s in snapshot["sites"]}
        assert set(sites) == {("nation", "noise"), ("piscine-nation", "occupancy")}
        # The shortest window, its newest bucket.
        assert sites["nation", "noise"]["window_seconds"] == 60
        assert sites["nation", "noise"]["indicators"] == {"laeq_db": 63.47}
        assert sites["piscine-nation", "occupancy"]["indicators"]["people_mean"] == 81.26

        sink = await asyncio.create_subprocess_exec(
            *CITYSENSE, "sink", env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:

            async def written() -> bool:
                if sink.returncode is not None:
                    error = await sink.stderr.read() if sink.stderr else b""
                    raise AssertionError(f"the sink exited: {error.decode()[-2000:]}")
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    cur = await conn.execute(
                        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets "
                        "WHERE group_id = %s",
                        (f"{topic}-sink",),
                    )
                    row = await cur.fetchone()
                return row is not None and int(row[0]) == RECORDS + GARBAGE

            await wait_until(written, 60, "the sink to commit every record")
            after = await _status(env, "--json")
            assert after.returncode == 0, after.stderr
            snapshot = json.loads(after.stdout)
            stages = {stage["stage"]: stage for stage in snapshot["stages"]}
            assert stages["sink"]["running"]
            assert stages["sink"]["total_in"] == RECORDS + GARBAGE
            assert stages["sink"]["rate_in"] == 0  # nothing left to read
            assert _lag(snapshot, "sink")["records"] == 0
            assert snapshot["dead_letters"] == GARBAGE
            assert list(snapshot["processes"]) == [f"run@{port}"]
            assert (snapshot["processes"][f"run@{port}"] or 0) > 10 * 1024 * 1024

            # The same snapshot for people: one rich view on stdout.
            view = await _status(env, "--once")
            assert view.returncode == 0, view.stderr
            assert "running" in view.stdout
            assert "piscine-nation" in view.stdout
            assert "laeq_db=63.5" in view.stdout
        finally:
            if sink.returncode is None:
                sink.terminate()
            try:
                async with asyncio.timeout(30):
                    await sink.communicate()
            except TimeoutError:
                sink.kill()
                await sink.wait()
        # A clean drain on SIGTERM: the view never disturbed the stage.
        assert sink.returncode == 0
