"""PUBACKs go out in arrival order whatever order Kafka releases them in, one write per run."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import pytest

from ingest import _acks
from tests._source import plain_python


class _Client:
    """The two paho entry points the queue writes PUBACKs with."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.acked: list[int] = []

    def _packet_queue(self, command: int, packet: bytes, mid: int, qos: int) -> None:
        assert (command, qos) == (0x40, 1)
        self.written.append(packet)

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


@pytest.fixture(params=["compiled", "plain"])
def acks(request: pytest.FixtureRequest) -> ModuleType:
    """``ingest._acks`` as imported (compiled when built) and from its ``.py`` source."""
    return _acks if request.param == "compiled" else plain_python(_acks)


def _puback(*mids: int) -> bytes:
    return b"".join(bytes([0x40, 2, mid >> 8, mid & 0xFF]) for mid in mids)


async def test_releases_out_of_order_are_acknowledged_in_arrival_order(acks: ModuleType) -> None:
    flushed: list[int] = []
    queue: Any = acks.AckQueue(lambda: flushed.append(len(queue)))
    client = _Client()
    queue.reset(client, True)
    first = queue.track(10)
    rest = queue.track_all([11, 300, 12])
    assert len(queue) == 4
    rest[0]()
    rest[2]()
    await asyncio.sleep(0)
    assert client.written == []  # 10 is not released: nothing may overtake it
    assert flushed == [4]
    first()
    first()  # a second call changes nothing
    await asyncio.sleep(0)
    assert client.written == [_puback(10, 11)]
    rest[1]()
    await asyncio.sleep(0)
    assert client.written == [_puback(10, 11), _puback(300, 12)]
    assert len(queue) == 0


async def test_a_release_from_a_lost_connection_is_ignored(acks: ModuleType) -> None:
    queue: Any = acks.AckQueue(lambda: None)
    old, new = _Client(), _Client()
    queue.reset(old, False)
    stale = queue.track(1)
    queue.reset(new, False)  # reconnected: the broker redelivers message 1
    fresh = queue.track_all([1])[0]
    stale()
    await asyncio.sleep(0)
    assert (old.acked, new.acked, len(queue)) == ([], [], 1)
    fresh()
    await asyncio.sleep(0)
    assert (old.acked, new.acked, len(queue)) == ([], [1], 0)
