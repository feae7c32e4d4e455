"""The publisher's shortcuts around paho's per-message costs give what paho itself gives."""

from __future__ import annotations

import random
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from citysense._paho_private import PackedProperties, install_lean_puback
from citysense.settings import MqttSettings
from simulators import Publisher, PublishError
from simulators._fleet import _uuid4_text


@pytest.mark.parametrize(
    "user_properties",
    [
        (("message_id", "1"),),
        (("message_id", "4294967295"), ("observed_at", "2026-03-10T11:58:01.123456+00:00")),
        (("clé", "värde" * 40),),  # non-ASCII, and a property list longer than 127 bytes
    ],
)
def test_packed_properties_encode_as_paho_does(
    user_properties: tuple[tuple[str, str], ...],
) -> None:
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    reference.UserProperty = list(user_properties)
    assert PackedProperties(user_properties).pack() == reference.pack()  # type: ignore[no-untyped-call]
    assert str(PackedProperties(user_properties)).startswith("[UserProperty")  # paho's debug log


def test_uuid4_text_is_the_standard_library_uuid4() -> None:
    rng = random.Random(1)
    for bits in [0, (1 << 128) - 1, *(rng.getrandbits(128) for _ in range(500))]:
        assert _uuid4_text(bits) == str(uuid.UUID(int=bits, version=4))


def _client_with_one_in_flight() -> tuple[mqtt.Client, list[int]]:
    """A paho client (never connected) holding message id 1 as awaiting its PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    reasons: list[int] = []
    client.on_publish = lambda _c, _u, _mid, reason, _p: reasons.append(reason.value)
    info = client.publish("sensors/s1/up", b"x", qos=1)
    assert info.mid == 1
    install_lean_puback(client)
    return client, reasons


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x00\x01", 0x00),  # v5 §3.4.2.1: no reason code means success
        (b"\x00\x01\x00", 0x00),
        (b"\x00\x01\x10", 0x10),  # no matching subscribers: still delivered to the broker
        (b"\x00\x01\x87\x00", 0x87),  # not authorized, empty property list
        (b"\x00\x01\x00\x05\x1f\x00\x02ok", 0x00),  # with a reason string: paho's own path
    ],
)
def test_lean_puback_completes_the_message_as_paho_does(packet: bytes, reason: int) -> None:
    client, reasons = _client_with_one_in_flight()
    client._in_packet["packet"] = bytearray(packet)
    assert client._handle_pubackcomp("PUBACK") == mqtt.MQTT_ERR_SUCCESS
    assert reasons == [reason]
    assert 1 not in client._out_messages
    client._in_packet["packet"] = bytearray(packet)  # a duplicate PUBACK is ignored, as paho does
    assert client._handle_pubackcomp("PUBACK") == mqtt.MQTT_ERR_SUCCESS
    assert reasons == [reason]


def test_refused_messages_are_counted_and_fail_the_wait() -> None:
    publisher = Publisher(MqttSettings(url="mqtt://127.0.0.1:1"), "unused")
    publisher._published = 2
    publisher._on_publish(None, None, 1, ReasonCode(PacketTypes.PUBACK), None)
    publisher._on_publish(None, None, 2, ReasonCode(PacketTypes.PUBACK, identifier=0x87), None)
    assert (publisher.acked, publisher.refused, publisher.pending()) == (1, 1, 0)
    with pytest.raises(PublishError, match="refused 1 messages: Not authorized"):
        publisher.wait_acked(timeout=0.1)
