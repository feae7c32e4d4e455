"""Reading what ingest wrote to Kafka during one test.

The embedded Tansu broker answers ListOffsets(latest) with the base offset of the last batch plus
one, not the log end (seen here: 3,000 records in 30 batches of 100 reported as 2,901), so tests
never rely on end offsets: they read the topics from the start and keep the records whose
``trace`` header (ingest receive time) is from this test.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

import schemas
from citysense.settings import KafkaSettings

MEASUREMENT_TOPICS = [schemas.measurement_topic(k) for k in schemas.MEASUREMENT_SCHEMAS]
ALL_TOPICS = [*MEASUREMENT_TOPICS, schemas.DEADLETTER_TOPIC]


def now_us() -> int:
    return time.time_ns() // 1000


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value)
    return None


async def collect(
    kafka: KafkaSettings,
    since_us: int,
    expected: int,
    *,
    deadline_s: float = 60,
    quiet_s: float = 1.5,
    topics: list[str] = ALL_TOPICS,
) -> list[Any]:
    """Records ingested since ``since_us``: waits for ``expected`` of them, then for quiet."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or set()
        ]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        end = time.monotonic() + deadline_s
        last_new = time.monotonic()
        while time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            fresh = [
                r
                for items in batch.values()
                for r in items
                if int(header(r, "trace") or b"0") >= since_us
            ]
            if fresh:
                records.extend(fresh)
                last_new = time.monotonic()
            elif len(records) >= expected and time.monotonic() - last_new > quiet_s:
                break
        return records
    finally:
        await consumer.stop()


def by_topic(records: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.topic] = counts.get(record.topic, 0) + 1
    return counts
