"""Mosquitto's own queue depth, read from its ``$SYS`` topics, as ingest metrics.

When ingest stops consuming, QoS 1 messages for its persistent session pile up in the broker's
store up to ``max_queued_messages`` and are then dropped: the queue depth is the warning before
data loss, and only the broker knows it. Mosquitto publishes it on ``$SYS/broker/store/messages/
count`` and ``.../bytes`` every ``sys_interval`` seconds (mosquitto(8), "$SYS/broker/store/
messages/count: the number of messages currently held in the message store, including retained
messages and messages queued for durable clients"). Ingest's user must be allowed to read them:
an ACL's ``topic readwrite #`` does not cover ``$SYS`` topics (with Mosquitto 2.0 such a user
receives nothing on ``$SYS/#``), so both the embedded stack's ACL and ``citysense mqtt acl`` add
``topic read $SYS/broker/store/#``.

Hook: ingest subscribes to :data:`SYS_TOPICS` and passes each such message to
:func:`observe_sys_message` instead of the router. Until the first one arrives the gauges are
NaN, not 0: an unknown queue depth must not read as an empty queue.
"""

from __future__ import annotations

import math

from prometheus_client import Gauge

__all__ = ["STORED_BYTES", "STORED_MESSAGES", "SYS_TOPICS", "observe_sys_message"]

STORED_MESSAGES = Gauge(
    "citysense_ingest_broker_stored_messages",
    "Messages in Mosquitto's store (retained and queued for durable clients), from $SYS.",
)
STORED_BYTES = Gauge(
    "citysense_ingest_broker_stored_bytes",
    "Payload bytes in Mosquitto's store, from $SYS.",
)
SYS_TOPICS = ("$SYS/broker/store/messages/count", "$SYS/broker/store/messages/bytes")
_GAUGES = dict(zip(SYS_TOPICS, (STORED_MESSAGES, STORED_BYTES), strict=True))
for _gauge in _GAUGES.values():
    _gauge.set(math.nan)


def observe_sys_message(topic: str, payload: bytes) -> bool:
    """Set the gauge ``topic`` feeds; False (nothing set) for another topic or a bad payload."""
    gauge = _GAUGES.get(topic)
    if gauge is None:
        return False
    try:
        value = int(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return False
    gauge.set(value)
    return True
