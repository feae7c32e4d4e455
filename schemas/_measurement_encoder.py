"""A measurement straight to its framed Avro value, without the intermediate record dict.

``encode(name, measurement_record(m))`` builds a dict of ~35 fields (most of them ``None``) and
the compiled encoder then walks it field by field: ~20 µs a message on a slow core, more than
decoding the payload. Ingest needs only the bytes, so :func:`encode_measurement` writes them from
the :class:`~schemas.Measurement` itself (Avro 1.11 specification, "Binary Encoding"; the field
order comes from the loaded ``.avsc`` files, never from this module):

- the typed quantities of one measurement form a *shape*: which ``["null", "double"]`` fields are
  set and which quantities go to ``other_values``. A decoder emits few shapes (one per fPort or
  frame type), so each shape's layout is worked out once: one :class:`struct.Struct` writes all
  typed fields in one call, a null as pad byte ``00`` (branch 0), a value as ``02`` (branch 1,
  zig-zag) and the 8-byte little-endian double, then ``00`` for an empty ``other_values`` map;
- strings that repeat (sensor ids, codecs, gateways, networks) keep their encoded form in a
  bounded cache.

The output is byte for byte what :func:`schemas.encode` writes for the same measurement (a
property test checks it on random measurements). Anything this path does not take as is — a value
of an unexpected type, an integer out of range, a naive datetime — goes through
``encode(name, measurement_record(m))`` instead, which names the faulty field in its error.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Final

from decoders import KINDS
from schemas._encoder import _varint as _record_varint
from schemas._framing import encode
from schemas._measurement import MEASUREMENT_SCHEMAS, Measurement, measurement_record
from schemas._registry import fingerprint, schema

__all__ = ["encode_measurement"]

_QUANTITY_TYPE: Final = ["null", "double"]
_INT_MIN: Final = -(1 << 31)
_INT_MAX: Final = (1 << 31) - 1
_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_PACK_BRANCH_DOUBLE: Final = struct.Struct("<Bd").pack
_PACK_DOUBLE: Final = struct.Struct("<d").pack
#: Bounds of the caches below: a hostile stream of new names must not grow memory without end.
_SHAPES_MAX: Final = 4096
_STRINGS_MAX: Final = 65_536


class _FallbackError(Exception):
    """A value this path does not encode itself: the generic encoder will, or will say why."""


_ONE_BYTE_VARINTS: Final = tuple(bytes((n,)) for n in range(0x80))


def _varint(zigzag: int) -> bytes:
    """Base-128 varint of a zig-zag encoded long: the one-byte ones from a table (most lengths,
    counts, lines), the others from the record encoder's own routine."""
    if zigzag < 0x80:
        return _ONE_BYTE_VARINTS[zigzag]
    return _record_varint(zigzag)


def _long(value: object) -> bytes:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise _FallbackError
    return _varint(value << 1 if value >= 0 else ~(value << 1))


def _int(value: object) -> bytes:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise _FallbackError
    return _varint(value << 1 if value >= 0 else ~(value << 1))


def _string(value: object) -> bytes:
    if type(value) is not str:
        raise _FallbackError
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        raise _FallbackError from None
    return _varint(len(encoded) << 1) + encoded


_STRINGS: dict[str, bytes] = {}


def _cached_string(value: str) -> bytes:
    """:func:`_string` of a value likely to come again (sensor id, codec, gateway, network)."""
    found = _STRINGS.get(value)
    if found is None:
        found = _string(value)
        if len(_STRINGS) >= _STRINGS_MAX:
            _STRINGS.clear()
        _STRINGS[value] = found
    return found


def _optional_string(value: str | None, cached: bool) -> bytes:
    if value is None:
        return b"\x00"
    return b"\x02" + (_cached_string(value) if cached else _string(value))


