"""The ingest stage: MQTT listeners → route/decode/validate → Avro → Kafka, PUBACK after ack.

Drain order on stop (docs/architecture.md#delivery-guarantees, rule 7): stop reading MQTT, send what
is queued to Kafka, release the PUBACKs, disconnect MQTT (the persistent session keeps anything
unacknowledged), stop the producer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

import schemas
from citysense.clients import ensure_topics, kafka_producer
from citysense.registry import Registry
from citysense.runtime import Lifecycle
from citysense.settings import FastPath, IngestSettings, Settings
from ingest._broker import SYS_TOPICS, observe_sys_message
from ingest._fleet import FleetHealth, run_fleet_refresh
from ingest._kafka import KafkaBatcher
from ingest._metrics import METRICS
from ingest._mqtt import MqttListener
from ingest._records import accepted_kafka_record, dead_letter_record
from ingest._router import Accepted, Incoming, Rejected, Router

__all__ = ["IngestService", "broker_subscriptions"]

log = logging.getLogger("citysense.ingest")

#: One message in this many has its processing time and end-to-end latency observed.
_SAMPLE_EVERY = 64


#: The family of Mosquitto's own ``$SYS`` topics: broker statistics, not uplinks.
_SYS = "$SYS"
_FAMILIES = {
    "application": "chirpstack",
    "v3": "tts",
    "gateways": "gateway",
    "sensors": "direct",
    "": "other",
}
_ROUTES = {**_FAMILIES, _SYS: _SYS}


def broker_subscriptions(ingest: IngestSettings, index: int) -> list[str]:
    """The topics ingest subscribes to on broker ``index`` (0: ``settings.mqtt``): the uplinks,
    and on the first broker Mosquitto's queue depth (the gauges have no broker label)."""
    topics = ingest.subscriptions()
    if index == 0 and ingest.broker_stats:
        topics += SYS_TOPICS
    return topics


def _family(topic: str) -> str:
    return _ROUTES.get(topic.split("/", 1)[0], "other")


