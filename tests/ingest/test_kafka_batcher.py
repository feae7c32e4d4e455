"""The batcher's guarantees without a broker: order per partition, done only after the ack,
the same records retried after a failure, and everything waiting sent on drain."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from ingest._kafka import KafkaBatcher
from ingest._records import KafkaRecord


class _Builder:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, timestamp: int, key: bytes, value: bytes, headers: Any) -> object:
        self.values.append(value)
        return object()


class _Producer:
    """Batches handed over, each with the future the test settles as Kafka would."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, list[bytes], asyncio.Future[None]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(
        self, builder: _Builder, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((partition, builder.values, future))
        return future


def _record(key: bytes, value: bytes) -> KafkaRecord:
    return KafkaRecord("t", key, value, [])


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.003)


async def test_one_batch_in_flight_per_partition_done_after_ack_and_retried_whole() -> None:
    producer = _Producer()
    batcher = KafkaBatcher(producer, max_records=100, linger_s=0.001, backoff_max_s=0.01)
    await batcher.prepare(["t"])
    done: list[bytes] = []
    batcher.add(_record(b"a", b"a1"), lambda: done.append(b"a1"))
    batcher.add(_record(b"a", b"a2"), lambda: done.append(b"a2"))
    await _settle()
    assert [values for _p, values, _f in producer.sent] == [[b"a1", b"a2"]]
    batcher.add(_record(b"a", b"a3"), lambda: done.append(b"a3"))  # behind the batch in flight
    await _settle()
    assert (len(producer.sent), done) == (1, [])
    producer.sent[0][2].set_exception(KafkaTimeoutError())
    await asyncio.sleep(0.12)  # the first backoff: 50 to 100 ms
    # The failed batch again, exactly, before anything newer.
    assert [values for _p, values, _f in producer.sent] == [[b"a1", b"a2"], [b"a1", b"a2"]]
    assert not batcher.healthy
    producer.sent[1][2].set_result(None)
    await _settle()
    assert done == [b"a1", b"a2"]
    assert [values for _p, values, _f in producer.sent][2:] == [[b"a3"]]
    assert batcher.pending == 1
    drain = asyncio.ensure_future(batcher.drain(1.0))
    await _settle()
    producer.sent[2][2].set_result(None)
    assert await drain
    assert (done, batcher.pending, batcher.healthy) == ([b"a1", b"a2", b"a3"], 0, True)
    await batcher.cancel()


async def test_a_failing_done_callback_does_not_hold_back_the_others() -> None:
    producer = _Producer()
    batcher = KafkaBatcher(producer, max_records=100, linger_s=0.001, backoff_max_s=0.01)
    await batcher.prepare(["t"])
    done: list[bytes] = []

    def broken() -> None:
        raise RuntimeError("a bug in a callback")

    batcher.add(_record(b"a", b"a1"), broken)
    batcher.add(_record(b"a", b"a2"), lambda: done.append(b"a2"))
    await _settle()
    producer.sent[0][2].set_result(None)
    await _settle()
    assert (done, batcher.pending) == ([b"a2"], 0)
    await batcher.cancel()
