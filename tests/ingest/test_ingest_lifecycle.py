"""Ingest's lifecycle on the real stack: each background task dying, each start step failing.

Failures are injected by replacing one coroutine of the real service (``monkeypatch``); the
brokers and the database are the real ones from the session fixtures.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaProducer

from citysense.clients import kafka_producer, mqtt_client
from citysense.errors import StartupError
from citysense.registry import Registry, load_registry, scenario_path
from citysense.runtime import StageFailedError, run_components
from citysense.settings import HttpSettings, IngestSettings, KafkaSettings, MqttSettings, Settings
from citysense.stack import free_port
from ingest import IngestService
from ingest._kafka import KafkaBatcher
from ingest._mqtt import MqttListener
from simulators import Fleet, Publisher
from tests._lifecycle import HoldingComponent, probes

pytestmark = pytest.mark.integration

#: Names of every task ingest runs; none may outlive a stop or a failed start.
_TASK_PREFIXES = ("kafka-flusher", "mqtt-")


@pytest.fixture(scope="module")
def nation() -> Registry:
    return load_registry(scenario_path("nation"))


def _settings_for(settings: Settings, **mqtt: object) -> Settings:
    options: dict[str, object] = {
        "url": settings.mqtt.url,
        "client_id": f"lifecycle-{uuid.uuid4().hex[:8]}",
    }
    options.update(mqtt)
    return settings.model_copy(
        update={
            "mqtt": MqttSettings.model_validate(options),
            "ingest": IngestSettings(linger_ms=2),
            "shutdown_deadline_s": 10.0,
        }
    )


class _Producers:
    """A producer factory that remembers what it made and which of them were stopped."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.made: list[AIOKafkaProducer] = []
        self.stopped: list[AIOKafkaProducer] = []

    def __call__(self) -> AIOKafkaProducer:
        producer = kafka_producer(self.kafka, request_timeout_ms=15_000)
        stop = producer.stop

        async def tracked_stop() -> None:
            self.stopped.append(producer)
            await stop()

        producer.stop = tracked_stop
        self.made.append(producer)
        return producer


def _ingest_tasks() -> list[str]:
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith(_TASK_PREFIXES) and not t.done()
    )


def _raising(message: str) -> Callable[..., object]:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(message)

    return broken


def _publish_one(settings: Settings, registry: Registry) -> None:
    message = Fleet(registry, seed=3).next_batch(1)
    with Publisher(settings.mqtt, f"pub-{uuid.uuid4().hex[:8]}") as publisher:
        publisher.publish_batch(message)
        publisher.wait_acked(30)


# --- a background task dies ----------------------------------------------------------------


