"""A measurement ingest delivered twice (the MQTT broker's redelivery, the producer's retry) is
counted once in its window, as the sink's primary key keeps one row of it: the fault suite found
windows counting both copies, so they differed from a recomputation from the raw table."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import schemas
from citysense.clients import ensure_topics, kafka_producer
from citysense.settings import Settings
from streams import AggregateService
from tests.streams._records import noise
from tests.streams.test_service_integration import (
    AGGREGATES,
    MINUTE,
    SECOND,
    _aggregates,
    _future_base,
    _read,
    _settings,
)

pytestmark = pytest.mark.integration


async def test_a_measurement_delivered_twice_counts_once(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    sensor = f"dup-{tag}"
    config = _settings(settings, f"aggregate-dup-{tag}")
    topic = schemas.measurement_topic("noise")
    await ensure_topics(settings.kafka, [topic, AGGREGATES])
    base = _future_base()
    # Minute 0: six measurements, the third delivered twice; a later one closes the minute.
    items = [noise(sensor, base + k * 10 * SECOND, 50.0 + k) for k in range(6)]
    deliveries = [*items[:3], items[2], *items[3:]]
    closing = noise(sensor, base + 2 * MINUTE, 40.0)
    producer = kafka_producer(config.kafka)
    await producer.start()
    try:
        for index, (key, value) in enumerate([*deliveries, closing]):
            identity = f"{sensor}:{index if index < 3 else index - 1}".encode()
            await producer.send_and_wait(
                topic, value, key=key.encode(), headers=[("idempotency-key", identity)]
            )
    finally:
        await producer.stop()

    def ours(record: Any) -> bool:
        return bool(record.key and record.key.decode() == sensor)

    service = AggregateService(config)
    await service.start()
    try:
        (minute,) = [
            r
            for r in _aggregates(await _read(config, AGGREGATES, ours, 1))
            if r["window_start"] == base
        ]
    finally:
        await service.stop()
    assert minute["sample_count"] == 6
