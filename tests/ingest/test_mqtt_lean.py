"""The lean QoS 1 PUBLISH decoder agrees with paho's, and defers to paho when it should."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from types import ModuleType

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest import _wire
from ingest._wire import decode_qos1_publish as _decode_qos1_publish
from tests._source import plain_python


def _publish(topic: bytes, mid: int, properties: bytes, payload: bytes) -> bytearray:
    return bytearray(struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid)) + (
        properties + payload
    )


def _paho(packet: bytearray) -> tuple[str, bytes, dict[str, str], int]:
    result = _packet.decode_publish(0x32, packet, MQTTProtocolVersion.MQTTv5)
    user = getattr(result.properties, "UserProperty", None) or []
    return result.topic.decode(), bytes(result.payload), dict(user), result.mid


def _properties(**kwargs: object) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in kwargs.items():
        setattr(properties, name, value)
    packed: bytes = properties.pack()  # type: ignore[no-untyped-call]
    return packed


@pytest.mark.parametrize(
    "packet",
    [
        _publish(b"sensors/a/up", 1, b"\x00", b"\x01\x02"),
        _publish(b"sensors/a/up", 65535, b"\x00", b""),
        _publish("capteurs/é/up".encode(), 7, b"\x00", b"{}"),
        _publish(
            b"sensors/b/up",
            42,
            _properties(UserProperty=[("observed_at", "2026-01-01T00:00:00Z"), ("k", "")]),
            b"payload",
        ),
        _publish(b"t", 3, _properties(UserProperty=[("x" * 200, "y" * 300)]), b"p" * 1000),
    ],
)
def test_lean_decode_is_pahos(packet: bytearray) -> None:
    assert _decode_qos1_publish(packet) == _paho(packet)
    # In place, within the bytes read before and after it (as the listener's buffer holds it).
    around = bytearray(b"\x32\x7f") + packet + b"\x32\x05\x00\x01t"
    assert _decode_qos1_publish(around, 2, 2 + len(packet)) == _paho(packet)


@pytest.mark.parametrize(
    "packet",
    [
        _publish(b"t", 1, _properties(ContentType="text/plain"), b"x"),
        _publish(b"", 1, _properties(TopicAlias=3), b"x"),
        _publish(b"\xff\xfe", 1, b"\x00", b"x"),
        _publish(b"t", 1, b"\x05\x26\x00\x01", b""),  # truncated property
        bytearray(b"\x00\x10abc"),  # topic longer than the packet
    ],
)
def test_lean_decode_defers_to_paho(packet: bytearray) -> None:
    assert _decode_qos1_publish(packet) is None
    # Bytes after the packet do not complete it.
    assert _decode_qos1_publish(packet + b"\x00" * 300, 0, len(packet)) is None


def _framed(packet: bytearray, first: int = 0x32) -> bytearray:
    """A whole PUBLISH: the fixed header (with its remaining length) before ``packet``."""
    length, header = len(packet), bytearray([first])
    while True:
        byte, length = length & 0x7F, length >> 7
        header.append(byte | (0x80 if length else 0))
        if not length:
            return header + packet


_RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
_USER = _properties(UserProperty=[("message_id", "m1")])


@pytest.fixture(params=["compiled", "plain"])
def wire(request: pytest.FixtureRequest) -> ModuleType:
    """``ingest._wire`` as imported (compiled when built) and from its ``.py`` source."""
    return _wire if request.param == "compiled" else plain_python(_wire)


def test_take_publishes_frames_the_whole_run_and_stops_where_paho_should_decode(
    wire: ModuleType,
) -> None:
    big = _publish(b"sensors/big/up", 9, b"\x00", b"b" * 300)  # two length bytes
    run = (
        _framed(_publish(b"sensors/a/up", 1, b"\x00", b"\x01"))
        + _framed(_publish(b"sensors/b/up", 2, _USER, b"{}"), first=0x3B)  # DUP, RETAIN
        + _framed(big)
    )
    qos0 = _framed(_publish(b"t", 4, b"\x00", b"x"), first=0x30)
    mids: list[int] = []
    taken, consumed = wire.take_publishes(run + qos0 + run, 100, _RECEIVED, mids)
    assert consumed == len(run)
    assert mids == [1, 2, 9]
    assert [(m.topic, m.payload, dict(m.user_properties)) for m in taken] == [
        ("sensors/a/up", b"\x01", {}),
        ("sensors/b/up", b"{}", {"message_id": "m1"}),
        ("sensors/big/up", b"b" * 300, {}),
    ]
    assert all(m.received_at is _RECEIVED for m in taken)
    # The DUP flag (MQTT v5 §3.3.1.1) marks the broker's redelivery: ingest must know it.
    assert [m.redelivered for m in taken] == [False, True, False]


@pytest.mark.parametrize("cut", [1, 2, 5, 40])
def test_take_publishes_leaves_a_partial_packet_and_respects_the_limit(
    wire: ModuleType, cut: int
) -> None:
    one = _framed(_publish(b"sensors/a/up", 1, _USER, b"payload"))
    mids: list[int] = []
    taken, consumed = wire.take_publishes(one + one + one[:-cut], 100, _RECEIVED, mids)
    assert (len(taken), consumed, mids) == (2, 2 * len(one), [1, 1])
    mids.clear()
    taken, consumed = wire.take_publishes(one * 5, 3, _RECEIVED, mids)
    assert (len(taken), consumed) == (3, 3 * len(one))
    # A packet paho decodes stops the run before it, even first in the buffer.
    odd = _framed(_publish(b"t", 1, _properties(ContentType="text/plain"), b"x"))
    assert wire.take_publishes(odd + one, 100, _RECEIVED, []) == ([], 0)
    assert wire.take_publishes(bytearray(b"\x32"), 100, _RECEIVED, []) == ([], 0)
