"""The canonical measurement and its Avro record, in both directions.

Contract: docs/architecture.md#canonical-measurement.

A kind's measurement record has a typed ``["null", "double"]`` field for each canonical quantity
that kind usually reports, so Kafka consumers see real columns; every other quantity goes to the
``other_values`` map. Which quantities are typed is read from the loaded schema, so the ``.avsc``
file stays the one place that says it. Reading back merges both into ``values``: a quantity an
older writer schema kept in ``other_values`` and a newer one types comes back all the same.

The air record also has the position of a mobile sensor (``lat``, ``lon``,
``position_accuracy_m``, :data:`POSITION_FIELDS`): typed like a quantity, but not one, so never in
``values``; the other kinds' records have no place for a position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from decoders import KINDS, Decoded, Kind, Position, RegionCount, TrafficCount
from schemas._registry import SchemaError, schema

__all__ = [
    "MEASUREMENT_SCHEMAS",
    "POSITION_FIELDS",
    "Measurement",
    "Source",
    "decoded_record",
    "measurement_from_record",
    "measurement_record",
    "measurement_schema_name",
    "typed_quantities",
]

#: Measurement record schema name per kind.
MEASUREMENT_SCHEMAS: Mapping[str, str] = MappingProxyType(
    {
        "noise": "NoiseMeasurement",
        "air": "AirMeasurement",
        "traffic": "TrafficMeasurement",
        "occupancy": "OccupancyMeasurement",
    }
)
_QUANTITY_TYPE = ["null", "double"]
#: The position fields of a measurement record (AirMeasurement v1 on), in schema order: not
#: quantities, though typed the same way.
POSITION_FIELDS: tuple[str, ...] = ("lat", "lon", "position_accuracy_m")
#: Kinds whose record has the position fields.
_POSITIONED_KINDS = frozenset({"air"})


@dataclass(slots=True)
class Source:
    """Network metadata of one uplink; None where the path did not provide it.

    A plain slots class, not frozen: a frozen dataclass stores each field through
    ``object.__setattr__`` (~1.5 µs for these eight, once per message in ingest). Nothing changes
    one once built. ``__hash__`` is spelled out to stay hashable as the frozen class was.
    """

    network: str | None = None
    gateway_id: str | None = None
    rssi: float | None = None
    snr: float | None = None
    f_cnt: int | None = None
    dev_eui: str | None = None
    dedup_id: str | None = None
    idempotency_key: str | None = None

    def __init__(
        self,
        network: str | None = None,
        gateway_id: str | None = None,
        rssi: float | None = None,
        snr: float | None = None,
        f_cnt: int | None = None,
        dev_eui: str | None = None,
        dedup_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        self.network = network
        self.gateway_id = gateway_id
        self.rssi = rssi
        self.snr = snr
        self.f_cnt = f_cnt
        self.dev_eui = dev_eui
        self.dedup_id = dedup_id
        self.idempotency_key = idempotency_key

    def __hash__(self) -> int:
        return hash(
            (
                self.network,
                self.gateway_id,
                self.rssi,
                self.snr,
                self.f_cnt,
                self.dev_eui,
                self.dedup_id,
                self.idempotency_key,
            )
        )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Source:
        """Build from a dict such as ingest's envelope metadata; an unknown key is an error."""
        unknown = raw.keys() - _SOURCE_FIELDS
        if unknown:
            raise SchemaError(f"unknown source fields {sorted(unknown)}; known: {_SOURCE_FIELDS}")
        return cls(**raw)


_SOURCE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Source))
_NO_SOURCE = Source()


@dataclass(frozen=True, slots=True)
class Measurement:
    """The full canonical measurement: what a decoder found plus identity, times and source.

    Times are timezone-aware (UTC); Avro keeps microseconds.
    """

    sensor_id: str
    kind: Kind
    observed_at: datetime
    received_at: datetime
    codec: str
    values: Mapping[str, float] = field(default_factory=dict)
    counts: tuple[TrafficCount, ...] = ()
    regions: tuple[RegionCount, ...] = ()
    partial: bool = False
    source: Source = _NO_SOURCE
    #: Where a mobile sensor was (air only); None for a fixed sensor or without a fix.
    position: Position | None = None

    @classmethod
    def from_decoded(
        cls,
        decoded: Decoded,
        *,
        sensor_id: str,
        observed_at: datetime,
        received_at: datetime,
        source: Source | Mapping[str, Any] | None = None,
    ) -> Measurement:
        """Complete a decoder's output. ``observed_at`` is the caller's choice
        (docs/architecture.md#canonical-measurement: device time, else network-server time, else
        broker time)."""
        if source is None:
            source = _NO_SOURCE
        elif not isinstance(source, Source):
            source = Source.from_mapping(source)
        return cls(
            sensor_id=sensor_id,
            kind=decoded.kind,
            observed_at=observed_at,
            received_at=received_at,
            codec=decoded.codec,
            values=dict(decoded.values),
            counts=tuple(decoded.counts),
            regions=tuple(decoded.regions),
            partial=decoded.partial,
            source=source,
            position=decoded.position,
        )


