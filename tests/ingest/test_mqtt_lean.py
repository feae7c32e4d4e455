"""The lean QoS 1 PUBLISH decoder agrees with paho's, and defers to paho when it should."""

from __future__ import annotations

import struct

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest._mqtt import _decode_qos1_publish


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
