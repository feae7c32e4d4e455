"""A fast QoS 1 MQTT publisher driven from one thread, without paho's background thread.

paho's ``loop_start`` thread costs a context switch per packet; here the caller's thread writes
each PUBLISH as it is queued (paho does that when no loop thread runs) and reads PUBACKs between
batches with ``loop_read``, so one process sustains tens of thousands of QoS 1 messages per second.
``max_inflight`` bounds the messages awaiting PUBACK (our window, not paho's, whose bookkeeping
scans every queued message on each PUBACK).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citysense.clients import mqtt_client
from citysense.settings import MqttSettings

__all__ = ["Outgoing", "PublishError", "Publisher"]


class PublishError(Exception):
    """The broker refused the connection or went away mid-run."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish; ``user_properties`` become MQTT v5 user properties."""

    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass
class Publisher:
    """Publishes at QoS 1 and counts PUBACKs; use ``with Publisher(...) as p``."""

    settings: MqttSettings
    client_id: str
    max_inflight: int = 1000
    acked: int = 0
    _client: mqtt.Client | None = field(default=None, repr=False)
    _connected: bool = field(default=False, repr=False)
    _published: int = field(default=0, repr=False)

    def __enter__(self) -> Publisher:
        client, host, port = mqtt_client(self.settings, self.client_id)
        # Our own window (``publish_batch``) bounds what awaits a PUBACK. paho's limit is off: with
        # it on, every PUBACK scans all queued messages (``_update_inflight``).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
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

    def _on_publish(self, *_args: object) -> None:
        self.acked += 1

    def _pump(self, timeout: float) -> None:
        assert self._client is not None
        rc = self._client.loop(timeout=timeout)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishError(f"MQTT connection lost: {mqtt.error_string(rc)}")

    def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        """Queue and write ``messages``, then read whatever PUBACKs have arrived."""
        client = self._client
        assert client is not None
        for message in messages:
            properties = None
            if message.user_properties:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = list(message.user_properties)
            client.publish(message.topic, message.payload, qos=1, properties=properties)
        self._published += len(messages)
        # Keep the number awaiting PUBACK near the window: read until it is under it.
        while self._published - self.acked > self.max_inflight:
            self._pump(0.01)
        self._pump(0)

    def pending(self) -> int:
        return self._published - self.acked

    def wait_acked(self, timeout: float = 60.0) -> None:
        """Block until every published message is acknowledged."""
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if time.monotonic() > deadline:
                raise PublishError(f"{self.pending()} messages not acknowledged after {timeout} s")
            self._pump(0.01)
