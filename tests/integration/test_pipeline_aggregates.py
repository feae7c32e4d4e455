"""The whole path on its own real stack: simulator → ingest → aggregate → sink fills the
``*_aggregates`` tables with 1-minute, 1-hour and daily rows; and an aggregator process killed
with SIGKILL mid-stream and restarted gives the same final windows as an uninterrupted run.

These tests use a stack of their own: their event times (a simulated day, two days ago) would be
late behind the event times other tests leave on the shared stack's topics.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

import schemas
from citysense.clients import ensure_topics, kafka_producer
from citysense.registry import Registry, load_registry, scenario_path
from citysense.runtime import Component
from citysense.settings import (
    AggregateSettings,
    DatabaseSettings,
    IngestSettings,
    KafkaSettings,
    MqttSettings,
    PublishSettings,
    Settings,
    SinkSettings,
)
from citysense.stack import Stack, free_port, temporary_stack
from ingest import IngestService
from simulators import Fleet, Publisher
from sinks.opendata import PublishService, default_catalog
from sinks.timescale import TimescaleSink
from streams import AggregateService, WindowStage
from streams import _metrics as metrics
from streams._columns import extract
from streams._indicators import PARIS
from tests.streams._records import Polled, noise

pytestmark = pytest.mark.integration

CITYSENSE = str(Path(sys.executable).with_name("citysense"))
SECOND = 1_000_000


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    with temporary_stack("citysense-e2e-", only=("mosquitto", "kafka", "postgres")) as stack:
        yield stack


@pytest.fixture(scope="module")
def own_settings(own_stack: Stack) -> Settings:
    env = own_stack.env()
    return Settings(
        mqtt=MqttSettings(url=env["CITYSENSE_MQTT_URL"], client_id="e2e-ingest"),
        kafka=KafkaSettings(bootstrap=env["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False),
        database=DatabaseSettings(url=env["CITYSENSE_DATABASE_URL"]),
        ingest=IngestSettings(linger_ms=2),
        sink=SinkSettings(batch_max_wait_s=0.2),
        aggregate=AggregateSettings(idle_timeout_s=10.0, commit_interval_s=1.0),
    )


def _simulated_day(registry: Registry) -> tuple[list[Any], date]:
    """Every sensor once a simulated minute, from a local midnight two days ago to 00:20 the
    next day (past the day's end + the daily grace of 5 minutes)."""
    day = (datetime.now(PARIS) - timedelta(days=2)).date()
    start = datetime.combine(day, dtime(0), tzinfo=PARIS).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), dtime(0, 20), tzinfo=PARIS).astimezone(UTC)
    moment = [start]
    fleet = Fleet(registry, seed=3, clock=lambda: moment[0], replay=True)
    messages: list[Any] = []
    while moment[0] < end:
        messages += fleet.next_batch(len(fleet.sensors))
        moment[0] += timedelta(minutes=1)
    return messages, day


def _publish(settings: Settings, messages: list[Any]) -> None:
    with Publisher(settings.mqtt, f"e2e-pub-{uuid.uuid4().hex[:8]}") as publisher:
        for first in range(0, len(messages), 500):
            publisher.publish_batch(messages[first : first + 500])
        publisher.wait_acked()


async def _rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(
        settings.database.url.get_secret_value()
    ) as conn:
        cursor = await conn.execute(sql)
        return await cursor.fetchall()


