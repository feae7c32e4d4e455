"""MQTT v5 wire decoding for the lean QoS 1 path: frame and decode a buffer's PUBLISH packets.

Pure byte work run once per message, compiled with mypyc (``deploy/scripts/build_native.py``);
the ``.py`` is the fallback and behaves the same. Framing a whole read's packets in one call
saves the listener a round of Python calls per message (a read holds hundreds of packets).
Anything unusual (QoS 0/2, properties other than user properties, a topic that is not UTF-8,
a malformed packet, a packet not yet whole) stops the run: paho's own code takes it from there.
"""

from __future__ import annotations

from datetime import datetime

from ingest._router import Incoming

__all__ = ["decode_qos1_publish", "take_publishes", "variable_byte_integer"]

#: Shared by messages without user properties: nothing changes an ``Incoming`` once built.
_NO_PROPERTIES: dict[str, str] = {}
#: MQTT v5 §2.2.2.2: identifier 0x26 (38), User Property, a UTF-8 string pair.
_USER_PROPERTY = 0x26


def variable_byte_integer(data: bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it) of the variable byte integer at ``pos`` (MQTT v5 §1.5.5: 7 bits
    per byte, low group first, at most 4 bytes), or None when ``data`` ends first or it is longer.
    """
    value, shift, size = 0, 0, len(data)
    while pos < size and shift <= 21:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def decode_qos1_publish(
    packet: bytearray, start: int = 0, stop: int = -1
) -> tuple[str, bytes, dict[str, str], int] | None:
    """(topic, payload, user properties, mid) of a v5 QoS 1 PUBLISH's variable header and payload
    (MQTT v5 §3.3.2), ``packet[start:stop]`` (read in place: no copy of the packet; ``stop`` -1
    is the end), or None when paho should decode it: properties other than user properties, a
    topic that is not UTF-8, or a malformed packet (paho reports those)."""
    size = len(packet) if stop < 0 else stop
    if size - start < 5:
        return None
    pos = start + 2 + (packet[start] << 8 | packet[start + 1])
    if pos + 3 > size:
        return None
    try:
        topic = packet[start + 2 : pos].decode()
    except UnicodeDecodeError:
        return None
    mid = packet[pos] << 8 | packet[pos + 1]
    pos += 2
    length = packet[pos]  # the property length, one byte unless 128 or more
    if length < 0x80:
        pos += 1
    else:
        found = variable_byte_integer(packet, pos)
        if found is None:
            return None
        length, pos = found
    end = pos + length
    if end > size:
        return None
    properties = _NO_PROPERTIES
    if length:
        properties = {}
        while pos < end:
            if packet[pos] != _USER_PROPERTY or pos + 3 > end:
                return None
            key_end = pos + 3 + (packet[pos + 1] << 8 | packet[pos + 2])
            if key_end + 2 > end:
                return None
            value_end = key_end + 2 + (packet[key_end] << 8 | packet[key_end + 1])
            if value_end > end:
                return None
            try:
                properties[packet[pos + 3 : key_end].decode()] = packet[
                    key_end + 2 : value_end
                ].decode()
            except UnicodeDecodeError:
                return None
            pos = value_end
    return topic, bytes(packet[end:size]), properties, mid


def take_publishes(
    buf: bytearray, limit: int, received_at: datetime, mids: list[int]
) -> tuple[list[Incoming], int]:
    """The messages of the whole QoS 1 PUBLISH packets at the start of ``buf`` (at most
    ``limit``), all received at ``received_at``, and how many bytes they took; each packet's
    identifier is appended to ``mids``. Stops at the first packet that is not a whole QoS 1
    PUBLISH the lean decoder takes: paho decodes that one. ``buf`` is left as it was (the caller
    deletes what was taken, once)."""
    taken: list[Incoming] = []
    pos, size = 0, len(buf)
    while len(taken) < limit and pos + 2 <= size:
        if buf[pos] & 0xF6 != 0x32:  # PUBLISH, QoS 1 (any DUP and RETAIN)
            break
        length = buf[pos + 1]  # the remaining length (MQTT v5 §2.1.4)
        if length < 0x80:
            start = pos + 2
        else:
            found = variable_byte_integer(buf, pos + 1)
            if found is None:
                break
            length, start = found
        end = start + length
        if end > size:
            break
        decoded = decode_qos1_publish(buf, start, end)
        if decoded is None:
            break
        topic, payload, properties, mid = decoded
        # DUP is bit 3 of the fixed header (MQTT v5 §3.3.1.1).
        taken.append(Incoming(topic, payload, received_at, properties, buf[pos] & 0x08 != 0))
        mids.append(mid)
        pos = end
    return taken, pos
