"""Avro's binary primitives, written once: every encoder, decoder and the COPY transcoder use them.

Avro 1.11 specification, "Binary Encoding": ``int`` and ``long`` are zig-zag encoded
(``(n << 1) ^ (n >> 63)``) then written as a base-128 varint, low 7-bit group first, the high
bit of each byte set when another follows; ``double`` is 8 bytes, little-endian IEEE 754;
``string`` (and ``bytes``) a ``long`` byte length then the UTF-8 bytes; ``timestamp-micros`` a
``long`` of microseconds since 1970-01-01T00:00:00Z. "Single-object encoding": the marker
``C3 01``, the writer schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then the body.

Readers here do not raise: :func:`read_long` returns a negative position (:data:`TRUNCATED`,
:data:`TOO_LONG`, :data:`BEYOND_64_BITS`) for a varint it cannot take, so the COPY transcoder
can give up without an exception and the record decoder can raise its own error naming the
field. Compiled with mypyc (``deploy/scripts/build_native.py``) together with its compiled users,
which then call it natively; the ``.py`` is the fallback and behaves the same (property tests
check both against fastavro).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Final

from mypy_extensions import i64

__all__ = [
    "BEYOND_64_BITS",
    "EPOCH",
    "HIGH_VARINTS",
    "HIGH_VARINTS_SIZE",
    "MAX_MICROS",
    "MIN_MICROS",
    "SINGLE_OBJECT_HEADER_SIZE",
    "SINGLE_OBJECT_MARKER",
    "TOO_LONG",
    "TRUNCATED",
    "VARINT_GROUPS_14",
    "double_bytes",
    "epoch_micros",
    "high_varint",
    "long_bytes",
    "read_long",
    "read_long_8",
    "single_object_header",
    "string_bytes",
    "unzigzag",
    "utc_micros",
    "varint",
    "write_varint",
    "zigzag",
]

#: "Single-object encoding": the two marker bytes, and the header's size with the fingerprint.
SINGLE_OBJECT_MARKER: Final = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE: Final = 10
#: ``timestamp-micros`` counts from the Unix epoch.
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The ``timestamp-micros`` values a ``datetime`` holds (years 1 to 9999), in µs since 1970.
MIN_MICROS: Final = -62_135_596_800_000_000
MAX_MICROS: Final = 253_402_300_799_999_999
#: :func:`read_long`'s position when the data ends inside the varint.
TRUNCATED: Final = -1
#: ... when the varint is longer than 10 bytes (fastavro drops the high bits; we refuse).
TOO_LONG: Final = -2
#: ... when its value does not fit in 64 bits (fastavro wraps it; we refuse).
BEYOND_64_BITS: Final = -3

_PACK_DOUBLE: Final = struct.Struct("<d").pack


def single_object_header(fingerprint: bytes) -> bytes:
    """``C3 01`` + the 8-byte CRC-64-AVRO ``fingerprint``: what precedes a single-object body."""
    if len(fingerprint) != 8:
        raise ValueError(f"a fingerprint has 8 bytes, got {len(fingerprint)}")
    return SINGLE_OBJECT_MARKER + fingerprint


# --- writing ------------------------------------------------------------------------------------


def zigzag(value: int) -> int:
    """The zig-zag encoding of a long (``-1`` → 1, ``1`` → 2): small magnitudes, small varints."""
    return value << 1 if value >= 0 else ~(value << 1)


_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(0x80))
#: A 7-bit group with its continuation bit set: the first byte of a two-byte varint.
_CONTINUED: Final = tuple(bytes((n | 0x80,)) for n in range(0x80))
#: Two 7-bit groups with their continuation bits set: bits 0-13 of a varint of 3 bytes or more.
VARINT_GROUPS_14: Final = tuple(bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(1 << 14))
#: Varints of ``zigzag >> 28``, which for a timestamp changes every ~134 s: a small cache hits.
HIGH_VARINTS: dict[int, bytes] = {}
HIGH_VARINTS_SIZE: Final = 1024


def _varint_loop(zigzag: int) -> bytes:
    out = bytearray()
    while zigzag > 0x7F:
        out.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def high_varint(high: int) -> bytes:
    """:func:`varint` of ``high``, a zig-zag value's bits 28 and up, from :data:`HIGH_VARINTS`."""
    encoded = HIGH_VARINTS.get(high)
    if encoded is None:
        if len(HIGH_VARINTS) >= HIGH_VARINTS_SIZE:
            HIGH_VARINTS.clear()
        encoded = HIGH_VARINTS[high] = _varint_loop(high)
    return encoded


