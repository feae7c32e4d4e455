"""Avro measurement bodies → packed columns, in one pass over the bytes: the aggregator's hot path.

Why: the stream aggregator folds 200,000 measurements a second in one process, and consuming a
record from Kafka already costs ~4 µs of that budget's 5. Decoding a noise measurement the generic
way (:func:`schemas.decode`: a dict of ~35 Python values, two ``datetime`` objects) takes 9-12 µs,
though the aggregator reads a handful of fields. Here each body is read once, fields not needed
are stepped over, and the needed ones are written straight into ``BytesWriter`` columns (no Python
object per record), which the caller turns into numpy arrays (:mod:`streams._columns`). Compiled
with mypyc (``deploy/scripts/build_native.py``); this ``.py`` is the source and the fallback.

Input, Avro 1.11 specification, "Binary Encoding": ``int`` and ``long`` are written as zig-zag
varints (``(n << 1) ^ (n >> 63)``, then 7 bits a byte, low groups first, the high bit of a byte
set when more follow); ``boolean`` one byte 0 or 1; ``double`` 8 bytes little-endian IEEE 754;
``string`` a ``long`` length then UTF-8; ``enum`` the ``int`` index of the symbol; a union a
``long`` branch index then the branch's value; an array or a map a series of blocks, each a
``long`` item count then the items (a map's items being a ``string`` key and a value), ended by
count 0, "If a block's count is negative, its absolute value is used, and the count is followed
immediately by a long block size indicating the number of bytes in the block"; a record its
fields in the order of the schema. "Single-object encoding": ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema, then the body.

A *program* is a ``bytes`` of one operation code per Avro field of the writer schema, nested
records flattened (see the ``OP_`` constants), built by the caller
(:func:`streams._columns.program`). :func:`extract` only takes the common path: a record whose
body is malformed or unusual in any way (a string that is not UTF-8, a timestamp beyond
``datetime``'s range, an ``int`` beyond 32 bits, a varint beyond 64 bits, an unknown traffic class,
another ``kind``, trailing bytes) is left whole to the caller, who decodes it the ordinary way and
rejects it or adds its row (:meth:`ColumnWriter.add_row` and co). Whatever the fast path accepts,
the ordinary decoder reads without error and to the same values (the parity tests check it).
"""

from __future__ import annotations

from typing import Any, Final

from librt.strings import (
    BytesWriter,
    read_i64_le,
    write_f64_le,
    write_i32_le,
    write_i64_le,
)
from mypy_extensions import i32, i64

from schemas._avro import MAX_MICROS as _MAX_MICROS
from schemas._avro import MIN_MICROS as _MIN_MICROS
from schemas._avro import read_long as _read_long

__all__ = [
    "OP_BOOLEAN",
    "OP_COUNTS",
    "OP_DOUBLE",
    "OP_KIND",
    "OP_MAP_DOUBLE",
    "OP_MAP_DOUBLE_COLUMN",
    "OP_MICROS",
    "OP_OPTIONAL_DOUBLE",
    "OP_OPTIONAL_LONG",
    "OP_OPTIONAL_STRING",
    "OP_REGIONS",
    "OP_STRING",
    "OP_TIME",
    "ColumnWriter",
    "extract",
]

#: ``string``, checked as UTF-8 and skipped.
OP_STRING: Final = 1
#: ``string`` that must be the kind's name (``kind``).
OP_KIND: Final = 2
#: ``long`` (``timestamp-micros``) → the time column (``observed_at``).
OP_TIME: Final = 3
#: ``long`` (``timestamp-micros``), checked (in ``datetime``'s range) and skipped.
OP_MICROS: Final = 4
#: ``boolean``, checked and skipped.
OP_BOOLEAN: Final = 5
#: ``["null", "double"]`` skipped.
OP_OPTIONAL_DOUBLE: Final = 6
#: ``["null", "string"]``, checked and skipped.
OP_OPTIONAL_STRING: Final = 7
#: ``["null", "long"]``, checked and skipped.
OP_OPTIONAL_LONG: Final = 8
#: ``{"type": "map", "values": "double"}``, keys checked, skipped.
OP_MAP_DOUBLE: Final = 9
#: The array of ``TrafficCount`` records (``line`` int, ``direction`` enum ``in``/``out``,
#: ``traffic_class`` string, ``count`` and ``cumulative`` ``["null", "long"]``) → count columns.
OP_COUNTS: Final = 10
#: The array of ``RegionCount`` records (``region`` int, ``count`` int) → region columns.
OP_REGIONS: Final = 11
#: ``{"type": "map", "values": "double"}`` whose entry under the writer's ``map_key`` (if any)
#: goes to double column ``map_column`` (a quantity with no typed field, e.g. ``la_db``).
OP_MAP_DOUBLE_COLUMN: Final = 12
#: ``["null", "double"]`` → double column ``op - OP_DOUBLE`` (nothing written when null).
OP_DOUBLE: Final = 32

