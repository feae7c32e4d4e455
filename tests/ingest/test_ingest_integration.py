"""Ingest on the real stack: counts, dead letters with their bytes, garbage floods."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

import schemas
from citysense.registry import Registry, load_registry, scenario_path
from citysense.settings import IngestSettings, MqttSettings, Settings
from decoders import DecodeError, get_codec
from decoders.envelopes import parse_uplink
from ingest import IngestService
from simulators import Fleet, Outgoing, Publisher
from tests.ingest._kafka_read import by_topic, collect, header, now_us

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nation() -> Registry:
    return load_registry(scenario_path("nation"))


def _settings_for(settings: Settings, client_id: str, lean: str = "1") -> Settings:
    mqtt = MqttSettings(url=settings.mqtt.url, client_id=client_id)
    return settings.model_copy(
        update={"mqtt": mqtt, "ingest": IngestSettings(linger_ms=2), "lean": lean}
    )


@pytest.fixture
async def service(settings: Settings, nation: Registry, lean: str) -> AsyncIterator[IngestService]:
    """Ingest with every fast path on, then with every one off (the ``lean`` fixture)."""
    ingest = IngestService(_settings_for(settings, f"ingest-{uuid.uuid4().hex[:8]}", lean), nation)
    await ingest.start()
    try:
        yield ingest
    finally:
        await ingest.stop()


def _is_malformed(registry: Registry, message: Outgoing) -> bool:
    try:
        if message.topic.startswith(("application/", "v3/")):
            uplink = parse_uplink(message.topic, message.payload)
            sensor = registry.by_dev_eui[uplink.dev_eui or ""]
            get_codec(sensor.codec).decode(uplink.payload, uplink.fport, sensor.profile())
        else:
            sensor_or_none = registry.get(message.topic.split("/")[-2])
            assert sensor_or_none is not None
            get_codec(sensor_or_none.codec).decode(message.payload, None, sensor_or_none.profile())
    except DecodeError:
        return True
    return False


def _publish(settings: Settings, messages: list[Outgoing]) -> None:
    with Publisher(settings.mqtt, f"pub-{uuid.uuid4().hex[:8]}") as publisher:
        for start in range(0, len(messages), 200):
            publisher.publish_batch(messages[start : start + 200])
        publisher.wait_acked()


async def test_valid_and_malformed_land_in_their_topics_with_raw_bytes(
    settings: Settings, nation: Registry, service: IngestService
) -> None:
    assert service.ready()
    fleet = Fleet(nation, seed=11, bad_ratio=0.15, late_ratio=0.1)
    messages = fleet.next_batch(3000)
    malformed = [m for m in messages if _is_malformed(nation, m)]
    assert len(malformed) == fleet.stats.malformed > 0
    valid = len(messages) - len(malformed)
    since = now_us()
    await asyncio.to_thread(_publish, settings, messages)
    records = await collect(settings.kafka, since, len(messages))

    counts = by_topic(records)
    assert counts.pop(schemas.DEADLETTER_TOPIC) == len(malformed)
    assert counts == {schemas.measurement_topic(k): n for k, n in fleet.stats.by_kind.items()}
    assert sum(counts.values()) == valid
    dead = [r for r in records if r.topic == schemas.DEADLETTER_TOPIC]
    payloads = sorted(
        (d["original_topic"], d["payload"]) for d in (schemas.decode(r.value)[1] for r in dead)
    )
    assert payloads == sorted((m.topic, m.payload) for m in malformed)
    for record in dead:
        _name, letter = schemas.decode(record.value)
        assert letter["reason"] in {"truncated", "invalid", "unknown_channel", "unknown_fport"}
        assert letter["error_message"]
    measurements = [r for r in records if r.topic != schemas.DEADLETTER_TOPIC]
    keys = {header(r, "idempotency-key") for r in measurements}
    assert len(keys) == valid  # every valid message once, each with its own key
    sample = measurements[0]
    assert header(sample, "content-type") is not None
    name, record = schemas.decode(sample.value)
    assert header(sample, "schema-fingerprint") == schemas.fingerprint(name).hex().encode()
    assert sample.key == record["sensor_id"].encode()


async def test_redelivered_lorawan_uplinks_are_counted_as_duplicates(
    settings: Settings, nation: Registry, service: IngestService
) -> None:
    from ingest._metrics import METRICS

    fleet = Fleet(nation, seed=12)
    lorawan = [m for m in fleet.next_batch(400) if m.topic.startswith(("application/", "v3/"))]
    since = now_us()
    duplicates_before = METRICS.duplicates._value.get()
    await asyncio.to_thread(_publish, settings, lorawan + lorawan[:50])
    records = await collect(settings.kafka, since, len(lorawan), deadline_s=30)
    assert len(records) == len(lorawan)
    assert METRICS.duplicates._value.get() - duplicates_before == 50


async def test_a_garbage_flood_does_not_stop_valid_messages(
    settings: Settings, nation: Registry, service: IngestService
) -> None:
    flood = Fleet(nation, seed=13, bad_ratio=1.0).next_batch(20_000)
    valid_fleet = Fleet(nation, seed=14)
    valid = valid_fleet.next_batch(500)
    since = now_us()
    peak_unacknowledged = 0

    async def watch() -> None:
        nonlocal peak_unacknowledged
        while True:
            peak_unacknowledged = max(peak_unacknowledged, service.unacknowledged)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    await asyncio.to_thread(_publish, settings, flood + valid)
    records = await collect(settings.kafka, since, len(flood) + len(valid), deadline_s=120)
    watcher.cancel()
    # In flight stays within the MQTT receive maximum even when the broker overruns it.
    assert 0 < peak_unacknowledged <= IngestSettings().max_inflight
    counts = by_topic(records)
    assert counts.pop(schemas.DEADLETTER_TOPIC) == len(flood)
    assert sum(counts.values()) == len(valid)
    assert service.ready()


async def test_an_unsupported_paho_falls_back_to_its_public_callbacks(
    settings: Settings,
    nation: Registry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A paho outside ``SUPPORTED_VERSIONS``: one warning, the fast path off although the switch
    asks for it, every message still delivered (through paho's ``on_message``)."""
    from paho import mqtt as paho_mqtt

    from citysense import _paho_private

    monkeypatch.setattr(paho_mqtt, "__version__", "2.1.0")
    monkeypatch.setattr(_paho_private, "_checked", None)
    caplog.set_level(logging.WARNING, logger="citysense.paho")
    ingest = IngestService(_settings_for(settings, f"ingest-{uuid.uuid4().hex[:8]}", "1"), nation)
    await ingest.start()
    try:
        assert all(listener._paho_recv is None for listener in ingest._listeners)
        messages = Fleet(nation, seed=15).next_batch(500)
        since = now_us()
        await asyncio.to_thread(_publish, settings, messages)
        records = await collect(settings.kafka, since, len(messages), deadline_s=60)
    finally:
        await ingest.stop()
    assert len(records) == len(messages)
    warnings = [r for r in caplog.records if r.name == "citysense.paho"]
    assert len(warnings) == 1
    assert "2.1.0" in warnings[0].getMessage()
