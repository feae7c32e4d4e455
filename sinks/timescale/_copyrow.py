"""Avro record body → one row of a binary ``COPY`` stream, in one pass over the bytes.

Why: a noise measurement's Avro body maps almost field by field onto its table's row, and going
through Python objects (decoding every field to a ``float``/``str``/``int``, then psycopg dumping
each of them again) costs most of the sink's CPU per row. Here the body is read once and the
row's bytes are written as it goes. Compiled with mypyc (``deploy/scripts/build_native.py``);
this ``.py`` is the source and the fallback.

Input, Avro 1.11 specification, "Binary Encoding": ``long`` a zig-zag varint; ``boolean`` one
byte 0 or 1; ``double`` 8 bytes little-endian IEEE 754; ``string`` a ``long`` length then UTF-8;
a union a ``long`` branch index then the branch's value; a map blocks of ``long`` count (negative:
followed by a ``long`` byte size) of (string key, value), ended by count 0; a record its fields in
order. Output, PostgreSQL documentation, "COPY", "Binary Format": a tuple is an int16 field count,
then per field an int32 byte length (-1: NULL, no bytes) and the value in the type's binary
(``send``) format, all big-endian: ``float8`` 8 bytes IEEE 754; ``int8`` 8 bytes two's complement;
``bool`` 1 byte; ``text`` the UTF-8 bytes; a ``timestamptz`` an int8 of µs since 2000-01-01 UTC;
``jsonb`` a version byte 1 then the JSON text.

A *program* is a ``bytes`` of one operation code per Avro field (see the ``OP_`` constants), built
by the caller from the writer schema. :func:`copy_row` only takes the common path: whenever
something is off (a malformed or unusual encoding, a string that is not UTF-8, a timestamp beyond
``datetime``'s range, trailing bytes) it returns None and the caller decodes the record the
ordinary way, which raises the error it always raised or builds the row from Python values.
What it returns is byte for byte what psycopg's binary ``COPY`` writes for the row the ordinary
path builds (the parity tests check it).
"""

from __future__ import annotations

from typing import Final

import orjson
from librt.strings import (
    BytesWriter,
    read_f64_le,
    read_i64_le,
    write_i16_be,
    write_i32_be,
    write_i64_be,
)
from mypy_extensions import i16, i32, i64

from schemas._avro import MAX_MICROS as _MAX_MICROS
from schemas._avro import MIN_MICROS as _MIN_MICROS
from schemas._avro import read_long as _read_long

__all__ = [
    "OP_BOOLEAN",
    "OP_MAP_DOUBLE_JSONB",
    "OP_MICROS",
    "OP_OPTIONAL_DOUBLE",
    "OP_OPTIONAL_LONG",
    "OP_OPTIONAL_STRING",
    "OP_SKIP_OPTIONAL_STRING",
    "OP_SKIP_STRING",
    "OP_STRING",
    "copy_row",
]

#: ``string`` → ``text``.
OP_STRING: Final = 1
#: ``string`` read (checked as UTF-8) but not written: a field without a column.
OP_SKIP_STRING: Final = 2
#: ``long`` (``timestamp-micros``) → ``timestamptz``.
OP_MICROS: Final = 3
#: ``boolean`` → ``bool``.
OP_BOOLEAN: Final = 4
#: ``["null", "double"]`` → ``float8`` or NULL.
OP_OPTIONAL_DOUBLE: Final = 5
#: ``["null", "string"]`` → ``text`` or NULL.
OP_OPTIONAL_STRING: Final = 6
#: ``["null", "long"]`` → ``int8`` or NULL.
OP_OPTIONAL_LONG: Final = 7
#: ``["null", "string"]`` read (checked) but not written.
OP_SKIP_OPTIONAL_STRING: Final = 8
#: ``{"type": "map", "values": "double"}`` → ``jsonb`` (NULL when empty), as the row builder's
#: ``orjson.dumps`` of the map's dict writes it.
OP_MAP_DOUBLE_JSONB: Final = 9

#: PostgreSQL's epoch, 2000-01-01T00:00:00Z, in µs since 1970.
_PG_EPOCH_MICROS: Final = 946_684_800_000_000
#: A varint beyond 64 bits, or malformed: the caller decodes the record the ordinary way.
_BAD: Final = -1


