"""The ``Aggregate`` record straight to its framed Avro value and back: the aggregator's hot path.

With 1-minute windows the aggregator emits one ``Aggregate`` per sensor every six measurements,
and its rollup stage reads every one of them back, so the record's encoding and decoding cost
as much per window as folding the measurements that made it. The generic codecs
(:func:`schemas.encode`, :func:`schemas.decode`) check every field's type through generated
code and read ``timestamp-micros`` as ``datetime`` objects the aggregator turns back into µs.
Here the record's layout is written once (Avro 1.11 specification, "Binary Encoding"):

- ``key``, ``kind``: a ``string`` (length as a ``long``, UTF-8 bytes), kept encoded in a
  bounded cache: a city has a bounded set of sensors and indicator names;
- ``window_start``, ``window_end`` (``timestamp-micros``), ``window_size_seconds``,
  ``sample_count``: a ``long``; ``revision`` an ``int``; ``final`` one byte 0 or 1;
- ``values``: a ``map`` of ``double``: one block (its count as a ``long``, then each name and
  its 8 little-endian bytes) and the end block ``00``; empty, the end block alone;
- ``counts``, ``regions``: arrays; empty ones (noise, air) are the end block ``00``.

What this path does not take as is — a non-empty ``counts`` or ``regions`` (traffic,
occupancy), a value of another type than the aggregator's (a ``datetime``, an ``int`` in a
``double``), a missing field, an integer out of range, an older writer schema — goes to the
generic codec, which writes the same bytes (a property test compares both on generated records)
or names the faulty field. The layout is checked against the loaded ``.avsc`` at import: if the
schema no longer matches it, every record takes the generic codec.

Compiled with mypyc (``deploy/scripts/build_native.py``) with :mod:`schemas._avro`, whose varint
helpers it then calls natively; the ``.py`` is the fallback and behaves the same.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from mypy_extensions import i64

from schemas._avro import (
    INT_MAX,
    INT_MIN,
    SINGLE_OBJECT_HEADER_SIZE,
    FallbackError,
    checked_int_bytes,
    checked_long_bytes,
    double_bytes,
    epoch_micros,
    read_long,
    string_bytes,
    varint,
)
from schemas._avro import (
    MAX_MICROS as _MAX_MICROS,
)
from schemas._avro import (
    MIN_MICROS as _MIN_MICROS,
)
from schemas._framing import decode, encode
from schemas._registry import SchemaError, schema, version

__all__ = ["decode_aggregate", "encode_aggregate", "specialised"]

_NAME: Final = "Aggregate"
#: Bound of the string caches: a hostile stream of new names must not grow memory without end.
_STRINGS_MAX: Final = 65_536
_UNPACK_DOUBLE: Final = struct.Struct("<d").unpack_from

#: The layout this module writes and reads: (field name, Avro type), in the schema's order.
_LAYOUT: Final = (
    ("key", "string"),
    ("kind", "string"),
    ("window_start", "timestamp-micros"),
    ("window_end", "timestamp-micros"),
    ("window_size_seconds", "long"),
    ("revision", "int"),
    ("final", "boolean"),
    ("values", "map<double>"),
    ("sample_count", "long"),
    ("counts", "array"),
    ("regions", "array"),
)


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical is not None:
            return str(logical)
        kind = str(avro_type.get("type"))
        if kind == "map":
            return f"map<{_type_name(avro_type.get('values'))}>"
        return kind
    return repr(avro_type)


def _layout_matches() -> bool:
    """Whether the current ``Aggregate`` schema is the one this module was written for."""
    fields = schema(_NAME)["fields"]
    found = tuple((f["name"], _type_name(f["type"])) for f in fields)
    defaults = {f["name"]: f.get("default", None) for f in fields}
    return (
        found == _LAYOUT
        and defaults["revision"] == 0
        and defaults["final"] is True
        and defaults["values"] == {}
    )


#: Off when the schema changed shape: then both directions use the generic codec.
_SPECIALISED: Final = _layout_matches()
_HEADER: Final = version(_NAME).header


def specialised() -> bool:
    """Whether this module's own layout is in use (the loaded schema matches it)."""
    return _SPECIALISED


_STRINGS: dict[str, bytes] = {}
#: The default of ``values`` (never written to).
_NO_VALUES: Final[dict[str, float]] = {}


def _string(value: object) -> bytes:
    """A ``string``'s encoding, from the cache for names that come again."""
    if type(value) is not str:
        raise FallbackError
    found = _STRINGS.get(value)
    if found is None:
        try:
            found = string_bytes(value)
        except UnicodeEncodeError:
            raise FallbackError from None
        if len(_STRINGS) >= _STRINGS_MAX:
            _STRINGS.clear()
        _STRINGS[value] = found
    return found


def _empty_array(value: object) -> None:
    """Only empty arrays are written here (the end block); any other goes generic."""
    if (type(value) is not list and type(value) is not tuple) or len(value) != 0:
        raise FallbackError


