"""The aggregator outlives a Kafka outage: it keeps its state, sends again what Kafka did not
acknowledge, and its windows come out once Kafka is back (it used to fail on the first commit
that timed out, and a restart then had to replay everything since the last commit)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import schemas
from citysense.clients import ensure_topics
from citysense.settings import KafkaSettings, Settings
from streams import AggregateService
from tests._proxy import FaultProxy, proxied_kafka
from tests.streams._records import noise
from tests.streams.test_service_integration import (
    AGGREGATES,
    MINUTE,
    SECOND,
    _future_base,
    _produce,
    _read,
    _settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def outage_kafka() -> Iterator[tuple[KafkaSettings, FaultProxy]]:
    with proxied_kafka() as pair:
        yield pair


async def test_the_aggregator_outlives_a_kafka_outage_and_sends_its_windows_after(
    settings: Settings, outage_kafka: tuple[KafkaSettings, FaultProxy]
) -> None:
    kafka, proxy = outage_kafka
    tag = uuid.uuid4().hex[:8]
    config = _settings(settings, f"aggregate-outage-{tag}").model_copy(update={"kafka": kafka})
    await ensure_topics(kafka, [schemas.measurement_topic("noise"), AGGREGATES])
    base = _future_base()
    sensor = f"outage-{tag}"

    def ours(record: Any) -> bool:
        return bool(record.key and record.key.decode() == sensor)

    # Minute 0 closes before the outage (the watermark passes it), minute 1 only after.
    await _produce(config, [noise(sensor, base + k * 10 * SECOND, 50.0) for k in range(9)])
    service = AggregateService(config)
    await service.start()
    try:
        assert len(await _read(config, AGGREGATES, ours, 1, quiet_s=1.0)) == 1
        proxy.drop()  # a black hole: requests and commits time out, nothing is refused
        # Longer than the commit timeout (10 s) and a producer request's (aiokafka's default is
        # 40 s would be too long here: the commit is what used to fail the stage).
        for _ in range(30):
            await asyncio.sleep(0.5)
            assert service.failure is None, service.failure
        proxy.restore()
        await _produce(
            config, [noise(sensor, base + 2 * MINUTE + k * 10 * SECOND, 60.0) for k in range(9)]
        )
        windows = await _read(config, AGGREGATES, ours, 2, deadline_s=120, quiet_s=2.0)
        assert service.failure is None, service.failure
        assert service.ready()
    finally:
        await service.stop()
    starts = sorted(
        {schemas.epoch_micros(schemas.decode(r.value)[1]["window_start"]) for r in windows}
    )
    assert starts[:2] == [base, base + MINUTE]