def _timestamp(value: object) -> bytes:
    if type(value) is int:
        return _long(value)
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise _FallbackError
    delta = value - _EPOCH
    return _long((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _double(value: object) -> bytes:
    if type(value) is not float:
        raise _FallbackError
    return _PACK_DOUBLE(value)


class _Shape:
    """How one set of quantity names is laid out in a kind's record."""

    __slots__ = ("args", "getter", "other", "pack", "single")

    def __init__(self, typed_fields: tuple[str, ...], names: tuple[str, ...]) -> None:
        present = frozenset(names)
        typed = [name for name in typed_fields if name in present]
        #: Quantities without a typed field, in the measurement's order (the map's item order).
        self.other: tuple[str, ...] = tuple(name for name in names if name not in typed_fields)
        fmt = ["<"]
        gap = 0
        for name in typed_fields:
            if name in present:
                if gap:
                    fmt.append(f"{gap}x")
                    gap = 0
                fmt.append("Bd")
            else:
                gap += 1
        if not self.other:
            gap += 1  # the empty other_values map: its end block, one 00 byte
        if gap:
            fmt.append(f"{gap}x")
        self.pack = struct.Struct("".join(fmt)).pack
        #: ``[2, value, 2, value, ...]`` once the values are in: the struct's arguments.
        self.args: list[Any] = [2, 0.0] * len(typed)
        self.single = typed[0] if len(typed) == 1 else None
        self.getter = itemgetter(*typed) if len(typed) > 1 else None

    def typed_bytes(self, values: Mapping[str, float]) -> bytes:
        args = self.args.copy()
        if self.getter is not None:
            args[1::2] = self.getter(values)
        elif self.single is not None:
            args[1] = values[self.single]
        for value in args[1::2]:
            if type(value) is not float:
                raise _FallbackError  # an int or a bool would pass struct as a double, silently
        return self.pack(*args)


class _KindLayout:
    """A kind's record: its framing header, typed fields and the encoded kind string."""

    __slots__ = ("header", "kind", "name", "shapes", "typed_fields")

    def __init__(self, kind: str) -> None:
        self.name = MEASUREMENT_SCHEMAS[kind]
        fields = schema(self.name)["fields"]
        names = [f["name"] for f in fields]
        self.typed_fields = tuple(f["name"] for f in fields if f["type"] == _QUANTITY_TYPE)
        expected = (
            ["sensor_id", "kind", "observed_at", "received_at", "codec", "partial"]
            + list(self.typed_fields)
            + ["other_values"]
            + (["counts"] if kind == "traffic" else ["regions"] if kind == "occupancy" else [])
            + ["source"]
        )
        if names != expected:
            # The writer below follows this order; a schema change must come with a change here.
            raise RuntimeError(f"{self.name}: field order {names} is not the one encoded here")
        self.header = b"\xc3\x01" + fingerprint(self.name)
        self.kind = _string(kind)
        self.shapes: dict[tuple[str, ...], _Shape] = {}

    def shape(self, names: tuple[str, ...]) -> _Shape:
        found = self.shapes.get(names)
        if found is None:
            if len(self.shapes) >= _SHAPES_MAX:
                self.shapes.clear()
            found = self.shapes[names] = _Shape(self.typed_fields, names)
        return found


_LAYOUTS: Final[Mapping[str, _KindLayout]] = {kind: _KindLayout(kind) for kind in KINDS}
_DIRECTION_INDEX: Final = {"in": b"\x00", "out": b"\x02"}


def _encode(measurement: Measurement, layout: _KindLayout) -> bytes:
    out = bytearray(layout.header)
    out += _cached_string(measurement.sensor_id)
    out += layout.kind
    out += _timestamp(measurement.observed_at)
    out += _timestamp(measurement.received_at)
    out += _cached_string(measurement.codec)
    partial = measurement.partial
    if partial is True:
        out.append(1)
    elif partial is False:
        out.append(0)
    else:
        raise _FallbackError
    values = measurement.values
    shape = layout.shape(tuple(values))
    out += shape.typed_bytes(values)
    other = shape.other
    if other:
        out += _long(len(other))
        for name in other:
            out += _string(name)
            out += _double(values[name])
        out.append(0)
    kind = measurement.kind
    if kind == "traffic":
        counts = measurement.counts
        if counts:
            out += _long(len(counts))
            for count in counts:
                out += _int(count.line)
                direction = _DIRECTION_INDEX.get(count.direction)
                if direction is None:
                    raise _FallbackError
                out += direction
                out += _cached_string(count.traffic_class)
                out += b"\x00" if count.count is None else b"\x02" + _long(count.count)
                out += b"\x00" if count.cumulative is None else b"\x02" + _long(count.cumulative)
        out.append(0)
    elif measurement.counts:
        raise _FallbackError
    if kind == "occupancy":
        regions = measurement.regions
        if regions:
            out += _long(len(regions))
            for region in regions:
                out += _int(region.region)
                out += _int(region.count)
        out.append(0)
    elif measurement.regions:
        raise _FallbackError
    source = measurement.source
    out += _optional_string(source.network, True)
    out += _optional_string(source.gateway_id, True)
    rssi = source.rssi
    out += b"\x00" if rssi is None else b"\x02" + _double(rssi)
    snr = source.snr
    out += b"\x00" if snr is None else b"\x02" + _double(snr)
    f_cnt = source.f_cnt
    out += b"\x00" if f_cnt is None else b"\x02" + _long(f_cnt)
    out += _optional_string(source.dev_eui, True)
    out += _optional_string(source.dedup_id, False)
    out += _optional_string(source.idempotency_key, False)
    return bytes(out)


def encode_measurement(measurement: Measurement) -> bytes:
    """``encode(measurement_schema_name(m.kind), measurement_record(m))``, several times faster.

    Raises :class:`~schemas.SchemaError` as that expression does, for an unknown kind or a value
    that does not fit its field.
    """
    layout = _LAYOUTS.get(measurement.kind)
    if layout is not None:
        try:
            return _encode(measurement, layout)
        except (_FallbackError, TypeError, KeyError, struct.error, OverflowError):
            pass
    # The careful path: the same bytes when the values are acceptable, else the named error.
    record = measurement_record(measurement)
    return encode(MEASUREMENT_SCHEMAS[measurement.kind], record)
