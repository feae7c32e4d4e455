"""A measurement (or a decoder's output and what completes it) straight to its framed Avro value.

``encode(name, measurement_record(m))`` builds a dict of ~35 fields (most of them ``None``) and
the compiled encoder then walks it field by field: ~20 µs a message on a slow core, more than
decoding the payload. Ingest needs only the bytes, so :func:`encode_measurement` writes them from
the :class:`~schemas.Measurement` itself, and :func:`encode_decoded` from the parts a measurement
is made of, without building one (Avro 1.11 specification, "Binary Encoding"; the field
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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Final

from decoders import KINDS, Decoded, Position, RegionCount, TrafficCount
from schemas._avro import (
    FallbackError,
    checked_int_bytes,
    checked_long_bytes,
    double_bytes,
    single_object_header,
    string_bytes,
    utc_micros,
    varint,
)
from schemas._framing import encode
from schemas._measurement import (
    MEASUREMENT_SCHEMAS,
    POSITION_FIELDS,
    Measurement,
    Source,
    decoded_record,
    measurement_record,
)
from schemas._registry import fingerprint, schema

__all__ = ["encode_decoded", "encode_measurement"]

_QUANTITY_TYPE: Final = ["null", "double"]
#: Bounds of the caches below: a hostile stream of new names must not grow memory without end.
_SHAPES_MAX: Final = 4096
_STRINGS_MAX: Final = 65_536


# The varints, doubles, strings and timestamps are schemas._avro's: compiled in the same extension,
# its functions are called natively.


def _string(value: object) -> bytes:
    if type(value) is not str:
        raise FallbackError
    try:
        return string_bytes(value)
    except UnicodeEncodeError:
        raise FallbackError from None


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


def _timestamp(value: object) -> bytes:
    if type(value) is int:
        return checked_long_bytes(value)
    if not isinstance(value, datetime):
        raise FallbackError
    zone = value.tzinfo
    # ``utcoffset()`` costs more than the rest of the conversion: skip it for UTC itself.
    if zone is not UTC and (zone is None or value.utcoffset() is None):
        raise FallbackError
    micros = utc_micros(value)
    # Any datetime is within ±2**62 µs of the epoch: no range check needed, unlike _long.
    return varint(micros << 1 if micros >= 0 else ~(micros << 1))


def _double(value: object) -> bytes:
    if type(value) is not float:
        raise FallbackError
    return double_bytes(value)


class _Shape:
    """How one set of quantity names is laid out in a kind's record."""

    __slots__ = ("args", "getter", "other", "other_head", "other_names", "pack", "single")

    def __init__(self, typed_fields: tuple[str, ...], names: tuple[str, ...]) -> None:
        present = frozenset(names)
        typed = [name for name in typed_fields if name in present]
        #: Quantities without a typed field, in the measurement's order (the map's item order).
        self.other: tuple[str, ...] = tuple(name for name in names if name not in typed_fields)
        #: The map's block count and each name's encoded string, written once per shape.
        self.other_head = checked_long_bytes(len(self.other))
        self.other_names: tuple[bytes, ...] = tuple(_string(name) for name in self.other)
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
            got: tuple[object, ...] = self.getter(values)
            for value in got:
                if type(value) is not float:
                    raise FallbackError  # an int or a bool would pass struct as a double
            args[1::2] = got
        elif self.single is not None:
            single = values[self.single]
            if type(single) is not float:
                raise FallbackError
            args[1] = single
        return self.pack(*args)


class _KindLayout:
    """A kind's record: its framing header, typed fields and the encoded kind string."""

    __slots__ = ("header", "kind", "name", "positioned", "shapes", "typed_fields")

    def __init__(self, kind: str) -> None:
        self.name = MEASUREMENT_SCHEMAS[kind]
        fields = schema(self.name)["fields"]
        names = [f["name"] for f in fields]
        self.typed_fields = tuple(
            f["name"]
            for f in fields
            if f["type"] == _QUANTITY_TYPE and f["name"] not in POSITION_FIELDS
        )
        #: Whether the record ends with the position fields (air).
        self.positioned = names[-len(POSITION_FIELDS) :] == list(POSITION_FIELDS)
        expected = (
            ["sensor_id", "kind", "observed_at", "received_at", "codec", "partial"]
            + list(self.typed_fields)
            + ["other_values"]
            + (["counts"] if kind == "traffic" else ["regions"] if kind == "occupancy" else [])
            + ["source"]
            + (list(POSITION_FIELDS) if self.positioned else [])
        )
        if names != expected:
            # The writer below follows this order; a schema change must come with a change here.
            raise RuntimeError(f"{self.name}: field order {names} is not the one encoded here")
        self.header = single_object_header(fingerprint(self.name))
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
_NO_SOURCE: Final = Source()


