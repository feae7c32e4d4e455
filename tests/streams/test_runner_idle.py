"""A runner's poll round and the idle rule: a partition whose records are fetched but not yet
handed out is not idle, however long the previous round took.

Found under CPU load in the simulated-day test: one slow round (a commit's flush waiting for
Kafka acks) made every partition not handed out in the next poll look idle; the partitions that
were handed out moved the watermark past the others' records, which then all went to the late
topic. The consumer here is a stand-in (pure loop logic); the real broker runs in the
integration tests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from citysense.settings import AggregateSettings, Settings
from streams._service import _StageRunner
from streams._watermark import Watermarks

A = TopicPartition("city.noise.measurements.v1", 0)
B = TopicPartition("city.noise.measurements.v1", 1)
SECOND = 1_000_000
IDLE_S = 2.0


class _Consumer:
    """Partition B has 5 records fetched (high watermark 5) that ``getmany`` keeps for later."""

    def __init__(self) -> None:
        self.polls = 0

    def assignment(self) -> set[TopicPartition]:
        return {A, B}

    def highwater(self, tp: TopicPartition) -> int:
        return 100 if tp == A else 5

    async def position(self, tp: TopicPartition) -> int:
        return 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.polls += 1
        offset = self.polls - 1
        return {A: [SimpleNamespace(offset=offset, event_us=(10 + 60 * offset) * SECOND)]}


class _Runner(_StageRunner):
    def __init__(self, service: Any, clock: list[float]) -> None:
        super().__init__(service, "window", "test")
        self.watermarks = Watermarks(out_of_orderness_s=0, idle_timeout_s=IDLE_S)
        self.clock = clock
        self.seen: list[int] = []

    def assign(self, tp: TopicPartition, now_s: float) -> None:
        self.watermarks.assign(tp, now_s)

    def busy(self, tp: TopicPartition, now_s: float) -> None:
        self.watermarks.busy(tp, now_s)

    async def handle(self, tp: TopicPartition, records: Sequence[Any], now_s: float) -> None:
        # The stage judges a batch against the watermark reached before it.
        self.seen.append(self.watermarks.current(now_s))
        for record in records:
            self.watermarks.observe(tp, record.event_us, now_s)

    async def emit(self, now_s: float) -> None:
        return None

    async def commit(self, *, force: bool = False) -> None:
        # As the real commit does: wait for Kafka's acks first (here every round, slowly).
        await self.service.flush()


class _Service:
    def __init__(self, runner_clock: list[float], rounds: int) -> None:
        self.settings = Settings(aggregate=AggregateSettings(idle_timeout_s=IDLE_S))
        self.stopping = asyncio.Event()
        self.clock = runner_clock
        self.rounds = rounds
        self.flushes = 0

    def reap(self) -> bool:
        return False  # Kafka failed nothing: the acks are awaited by the commit

    async def flush(self) -> None:
        # Every flush takes longer than the idle timeout (Kafka acks slow under load).
        self.clock[0] += IDLE_S + 1
        self.flushes += 1
        if self.flushes >= self.rounds:
            self.stopping.set()


async def test_a_slow_round_does_not_make_a_partition_with_fetched_records_idle(
    monkeypatch: Any,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("streams._service.time.monotonic", lambda: clock[0])
    service = _Service(clock, rounds=4)
    runner = _Runner(service, clock)
    runner.consumer = _Consumer()
    for tp in (A, B):
        runner.assign(tp, clock[0])
    # B delivered once, long ago in event time: it holds the watermark there while it has
    # records left to hand out.
    runner.watermarks.observe(B, 5 * SECOND, clock[0])
    await runner.run()
    assert len(runner.seen) >= 4
    # Judged with the poll's own clock, B is busy at every round: the watermark never passes
    # B's records (before A delivers, it is A's: nothing yet).
    assert max(runner.seen) == 5 * SECOND


async def test_a_partition_never_handed_out_is_busy_when_its_position_is_behind() -> None:
    clock = [50.0]
    service = _Service(clock, rounds=1)
    runner = _Runner(service, clock)
    runner.consumer = _Consumer()
    runner.assign(B, 0.0)
    assert runner.watermarks.idle(B, 50.0)
    await runner.mark_busy(runner.consumer, 50.0)
    assert not runner.watermarks.idle(B, 50.0)


class _Timed(_Consumer):
    """Records when each poll happened (the real clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.times.append(time.monotonic())
        return await super().getmany(timeout_ms, max_records)


async def test_poll_interval_spaces_the_polls() -> None:
    """``aggregate.poll_interval_ms``: a poll comes at least that long after the previous one
    (the rounds themselves take no time here)."""
    service = _Service([0.0], rounds=4)
    service.settings = Settings(
        aggregate=AggregateSettings(idle_timeout_s=IDLE_S, poll_interval_ms=80)
    )
    runner = _Runner(service, [0.0])
    consumer = runner.consumer = _Timed()
    for tp in (A, B):
        runner.assign(tp, 0.0)
    await runner.run()
    gaps = [b - a for a, b in itertools.pairwise(consumer.times)]
    assert len(gaps) >= 3
    assert min(gaps) >= 0.079
