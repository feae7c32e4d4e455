"""The aggregator service on the real Kafka-protocol broker: results, revisions, late records,
and a restart that neither loses nor repeats a window."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

import schemas
from citysense.clients import ensure_topics, kafka_producer
from citysense.settings import AggregateSettings, Settings, WindowSettings
from streams import AggregateService
from tests.streams._records import noise
from tests.streams._reference import reference_windows

pytestmark = pytest.mark.integration

SECOND = 1_000_000
MINUTE = 60 * SECOND
AGGREGATES = schemas.aggregate_topic("noise")


def _future_base() -> int:
    """Event times an hour ahead: no other test's records (event time now) can make ours late."""
    now = time.time_ns() // 1000 + 3600 * SECOND
    return now - now % MINUTE


def _settings(settings: Settings, group: str) -> Settings:
    aggregate = AggregateSettings(
        group_id=group,
        kinds=("noise",),
        windows=(
            WindowSettings(
                name="1m", size_s=60, grace_s=5, allowed_lateness_s=120, scopes=("sensor",)
            ),
        ),
        daily={"enabled": False},
        idle_timeout_s=2.0,
        commit_interval_s=0.2,
    )
    return settings.model_copy(update={"aggregate": aggregate})


async def _produce(settings: Settings, items: list[tuple[str, bytes]]) -> None:
    producer = kafka_producer(settings.kafka)
    await producer.start()
    try:
        sends = [
            await producer.send(schemas.measurement_topic("noise"), v, key=k.encode())
            for k, v in items
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _read(
    settings: Settings,
    topic: str,
    keep: Callable[[Any], bool],
    expected: int,
    *,
    deadline_s: float = 60.0,
    quiet_s: float = 2.0,
) -> list[Any]:
    consumer = AIOKafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    found: list[Any] = []
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        end = time.monotonic() + deadline_s
        last_new = time.monotonic()
        while time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            fresh = [r for records in batch.values() for r in records if keep(r)]
            if fresh:
                found.extend(fresh)
                last_new = time.monotonic()
            elif len(found) >= expected and time.monotonic() - last_new > quiet_s:
                break
        return found
    finally:
        await consumer.stop()


def _aggregates(records: list[Any]) -> list[dict[str, Any]]:
    out = []
    for record in records:
        _, value = schemas.decode(record.value)
        value["window_start"] = schemas.epoch_micros(value["window_start"])
        out.append(value)
    return out


async def test_results_revisions_late_records_and_a_restart(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    sensors = [f"agg-{tag}-{i}" for i in range(3)]
    base = _future_base()
    config = _settings(settings, f"aggregate-test-{tag}")
    await ensure_topics(settings.kafka, [schemas.measurement_topic("noise"), AGGREGATES])
    measured = [
        (s, base + k * 10 * SECOND, {"laeq_db": 50.0 + (k * 7 + i) % 30})
        for k in range(24)
        for i, s in enumerate(sensors)
    ]
    # The closing record: watermark = base + 6 min - 10 s, past [base + 3 min, + 4 min) + 5 s.
    closing = (sensors[0], base + 6 * MINUTE, {"laeq_db": 40.0})
    await _produce(config, [noise(s, t, v["laeq_db"]) for s, t, v in [*measured, closing]])

    def ours(record: Any) -> bool:
        return bool(record.key and record.key.decode().startswith(f"agg-{tag}-"))

    service = AggregateService(config)
    await service.start()
    try:
        first = _aggregates(await _read(config, AGGREGATES, ours, 12))
        expected = reference_windows("noise", measured, 60, dict.fromkeys(sensors, 60.0))
        got = {(r["key"], r["window_start"]): (r["sample_count"], r["values"]) for r in first}
        assert got == expected
        # A window's revision is its sample count (higher for every later emission).
        assert all(r["revision"] == r["sample_count"] == 6 for r in first)
        # The watermark is base + 5:50: [base, + 1 min) expired at base + 3:05, while
        # [base + 3 min, + 4 min) expires at base + 6:05, so a record for it makes a revision.
        await _produce(config, [noise(sensors[1], base + 3 * MINUTE + SECOND, 99.0)])
        await _produce(config, [noise(sensors[2], base + 30 * SECOND, 99.0)])  # beyond
        revised = _aggregates(
            await _read(config, AGGREGATES, lambda r: ours(r) and _revision(r) > 6, 1)
        )
        assert [(r["key"], r["window_start"], r["revision"]) for r in revised] == [
            (sensors[1], base + 3 * MINUTE, 7)
        ]
        assert revised[0]["values"]["lamax_db"] == 99.0
        late = await _read(config, schemas.LATE_TOPIC, ours, 1)
        (late_record,) = [schemas.decode(r.value)[1] for r in late]
        assert late_record["reason"] == "beyond_allowed_lateness"
        assert schemas.epoch_micros(late_record["observed_at"]) == base + 30 * SECOND
    finally:
        await service.stop()

    # A new process of the same group replays from the committed offsets: no window is sent
    # twice, and the next window closes with everything it had before the restart.
    await _produce(config, [noise(sensors[0], base + 8 * MINUTE, 40.0)])
    restarted = AggregateService(config)
    await restarted.start()
    try:
        everything = _aggregates(await _read(config, AGGREGATES, ours, 14))
    finally:
        await restarted.stop()
    identities = [(r["key"], r["window_start"], r["revision"]) for r in everything]
    assert len(identities) == len(set(identities)), "a window was emitted twice"
    assert (sensors[0], base + 6 * MINUTE, 1) in identities


def _revision(record: Any) -> int:
    return int(schemas.decode(record.value)[1]["revision"])