async def test_simulated_day_fills_minute_hour_and_daily_aggregates(own_settings: Settings) -> None:
    registry = load_registry(scenario_path("nation"))
    messages, day = _simulated_day(registry)
    publish = PublishService(
        own_settings.model_copy(update={"publish": PublishSettings(port=0)}),
        default_catalog(PublishSettings()),
    )
    components: list[Component] = [
        TimescaleSink(own_settings, own_settings.sink, registry),
        publish,
        AggregateService(own_settings, registry),
        IngestService(own_settings, registry),
    ]
    for component in components:
        await component.start()
    live: dict[tuple[str, datetime], float] = {}
    listening = asyncio.create_task(
        _follow_live(f"http://127.0.0.1:{publish.port}/api/live/bruit-horaire", live)
    )
    try:
        await asyncio.to_thread(_publish, own_settings, messages)
        query = (
            "SELECT window_seconds, count(*) FROM noise_aggregates "
            "WHERE key = 'site:nation' GROUP BY 1 ORDER BY 1"
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            sizes = dict(await _rows(own_settings, query))
            # Every window of the day is in (topics are consumed in no fixed order between
            # them, so the daily row may come before the last minutes under load).
            if (
                sizes.get(86_400)
                and sizes.get(60, 0) >= 24 * 60
                and sizes.get(3600, 0) >= 24
                and sizes.get(900, 0) >= 96
            ):
                break
            await asyncio.sleep(1)
        # Quiet the pipeline (intake first, the sink drains last), then read the API.
        for component in reversed(components):
            if component is not publish:
                await component.stop()
        expected = await _api_matches_the_tables(own_settings, f"http://127.0.0.1:{publish.port}")
        # The live feed sent every hourly row, the newest revision last.
        for _ in range(60):
            if live == expected or listening.done():
                break
            await asyncio.sleep(0.5)
        if listening.done():
            listening.result()  # the feed's client failed: show why
        assert live == expected
    finally:
        listening.cancel()
        for component in reversed(components):
            await component.stop()
    # A whole local day of minutes and hours for the site (plus the 20 minutes after).
    why = _late_so_far()
    assert sizes[60] >= 24 * 60, why
    assert sizes[3600] >= 24, why
    assert sizes[900] >= 96, why
    daily = await _rows(
        own_settings,
        "SELECT key, indicators, bucket FROM noise_aggregates "
        "WHERE window_seconds = 86400 ORDER BY key",
    )
    keys = {key for key, _, _ in daily}
    assert "site:nation" in keys
    assert {s.id for s in registry.sensors.values() if s.kind == "noise"} <= keys
    for _key, indicators, bucket in daily:
        assert bucket == datetime.combine(day, dtime(0), tzinfo=PARIS)
        assert {"ld_db", "le_db", "ln_db", "lden_db"} <= set(indicators)
        # Lden weights evening and night up: never below the quietest period's level.
        assert indicators["lden_db"] >= min(indicators[p] for p in ("ld_db", "le_db", "ln_db"))
    hourly_air = await _rows(
        own_settings,
        "SELECT indicators FROM air_aggregates "
        "WHERE window_seconds = 3600 AND key NOT LIKE 'site:%'",
    )
    assert hourly_air
    assert all(1 <= row[0]["eaqi_band"] <= 6 for row in hourly_air if "eaqi_band" in row[0])
    traffic_daily = await _rows(
        own_settings, "SELECT counts FROM traffic_aggregates WHERE window_seconds = 86400"
    )
    assert traffic_daily
    assert all(entry["count"] >= 0 for row in traffic_daily for entry in row[0] or [])


def _late_so_far() -> str:
    """The aggregator's late-record counters, to say why windows are missing when some are."""
    counts = {
        (sample.labels["kind"], sample.labels["reason"]): sample.value
        for metric in metrics.LATE_RECORDS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    }
    return f"late records so far (kind, reason): {counts}"


async def _follow_live(url: str, seen: dict[tuple[str, datetime], float]) -> None:
    """Every event of a live feed into ``seen``: (sensor, start) -> the newest LAeq."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=120)) as client,
        client.stream("GET", url) as response,
    ):
        event = ""
        lines: list[str] = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "bruit-horaire":
                row = json.loads(line.partition(":")[2])
                seen[(row["sensor_id"], datetime.fromisoformat(row["start_time"]))] = row["laeq_db"]
    raise AssertionError(f"the live feed ended: {response.status_code} {lines[-8:]}")


async def _api_matches_the_tables(
    settings: Settings, base: str
) -> dict[tuple[str, datetime], float]:
    """The published datasets, read through the API, hold the numbers of the aggregate tables;
    returns the hourly noise rows."""
    datasets = f"{base}/api/explore/v2.1/catalog/datasets"
    async with httpx.AsyncClient(timeout=60) as client:
        hourly = (await client.get(f"{datasets}/bruit-horaire/exports/json")).json()
        daily = (await client.get(f"{datasets}/bruit-lden-journalier/exports/json")).json()
        air = (await client.get(f"{datasets}/qualite-air-horaire/exports/json")).json()
        measures = (await client.get(f"{datasets}/comptage-mobilites-mesures/exports/json")).json()
    expected_hourly = {
        (key, bucket): indicators["laeq_db"]
        for key, bucket, indicators in await _rows(
            settings,
            "SELECT key, bucket, indicators FROM noise_aggregates WHERE window_seconds = 3600 "
            "AND final AND key NOT LIKE 'site:%' AND indicators ? 'laeq_db'",
        )
    }
    assert expected_hourly
    assert {
        (r["sensor_id"], datetime.fromisoformat(r["start_time"])): r["laeq_db"] for r in hourly
    } == expected_hourly
    expected_daily = {
        key: indicators["lden_db"]
        for key, indicators in await _rows(
            settings,
            "SELECT key, indicators FROM noise_aggregates WHERE window_seconds = 86400 "
            "AND final AND key NOT LIKE 'site:%'",
        )
    }
    assert {r["sensor_id"]: r["lden_db"] for r in daily} == expected_daily
    expected_bands = {
        (key, bucket): indicators.get("eaqi_band")
        for key, bucket, indicators in await _rows(
            settings,
            "SELECT key, bucket, indicators FROM air_aggregates WHERE window_seconds = 3600 "
            "AND final AND key NOT LIKE 'site:%'",
        )
    }
    assert {
        (r["sensor_id"], datetime.fromisoformat(r["start_time"])): r["eaqi_band"] for r in air
    } == expected_bands
    # Comptage des mobilités: the published hourly counts add up to the traffic windows' counts.
    (counted,) = await _rows(
        settings,
        "SELECT coalesce(sum((c->>'count')::bigint), 0) FROM traffic_aggregates, "
        "jsonb_array_elements(coalesce(counts, '[]')) c "
        "WHERE window_seconds = 3600 AND final AND key NOT LIKE 'site:%'",
    )
    assert counted[0] > 0
    assert sum(r["count"] or 0 for r in measures) == counted[0]
    return expected_hourly


# --- kill -9 ------------------------------------------------------------------------------------


def _aggregate_env(settings: Settings, group: str, port: int, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(
        CITYSENSE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        CITYSENSE_KAFKA_IDEMPOTENCE="false",
        CITYSENSE_HTTP_PORT=str(port),
        CITYSENSE_STACK_DIR=str(home),
        CITYSENSE_AGGREGATE_GROUP_ID=group,
        CITYSENSE_AGGREGATE_KINDS="noise",
        CITYSENSE_AGGREGATE_WINDOWS=(
            '[{"name": "1m", "size_s": 60, "grace_s": 1, "allowed_lateness_s": 60,'
            ' "scopes": ["sensor"]},'
            ' {"name": "1h", "size_s": 3600, "grace_s": 1, "allowed_lateness_s": 60,'
            ' "scopes": ["sensor"]}]'
        ),
        CITYSENSE_AGGREGATE_DAILY='{"enabled": false}',
        CITYSENSE_AGGREGATE_COMMIT_INTERVAL_S="0.5",
        CITYSENSE_AGGREGATE_MAX_POLL_RECORDS="500",
    )
    return env


def _stream(tag: str) -> list[tuple[str, bytes]]:
    """200 sensors, one record every 10 s for 3 hours of event time, in time order, starting
    in the next hour: after every event time the other test left on this stack's topics."""
    now = time.time_ns() // 1000 + 3600 * SECOND
    base = now - now % (3600 * SECOND)
    return [
        noise(f"kill-{tag}-{s:03d}", base + k * 10 * SECOND, 40.0 + (k * 13 + s) % 50)
        for k in range(3 * 360)
        for s in range(200)
    ]


async def _final_windows(settings: Settings, tag: str, expected: int) -> dict[Any, Any]:
    """(key, start, size) → the highest revision's record; asserts same revision = same bytes."""
    consumer = AIOKafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    seen: dict[tuple[str, int, int, int], bytes] = {}
    try:
        topic = schemas.aggregate_topic("noise")
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + 240
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            fresh = [
                r for rs in batch.values() for r in rs if r.key.startswith(f"kill-{tag}".encode())
            ]
            for record in fresh:
                _, value = schemas.decode(record.value)
                identity = (
                    value["key"],
                    schemas.epoch_micros(value["window_start"]),
                    value["window_size_seconds"],
                    value["revision"],
                )
                assert seen.setdefault(identity, record.value) == record.value, identity
            if fresh:
                quiet_since = time.monotonic()
            elif len({i[:3] for i in seen}) >= expected and time.monotonic() - quiet_since > 3:
                break
    finally:
        await consumer.stop()
    final: dict[Any, Any] = {}
    for (key, start, size, revision), frame in sorted(seen.items()):
        final[(key, start, size)] = (revision, frame)
    return final


async def _late_records(settings: Settings, tag: str) -> list[Any]:
    """This test's records on the late topic."""
    consumer = AIOKafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        topic = schemas.LATE_TOPIC
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        for _ in range(10):
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for rs in batch.values():
                for r in rs:
                    if r.key and r.key.startswith(f"kill-{tag}".encode()):
                        late = schemas.decode(r.value)[1]
                        out.append((late["key"], late["observed_at"], late["reason"]))
    finally:
        await consumer.stop()
    return out


def _uninterrupted(items: list[tuple[str, bytes]], settings: AggregateSettings) -> dict[Any, Any]:
    """The same input through the same stage logic, uninterrupted, in one batch."""
    stage = WindowStage("noise", settings, lambda _sensor: (60.0, None))
    polled = [Polled(k.encode(), v, i) for i, (k, v) in enumerate(items)]
    stage.fold("all", extract(polled, "noise", stage.keys), 0.0)
    results: dict[Any, Any] = {}
    for result in stage.advance(0.0):
        identity = (result["key"], result["window_start"], result["window_size_seconds"])
        results[identity] = (result["revision"], schemas.encode("Aggregate", result))
    return results


async def _wait_for_records(port: int, at_least: int, proc: Any) -> None:
    """Until the process's ``citysense_aggregate_records_total`` reaches ``at_least``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.returncode is None, "the aggregator exited"
        try:
            body = await asyncio.to_thread(_metrics, port)
        except OSError:
            body = ""
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("citysense_aggregate_records_total{")
        )
        if total >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the aggregator did not read {at_least} records")


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return str(response.read().decode())


async def test_kill_9_mid_stream_and_restart_give_the_uninterrupted_windows(
    own_settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    items = _stream(tag)
    topic = schemas.measurement_topic("noise")
    await ensure_topics(own_settings.kafka, [topic, schemas.aggregate_topic("noise")])
    producer = kafka_producer(own_settings.kafka, linger_ms=20)
    await producer.start()
    try:
        sends = [await producer.send(topic, v, key=k.encode()) for k, v in items]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    group = f"kill-{tag}"
    port = free_port()
    env = _aggregate_env(own_settings, group, port, tmp_path)
    for kill in range(2):
        proc = await asyncio.create_subprocess_exec(
            CITYSENSE, "aggregate", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        # Mid-stream: once this process has read a quarter (then a half) of the records.
        await _wait_for_records(port, len(items) * (kill + 1) // 4, proc)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    proc = await asyncio.create_subprocess_exec(
        CITYSENSE, "aggregate", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        stage_settings = AggregateSettings.model_validate(
            {
                "windows": [
                    {"name": "1m", "size_s": 60, "grace_s": 1, "allowed_lateness_s": 60,
                     "scopes": ["sensor"]},
                    {"name": "1h", "size_s": 3600, "grace_s": 1, "allowed_lateness_s": 60,
                     "scopes": ["sensor"]},
                ],
                "daily": {"enabled": False},
            }
        )  # fmt: skip
        expected = _uninterrupted(items, stage_settings)
        got = await _final_windows(own_settings, tag, len(expected))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert await _late_records(own_settings, tag) == []  # in time order: nothing is late
    # Windows still open at the end of the stream are not emitted by either run.
    assert set(got) == set(expected)
    assert got == expected