def varint(zigzag: int) -> bytes:
    """Base-128 varint of a zig-zag encoded long (0 ≤ zigzag < 2**64).

    The one-byte ones (most lengths, counts, lines) come from a table, the two- and three-byte
    ones (strings of 64 bytes or more, fCnt, counts) from two tables. Long ones are mostly
    timestamps, whose 8 bytes a byte loop writes in ~0.3 µs: instead, bits 0-27 come from the
    table of 7-bit group pairs and the rest, which for a timestamp changes every ~134 s, from a
    small cache.
    """
    if zigzag < 0x80:
        return _ONE_BYTE[zigzag]
    if zigzag < 0x4000:
        return _CONTINUED[zigzag & 0x7F] + _ONE_BYTE[zigzag >> 7]
    if zigzag < 0x20_0000:
        return VARINT_GROUPS_14[zigzag & 0x3FFF] + _ONE_BYTE[zigzag >> 14]
    if zigzag < 0x1000_0000:
        return _varint_loop(zigzag)
    low = zigzag & 0xFFF_FFFF
    return VARINT_GROUPS_14[low & 0x3FFF] + VARINT_GROUPS_14[low >> 14] + high_varint(zigzag >> 28)


def write_varint(out: bytearray, zigzag: int) -> None:
    """Append :func:`varint` of ``zigzag`` to ``out``."""
    if zigzag < 0x80:
        out.append(zigzag)
    else:
        out += varint(zigzag)


#: Avro ``int`` and ``long`` ranges (32- and 64-bit signed, Avro 1.11 specification, "Primitive
#: Types").
INT_MIN: Final = -(1 << 31)
INT_MAX: Final = (1 << 31) - 1
LONG_MIN: Final = -(1 << 63)
LONG_MAX: Final = (1 << 63) - 1


class FallbackError(Exception):
    """A value a specialised encoder does not write itself: the generic encoder will, or will say
    why (with its own error for a bad value)."""


def checked_long_bytes(value: object) -> bytes:
    """A ``long``'s bytes for an exact ``int`` in range; :class:`FallbackError` for anything else
    (a bool, a float, an out-of-range int), which the generic encoder judges."""
    if type(value) is not int or not LONG_MIN <= value <= LONG_MAX:
        raise FallbackError
    return varint(value << 1 if value >= 0 else ~(value << 1))


def checked_int_bytes(value: object) -> bytes:
    """An ``int``'s bytes for an exact ``int`` in the 32-bit range; :class:`FallbackError` else."""
    if type(value) is not int or not INT_MIN <= value <= INT_MAX:
        raise FallbackError
    return varint(value << 1 if value >= 0 else ~(value << 1))


def long_bytes(value: int) -> bytes:
    """A ``long`` (or ``int``): the varint of its zig-zag encoding."""
    return varint(value << 1 if value >= 0 else ~(value << 1))


def double_bytes(value: float) -> bytes:
    """A ``double``: 8 bytes, little-endian IEEE 754."""
    return _PACK_DOUBLE(value)


def string_bytes(value: str) -> bytes:
    """A ``string``: its UTF-8 length as a ``long``, then the bytes (``UnicodeEncodeError`` for a
    lone surrogate, which UTF-8 cannot hold)."""
    encoded = value.encode()
    return varint(len(encoded) << 1) + encoded


