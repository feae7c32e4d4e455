"""The aggregator's flush and commit rule with stand-in futures (pure asyncio, no Kafka): nothing
is committed past a result Kafka has not acknowledged (docs/architecture.md, delivery rule 4).

Results are sent in batches and their acknowledgements awaited by the commit, by whichever of
the stage's runners commits first; the real broker runs in the integration and outage tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from citysense.settings import Settings
from schemas._aggregate_codec import encode_aggregate
from streams._service import AggregateService, _Send, _StageRunner


def _pending_send(service: AggregateService) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    service._sends.append(_Send(future, None, "city.noise.aggregates.v1", [(b"k", b"v")], 0))
    return future


async def test_a_second_flush_waits_for_the_sends_the_first_one_holds() -> None:
    """The window and rollup runners flush concurrently; the one that finds the list empty
    (the other took it) must still wait for those sends before its runner commits."""
    service = AggregateService(Settings())
    ack = _pending_send(service)
    first = asyncio.create_task(service.flush())
    await asyncio.sleep(0)  # the first flush took the sends and waits for them
    second = asyncio.create_task(service.flush())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not second.done()
    ack.set_result(None)
    await asyncio.gather(first, second)


class _Consumer:
    def __init__(self, service: AggregateService) -> None:
        self.service = service
        self.committed: list[dict[Any, int]] = []
        self.unacknowledged_at_commit: list[int] = []

    def assignment(self) -> set[Any]:
        return {"p0"}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.unacknowledged_at_commit.append(
            sum(not send.future.done() for send in self.service._sends)
        )
        self.committed.append(offsets)


class _Side:
    async def commit(self, values: Any) -> None:
        return None


class _Runner(_StageRunner):
    def needed(self) -> dict[Any, int]:
        return {}


async def test_a_commit_waits_for_every_result_sent_before_it() -> None:
    service = AggregateService(Settings())
    runner = _Runner(service, "window", "test")
    consumer = _Consumer(service)
    runner.consumer = consumer
    runner.side_position = runner.side_watermark = _Side()  # type: ignore[assignment]
    runner.positions["p0"] = 7
    ack = _pending_send(service)
    commit = asyncio.create_task(runner.commit(force=True))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not commit.done()
    assert consumer.committed == []
    ack.set_result(None)
    await commit
    assert consumer.committed == [{"p0": 7}]
    assert consumer.unacknowledged_at_commit == [0]


class _AwayProducer:
    """Kafka away before the topic's metadata was ever fetched: every request times out."""

    async def partitions_for(self, topic: str) -> set[int]:
        raise KafkaTimeoutError

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        raise KafkaTimeoutError


async def test_results_sent_while_kafka_is_away_are_kept_to_send_again() -> None:
    """The partition lookup of a batch fails like a send did: the result is kept, failed, for
    flush() to send again; the stage does not fail."""
    service = AggregateService(Settings())
    service._producer = _AwayProducer()
    result = {
        "key": "bench-noise-0001",
        "kind": "noise",
        "window_start": 0,
        "window_end": 60_000_000,
        "window_size_seconds": 60,
        "sample_count": 1,
        "values": {"laeq_db": 60.0},
    }
    await service.send_results("noise", [result], 0.0)
    assert len(service._sends) == 1
    (send,) = service._sends
    assert isinstance(send.future.exception(), KafkaTimeoutError)
    assert send.records == [(b"bench-noise-0001", encode_aggregate(result))]
    assert service.reap()  # a failure: the runner flushes (sends it again) at once