def _typed_fields(name: str) -> frozenset[str]:
    return frozenset(
        f["name"]
        for f in schema(name)["fields"]
        if f["type"] == _QUANTITY_TYPE and f["name"] not in POSITION_FIELDS
    )


def _direction_symbols() -> frozenset[str]:
    (counts,) = (f for f in schema("TrafficMeasurement")["fields"] if f["name"] == "counts")
    (direction,) = (f for f in counts["type"]["items"]["fields"] if f["name"] == "direction")
    return frozenset(direction["type"]["symbols"])


_DIRECTIONS = _direction_symbols()
_TYPED: Mapping[str, frozenset[str]] = MappingProxyType(
    {kind: _typed_fields(MEASUREMENT_SCHEMAS[kind]) for kind in KINDS}
)
# Every field of a kind's record, in schema order, all None: copied, then filled, for each
# measurement (copying a dict is faster than building one).
_RECORD_TEMPLATES: Mapping[str, dict[str, Any]] = MappingProxyType(
    {
        kind: dict.fromkeys(f["name"] for f in schema(MEASUREMENT_SCHEMAS[kind])["fields"])
        for kind in KINDS
    }
)


def measurement_schema_name(kind: str) -> str:
    """The measurement record schema of ``kind`` (``"noise"`` → ``"NoiseMeasurement"``)."""
    try:
        return MEASUREMENT_SCHEMAS[kind]
    except KeyError:
        raise _unknown_kind(kind) from None


def _unknown_kind(kind: str) -> SchemaError:
    return SchemaError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def typed_quantities(kind: str) -> frozenset[str]:
    """Quantities with their own typed field in ``kind``'s measurement record."""
    measurement_schema_name(kind)
    return _TYPED[kind]


def _time(name: str, value: datetime | int) -> datetime | int:
    if type(value) is int:
        return value  # microseconds since the epoch, UTC; the encoder checks the range
    if isinstance(value, datetime):
        if value.tzinfo is UTC or (value.tzinfo is not None and value.utcoffset() is not None):
            return value
        # fastavro would take a naive datetime as local time and shift it silently.
        raise SchemaError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    raise SchemaError(
        f"{name} must be a timezone-aware datetime or an int of microseconds since the epoch, "
        f"got {type(value).__name__}"
    )


def _source_record(source: Source | Mapping[str, Any] | None) -> dict[str, Any]:
    if source is None:
        return dict.fromkeys(_SOURCE_FIELDS)
    if isinstance(source, Source):
        # Written out: a comprehension over the names with getattr costs three times as much.
        # A test checks these keys against fields(Source).
        return {
            "network": source.network,
            "gateway_id": source.gateway_id,
            "rssi": source.rssi,
            "snr": source.snr,
            "f_cnt": source.f_cnt,
            "dev_eui": source.dev_eui,
            "dedup_id": source.dedup_id,
            "idempotency_key": source.idempotency_key,
        }
    unknown = source.keys() - _SOURCE_FIELDS
    if unknown:
        raise SchemaError(f"unknown source fields {sorted(unknown)}; known: {_SOURCE_FIELDS}")
    return {name: source.get(name) for name in _SOURCE_FIELDS}