#: The ``timestamp-micros`` values a ``datetime`` holds (years 1 to 9999), in µs since 1970; the
#: ordinary decoder raises beyond them (``schemas._decoder``).
#: What the body reader returns for a record left to the ordinary path (outside the range above).
_FAIL: Final = -(1 << 62)
_INT_MIN: Final = -(1 << 31)
_INT_MAX: Final = (1 << 31) - 1
#: The high bit of each of the low 7 of 8 bytes read as one little-endian i64 (the 8th byte's is
#: the sign). Constants are kept within 62 bits: mypyc boxes larger ones.
_HIGH_BITS_56: Final = 0x0080_8080_8080_8080
#: The single-object marker's two bytes.
_MARKER_0: Final = 0xC3
_MARKER_1: Final = 0x01
_HEADER: Final = 10


class ColumnWriter:
    """The columns of one poll's accepted records, as packed little-endian bytes.

    Rows: ``key`` (i32), ``time_us`` (i64), ``offset`` (i64). Doubles are written sparsely, as
    pairs of a flat index ``row * width + column`` (i64) and the value's bits (f64): a null is
    no pair (the caller fills the rest with NaN). Traffic counts: ``count_row``, ``count_line``
    (i32), ``count_direction``, ``count_class`` (i8), ``count_value``, ``count_cumulative`` (i64,
    -1 when null). Occupancy regions: ``region_row``, ``region_id`` (i32), ``region_count``
    (i64). ``rows``, ``doubles``, ``counts`` and ``regions`` count what was written.
    """

    width: i64
    rows: i64
    doubles: i64
    counts: i64
    regions: i64
    map_key: bytes
    map_column: i64

    def __init__(self, width: i64, map_key: bytes = b"", map_column: i64 = -1) -> None:
        self.width = width
        self.map_key = map_key
        self.map_column = map_column
        self.rows = 0
        self.doubles = 0
        self.counts = 0
        self.regions = 0
        self.key = BytesWriter()
        self.time_us = BytesWriter()
        self.offset = BytesWriter()
        self.double_index = BytesWriter()
        self.double_value = BytesWriter()
        self.count_row = BytesWriter()
        self.count_line = BytesWriter()
        self.count_direction = BytesWriter()
        self.count_class = BytesWriter()
        self.count_value = BytesWriter()
        self.count_cumulative = BytesWriter()
        self.region_row = BytesWriter()
        self.region_id = BytesWriter()
        self.region_count = BytesWriter()

    def add_row(self, key: i64, time_us: i64, offset: i64) -> i64:
        """Append a row; its index."""
        row = self.rows
        write_i32_le(self.key, i32(key))
        write_i64_le(self.time_us, time_us)
        write_i64_le(self.offset, offset)
        self.rows = row + 1
        return row

    def add_double(self, row: i64, column: i64, value: float) -> None:
        """Set the double of ``row`` in ``column`` (left NaN otherwise)."""
        write_i64_le(self.double_index, row * self.width + column)
        write_f64_le(self.double_value, value)
        self.doubles += 1

    def add_count(
        self, row: i64, line: i64, direction: i64, traffic_class: i64, count: i64, cumulative: i64
    ) -> None:
        """Append a traffic count of ``row``."""
        write_i32_le(self.count_row, i32(row))
        write_i32_le(self.count_line, i32(line))
        self.count_direction.append(direction)  # one byte: 0 or 1
        self.count_class.append(traffic_class)  # one byte: an index below 128
        write_i64_le(self.count_value, count)
        write_i64_le(self.count_cumulative, cumulative)
        self.counts += 1

    def add_region(self, row: i64, region: i64, count: i64) -> None:
        """Append an occupancy region count of ``row``."""
        write_i32_le(self.region_row, i32(row))
        write_i32_le(self.region_id, i32(region))
        write_i64_le(self.region_count, count)
        self.regions += 1

    def rollback(self, doubles: i64, counts: i64, regions: i64) -> None:
        """Drop what a record left to the ordinary path wrote past these counts."""
        if self.doubles != doubles:
            self.double_index.truncate(doubles * 8)
            self.double_value.truncate(doubles * 8)
            self.doubles = doubles
        if self.counts != counts:
            self.count_row.truncate(counts * 4)
            self.count_line.truncate(counts * 4)
            self.count_direction.truncate(counts)
            self.count_class.truncate(counts)
            self.count_value.truncate(counts * 8)
            self.count_cumulative.truncate(counts * 8)
            self.counts = counts
        if self.regions != regions:
            self.region_row.truncate(regions * 4)
            self.region_id.truncate(regions * 4)
            self.region_count.truncate(regions * 8)
            self.regions = regions


