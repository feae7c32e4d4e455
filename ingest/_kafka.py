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
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from ingest._metrics import METRICS
from ingest._records import KafkaRecord

__all__ = ["KafkaBatcher"]

log = logging.getLogger("citysense.ingest.kafka")

Done = Callable[[], None]


@dataclass(slots=True)
class _Partition:
    topic: str
    partition: int
    records: deque[tuple[KafkaRecord, Done]] = field(default_factory=deque)
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
        self._key_partition: dict[tuple[str, bytes], int] = {}
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

    def _partition_of(self, topic: str, key: bytes) -> int:
        cached = self._key_partition.get((topic, key))
        if cached is None:
            count = self._partition_counts[topic]
            cached = (murmur2(key) & 0x7FFFFFFF) % count
            if len(self._key_partition) > 1_000_000:  # an unbounded key space: stay bounded
                self._key_partition.clear()
            self._key_partition[(topic, key)] = cached
        return cached

    def add(self, record: KafkaRecord, done: Done) -> None:
        """Queue ``record``; ``done`` runs once Kafka acknowledged it. Never blocks."""
        partition = self._partition_of(record.topic, record.key)
        slot = self._partitions.get((record.topic, partition))
        if slot is None:
            slot = _Partition(record.topic, partition)
            self._partitions[(record.topic, partition)] = slot
            slot.task = asyncio.get_running_loop().create_task(
                self._sender(slot), name=f"kafka-sender-{record.topic}-{partition}"
            )
        if not slot.records:
            slot.first_at = time.monotonic()
        slot.records.append((record, done))
        self.pending += 1  # the gauge is set once per batch, by the sender
        if len(slot.records) >= self._max_records or len(slot.records) == 1:
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
            wait = slot.first_at + self._linger_s - time.monotonic()
            if wait > 0 and len(slot.records) < self._max_records and not self._closing:
                slot.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slot.wake.wait(), wait)
                continue
            count = min(len(slot.records), self._max_records)
            batch = [slot.records[i] for i in range(count)]
            METRICS.inflight.set(self.pending)
            await self._send_until_acknowledged(slot, batch)
            for _ in range(count):
                slot.records.popleft()
            if slot.records:
                slot.first_at = time.monotonic()
            self.pending -= count
            METRICS.inflight.set(self.pending)
            for _record, done in batch:
                done()

    async def _send_until_acknowledged(
        self, slot: _Partition, batch: list[tuple[KafkaRecord, Done]]
    ) -> None:
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

    async def _send(self, slot: _Partition, batch: list[tuple[KafkaRecord, Done]]) -> None:
        futures = []
        builder = self._producer.create_batch()
        for record, _done in batch:
            appended = builder.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
            if appended is None:  # the batch is full: send it, start another
                futures.append(
                    await self._producer.send_batch(builder, slot.topic, partition=slot.partition)
                )
                builder = self._producer.create_batch()
                builder.append(
                    timestamp=None, key=record.key, value=record.value, headers=record.headers
                )
        futures.append(
            await self._producer.send_batch(builder, slot.topic, partition=slot.partition)
        )
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
