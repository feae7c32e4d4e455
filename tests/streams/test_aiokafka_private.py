"""The ``kafka-records`` fast path: aiokafka's own records, read as the runners read them."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import aiokafka
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord

from streams import _aiokafka_private

TP = TopicPartition("city.noise.measurements.v1", 3)


def _partition_records(fetch_offset: int = 0, **deserializers: Any) -> PartitionRecords:
    """Two batches of three records from offset 10, with and without headers, as the broker
    sends them."""
    buffer = bytearray()
    for base in (10, 13):
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=0,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 20,
        )
        for delta in range(3):
            offset = base + delta
            headers = [("idempotency-key", f"id-{offset}".encode())] if offset % 2 else []
            builder.append(
                delta, timestamp=1_700_000_000_000, key=f"s-{offset}".encode(),
                value=f"v-{offset}".encode(), headers=headers,
            )  # fmt: skip
        raw = bytearray(builder.build())
        raw[0:8] = base.to_bytes(8, "big")  # the batch's base offset, as the broker writes it
        buffer += raw
    return PartitionRecords(
        TP,
        MemoryRecords(bytes(buffer)),
        [],
        fetch_offset,
        deserializers.get("key"),
        deserializers.get("value"),
        True,
        0,
    )


def _result(records: PartitionRecords) -> FetchResult:
    return FetchResult(TP, assignment=None, partition_records=records, backoff=0)


def _consumer(*records: PartitionRecords) -> Any:
    """What :func:`hand_out_raw_records` reads of a started consumer: its fetcher's results,
    an ``OrderedDict`` by partition as aiokafka's ``Fetcher`` makes it."""
    results = OrderedDict((TopicPartition(TP.topic, i), _result(r)) for i, r in enumerate(records))
    return SimpleNamespace(_fetcher=SimpleNamespace(_records=results))


def _seen(record: Any) -> tuple[int, bytes, bytes, list[tuple[str, bytes]]]:
    """What the runners read of a record."""
    return record.offset, record.key, record.value, [(n, v) for n, v in record.headers]


def test_the_installed_aiokafka_is_supported() -> None:
    assert _aiokafka_private.supported(), aiokafka.__version__
    assert _aiokafka_private.version_supported("0.14.2")
    assert not _aiokafka_private.version_supported("0.15.0")
    assert not _aiokafka_private.version_supported("0.13.9")
    assert not _aiokafka_private.version_supported("unknown")


def test_raw_records_read_as_consumer_records() -> None:
    plain = list(_partition_records(fetch_offset=11))
    fast = _partition_records(fetch_offset=11)
    assert _aiokafka_private.hand_out_raw_records(_consumer(fast))
    raw = list(fast)
    assert all(type(r) is ConsumerRecord for r in plain)
    assert not any(type(r) is ConsumerRecord for r in raw)
    assert [_seen(r) for r in raw] == [_seen(r) for r in plain]
    assert [r.offset for r in raw] == [11, 12, 13, 14, 15]  # before the fetch offset: skipped
    assert fast.next_fetch_offset == 16


def test_results_fetched_later_are_served_raw_too() -> None:
    consumer = _consumer()
    assert _aiokafka_private.hand_out_raw_records(consumer)
    assert _aiokafka_private.hand_out_raw_records(consumer)  # a second call changes nothing
    later = _partition_records()
    consumer._fetcher._records[TP] = _result(later)  # as the fetcher stores a fetch's records
    raw = list(later)
    assert [r.offset for r in raw] == [10, 11, 12, 13, 14, 15]
    assert not any(type(r) is ConsumerRecord for r in raw)


def test_a_batch_half_read_gives_the_rest_raw() -> None:
    records = _partition_records()
    first = next(records)
    _aiokafka_private.hand_out_raw_records(_consumer(records))
    rest = list(records)
    assert type(first) is ConsumerRecord
    assert [r.offset for r in rest] == [11, 12, 13, 14, 15]
    assert not any(type(r) is ConsumerRecord for r in rest)


def test_records_with_a_deserializer_keep_it() -> None:
    records = _partition_records(value=lambda value: value.decode())
    _aiokafka_private.hand_out_raw_records(_consumer(records))
    assert [r.value for r in records] == [f"v-{offset}" for offset in range(10, 16)]


def test_a_consumer_not_started_is_left_alone() -> None:
    assert not _aiokafka_private.hand_out_raw_records(SimpleNamespace())


def test_a_spent_result_is_skipped_and_the_others_served() -> None:
    spent, live = _partition_records(), _partition_records()
    consumer = _consumer(spent, live)
    next(iter(consumer._fetcher._records.values()))._partition_records = None  # all handed out
    _aiokafka_private.hand_out_raw_records(consumer)
    assert not any(type(r) is ConsumerRecord for r in live)