def extract(
    out: ColumnWriter,
    records: list[Any],
    kind: bytes,
    programs: dict[bytes, bytes],
    classes: list[bytes],
    lookup: dict[bytes, int],
    ids: list[str],
) -> list[int]:
    """Append a row to ``out`` for each of ``records`` (Kafka consumer records: ``key``,
    ``value``, ``offset``) whose value is a single-object frame with a fingerprint in
    ``programs`` (→ the writer schema's program) and a body the program reads, of a measurement
    of ``kind``, and whose key is UTF-8 (``lookup``: key → index in ``ids``, where a new key is
    added). ``classes``: the traffic classes, in their index order. Returns the positions in
    ``records`` of the others, left to the ordinary path, in order."""
    slow: list[int] = []
    fingerprint: i64 = 0
    program = b""
    position: i64 = -1
    for record in records:
        position += 1
        value = record.value
        key = record.key
        if not isinstance(value, bytes) or not isinstance(key, bytes):
            slow.append(position)
            continue
        if len(value) < _HEADER or value[0] != _MARKER_0 or value[1] != _MARKER_1:
            slow.append(position)
            continue
        # A partition's records nearly all have one writer schema: the last program is reused
        # while the fingerprint (read as one i64, no bytes object) stays the same.
        digest = read_i64_le(value, 2)
        if digest != fingerprint or not program:
            found = programs.get(value[2:_HEADER])
            if found is None:
                slow.append(position)
                continue
            program = found
            fingerprint = digest
        doubles = out.doubles
        counts = out.counts
        regions = out.regions
        time = _read_body(out, value, program, kind, classes)
        if time == _FAIL:
            out.rollback(doubles, counts, regions)
            slow.append(position)
            continue
        index = lookup.get(key)
        if index is None:
            try:
                name = key.decode()
            except UnicodeDecodeError:
                out.rollback(doubles, counts, regions)
                slow.append(position)
                continue
            index = len(ids)
            ids.append(name)
            lookup[key] = index
        offset: i64 = record.offset
        out.add_row(index, time, offset)
    return slow