def _record(
    *,
    sensor_id: str,
    kind: str,
    observed_at: datetime | int,
    received_at: datetime | int,
    codec: str,
    values: Mapping[str, float],
    counts: Sequence[TrafficCount],
    regions: Sequence[RegionCount],
    partial: bool,
    source: Source | Mapping[str, Any] | None,
    position: Position | None,
) -> dict[str, Any]:
    typed = _TYPED.get(kind)
    if typed is None:
        raise _unknown_kind(kind)
    record = _RECORD_TEMPLATES[kind].copy()
    record["sensor_id"] = sensor_id
    record["kind"] = kind
    record["observed_at"] = _time("observed_at", observed_at)
    record["received_at"] = _time("received_at", received_at)
    record["codec"] = codec
    record["partial"] = partial
    other: dict[str, float] = {}
    for quantity, value in values.items():
        if quantity in typed:
            record[quantity] = float(value)
        else:
            other[quantity] = float(value)
    record["other_values"] = other
    if kind == "traffic":
        record["counts"] = [_count_record(count) for count in counts]
    elif counts:
        raise SchemaError(f"{kind} measurement of {sensor_id} has traffic counts")
    if kind == "occupancy":
        record["regions"] = [{"region": region.region, "count": region.count} for region in regions]
    elif regions:
        raise SchemaError(f"{kind} measurement of {sensor_id} has regions")
    record["source"] = _source_record(source)
    if kind in _POSITIONED_KINDS:
        if position is not None:
            accuracy = position.accuracy_m
            record["lat"] = float(position.lat)
            record["lon"] = float(position.lon)
            record["position_accuracy_m"] = None if accuracy is None else float(accuracy)
    elif position is not None:
        raise SchemaError(f"{kind} measurement of {sensor_id} has a position")
    return record


def measurement_record(measurement: Measurement) -> dict[str, Any]:
    """The Avro record of ``measurement`` for its kind's schema (see :data:`MEASUREMENT_SCHEMAS`).

    Quantities with a typed field go to it, the others to ``other_values``. Counts are only
    allowed on traffic, regions only on occupancy: the other records have no place for them.
    """
    return _record(
        sensor_id=measurement.sensor_id,
        kind=measurement.kind,
        observed_at=measurement.observed_at,
        received_at=measurement.received_at,
        codec=measurement.codec,
        values=measurement.values,
        counts=measurement.counts,
        regions=measurement.regions,
        partial=measurement.partial,
        source=measurement.source,
        position=measurement.position,
    )


def decoded_record(
    decoded: Decoded,
    *,
    sensor_id: str,
    observed_at: datetime | int,
    received_at: datetime | int,
    source: Source | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Avro record of a decoder's output, without building a :class:`Measurement`.

    The same record as ``measurement_record(Measurement.from_decoded(decoded, ...))``, for the
    ingest hot path, where it saves about 2 µs a message. ``observed_at`` and ``received_at`` are
    timezone-aware datetimes or ints of microseconds since 1970-01-01T00:00:00Z (UTC): a caller
    that has the time as an int (``time.time_ns() // 1000``) passes it as is, and the encoder
    writes it without a datetime conversion (:func:`schemas.epoch_micros` converts one).
    """
    return _record(
        sensor_id=sensor_id,
        kind=decoded.kind,
        observed_at=observed_at,
        received_at=received_at,
        codec=decoded.codec,
        values=decoded.values,
        counts=decoded.counts,
        regions=decoded.regions,
        partial=decoded.partial,
        source=source,
        position=decoded.position,
    )


def _count_record(count: TrafficCount) -> dict[str, Any]:
    return {
        "line": count.line,
        "direction": count.direction,
        "traffic_class": count.traffic_class,
        "count": count.count,
        "cumulative": count.cumulative,
    }


def measurement_from_record(record: Mapping[str, Any]) -> Measurement:
    """The measurement back from a record read with its kind's current schema.

    ``values`` holds the non-null typed quantities and ``other_values``; a typed value wins over
    an ``other_values`` entry of the same name.
    """
    kind = record["kind"]
    measurement_schema_name(kind)
    values: dict[str, float] = dict(record.get("other_values") or {})
    for quantity in _TYPED[kind]:
        value = record.get(quantity)
        if value is not None:
            values[quantity] = value
    counts: list[TrafficCount] = []
    for raw in record.get("counts") or ():
        if raw["direction"] not in _DIRECTIONS:
            raise SchemaError(f"unknown traffic direction {raw['direction']!r}")
        counts.append(
            TrafficCount(
                line=raw["line"],
                direction=raw["direction"],
                traffic_class=raw["traffic_class"],
                count=raw["count"],
                cumulative=raw["cumulative"],
            )
        )
    regions = tuple(
        RegionCount(region=raw["region"], count=raw["count"]) for raw in record.get("regions") or ()
    )
    raw_source: Mapping[str, Any] = record.get("source") or {}
    lat, lon = record.get("lat"), record.get("lon")
    position = None
    if lat is not None and lon is not None:
        position = Position(lat, lon, record.get("position_accuracy_m"))
    return Measurement(
        sensor_id=record["sensor_id"],
        kind=kind,
        observed_at=record["observed_at"],
        received_at=record["received_at"],
        codec=record["codec"],
        values=values,
        counts=tuple(counts),
        regions=regions,
        partial=record["partial"],
        source=Source(**{name: raw_source.get(name) for name in _SOURCE_FIELDS}),
        position=position,
    )
