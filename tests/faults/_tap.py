"""Everything the pipeline writes to Kafka, read continuously from the start of each topic.

The tap runs its own consumer in a thread for the whole fault module and indexes what the
invariants need: measurement records by ``idempotency-key`` (with the natural key the sink uses,
``(sensor_id, observed_at)``), dead letters by (original topic, payload digest), late records
by natural key. It reaches Kafka through the same proxy as the stages (the broker advertises
only that address), so it sees the partitions too and catches up after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

import schemas
from citysense.settings import KafkaSettings

__all__ = ["KafkaTap", "digest"]

MEASUREMENT_TOPICS = [schemas.measurement_topic(k) for k in schemas.MEASUREMENT_SCHEMAS]


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:24]


def _micros(value: datetime | int) -> int:
    return schemas.epoch_micros(value) if isinstance(value, datetime) else int(value)


def _header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value)
    return None


@dataclass
class TapIndex:
    #: idempotency-key -> natural keys (sensor_id, observed_at µs) of its records.
    measurements: dict[bytes, set[tuple[str, int]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    #: (original topic, payload digest) -> reasons, one per dead-letter record.
    dead_letters: dict[tuple[str, str], list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: natural keys of the records the aggregator declared late.
    late: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: natural key -> (partition, offset, watermark µs) of each late record naming it: which
    #: incarnation of the aggregator declared it, told apart by the offset and the watermark.
    late_at: dict[tuple[str, int], list[tuple[int, int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: (topic, partition, offset) -> (kind, natural key, Avro frame) of every measurement record.
    frames: dict[tuple[str, int, int], tuple[str, tuple[str, int], bytes]] = field(
        default_factory=dict
    )
    count: int = 0


class KafkaTap:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.index = TapIndex()
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kafka-tap")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # reported by the tests
            self.error = exc

    async def _consume(self) -> None:
        """Reads until stopped; a Kafka error (the partition scenario cuts the tap's path too)
        closes the consumer and a new one goes on from the next offsets it had not read."""
        next_offsets: dict[TopicPartition, int] = {}
        while not self._stop.is_set():
            try:
                await self._read(next_offsets)
            except (KafkaError, OSError, TimeoutError, asyncio.CancelledError):
                # aiokafka lets a CancelledError of its own out when a request times out.
                await asyncio.sleep(1)

    async def _read(self, next_offsets: dict[TopicPartition, int]) -> None:
        topics = [*MEASUREMENT_TOPICS, schemas.DEADLETTER_TOPIC, schemas.LATE_TOPIC]
        consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
        )
        try:
            await consumer.start()
            assigned: set[TopicPartition] = set()
            while not self._stop.is_set():
                # Topics appear as the stages create them: assign the new partitions.
                await asyncio.wait_for(consumer.topics(), 15)
                wanted = {
                    TopicPartition(t, p)
                    for t in topics
                    for p in consumer.partitions_for_topic(t) or set()
                }
                if wanted - assigned:
                    consumer.assign(list(wanted))
                    for tp in wanted:
                        consumer.seek(tp, next_offsets.get(tp, 0))
                    assigned = wanted
                if not assigned:
                    await asyncio.sleep(0.5)
                    continue
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                with self.lock:
                    for tp, records in batch.items():
                        for record in records:
                            self._add(record)
                        if records:
                            next_offsets[tp] = records[-1].offset + 1
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _add(self, record: Any) -> None:
        index = self.index
        index.count += 1
        if record.topic == schemas.DEADLETTER_TOPIC:
            _, value = schemas.decode(record.value)
            index.dead_letters[(value["original_topic"], digest(value["payload"]))].append(
                value["reason"]
            )
        elif record.topic == schemas.LATE_TOPIC:
            _, value = schemas.decode(record.value)
            if value["topic"] in MEASUREMENT_TOPICS:
                natural = (value["key"].decode(), _micros(value["observed_at"]))
                index.late[natural] += 1
                index.late_at[natural].append(
                    (value["partition"], value["offset"], _micros(value["watermark"]))
                )
        else:
            _, value = schemas.decode(record.value)
            natural = (value["sensor_id"], _micros(value["observed_at"]))
            key = _header(record, "idempotency-key") or b""
            index.measurements[key].add(natural)
            kind = record.topic.split(".")[1]
            index.frames[(record.topic, record.partition, record.offset)] = (
                kind,
                natural,
                record.value,
            )
