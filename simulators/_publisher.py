"""A fast QoS 1 MQTT publisher driven from one thread, without paho's background thread.

paho's ``loop_start`` thread costs a context switch per packet, and its ``loop()`` opens a socket
pair only to wake that thread, then writes a byte to it on every publish. Here the caller's
thread drives paho's external-event-loop API instead (``loop_read`` / ``loop_write`` /
``loop_misc``, the integration paho documents for ``select``-based programs): ``publish`` only
queues, each batch is written with one ``loop_write``, PUBACKs are read between batches, so one
process sustains well over ten thousand QoS 1 messages per second.

Two paho costs dominate what remains per message, both measured with cProfile on paho 2.2 (about
150 µs of CPU per message before, 50 µs after, on the 2-core development machine): building a
``Properties`` object and its ``pack()`` for the user properties, and decoding every PUBACK into
new objects. The ``mqtt-publish`` fast path (docs/runtime.md#fast-paths) avoids both with paho's
private names, kept in :mod:`citysense._paho_private`; with the switch off (or an unsupported
paho) the publisher uses paho's public ``Properties`` and its own PUBACK handling.

``max_inflight`` bounds the messages awaiting PUBACK (our window, not paho's, whose bookkeeping
scans every queued message on each PUBACK).

``journal``, when given, is called once per message with the message and whether the broker
acknowledged it (a PUBACK with a success code): the simulator's own record of what it sent, the
reference the fault suite checks the pipeline against.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from citysense import _paho_private
from citysense.clients import mqtt_client
from citysense.settings import MqttSettings

__all__ = ["Outgoing", "PublishError", "Publisher"]


class PublishError(Exception):
    """The broker refused the connection or a message, or went away mid-run."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish; ``user_properties`` become MQTT v5 user properties."""

    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...] = ()


def _ignore_socket(*_args: object) -> None:
    """Registered so that ``publish`` queues instead of writing; ``publish_batch`` writes."""


@dataclass
class Publisher:
    """Publishes at QoS 1 and counts PUBACKs; use ``with Publisher(...) as p``."""

    settings: MqttSettings
    client_id: str
    max_inflight: int = 1000
    #: The ``mqtt-publish`` fast path (``CITYSENSE_LEAN``); used only with a supported paho.
    fast: bool = True
    acked: int = 0
    #: PUBACKs with a failure reason (MQTT v5 §3.4.2.1, e.g. 0x87 not authorized).
    refused: int = 0
    _client: mqtt.Client | None = field(default=None, repr=False)
    _connected: bool = field(default=False, repr=False)
    _published: int = field(default=0, repr=False)
    _last_refusal: str = field(default="", repr=False)
    #: Called with each message and ``True`` once acknowledged, ``False`` once refused.
    journal: Callable[[Outgoing, bool], None] | None = None
    #: Packet id -> message awaiting its PUBACK (only with a journal; ids are unique in flight).
    _awaiting: dict[int, Outgoing] = field(default_factory=dict, repr=False)
    _lean: bool = field(default=False, repr=False)

    def __enter__(self) -> Publisher:
        client, host, port = mqtt_client(self.settings, self.client_id)
        # Our own window (``publish_batch``) bounds what awaits a PUBACK. paho's limit is off: with
        # it on, every PUBACK scans all queued messages (``_update_inflight``).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_socket_register_write = _ignore_socket
        self._lean = self.fast and _paho_private.supported()
        if self._lean:
            _paho_private.install_lean_puback(client)
        client.connect(host, port, keepalive=60)
        self._client = client
        deadline = time.monotonic() + 10
        while not self._connected:
            if time.monotonic() > deadline:
                raise PublishError("MQTT broker did not accept the connection within 10 s")
            self._pump(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_write()  # the DISCONNECT packet; the socket closes after it
            self._client = None

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: object,
        _props: object,
    ) -> None:
        if getattr(reason, "is_failure", False):
            raise PublishError(f"MQTT connection refused: {reason}")
        self._connected = True

    def _on_publish(
        self, _client: object, _userdata: object, mid: int, reason: ReasonCode, _props: object
    ) -> None:
        acked = reason.value < 0x80  # success codes, 0x10 "no matching subscribers" included
        if acked:
            self.acked += 1
        else:
            self.refused += 1
            self._last_refusal = str(reason)
        if self.journal is not None:
            message = self._awaiting.pop(mid, None)
            if message is not None:
                self.journal(message, acked)

    def _pump(self, timeout: float) -> None:
        """Write what is queued, wait up to ``timeout`` for the socket, read what arrived."""
        client = self._client
        assert client is not None
        rc = client.loop_write() if client.want_write() else mqtt.MQTT_ERR_SUCCESS
        if rc == mqtt.MQTT_ERR_SUCCESS and timeout > 0:
            sock = client.socket()
            if sock is not None:
                writing = [sock] if client.want_write() else []
                select.select([sock], writing, [], timeout)
                if writing:
                    rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            # Reads until the socket has nothing more (paho stops on EAGAIN).
            rc = client.loop_read()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()  # keepalive PINGREQ, and the broker's silence detected
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishError(f"MQTT connection lost: {mqtt.error_string(rc)}")

    def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        """Queue and write ``messages``, then read whatever PUBACKs have arrived."""
        client = self._client
        assert client is not None
        publish = client.publish
        lean = self._lean
        awaiting = self._awaiting if self.journal is not None else None
        for message in messages:
            properties: Properties | None = None
            if message.user_properties:
                if lean:
                    properties = _paho_private.PackedProperties(message.user_properties)
                else:
                    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    properties.UserProperty = list(message.user_properties)
            info = publish(message.topic, message.payload, qos=1, properties=properties)
            if awaiting is not None:
                awaiting[info.mid] = message
        self._published += len(messages)
        # Keep the number awaiting PUBACK near the window: read until it is under it.
        while self.pending() > self.max_inflight:
            self._pump(0.01)
        self._pump(0)

    def pending(self) -> int:
        return self._published - self.acked - self.refused

    def wait_acked(self, timeout: float = 60.0) -> None:
        """Block until every published message is acknowledged; a refused one is an error."""
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if time.monotonic() > deadline:
                raise PublishError(f"{self.pending()} messages not acknowledged after {timeout} s")
            self._pump(0.01)
        if self.refused:
            raise PublishError(f"the broker refused {self.refused} messages: {self._last_refusal}")