def epoch_micros(value: datetime) -> int:
    """Microseconds since 1970-01-01T00:00:00Z of a timezone-aware ``value``, as Avro's
    ``timestamp-micros`` stores it. A naive ``datetime`` is a ``ValueError``: its instant is
    unknown (fastavro would take it as the host's local time)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {value.isoformat()}")
    return utc_micros(value)


def utc_micros(value: datetime) -> int:
    """:func:`epoch_micros` of a ``value`` already known to be timezone-aware (no check)."""
    delta = value - EPOCH
    # fastavro's formula: exact integer arithmetic, identical to ``delta // 1 µs``.
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- reading ------------------------------------------------------------------------------------


def unzigzag(n: int) -> int:
    """The long a zig-zag encoded value stands for."""
    return (n >> 1) ^ -(n & 1)


def read_long(data: bytes, pos: i64) -> tuple[i64, i64]:
    """The ``long`` whose varint starts at ``data[pos]`` and the position after it; the position
    is :data:`TRUNCATED`, :data:`TOO_LONG` or :data:`BEYOND_64_BITS` (all negative) when it
    cannot be read (at most 10 bytes and 64 bits), all in i64 arithmetic once compiled."""
    size: i64 = len(data)
    n: i64 = 0  # bits 0-62: the first 9 bytes
    shift: i64 = 0
    while True:
        if pos >= size:
            return 0, TRUNCATED
        b: i64 = data[pos]
        pos += 1
        if shift == 63:  # the 10th byte: only bit 63 is left, and no continuation
            if b & 0x80:
                return 0, TOO_LONG
            if b > 1:
                return 0, BEYOND_64_BITS
            half = n >> 1
            if b:
                top: i64 = 0x2000_0000_0000_0000  # constants within 62 bits: mypyc boxes larger
                half |= top << 1  # bit 63 of the varint, bit 62 once halved
            return half ^ -(n & 1), pos
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos


# The 8-byte varints of timestamps from 1978 to 3111, non-negative (an even zig-zag value): the
# 8 bytes unpacked at once, and the value summed from one table per byte position, each giving
# that byte's part of ``zigzag >> 1``, or _NOT_8 when the byte does not fit (continuation bit
# clear before the last byte or set on it, or an odd zig-zag value): then the sum is too large.
_UNPACK_8: Final = struct.Struct("<8B").unpack_from
_NOT_8: Final = 1 << 64
_BYTE_0: Final = tuple((b & 0x7F) >> 1 if b & 0x81 == 0x80 else _NOT_8 for b in range(256))
_BYTE_1: Final = tuple((b & 0x7F) << 6 if b & 0x80 else _NOT_8 for b in range(256))
_BYTE_2: Final = tuple((b & 0x7F) << 13 if b & 0x80 else _NOT_8 for b in range(256))
_BYTE_3: Final = tuple((b & 0x7F) << 20 if b & 0x80 else _NOT_8 for b in range(256))
_BYTE_4: Final = tuple((b & 0x7F) << 27 if b & 0x80 else _NOT_8 for b in range(256))
_BYTE_5: Final = tuple((b & 0x7F) << 34 if b & 0x80 else _NOT_8 for b in range(256))
_BYTE_6: Final = tuple((b & 0x7F) << 41 if b & 0x80 else _NOT_8 for b in range(256))
_BYTE_7: Final = tuple(b << 48 if b < 0x80 else _NOT_8 for b in range(256))


def read_long_8(data: bytes, pos: int) -> tuple[int, int]:
    """A non-negative ``long`` written in exactly 8 varint bytes (a timestamp of 1978 to 3111)
    read in one unpack; position -1 when the varint at ``pos`` is not one (then use
    :func:`read_long`)."""
    if pos + 8 > len(data):
        return 0, -1
    b0, b1, b2, b3, b4, b5, b6, b7 = _UNPACK_8(data, pos)
    n = (
        _BYTE_0[b0]
        + _BYTE_1[b1]
        + _BYTE_2[b2]
        + _BYTE_3[b3]
        + _BYTE_4[b4]
        + _BYTE_5[b5]
        + _BYTE_6[b6]
        + _BYTE_7[b7]
    )
    if n >= _NOT_8:
        return 0, -1
    return n, pos + 8
