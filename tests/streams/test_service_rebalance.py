"""A rebalance inside a running aggregator keeps every window whole.

The fault suite's 60 s Kafka partition outlasts the group's session timeout: the coordinator
drops the aggregator's member, and when Kafka is back the same process has its partitions
revoked and assigned again, then replays them from its checkpoint. The recomputation found
1-minute windows stored with fewer records than the raw rows: the duplicate filter remembered
the replayed records' ``idempotency-key`` from their first reading and dropped them as copies,
so the windows were rebuilt without them. A rebalance is forced here by a second member joining
the window stage's group and leaving it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

import schemas
from citysense.clients import ensure_topics, kafka_producer
from citysense.settings import Settings
from streams import AggregateService
from tests.streams._records import noise
from tests.streams.test_service_integration import (
    AGGREGATES,
    MINUTE,
    SECOND,
    _aggregates,
    _future_base,
    _read,
    _settings,
)

pytestmark = pytest.mark.integration

NOISE = schemas.measurement_topic("noise")


async def _send(
    settings: Settings, items: list[tuple[str, bytes]], first: int
) -> tuple[TopicPartition, int]:
    """Each record with its own ``idempotency-key``, as ingest stamps them; the partition and
    the offset of the last one."""
    producer = kafka_producer(settings.kafka)
    await producer.start()
    try:
        for index, (key, value) in enumerate(items, start=first):
            sent = await producer.send_and_wait(
                NOISE,
                value,
                key=key.encode(),
                headers=[("idempotency-key", f"{key}:{index}".encode())],
            )
    finally:
        await producer.stop()
    return TopicPartition(NOISE, sent.partition), sent.offset


async def _until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _join_then_leave(
    settings: Settings, group: str, joined: Callable[[], bool], what: str
) -> None:
    """A second member of the window stage's group, polling in the background until
    ``joined()`` says its rebalance reached the service, then leaving: two rebalances."""
    member = AIOKafkaConsumer(
        NOISE,
        **settings.kafka.client_options(),
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    await member.start()

    async def poll() -> None:
        while True:
            await member.getmany(timeout_ms=200)

    polling = asyncio.create_task(poll())
    try:
        await _until(joined, 60, what)
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await member.stop()


async def test_a_rebalance_in_the_same_process_keeps_the_replayed_records(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    sensor = f"rebalance-{tag}"
    group = f"aggregate-rebalance-{tag}"
    config = _settings(settings, group)
    await ensure_topics(settings.kafka, [NOISE, AGGREGATES])
    base = _future_base()
    # Three records of [base, base + 1 min); nothing closes the minute yet.
    tp, last = await _send(
        config, [noise(sensor, base + k * 10 * SECOND, 50.0 + k) for k in (1, 2, 3)], 0
    )

    def ours(record: Any) -> bool:
        return bool(record.key and record.key.decode() == sensor)

    service = AggregateService(config)
    await service.start()
    try:
        (window,) = [r for r in service._runners if r.name == "window"]
        rebalances = {"assigned": 0}
        assigned = window.assigned

        async def counting(tps: set[Any]) -> None:
            await assigned(tps)
            rebalances["assigned"] += 1

        monkeypatch.setattr(window, "assigned", counting)
        # The three read and checkpointed (commit_interval_s is 0.2 s). The group is new: no
        # checkpoint to resume from yet.
        await _until(lambda: window.positions.get(tp, 0) > last, 60, "the records")
        await asyncio.sleep(1.0)
        # A second member joins (a rebalance), then leaves (another): the service is assigned
        # the partition again and replays it from its checkpoint, in the same process.
        await _join_then_leave(
            config, group, lambda: rebalances["assigned"] >= 1, "the join's rebalance"
        )
        await _until(lambda: rebalances["assigned"] >= 2, 60, "the leave's rebalance")
        # A record two minutes on closes the minute.
        await _send(config, [noise(sensor, base + 2 * MINUTE, 40.0)], 3)
        minutes = [
            r
            for r in _aggregates(await _read(config, AGGREGATES, ours, 1))
            if r["window_start"] == base
        ]
    finally:
        await service.stop()
    assert [m["sample_count"] for m in minutes] == [3], minutes


async def test_a_revocation_waits_for_the_round_in_progress(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka calls the rebalance listener from its coordinator task, beside the runner's
    loop: a revocation in the middle of a round committed the round's read position with the
    watermark of the round before, and a replay then folded records the round had declared
    late. Rounds are made slow here, so a revocation would land inside one."""
    tag = uuid.uuid4().hex[:8]
    group = f"aggregate-revoke-{tag}"
    config = _settings(settings, group)
    await ensure_topics(settings.kafka, [NOISE, AGGREGATES])
    service = AggregateService(config)
    await service.start()
    try:
        (window,) = [r for r in service._runners if r.name == "window"]
        in_round = {"now": False, "revoked_inside": 0, "revoked": 0}
        plain_round, plain_revoked = window._round, window.revoked

        async def slow_round(*args: Any) -> None:
            in_round["now"] = True
            try:
                await asyncio.sleep(1.0)
                await plain_round(*args)
            finally:
                in_round["now"] = False

        async def watched_revoked(tps: set[Any]) -> None:
            in_round["revoked"] += 1
            in_round["revoked_inside"] += in_round["now"]
            await plain_revoked(tps)

        monkeypatch.setattr(window, "_round", slow_round)
        monkeypatch.setattr(window, "revoked", watched_revoked)
        await _join_then_leave(config, group, lambda: in_round["revoked"] >= 1, "a revocation")
        await _until(lambda: in_round["revoked"] >= 2, 60, "the second revocation")
    finally:
        await service.stop()
    assert in_round["revoked_inside"] == 0, in_round