def _read_body(
    out: ColumnWriter, data: bytes, program: bytes, kind: bytes, classes: list[bytes]
) -> i64:
    """Read the body at ``data[10:]`` (which must end ``data``) with ``program``, writing its
    doubles, counts and regions as those of row ``out.rows``; its ``observed_at``, or ``_FAIL``
    (the caller then drops what was written)."""
    size: i64 = len(data)
    pos: i64 = _HEADER
    time: i64 = _FAIL
    row = out.rows
    base = row * out.width
    ops: i64 = len(program)
    for step in range(ops):
        op: i64 = program[step]
        # Every field starts with a varint (a length, a union branch, a long, a block count) or
        # a boolean byte; a one-byte varint is read here, longer ones by _read_long.
        if pos >= size:
            return _FAIL
        b: i64 = data[pos]
        value: i64
        if b & 0x80:
            value, pos = _read_long(data, pos)
            if pos < 0:
                return _FAIL
        else:
            value = (b >> 1) ^ -(b & 1)
            pos += 1
        if op >= OP_DOUBLE:
            if value == 1:
                if pos + 8 > size:
                    return _FAIL
                write_i64_le(out.double_index, base + op - OP_DOUBLE)
                write_i64_le(out.double_value, read_i64_le(data, pos))  # the double's bits
                out.doubles += 1
                pos += 8
            elif value != 0:
                return _FAIL
        elif op == OP_OPTIONAL_DOUBLE:
            if value == 1:
                pos += 8
                if pos > size:
                    return _FAIL
            elif value != 0:
                return _FAIL
        elif op == OP_OPTIONAL_STRING:
            if value == 1:
                length, pos = _read_long(data, pos)
                end = pos + length
                if pos < 0 or length < 0 or end > size or not _utf8(data, pos, end):
                    return _FAIL
                pos = end
            elif value != 0:
                return _FAIL
        elif op == OP_STRING:
            end = pos + value
            if value < 0 or end > size or not _utf8(data, pos, end):
                return _FAIL
            pos = end
        elif op in (OP_TIME, OP_MICROS):
            if not _MIN_MICROS <= value <= _MAX_MICROS:
                return _FAIL
            if op == OP_TIME:
                time = value
        elif op == OP_KIND:
            if value != len(kind) or pos + value > size:
                return _FAIL
            for i in range(value):
                if data[pos + i] != kind[i]:
                    return _FAIL
            pos += value
        elif op == OP_BOOLEAN:
            if b != 0 and b != 1:  # one byte, 0 or 1, never a longer varint
                return _FAIL
        elif op == OP_OPTIONAL_LONG:
            if value == 1:
                _skipped, pos = _read_long(data, pos)
                if pos < 0:
                    return _FAIL
            elif value != 0:
                return _FAIL
        elif op in (OP_MAP_DOUBLE, OP_MAP_DOUBLE_COLUMN):
            pos = _read_map(out, data, pos, value, base, op == OP_MAP_DOUBLE_COLUMN)
            if pos < 0:
                return _FAIL
        elif op == OP_COUNTS:
            pos = _read_counts(out, data, pos, value, row, classes)
            if pos < 0:
                return _FAIL
        elif op == OP_REGIONS:
            pos = _read_regions(out, data, pos, value, row)
            if pos < 0:
                return _FAIL
        else:
            return _FAIL
    if pos != size:
        return _FAIL
    return time


def _block(data: bytes, pos: i64, count: i64) -> tuple[i64, i64]:
    """The item count of an array or map block whose count varint, ``count``, was read (its
    byte size then skipped when negative), and the position of its first item; position -1 when
    malformed or when the items cannot fit in what is left."""
    size: i64 = len(data)
    if count < 0:
        if count < -size:  # cannot fit (and negating -2**63 would overflow)
            return 0, -1
        count = -count
        _skipped, pos = _read_long(data, pos)  # the block's byte size, ignored as by the decoder
        if pos < 0:
            return 0, -1
    if count > size - pos:  # an item takes a byte or more
        return 0, -1
    return count, pos


def _read_map(
    out: ColumnWriter, data: bytes, pos: i64, count: i64, base: i64, to_column: bool
) -> i64:
    """Step over a map of doubles whose first block count was read, each key checked as UTF-8;
    with ``to_column``, the value under ``out.map_key`` goes to ``out.map_column`` (the last
    one wins, as in the ``dict`` the ordinary decoder builds). The position after the map, -1
    when malformed."""
    size: i64 = len(data)
    wanted = out.map_key
    wanted_length: i64 = len(wanted) if to_column else 0
    found: i64 = -1
    while count != 0:
        count, pos = _block(data, pos, count)
        if pos < 0:
            return -1
        for _ in range(count):
            length, pos = _read_long(data, pos)
            end = pos + length
            if pos < 0 or length < 0 or end + 8 > size or not _utf8(data, pos, end):
                return -1
            if wanted_length and length == wanted_length and data[pos:end] == wanted:
                found = end
            pos = end + 8
        count, pos = _read_long(data, pos)
        if pos < 0:
            return -1
    if found >= 0:  # only when to_column and the writer has a key
        write_i64_le(out.double_index, base + out.map_column)
        write_i64_le(out.double_value, read_i64_le(data, found))
        out.doubles += 1
    return pos


