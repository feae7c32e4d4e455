"""Ingest survives kill -9 and a Kafka outage without losing an acknowledged publish."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from citysense.registry import Registry, load_registry, scenario_path
from citysense.settings import KafkaSettings, Settings
from citysense.stack import free_port
from decoders.envelopes import parse_uplink
from simulators import Fleet, Outgoing, Publisher
from tests._lifecycle import clean_env
from tests._proxy import FaultProxy, proxied_kafka
from tests._stages import StageProcess
from tests.ingest._kafka_read import MEASUREMENT_TOPICS, collect, header, now_us

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nation() -> Registry:
    return load_registry(scenario_path("nation"))


def idempotency_key(message: Outgoing) -> str:
    if message.topic.startswith(("application/", "v3/")):
        return parse_uplink(message.topic, message.payload).idempotency_key
    sensor_id = message.topic.split("/")[-2]
    return f"{sensor_id}:{dict(message.user_properties)['message_id']}"


class PacedSender(threading.Thread):
    """Publishes ``messages`` at QoS 1 at ``rate`` per second; ``sent`` = acknowledged."""

    def __init__(self, settings: Settings, messages: list[Outgoing], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.messages = messages
        self.rate = rate
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Publisher(self.settings.mqtt, f"pub-{uuid.uuid4().hex[:8]}") as publisher:
                started = time.monotonic()
                for index in range(0, len(self.messages), 50):
                    due = started + index / self.rate
                    if due > time.monotonic():
                        time.sleep(due - time.monotonic())
                    publisher.publish_batch(self.messages[index : index + 50])
                publisher.wait_acked(120)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _env(
    settings: Settings, kafka_bootstrap: str, client_id: str, tmp: Path, lean: str = "1"
) -> dict[str, str]:
    return {
        "CITYSENSE_LEAN": lean,
        "CITYSENSE_MQTT_URL": settings.mqtt.url.get_secret_value(),
        "CITYSENSE_MQTT_CLIENT_ID": client_id,
        "CITYSENSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CITYSENSE_KAFKA_IDEMPOTENCE": "false",
        "CITYSENSE_STACK_DIR": str(tmp / "no-stack"),
        "CITYSENSE_INGEST_RETRY_BACKOFF_MAX_S": "1",
    }


def _ingest(env: dict[str, str], log: Path) -> StageProcess:
    port = free_port()
    return StageProcess("ingest", clean_env(**env, CITYSENSE_HTTP_PORT=str(port)), port, log)


def _keys(records: list[object]) -> set[bytes]:
    return {header(r, "idempotency-key") or b"" for r in records}


def test_kill_9_mid_stream_loses_no_acknowledged_publish(
    settings: Settings, nation: Registry, tmp_path: Path, lean: str
) -> None:
    messages = Fleet(nation, seed=21).next_batch(9000)
    expected = {idempotency_key(m).encode() for m in messages}
    assert len(expected) == len(messages)
    ingest = _ingest(
        _env(
            settings,
            settings.kafka.bootstrap,
            f"ingest-kill-{uuid.uuid4().hex[:6]}",
            tmp_path,
            lean,
        ),
        tmp_path / "ingest.log",
    )
    since = now_us()
    ingest.start()
    try:
        ingest.wait_ready()
        sender = PacedSender(settings, messages, rate=1500)
        sender.start()
        time.sleep(2.5)
        ingest.kill()  # no drain, no PUBACKs for what was in flight
        time.sleep(1.0)
        ingest.start()  # same client id: the persistent session redelivers
        ingest.wait_ready()
        sender.join(120)
        assert sender.error is None, sender.error
        records = asyncio.run(
            collect(settings.kafka, since, len(messages), deadline_s=90, topics=MEASUREMENT_TOPICS)
        )
        received_after_restart = _received_total(ingest.metrics())
    finally:
        assert ingest.terminate() == 0
    # The killed process had taken part of the stream: the kill really happened mid-stream.
    assert 0 < received_after_restart < len(messages)
    keys = _keys(records)
    assert expected - keys == set(), f"{len(expected - keys)} acknowledged publishes lost"
    assert len(records) >= len(messages)  # at-least-once: redeliveries may duplicate


def _received_total(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("citysense_ingest_received_messages_total{")
    )


@pytest.fixture
def outage_kafka() -> Iterator[tuple[KafkaSettings, FaultProxy]]:
    """A private Tansu broker reachable only through a proxy the test can cut."""
    with proxied_kafka() as pair:
        yield pair


def test_kafka_outage_holds_messages_in_the_broker_not_in_memory(
    settings: Settings,
    nation: Registry,
    tmp_path: Path,
    outage_kafka: tuple[KafkaSettings, FaultProxy],
    lean: str,
) -> None:
    kafka, proxy = outage_kafka
    rate, outage_s = 400, 30
    messages = Fleet(nation, seed=22).next_batch(rate * (outage_s + 8))
    expected = {idempotency_key(m).encode() for m in messages}
    env = _env(settings, kafka.bootstrap, f"ingest-outage-{uuid.uuid4().hex[:6]}", tmp_path, lean)
    env["CITYSENSE_INGEST_MAX_INFLIGHT"] = "1000"
    ingest = _ingest(env, tmp_path / "ingest.log")
    since = now_us()
    ingest.start()
    try:
        ingest.wait_ready()
        assert ingest.proc is not None
        process = psutil.Process(ingest.proc.pid)
        sender = PacedSender(settings, messages, rate=rate)
        sender.start()
        time.sleep(3)
        baseline_rss = process.memory_info().rss
        proxy.refuse()
        blocked_at = time.monotonic()
        not_ready_seen = False
        peak_rss = baseline_rss
        while time.monotonic() - blocked_at < outage_s:
            not_ready_seen = not_ready_seen or ingest.readyz() == 503
            peak_rss = max(peak_rss, process.memory_info().rss)
            time.sleep(0.5)
        proxy.restore()
        sender.join(180)
        assert sender.error is None, sender.error
        records = asyncio.run(
            collect(kafka, since, len(messages), deadline_s=120, topics=MEASUREMENT_TOPICS)
        )
        ready_again = ingest.readyz()
    finally:
        assert ingest.terminate() == 0
    assert not_ready_seen, "ingest never reported not-ready while Kafka was unreachable"
    assert ready_again == 200
    # In-flight messages are bounded by the MQTT receive maximum: the broker holds the rest.
    assert peak_rss - baseline_rss < 40 * 1024 * 1024, (baseline_rss, peak_rss)
    keys = _keys(records)
    assert expected - keys == set(), f"{len(expected - keys)} messages lost in the outage"