def _encode(
    layout: _KindLayout,
    sensor_id: str,
    kind: str,
    observed_at: object,
    received_at: object,
    codec: str,
    partial: bool,
    values: Mapping[str, float],
    counts: Sequence[TrafficCount],
    regions: Sequence[RegionCount],
    source: Source,
    position: Position | None,
) -> bytes:
    # The pieces are gathered in a list and joined once: appending to a list is cheaper than
    # growing a bytearray piece by piece.
    observed = _timestamp(observed_at)
    if partial is True:
        partial_byte = b"\x01"
    elif partial is False:
        partial_byte = b"\x00"
    else:
        raise FallbackError
    shape = layout.shape(tuple(values))
    parts = [
        layout.header,
        _cached_string(sensor_id),
        layout.kind,
        observed,
        # Direct topics take the receive time as the event time: the same object, converted once.
        observed if received_at is observed_at else _timestamp(received_at),
        _cached_string(codec),
        partial_byte,
        shape.typed_bytes(values),
    ]
    other = shape.other
    if other:
        parts.append(shape.other_head)
        encoded_names = shape.other_names
        for index, name in enumerate(other):
            parts.append(encoded_names[index])
            parts.append(_double(values[name]))
        parts.append(b"\x00")
    if kind == "traffic":
        if counts:
            parts.append(checked_long_bytes(len(counts)))
            for count in counts:
                parts.append(checked_int_bytes(count.line))
                direction = _DIRECTION_INDEX.get(count.direction)
                if direction is None:
                    raise FallbackError
                parts.append(direction)
                parts.append(_cached_string(count.traffic_class))
                _append_optional_long(parts, count.count)
                _append_optional_long(parts, count.cumulative)
        parts.append(b"\x00")
    elif counts:
        raise FallbackError
    if kind == "occupancy":
        if regions:
            parts.append(checked_long_bytes(len(regions)))
            for region in regions:
                parts.append(checked_int_bytes(region.region))
                parts.append(checked_int_bytes(region.count))
        parts.append(b"\x00")
    elif regions:
        raise FallbackError
    _append_optional_string(parts, source.network, True)
    _append_optional_string(parts, source.gateway_id, True)
    _append_optional_double(parts, source.rssi)
    _append_optional_double(parts, source.snr)
    _append_optional_long(parts, source.f_cnt)
    _append_optional_string(parts, source.dev_eui, True)
    _append_optional_string(parts, source.dedup_id, False)
    _append_optional_string(parts, source.idempotency_key, False)
    if layout.positioned:
        if position is None:
            parts.append(b"\x00\x00\x00")  # lat, lon and accuracy null: branch 0 each
        else:
            parts.append(b"\x02")
            parts.append(_double(position.lat))
            parts.append(b"\x02")
            parts.append(_double(position.lon))
            _append_optional_double(parts, position.accuracy_m)
    elif position is not None:
        raise FallbackError  # the careful path says the record has no place for it
    return b"".join(parts)


def _append_optional_double(parts: list[bytes], value: float | None) -> None:
    """A ``["null", "double"]`` union: branch 0, or branch 1 and the double."""
    if value is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x02")
        parts.append(_double(value))


def _append_optional_long(parts: list[bytes], value: int | None) -> None:
    """A ``["null", "long"]`` union: branch 0, or branch 1 and the long."""
    if value is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x02")
        parts.append(checked_long_bytes(value))


def _append_optional_string(parts: list[bytes], value: str | None, cached: bool) -> None:
    """A ``["null", "string"]`` union; ``cached`` for values likely to come again."""
    if value is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x02")
        parts.append(_cached_string(value) if cached else _string(value))


#: What makes the fast path give up: the careful path then encodes or names the faulty field.
_GIVE_UP = (FallbackError, TypeError, KeyError, struct.error, OverflowError, AttributeError)


def encode_measurement(measurement: Measurement) -> bytes:
    """``encode(measurement_schema_name(m.kind), measurement_record(m))``, several times faster.

    Raises :class:`~schemas.SchemaError` as that expression does, for an unknown kind or a value
    that does not fit its field.
    """
    layout = _LAYOUTS.get(measurement.kind)
    if layout is not None:
        try:
            return _encode(
                layout,
                measurement.sensor_id,
                measurement.kind,
                measurement.observed_at,
                measurement.received_at,
                measurement.codec,
                measurement.partial,
                measurement.values,
                measurement.counts,
                measurement.regions,
                measurement.source,
                measurement.position,
            )
        except _GIVE_UP:
            pass
    # The careful path: the same bytes when the values are acceptable, else the named error.
    record = measurement_record(measurement)
    return encode(MEASUREMENT_SCHEMAS[measurement.kind], record)


def encode_decoded(
    decoded: Decoded,
    *,
    sensor_id: object,
    observed_at: object,
    received_at: object,
    source: object = None,
) -> bytes:
    """The framed Avro value of a decoder's output completed with identity, times and source.

    The same bytes as ``encode_measurement(Measurement.from_decoded(decoded, ...))`` and the same
    errors, without building the :class:`~schemas.Measurement` (its frozen dataclass costs about
    as much as decoding a payload): ingest's hot path. ``sensor_id`` is a string; the times are
    timezone-aware datetimes or ints of microseconds since the epoch, and ``source`` a
    :class:`~schemas.Source`, a mapping or None, as for :func:`schemas.decoded_record`. They are
    typed ``object`` because a compiled function would refuse a wrong type with a bare
    ``TypeError`` on entry, where this one raises the record encoder's ``SchemaError`` naming
    the field.
    """
    layout = _LAYOUTS.get(decoded.kind)
    if layout is not None and type(sensor_id) is str:
        if source is None:
            source = _NO_SOURCE
        if type(source) is Source:
            try:
                return _encode(
                    layout,
                    sensor_id,
                    decoded.kind,
                    observed_at,
                    received_at,
                    decoded.codec,
                    decoded.partial,
                    decoded.values,
                    decoded.counts,
                    decoded.regions,
                    source,
                    decoded.position,
                )
            except _GIVE_UP:
                pass
    # The careful path: the same bytes when the values are acceptable, else the named error.
    loose: Any = (sensor_id, observed_at, received_at, source)
    record = decoded_record(
        decoded,
        sensor_id=loose[0],
        observed_at=loose[1],
        received_at=loose[2],
        source=loose[3],
    )
    return encode(MEASUREMENT_SCHEMAS[decoded.kind], record)