class IngestService:
    """A runtime component (see ``citysense.runtime.Component``)."""

    name = "ingest"

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
        client_id_suffix: str = "",
    ) -> None:
        self._settings = settings
        self._router = Router(registry, settings.ingest)
        #: Fleet health (``ingest._fleet``): ``handle`` only stores each accepted measurement
        #: in ``_heard``; a background task does the rest every ``fleet_refresh_s``.
        self._fleet = FleetHealth(registry) if settings.ingest.fleet_refresh_s > 0 else None
        self._producer_factory = producer_factory or (
            lambda: kafka_producer(settings.kafka, request_timeout_ms=15_000)
        )
        self._producer: AIOKafkaProducer | None = None
        self._batcher: KafkaBatcher | None = None
        self._listeners: list[MqttListener] = []
        self._client_id_suffix = client_id_suffix
        # Recent uplinks as 64-bit digests in a ring and a set: ~100 bytes each, where keeping
        # the (device, fCnt, payload) tuples cost ~470 (measured with tracemalloc).
        window = settings.ingest.duplicate_window
        self._recent: set[int] = set()
        self._recent_ring: deque[int] = deque(maxlen=window or 1)
        #: Digests of the messages last dead-lettered, to recognise their redeliveries.
        self._dead_recent: set[int] = set()
        self._dead_ring: deque[int] = deque(maxlen=window or 1)
        #: Start steps and background tasks (the Kafka flusher, each broker's keepalive and
        #: reconnect): one dying fails the stage.
        self._lifecycle = Lifecycle(self.name)
        #: Started completely (a start that failed part way leaves it False).
        self._running = False
        self._stopped = False
        self._count = 0
        # Counts per message are kept here and added to the Prometheus counters once per MQTT
        # read (``flush_metrics``, after the messages of a wake-up): an increment takes a lock
        # and costs ~0.5 µs, twice per message. Nothing is read between two flushes, so a
        # scrape sees every message handled so far.
        self._pending: dict[Any, int] = {}
        self._decoded = {kind: METRICS.decoded.labels(kind) for kind in schemas.MEASUREMENT_SCHEMAS}
        # Label children looked up once: ``labels()`` costs more than the increment.
        self._received = {f: METRICS.received.labels(f) for f in _FAMILIES.values()}
        self._dead = {
            r: METRICS.dead_letters.labels(r)
            for r in ("truncated", "invalid", "unknown_fport", "unknown_channel", "out_of_range")
        }

    # --- Component ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Kafka topics, producer and batcher, then one listener per broker; a step that fails
        undoes the earlier ones, newest first (the producer is closed if MQTT refuses us)."""
        lifecycle = self._lifecycle
        kafka = self._settings.kafka
        topics = [schemas.measurement_topic(k) for k in schemas.MEASUREMENT_SCHEMAS]
        topics.append(schemas.DEADLETTER_TOPIC)
        async with lifecycle.starting():
            await ensure_topics(kafka, topics)
            producer = self._producer = self._producer_factory()
            # Registered first: a producer whose start fails half way is closed too.
            lifecycle.started("kafka producer", producer.stop)
            await producer.start()
            ingest = self._settings.ingest
            batcher = self._batcher = KafkaBatcher(
                producer,
                max_records=ingest.batch_max_records,
                linger_s=ingest.linger_ms / 1000,
                backoff_max_s=ingest.retry_backoff_max_s,
                lifecycle=lifecycle,
            )
            lifecycle.started("kafka batcher", batcher.cancel)
            await batcher.prepare(topics)
            brokers = [self._settings.mqtt, *ingest.extra_brokers]
            for index, broker in enumerate(brokers):
                client_id = f"{broker.client_id}{self._client_id_suffix}"
                listener = MqttListener(
                    broker,
                    client_id=client_id,
                    subscriptions=broker_subscriptions(ingest, index),
                    receive_maximum=ingest.max_inflight,
                    handler=self.handle,
                    lifecycle=lifecycle,
                    on_read=self.flush_metrics,
                    backoff_max_s=ingest.retry_backoff_max_s,
                    name=f"mqtt-{index}",
                    fast=self._settings.fast(FastPath.MQTT_READ),
                )
                await listener.start()  # releases its own client if it fails
                self._listeners.append(listener)
                lifecycle.started(f"mqtt listener {listener.name}", listener.stop)
            if self._fleet is not None:
                lifecycle.spawn(
                    run_fleet_refresh(self._fleet, ingest.fleet_refresh_s), name="ingest-fleet"
                )
        self._running = True

    @property
    def unacknowledged(self) -> int:
        """MQTT messages received and not yet acknowledged, over all brokers."""
        return sum(listener.unacknowledged for listener in self._listeners)

    @property
    def failure(self) -> str | None:
        """Why the stage failed (a background task died), or None."""
        return self._lifecycle.failure

    def ready(self) -> bool:
        if not self._running or self._stopped or self._lifecycle.failed:
            return False
        batcher_ok = self._batcher is not None and self._batcher.healthy
        return batcher_ok and bool(self._listeners) and all(m.ready() for m in self._listeners)

    async def wait_failed(self) -> None:
        await self._lifecycle.wait_failed()

    async def stop(self) -> None:
        """Stop intake, drain to Kafka, release the PUBACKs, then undo the start steps."""
        if self._stopped:
            return
        self._stopped = True
        self._lifecycle.begin_stop()
        deadline = self._settings.shutdown_deadline_s
        for listener in self._listeners:
            listener.pause()
        if self._batcher is not None:
            drained = await self._batcher.drain(deadline * 0.6)
            if not drained:
                log.error(
                    "kafka did not acknowledge everything before the deadline; "
                    "unacknowledged MQTT messages will be redelivered"
                )
        for listener in self._listeners:
            await listener.wait_acknowledged(1.0)
        # Listeners disconnect (newest first), then the batcher and the producer stop.
        await self._lifecycle.close()
        self._listeners.clear()
        self._batcher = None
        self._producer = None
        self.flush_metrics()

    # --- hot path ----------------------------------------------------------------------------

    def flush_metrics(self) -> None:
        """Add the counts kept since the last flush to the Prometheus counters."""
        pending = self._pending
        if pending:
            for counter, count in pending.items():
                counter.inc(count)
            pending.clear()

    def handle(self, incoming: Incoming, release: Callable[[], None]) -> None:
        """Route one MQTT message to Kafka; ``release`` (the PUBACK) runs after Kafka's ack.

        Metrics are counted in ``_pending``; the listener calls :meth:`flush_metrics` after each
        read, and a caller of ``handle`` outside a listener should too.
        """
        family = _family(incoming.topic)
        if family is _SYS:
            observe_sys_message(incoming.topic, incoming.payload)
            release()
            return
        self._count += 1
        sample = self._count % _SAMPLE_EVERY == 0
        started = time.perf_counter() if sample else 0.0
        pending = self._pending
        counter: Any = self._received[family]
        pending[counter] = pending.get(counter, 0) + 1
        batcher = self._batcher
        assert batcher is not None
        try:
            verdict = self._router.route(incoming)
            if isinstance(verdict, Accepted):
                if verdict.duplicate_key is not None and self._seen(verdict.duplicate_key):
                    pending[METRICS.duplicates] = pending.get(METRICS.duplicates, 0) + 1
                    release()
                    return
                record = accepted_kafka_record(verdict)
                counter = self._decoded[verdict.decoded.kind]
                fleet = self._fleet
                if fleet is not None:
                    fleet.heard[verdict.sensor_id] = verdict
        except Exception as exc:
            # A fault of ours (a codec or the encoder raising something other than its errors):
            # the message still leaves as a dead letter with its bytes, and its PUBACK is not
            # left holding every later one (they are sent in arrival order).
            log.exception("ingest could not handle a message", extra={"topic": incoming.topic})
            verdict = Rejected("internal_error", type(exc).__name__, str(exc))
        if not isinstance(verdict, Accepted):
            if self._dead_lettered(incoming):
                pending[METRICS.duplicates] = pending.get(METRICS.duplicates, 0) + 1
                release()
                return
            record = dead_letter_record(incoming, verdict)
            counter = self._dead.get(verdict.reason)
            if counter is None:
                counter = self._dead[verdict.reason] = METRICS.dead_letters.labels(verdict.reason)
        pending[counter] = pending.get(counter, 0) + 1
        if sample:
            METRICS.decode_seconds.observe(time.perf_counter() - started)
            received = incoming.received_at

            def done() -> None:
                release()
                METRICS.ingest_latency.observe(time.time() - received.timestamp())

            batcher.add(record, done)
        else:
            batcher.add(record, release)

    def _dead_lettered(self, incoming: Incoming) -> bool:
        """True when ``incoming`` is a redelivery (DUP) of a message dead-lettered among the
        last ``duplicate_window``: the broker sends again what it had no PUBACK for, after a
        reconnect, and a malformed message has no idempotency key downstream to catch the
        second copy. Only a DUP copy is matched, on its topic, bytes and user properties."""
        if self._settings.ingest.duplicate_window == 0:
            return False
        # The user properties belong to the identity: a direct sensor's ``message_id`` tells two
        # PUBLISHes of the same broken bytes apart (without it, the later one would be lost).
        properties = tuple(sorted(incoming.user_properties.items()))
        digest = hash((incoming.topic, incoming.payload, properties))
        if incoming.redelivered and digest in self._dead_recent:
            return True
        ring = self._dead_ring
        if len(ring) == ring.maxlen:
            self._dead_recent.discard(ring[0])
        ring.append(digest)
        self._dead_recent.add(digest)
        return False

    def _seen(self, key: tuple[str, int, int]) -> bool:
        """True when this uplink was already taken among the last ``duplicate_window``."""
        if self._settings.ingest.duplicate_window == 0:
            return False
        digest = hash(key)
        if digest in self._recent:
            return True
        ring = self._recent_ring
        if len(ring) == ring.maxlen:
            self._recent.discard(ring[0])
        ring.append(digest)
        self._recent.add(digest)
        return False
