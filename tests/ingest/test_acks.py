"""PUBACKs go out in arrival order whatever order Kafka releases them in."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import pytest

from ingest import _acks
from tests._source import plain_python


class _Client:
    """paho's public entry point the queue sends PUBACKs with."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        assert qos == 1
        self.acked.append(mid)


@pytest.fixture(params=["compiled", "plain"])
def acks(request: pytest.FixtureRequest) -> ModuleType:
    """``ingest._acks`` as imported (compiled when built) and from its ``.py`` source."""
    return _acks if request.param == "compiled" else plain_python(_acks)


async def test_releases_out_of_order_are_acknowledged_in_arrival_order(acks: ModuleType) -> None:
    flushed: list[int] = []
    queue: Any = acks.AckQueue(lambda: flushed.append(len(queue)))
    client = _Client()
    queue.reset(client)
    first = queue.track(10)
    rest = queue.track_all([11, 300, 12])
    assert len(queue) == 4
    rest[0]()
    rest[2]()
    await asyncio.sleep(0)
    assert client.acked == []  # 10 is not released: nothing may overtake it
    assert flushed == [4]
    first()
    first()  # a second call changes nothing
    await asyncio.sleep(0)
    assert client.acked == [10, 11]
    rest[1]()
    await asyncio.sleep(0)
    assert client.acked == [10, 11, 300, 12]
    assert len(queue) == 0


async def test_a_release_from_a_lost_connection_is_ignored(acks: ModuleType) -> None:
    queue: Any = acks.AckQueue(lambda: None)
    old, new = _Client(), _Client()
    queue.reset(old)
    stale = queue.track(1)
    queue.reset(new)  # reconnected: the broker redelivers message 1
    fresh = queue.track_all([1])[0]
    stale()
    await asyncio.sleep(0)
    assert (old.acked, new.acked, len(queue)) == ([], [], 1)
    fresh()
    await asyncio.sleep(0)
    assert (old.acked, new.acked, len(queue)) == ([], [1], 0)