async def test_a_dying_kafka_flusher_fails_the_stage_and_stop_releases_everything(
    settings: Settings, nation: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(KafkaBatcher, "_flush_rounds", _raising("injected flusher fault"))
    config = _settings_for(settings)
    producers = _Producers(config.kafka)
    service = IngestService(config, nation, producer_factory=producers)
    await service.start()
    try:
        assert service.ready()
        assert service.failure is None
        # The flusher starts with the first record.
        await asyncio.to_thread(_publish_one, config, nation)
        with pytest.raises(StageFailedError, match="kafka-flusher failed: RuntimeError: inj"):
            await asyncio.wait_for(service.wait_failed(), 30)
        assert service.failure is not None
        assert "injected flusher fault" in service.failure
        assert not service.ready()
    finally:
        await service.stop()
    assert producers.stopped == producers.made
    assert _ingest_tasks() == []


async def test_a_dying_mqtt_keepalive_task_makes_probes_503_and_the_status_1(
    settings: Settings, nation: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MqttListener, "_misc", _raising("injected keepalive fault"))
    config = _settings_for(settings)
    producers = _Producers(config.kafka)
    service = IngestService(config, nation, producer_factory=producers)
    holder = HoldingComponent()
    port = free_port()
    run = asyncio.create_task(
        run_components([service, holder], HttpSettings(port=port), shutdown_deadline_s=15)
    )
    await asyncio.wait_for(holder.stopping.wait(), 30)
    (health_status, health), (ready_status, ready) = await probes(port)
    holder.release.set()
    status = await asyncio.wait_for(run, 30)
    assert health_status == 503
    assert (
        "mqtt-0-misc failed: RuntimeError: injected keepalive fault" in health["failed"]["ingest"]
    )
    assert ready_status == 503
    assert ready["checks"]["ingest"] is False
    assert ready["failed"] == health["failed"]
    assert status == 1
    assert producers.stopped == producers.made
    assert _ingest_tasks() == []


def _take_over_session(config: Settings) -> None:
    """Connect with ingest's client id: the broker disconnects ingest (session taken over)."""
    client, host, port = mqtt_client(config.mqtt, config.mqtt.client_id)
    connected = client.connect(host, port, clean_start=False)
    assert connected == mqtt.MQTT_ERR_SUCCESS
    for _ in range(20):
        client.loop(0.1)
    client.disconnect()


async def test_a_dying_reconnect_task_fails_the_stage(
    settings: Settings, nation: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _settings_for(settings)
    service = IngestService(config, nation)
    await service.start()
    try:
        monkeypatch.setattr(
            MqttListener, "_connect_with_retry", _raising("injected reconnect fault")
        )
        await asyncio.to_thread(_take_over_session, config)
        with pytest.raises(StageFailedError, match="mqtt-0-reconnect failed: RuntimeError: inj"):
            await asyncio.wait_for(service.wait_failed(), 30)
        assert not service.ready()
    finally:
        await service.stop()
    assert _ingest_tasks() == []


# --- a start step fails --------------------------------------------------------------------


async def test_kafka_unreachable_at_start_is_a_startup_error_and_nothing_is_left(
    settings: Settings, nation: Registry
) -> None:
    config = _settings_for(settings).model_copy(
        update={"kafka": KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", idempotence=False)}
    )
    producers = _Producers(config.kafka)
    service = IngestService(config, nation, producer_factory=producers)
    with pytest.raises(StartupError, match=r"Kafka at 127\.0\.0\.1:\d+ is unreachable"):
        await service.start()
    assert producers.made == []
    assert _ingest_tasks() == []
    await service.stop()  # safe after a failed start


async def test_a_producer_that_cannot_start_is_closed(settings: Settings, nation: Registry) -> None:
    config = _settings_for(settings)
    # Topics are created on the real broker; the producer itself points at a closed port.
    producers = _Producers(KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}"))
    service = IngestService(config, nation, producer_factory=producers)
    with pytest.raises(Exception, match="Unable to bootstrap"):
        await service.start()
    assert len(producers.made) == 1
    assert producers.stopped == producers.made


async def test_a_batcher_that_cannot_prepare_closes_the_producer(
    settings: Settings, nation: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(KafkaBatcher, "prepare", _raising("injected prepare fault"))
    config = _settings_for(settings)
    producers = _Producers(config.kafka)
    service = IngestService(config, nation, producer_factory=producers)
    with pytest.raises(RuntimeError, match="injected prepare fault"):
        await service.start()
    assert len(producers.made) == 1
    assert producers.stopped == producers.made
    assert _ingest_tasks() == []


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_mqtt_refusing_the_password_is_a_startup_error_and_closes_kafka(
    settings: Settings, nation: Registry
) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    url = _with_password(settings.mqtt.url.get_secret_value(), wrong)
    config = _settings_for(settings, url=url)
    producers = _Producers(config.kafka)
    service = IngestService(config, nation, producer_factory=producers)
    with pytest.raises(StartupError) as raised:
        await service.start()
    message = str(raised.value)
    assert "refused the connection" in message
    assert "CITYSENSE_MQTT_URL or mqtt.url" in message
    assert wrong not in message
    assert producers.stopped == producers.made
    assert len(producers.made) == 1
    assert _ingest_tasks() == []


async def test_a_second_broker_failing_stops_the_first_listener_too(
    settings: Settings, nation: Registry
) -> None:
    url = settings.mqtt.url.get_secret_value()
    bad = MqttSettings(url=_with_password(url, "wrong"), client_id=f"second-{uuid.uuid4().hex}")
    config = _settings_for(settings)
    config = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"extra_brokers": (bad,)})}
    )
    producers = _Producers(config.kafka)
    service = IngestService(config, nation, producer_factory=producers)
    with pytest.raises(StartupError, match="refused the connection"):
        await service.start()
    assert not service.ready()
    # The first broker's listener had connected: its tasks are gone and the producer closed.
    assert _ingest_tasks() == []
    assert producers.stopped == producers.made