def _utf8(data: bytes, start: i64, end: i64) -> bool:
    """True when ``data[start:end]`` is UTF-8, as ``bytes.decode`` checks it."""
    i = start
    while i < end:
        if data[i] >= 0x80:
            try:
                data[start:end].decode()
            except UnicodeDecodeError:
                return False
            return True
        i += 1
    return True


def copy_row(data: bytes, pos: i64, program: bytes, fields: i64) -> bytes | None:
    """The binary COPY tuple of the Avro record body at ``data[pos:]``, which must end ``data``;
    ``fields`` is the tuple's field count. None: decode the record the ordinary way."""
    out = BytesWriter()
    write_i16_be(out, i16(fields))
    size: i64 = len(data)
    for op in program:
        # Every field starts with a varint (a length, a union branch, a long, a map's block
        # count) or a boolean byte; a one-byte varint is read here, longer ones by _read_long.
        if pos >= size:
            return None
        start = pos
        b: i64 = data[pos]
        value: i64
        if b & 0x80:
            value, pos = _read_long(data, pos)
            if pos < 0:
                return None
        else:
            value = (b >> 1) ^ -(b & 1)
            pos += 1
        if op == OP_OPTIONAL_DOUBLE:
            if value == 0:
                write_i32_be(out, -1)
            elif value == 1 and pos + 8 <= size:
                write_i32_be(out, 8)
                write_i64_be(out, read_i64_le(data, pos))  # the same bits, byte order swapped
                pos += 8
            else:
                return None
        elif op in (OP_STRING, OP_SKIP_STRING):
            end = pos + value
            if value < 0 or end > size or not _utf8(data, pos, end):
                return None
            if op == OP_STRING:
                write_i32_be(out, i32(value))
                out.write(data[pos:end])
            pos = end
        elif op in (OP_OPTIONAL_STRING, OP_SKIP_OPTIONAL_STRING):
            if value == 0:
                if op == OP_OPTIONAL_STRING:
                    write_i32_be(out, -1)
                continue
            if value != 1:
                return None
            length, pos = _read_long(data, pos)
            end = pos + length
            if pos < 0 or length < 0 or end > size or not _utf8(data, pos, end):
                return None
            if op == OP_OPTIONAL_STRING:
                write_i32_be(out, i32(length))
                out.write(data[pos:end])
            pos = end
        elif op == OP_MICROS:
            if not _MIN_MICROS <= value <= _MAX_MICROS:
                return None
            write_i32_be(out, 8)
            write_i64_be(out, value - _PG_EPOCH_MICROS)
        elif op == OP_BOOLEAN:
            if b != 0 and b != 1:  # one byte, 0 or 1, never a longer varint
                return None
            write_i32_be(out, 1)
            out.append(b)
        elif op == OP_OPTIONAL_LONG:
            if value == 0:
                write_i32_be(out, -1)
                continue
            if value != 1:
                return None
            long, pos = _read_long(data, pos)
            if pos < 0:
                return None
            write_i32_be(out, 8)
            write_i64_be(out, long)
        elif op == OP_MAP_DOUBLE_JSONB:
            if value == 0:
                write_i32_be(out, -1)
                continue
            pos = _map_jsonb(data, start, out)
            if pos < 0:
                return None
        else:
            return None
    if pos != size:
        return None
    return out.getvalue()


def _map_jsonb(data: bytes, pos: i64, out: BytesWriter) -> i64:
    """A non-empty map of doubles at ``pos`` (its first block count) → its jsonb field in
    ``out``; the position after the map, -1 when malformed. The JSON is ``orjson.dumps`` of the
    dict the ordinary decoder builds (a repeated key keeps its last value), so NaN and infinity
    are written as orjson writes them."""
    size: i64 = len(data)
    values: dict[str, float] = {}
    while True:
        count, pos = _read_long(data, pos)
        if pos < 0:
            return _BAD
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _read_long(data, pos)  # the block's byte size, ignored as fastavro does
            if pos < 0:
                return _BAD
        if count * 9 > size - pos:  # a key takes 1 byte or more, a double 8
            return _BAD
        for _ in range(count):
            length, pos = _read_long(data, pos)
            end = pos + length
            if pos < 0 or length < 0 or end + 8 > size:
                return _BAD
            try:
                key = data[pos:end].decode()
            except UnicodeDecodeError:
                return _BAD
            values[key] = read_f64_le(data, end)
            pos = end + 8
    text = orjson.dumps(values)
    write_i32_be(out, i32(len(text) + 1))
    out.append(1)  # jsonb's version byte
    out.write(text)
    return pos