def _encode(record: Mapping[str, Any]) -> bytes:
    if type(record) is not dict:
        raise FallbackError
    try:
        key = record["key"]
        kind = record["kind"]
        start = record["window_start"]
        end = record["window_end"]
        size = record["window_size_seconds"]
        count = record["sample_count"]
    except KeyError:
        raise FallbackError from None
    # A missing field takes its default (0, true, {}, [], []), as the generic encoder does; a
    # present None is no value of these types, and the generic encoder says so.
    revision = record.get("revision", 0)
    final = record.get("final", True)
    values = record.get("values", _NO_VALUES)
    _empty_array(record.get("counts", ()))
    _empty_array(record.get("regions", ()))
    if type(final) is not bool or type(values) is not dict:
        raise FallbackError
    parts = [
        _HEADER,
        _string(key),
        _string(kind),
        checked_long_bytes(start),
        checked_long_bytes(end),
        checked_long_bytes(size),
        checked_int_bytes(revision),
        b"\x01" if final else b"\x00",
    ]
    if values:
        parts.append(varint(len(values) << 1))
        for name, value in values.items():
            if type(value) is not float:
                raise FallbackError
            parts.append(_string(name))
            parts.append(double_bytes(value))
    parts.append(b"\x00")
    parts.append(checked_long_bytes(count))
    parts.append(b"\x00\x00")  # counts, regions: empty
    return b"".join(parts)


def encode_aggregate(record: Mapping[str, Any]) -> bytes:
    """``encode("Aggregate", record)``, byte for byte, written directly for the aggregator's
    own records (see the module docstring); :class:`SchemaError` for a record the schema
    does not take, as :func:`schemas.encode` raises."""
    if _SPECIALISED:
        try:
            return _encode(record)
        except FallbackError:
            pass
    return encode(_NAME, record)


class _NotHereError(Exception):
    """Bytes this path does not read itself: the generic decoder will, or will say why."""


def _read_long(data: bytes, pos: i64) -> tuple[i64, i64]:
    value, after = read_long(data, pos)
    if after < 0:
        raise _NotHereError
    return value, after


#: Decoded strings by their UTF-8 bytes, bounded as ``_STRINGS``: the keys, the kind and the
#: indicator names of every record read back are a few hundred distinct strings.
_DECODED: dict[bytes, str] = {}


def _read_string(data: bytes, pos: i64) -> tuple[str, i64]:
    """A ``string``, the same object for bytes read before: no new ``str`` per name and
    record, and a ``str`` whose hash is already known to the dicts the rollup stage keys by
    sensor and indicator name."""
    size, pos = _read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise _NotHereError
    raw = data[pos:end]
    found = _DECODED.get(raw)
    if found is None:
        try:
            found = raw.decode()
        except UnicodeDecodeError:
            raise _NotHereError from None
        if len(_DECODED) >= _STRINGS_MAX:
            _DECODED.clear()
        _DECODED[raw] = found
    return found, end


def _decode(data: bytes) -> dict[str, Any]:
    pos: i64 = SINGLE_OBJECT_HEADER_SIZE
    key, pos = _read_string(data, pos)
    kind, pos = _read_string(data, pos)
    start, pos = _read_long(data, pos)
    end, pos = _read_long(data, pos)
    if not (_MIN_MICROS <= start <= _MAX_MICROS and _MIN_MICROS <= end <= _MAX_MICROS):
        raise _NotHereError  # beyond datetime's range: the generic decoder refuses the record
    size, pos = _read_long(data, pos)
    revision, pos = _read_long(data, pos)
    if revision < INT_MIN or revision > INT_MAX or pos >= len(data):
        raise _NotHereError
    flag: i64 = data[pos]
    pos += 1
    if flag > 1:
        raise _NotHereError
    values: dict[str, float] = {}
    while True:
        block, pos = _read_long(data, pos)
        if block == 0:
            break
        if block < 0:  # a block with its byte size: read as any other
            block = -block
            _, pos = _read_long(data, pos)
        for _ in range(block):
            name, pos = _read_string(data, pos)
            if pos + 8 > len(data):
                raise _NotHereError
            values[name] = _UNPACK_DOUBLE(data, pos)[0]
            pos += 8
    count, pos = _read_long(data, pos)
    # Empty counts and regions (two end blocks) and nothing after them; anything else generic.
    if pos + 2 != len(data) or data[pos] != 0 or data[pos + 1] != 0:
        raise _NotHereError
    return {
        "key": key,
        "kind": kind,
        "window_start": start,
        "window_end": end,
        "window_size_seconds": size,
        "revision": revision,
        "final": flag == 1,
        "values": values,
        "sample_count": count,
        "counts": [],
        "regions": [],
    }


def _decode_generic(data: bytes) -> dict[str, Any] | None:
    try:
        name, record = decode(data)
    except SchemaError:
        return None
    if name != _NAME:
        return None
    record["window_start"] = epoch_micros(record["window_start"])
    record["window_end"] = epoch_micros(record["window_end"])
    return record


def decode_aggregate(data: bytes | bytearray) -> dict[str, Any] | None:
    """An ``Aggregate`` record with its times as int µs since the epoch; None for bytes that are
    not one (another schema, a malformed frame). The same dict as :func:`schemas.decode` gives,
    timestamps aside: current-version frames with empty ``counts`` and ``regions`` are read
    here, every other frame by the generic decoder."""
    raw = data if type(data) is bytes else bytes(data)
    if _SPECIALISED and raw[:SINGLE_OBJECT_HEADER_SIZE] == _HEADER:
        try:
            return _decode(raw)
        except (_NotHereError, IndexError):
            pass
    return _decode_generic(raw)
