"""Batched, ordered, retrying Kafka output whose acknowledgements release MQTT PUBACKs.

Records are appended synchronously from the MQTT callback (no task per message), grouped per
topic-partition, and sent as aiokafka batches (``create_batch`` / ``send_batch``) by one sender
task per partition, so a partition's records reach Kafka in arrival order even across retries.
Each record carries a callback run when Kafka acknowledged it; that is where the MQTT PUBACK is
released (DESIGN.md section 5.1). While Kafka fails, the sender retries with capped, jittered
backoff and keeps the batch; the MQTT receive maximum stops new deliveries, so memory is bounded.

Partitions follow the Java client's default partitioner (murmur2 of the key), cached per key: a
city has a bounded set of sensors.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from ingest._metrics import METRICS
from ingest._records import KafkaRecord

__all__ = ["KafkaBatcher"]

log = logging.getLogger("citysense.ingest.kafka")

Done = Callable[[], None]


@dataclass(slots=True)
class _Partition:
    topic: str
    partition: int
    #: Queued records and their callbacks, in arrival order (two lists: no tuple per record).
    records: list[KafkaRecord] = field(default_factory=list)
    dones: list[Done] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    first_at: float = 0.0
    task: asyncio.Task[None] | None = None


class KafkaBatcher:
    """Collects records per partition and sends them in order, with retries."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        max_records: int,
        linger_s: float,
        backoff_max_s: float,
    ) -> None:
        self._producer = producer
        self._max_records = max_records
        self._linger_s = linger_s
        self._backoff_max_s = backoff_max_s
        #: A record older than this means Kafka is not acknowledging (timeouts come later).
        self._stall_s = max(5.0, linger_s * 10)
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._partition_counts: dict[str, int] = {}
        #: topic → key → its partition's queue: one lookup per record, no (topic, key) tuple.
        self._key_slot: dict[str, dict[bytes, _Partition]] = {}
        self._closing = False
        self._failing = False
        self.pending = 0

    @property
    def healthy(self) -> bool:
        """False while sends fail, or while a queued record waits longer than Kafka should take."""
        if self._failing:
            return False
        now = time.monotonic()
        return all(
            not slot.records or now - slot.first_at < self._stall_s
            for slot in self._partitions.values()
        )

    async def prepare(self, topics: list[str]) -> None:
        """Learn each topic's partition count before the first record arrives."""
        for topic in topics:
            partitions = await self._producer.partitions_for(topic)
            self._partition_counts[topic] = len(partitions)

    def _slot_of(self, topic: str, key: bytes) -> _Partition:
        keys = self._key_slot.get(topic)
        if keys is None:
            keys = self._key_slot[topic] = {}
        elif len(keys) > 1_000_000:  # an unbounded key space: stay bounded
            keys.clear()
        partition = (murmur2(key) & 0x7FFFFFFF) % self._partition_counts[topic]
        slot = self._partitions.get((topic, partition))
        if slot is None:
            slot = _Partition(topic, partition)
            self._partitions[(topic, partition)] = slot
            slot.task = asyncio.get_running_loop().create_task(
                self._sender(slot), name=f"kafka-sender-{topic}-{partition}"
            )
        keys[key] = slot
        return slot

    def add(self, record: KafkaRecord, done: Done) -> None:
        """Queue ``record``; ``done`` runs once Kafka acknowledged it. Never blocks."""
        keys = self._key_slot.get(record.topic)
        slot = keys.get(record.key) if keys is not None else None
        if slot is None:
            slot = self._slot_of(record.topic, record.key)
        records = slot.records
        records.append(record)
        slot.dones.append(done)
        self.pending += 1  # the gauge is set once per batch, by the sender
        count = len(records)
        if count == 1:
            slot.first_at = time.monotonic()
            slot.wake.set()
        elif count == self._max_records:
            slot.wake.set()

    async def _sender(self, slot: _Partition) -> None:
        while True:
            if not slot.records:
                if self._closing:
                    return
                slot.wake.clear()
                await slot.wake.wait()
                continue
            # Linger so a batch gathers company, unless it is already full or we are draining.
            # A plain sleep: ``wait_for`` on the event costs a task per batch, and a batch that
            # fills meanwhile waits at most the linger.
            wait = slot.first_at + self._linger_s - time.monotonic()
            if wait > 0 and len(slot.records) < self._max_records and not self._closing:
                await asyncio.sleep(wait)
                continue
            count = min(len(slot.records), self._max_records)
            batch = slot.records[:count]
            dones = slot.dones[:count]
            METRICS.inflight.set(self.pending)
            await self._send_until_acknowledged(slot, batch)
            del slot.records[:count]
            del slot.dones[:count]
            if slot.records:
                slot.first_at = time.monotonic()
            self.pending -= count
            METRICS.inflight.set(self.pending)
            for done in dones:
                done()

    async def _send_until_acknowledged(self, slot: _Partition, batch: list[KafkaRecord]) -> None:
        backoff = 0.1
        while True:
            started = time.monotonic()
            try:
                await self._send(slot, batch)
            except (KafkaError, OSError) as exc:
                self._failing = True
                METRICS.kafka_retries.inc()
                log.warning(
                    "kafka send failed; retrying",
                    extra={
                        "topic": slot.topic,
                        "partition": slot.partition,
                        "records": len(batch),
                        "error": repr(exc),
                        "retry_in_s": round(backoff, 2),
                    },
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._backoff_max_s)
                continue
            self._failing = False
            METRICS.produce_latency.observe(time.monotonic() - started)
            METRICS.produced.labels(slot.topic).inc(len(batch))
            return

    async def _send(self, slot: _Partition, batch: list[KafkaRecord]) -> None:
        futures = []
        producer = self._producer
        # One create time for the batch's records, where aiokafka reads the clock per record.
        timestamp = int(time.time() * 1000)
        start = 0
        while start < len(batch):
            builder = producer.create_batch()
            appended = _append_all(builder, batch, start, timestamp)
            # aiokafka takes any record into an empty batch (an oversized one alone).
            assert appended > 0
            start += appended
            futures.append(await producer.send_batch(builder, slot.topic, partition=slot.partition))
        await asyncio.gather(*futures)

    async def drain(self, deadline_s: float) -> bool:
        """Send everything queued; True when all of it was acknowledged within the deadline."""
        self._closing = True
        for slot in self._partitions.values():
            slot.wake.set()
        tasks = [s.task for s in self._partitions.values() if s.task is not None]
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        return not pending

    async def cancel(self) -> None:
        for slot in self._partitions.values():
            if slot.task is not None:
                slot.task.cancel()
        await asyncio.gather(
            *(s.task for s in self._partitions.values() if s.task), return_exceptions=True
        )


def _append_all(builder: BatchBuilder, batch: list[KafkaRecord], start: int, timestamp: int) -> int:
    """Append ``batch[start:]`` to ``builder`` until it is full; how many records went in.

    aiokafka's ``BatchBuilder.append`` wraps its C record-batch builder (keyword arguments, a
    serializer check, a clock read per record); with no serializers configured, appending to the
    C builder directly and setting the count it keeps writes the same bytes.
    """
    inner = getattr(builder, "_builder", None)
    offset = getattr(builder, "_relative_offset", None)
    fast = (
        type(builder) is BatchBuilder
        and offset == 0
        and not builder.closed()
        and builder._key_serializer is None
        and builder._value_serializer is None
        and inner is not None
    )
    if not fast or inner is None:
        for index in range(start, len(batch)):
            record = batch[index]
            if (
                builder.append(
                    timestamp=timestamp, key=record.key, value=record.value, headers=record.headers
                )
                is None
            ):
                return index - start
        return len(batch) - start
    append = inner.append
    count = 0
    for index in range(start, len(batch)):
        record = batch[index]
        if append(count, timestamp, record.key, record.value, record.headers) is None:
            builder.close()
            break
        count += 1
    builder._relative_offset = count
    return count