def _read_int(data: bytes, pos: i64) -> tuple[i64, i64]:
    """An ``int``: a varint within 32 bits; position -1 when not."""
    value, pos = _read_long(data, pos)
    if not _INT_MIN <= value <= _INT_MAX:
        return 0, -1
    return value, pos


def _read_optional_long(data: bytes, pos: i64) -> tuple[i64, i64]:
    """A ``["null", "long"]``: the long, -1 for null; position -1 when malformed."""
    branch, pos = _read_long(data, pos)
    if branch == 0 and pos >= 0:
        return -1, pos
    if branch != 1 or pos < 0:
        return 0, -1
    return _read_long(data, pos)


def _read_counts(
    out: ColumnWriter, data: bytes, pos: i64, count: i64, row: i64, classes: list[bytes]
) -> i64:
    """The ``TrafficCount`` array whose first block count was read → the count columns of
    ``row``; the position after it, -1 when malformed or for a class not in ``classes``."""
    size: i64 = len(data)
    while count != 0:
        count, pos = _block(data, pos, count)
        if pos < 0:
            return -1
        for _ in range(count):
            line, pos = _read_int(data, pos)
            if pos < 0 or pos >= size:
                return -1
            direction: i64 = data[pos]  # enum index 0 or 1: a one-byte varint 0 or 2
            if direction != 0 and direction != 2:
                return -1
            length, pos = _read_long(data, pos + 1)
            end = pos + length
            if pos < 0 or length < 0 or end > size:
                return -1
            traffic_class = _class_index(data, pos, length, classes)
            if traffic_class < 0:
                return -1
            value, pos = _read_optional_long(data, end)
            if pos < 0:
                return -1
            cumulative, pos = _read_optional_long(data, pos)
            if pos < 0:
                return -1
            out.add_count(row, line, direction >> 1, traffic_class, value, cumulative)
        count, pos = _read_long(data, pos)
        if pos < 0:
            return -1
    return pos


def _class_index(data: bytes, pos: i64, length: i64, classes: list[bytes]) -> i64:
    """The index in ``classes`` of the string ``data[pos:pos + length]``; -1 when not there."""
    for index, name in enumerate(classes):
        if len(name) == length:
            i: i64 = 0
            while i < length and data[pos + i] == name[i]:
                i += 1
            if i == length:
                return index
    return -1


def _read_regions(out: ColumnWriter, data: bytes, pos: i64, count: i64, row: i64) -> i64:
    """The ``RegionCount`` array whose first block count was read → the region columns of
    ``row``; the position after it, -1 when malformed."""
    while count != 0:
        count, pos = _block(data, pos, count)
        if pos < 0:
            return -1
        for _ in range(count):
            region, pos = _read_int(data, pos)
            if pos < 0:
                return -1
            people, pos = _read_int(data, pos)
            if pos < 0:
                return -1
            out.add_region(row, region, people)
        count, pos = _read_long(data, pos)
        if pos < 0:
            return -1
    return pos


def _utf8(data: bytes, start: i64, end: i64) -> bool:
    """True when ``data[start:end]`` is UTF-8, as ``bytes.decode`` checks it: ASCII is checked
    8 bytes at a time, anything else by decoding."""
    i = start
    while i + 8 <= end:
        word = read_i64_le(data, i)
        if word < 0 or word & _HIGH_BITS_56:
            return _decodes(data, start, end)
        i += 8
    while i < end:
        if data[i] >= 0x80:
            return _decodes(data, start, end)
        i += 1
    return True


def _decodes(data: bytes, start: i64, end: i64) -> bool:
    try:
        data[start:end].decode()
    except UnicodeDecodeError:
        return False
    return True
