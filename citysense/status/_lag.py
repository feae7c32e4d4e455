"""Consumer lag of the pipeline's consumer groups: records between each group's read position
and the end of its partitions.

Ends are each partition's high watermark as a fetch reports it: the embedded broker (Tansu)
answers ListOffsets with the last batch's base offset + 1, so ``end_offsets()`` alone would
under-count; a fetch from there returns the true high watermark cheaply. Positions:

- the aggregator's window and rollup stages commit, as their group offset, the lowest offset an
  open window still needs (hours behind on purpose), and their read position in the side group
  ``<group>.position`` (``streams._service``): the lag is measured from that side group;
- the TimescaleDB sink keeps its offsets in the database with its rows (``consumer_offsets``),
  its Kafka commit being informative only: the lag is measured from the database.

A partition a group never committed counts from its first offset (0: the embedded broker never
deletes), which is what the group will read first (``auto_offset_reset = "earliest"``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from citysense.clients import kafka_consumer
from citysense.settings import KafkaSettings

__all__ = ["GroupLag", "group_lag", "high_watermarks", "kafka_positions"]

_FETCH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class GroupLag:
    """Records a consumer group has still to read over ``topics``; None when unknown."""

    stage: str
    group_id: str
    topics: tuple[str, ...]
    records: int | None
    partitions: int


def group_lag(
    stage: str,
    group_id: str,
    topics: Iterable[str],
    ends: Mapping[TopicPartition, int],
    positions: Mapping[TopicPartition, int] | None,
) -> GroupLag:
    """Sum over the partitions of ``topics`` of end minus position (never negative); ``positions``
    None means they could not be read, and so is the lag."""
    chosen = tuple(sorted(set(topics)))
    partitions = [tp for tp in ends if tp.topic in chosen]
    if positions is None:
        return GroupLag(stage, group_id, chosen, None, len(partitions))
    lag = sum(max(0, ends[tp] - positions.get(tp, 0)) for tp in partitions)
    return GroupLag(stage, group_id, chosen, lag, len(partitions))


async def high_watermarks(
    settings: KafkaSettings, topics: Iterable[str]
) -> dict[TopicPartition, int]:
    """Every partition's high watermark of the existing ``topics`` (see the module docstring)."""
    consumer = kafka_consumer(
        settings,
        group_id=None,
        max_partition_fetch_bytes=1024,
        fetch_max_bytes=64 * 1024,
        # One record per partition is all it reads: answer as soon as it is there.
        fetch_min_bytes=1,
        request_timeout_ms=int(_FETCH_TIMEOUT_S * 1000),
    )
    try:
        await consumer.start()
        partitions = [
            TopicPartition(topic, p)
            for topic in sorted(set(topics))
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return {}
        consumer.assign(partitions)
        approx = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(0, int(approx[tp]) - 1))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_FETCH_TIMEOUT_S):
                while any(consumer.highwater(tp) is None for tp in partitions):
                    await consumer.getmany(timeout_ms=200, max_records=1)
        # A partition no fetch answered for keeps ListOffsets' figure (a lower bound).
        return {
            tp: int(consumer.highwater(tp) if consumer.highwater(tp) is not None else approx[tp])
            for tp in partitions
        }
    finally:
        await consumer.stop()


async def kafka_positions(
    settings: KafkaSettings, group_id: str, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offsets ``group_id`` committed for ``partitions`` (those it never committed left
    out)."""
    wanted = sorted(partitions)
    if not wanted:
        return {}
    admin = AIOKafkaAdminClient(**settings.client_options())
    try:
        await admin.start()
        stored = await admin.list_consumer_group_offsets(group_id, partitions=wanted)
    finally:
        await admin.close()
    return {tp: int(meta.offset) for tp, meta in stored.items() if meta.offset >= 0}
