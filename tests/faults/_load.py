"""The load of a scenario: the nation fleet at a steady rate, with its own record of what it sent.

The fleet mixes in malformed (10 %) and late (5 %) messages; the load adds duplicate deliveries:
a LoRaWAN uplink heard by a second gateway (the same device, frame counter and payload, another
gateway and deduplication id, as two network-server instances publish it) and a message
published twice (what an MQTT redelivery looks like to the subscriber). The publisher's journal
says which PUBLISH the broker acknowledged; those are the messages the pipeline owes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from citysense.registry import Registry
from citysense.settings import MqttSettings
from decoders.envelopes import parse_uplink
from simulators import Fleet, Outgoing, Publisher

__all__ = ["Load", "Sent", "fault_fleet", "idempotency_key"]

Tag = Literal["ok", "late", "bad"]


def fault_fleet(registry: Registry, seed: int) -> Fleet:
    """10 % malformed, 5 % late; ``replay``: direct messages carry their ``observed_at`` (a
    gateway's timestamp), so a redelivery after a crash is the same row (docs/faults.md)."""
    return Fleet(registry, seed=seed, bad_ratio=0.1, late_ratio=0.05, replay=True)


@dataclass
class Sent:
    message: Outgoing
    tag: Tag
    #: Wall-clock second it was handed to the publisher (the age of a late message is from it).
    at: float
    #: A duplicate delivery of an earlier message (``dup-gateway`` or ``dup-mqtt``).
    duplicate: str = ""


def idempotency_key(message: Outgoing) -> bytes:
    """The ``idempotency-key`` ingest gives the message (docs/architecture.md, Headers)."""
    if message.topic.startswith(("application/", "v3/")):
        return parse_uplink(message.topic, message.payload).idempotency_key.encode()
    sensor_id = message.topic.split("/")[-2]
    return f"{sensor_id}:{dict(message.user_properties)['message_id']}".encode()


def _second_gateway(message: Outgoing) -> Outgoing:
    """The same uplink as another gateway forwards it."""
    payload = message.payload.replace(b"gw-nation-1", b"gw-nation-2")
    return Outgoing(message.topic, payload, message.user_properties)


@dataclass(eq=False)  # a thread: hashed by identity
class Load(threading.Thread):
    """Publishes for ``duration_s`` at ``rate`` msg/s; ``sent`` in order, ``acked`` per message."""

    mqtt: MqttSettings
    #: One fleet for every load of a run: frame counters and message ids go on from one load
    #: to the next, as a real fleet's do (a counter starting over with the same payload within
    #: ingest's duplicate window would be taken for a redelivery).
    fleet: Fleet
    rate: float
    duration_s: float
    duplicate_ratio: float = 0.02
    #: Set to end the load before ``duration_s``.
    stop: threading.Event = field(default_factory=threading.Event)
    sent: list[Sent] = field(default_factory=list)
    acked: Counter[int] = field(default_factory=Counter)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(daemon=True, name="load")

    def _journal(self, message: Outgoing, acked: bool) -> None:
        if acked:
            self.acked[id(message)] += 1

    def _messages(self, fleet: Fleet, size: int) -> list[Sent]:
        out: list[Sent] = []
        now = time.time()
        rng = fleet.rng
        for _ in range(size):
            bad, late = fleet.stats.malformed, fleet.stats.late
            (message,) = fleet.next_batch(1)
            tag: Tag = (
                "bad"
                if fleet.stats.malformed > bad
                else "late"
                if fleet.stats.late > late
                else "ok"
            )
            out.append(Sent(message, tag, now))
            if tag != "bad" and rng.random() < self.duplicate_ratio:
                if message.topic.startswith(("application/", "v3/")) and rng.random() < 0.5:
                    out.append(Sent(_second_gateway(message), tag, now, "dup-gateway"))
                else:  # the very same message object, published a second time
                    out.append(Sent(message, tag, now, "dup-mqtt"))
        return out

    def run(self) -> None:
        try:
            fleet = self.fleet
            client_id = f"faults-load-{uuid.uuid4().hex[:8]}"
            with Publisher(self.mqtt, client_id, journal=self._journal) as publisher:
                started = time.monotonic()
                batch = max(1, int(self.rate / 20))
                while time.monotonic() - started < self.duration_s and not self.stop.is_set():
                    due = started + len(self.sent) / self.rate
                    if due > time.monotonic():
                        time.sleep(due - time.monotonic())
                    items = self._messages(fleet, batch)
                    self.sent.extend(items)
                    publisher.publish_batch([s.message for s in items])
                publisher.wait_acked(300)
        except BaseException as exc:  # reported by the test
            self.error = exc
