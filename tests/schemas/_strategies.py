"""Hypothesis strategies drawing valid records from a fastavro-parsed schema, and what fastavro
reads back for them; shared by the encoder and decoder tests."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

import schemas
from decoders import Decoded
from schemas import Measurement, epoch_micros

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Instants a reader can turn back into a datetime, with room for a UTC offset either side.
MIN_TIME = datetime(2, 1, 1)  # noqa: DTZ001  (bounds for st.datetimes, which adds the zone)
MAX_TIME = datetime(9998, 12, 31)  # noqa: DTZ001
MIN_MICROS = epoch_micros(MIN_TIME.replace(tzinfo=UTC))
MAX_MICROS = epoch_micros(MAX_TIME.replace(tzinfo=UTC))

# --- records drawn from a parsed schema -----------------------------------------------------------

ZONES = st.one_of(
    st.just(UTC),
    st.builds(
        timezone,
        st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
            lambda offset: timedelta(minutes=offset // timedelta(minutes=1))
        ),
    ),
)
TIMESTAMPS = st.one_of(
    st.datetimes(min_value=MIN_TIME, max_value=MAX_TIME, timezones=ZONES),
    st.integers(MIN_MICROS, MAX_MICROS),
    # Around now, where the encoder's cached high groups matter.
    st.integers(1_600_000_000_000_000, 1_900_000_000_000_000),
)
DOUBLES = st.one_of(
    st.floats(),  # with NaN, infinities, -0.0 and subnormals
    st.integers(-(1 << 80), 1 << 80),  # written as float(value), as fastavro does
)


def _longs(low: int, high: int) -> st.SearchStrategy[int]:
    # Small values and both ends of each varint length, where encoders go wrong.
    edges = [low, high, 0, -1, 63, 64, -64, -65, 0x1FFF, 0x2000, 1 << 27, (1 << 27) - 1]
    edges += [(1 << bits) + delta for bits in range(6, 63, 7) for delta in (-1, 0)]
    return st.one_of(
        st.integers(low, high),
        st.integers(-100, 10_000),
        st.sampled_from([edge for edge in edges if low <= edge <= high]),
    )


def records(schema: Any, named: dict[str, Any], in_union: bool = False) -> st.SearchStrategy[Any]:
    """Valid values of a fastavro-parsed ``schema``, in every form the encoders accept."""
    if isinstance(schema, list):
        (other,) = (branch for branch in schema if branch != "null")
        return st.one_of(st.none(), records(other, named, in_union=True))
    if isinstance(schema, str) and schema in named:
        return records(named[schema], named, in_union)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-micros":
            return TIMESTAMPS
        kind = schema["type"]
        if kind == "record":
            required: dict[str, st.SearchStrategy[Any]] = {}
            optional: dict[str, st.SearchStrategy[Any]] = {}
            for field in schema["fields"]:
                strategy = records(field["type"], named)
                has_null = isinstance(field["type"], list) and "null" in field["type"]
                if "default" in field or has_null:
                    optional[field["name"]] = strategy  # may be left out
                else:
                    required[field["name"]] = strategy
            return st.fixed_dictionaries(required, optional=optional)
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        if kind == "array":
            items = st.lists(records(schema["items"], named), max_size=4)
            return items if in_union else st.one_of(items, items.map(tuple))
        if kind == "map":
            values = records(schema["values"], named)
            return st.one_of(
                st.dictionaries(st.text(max_size=12), values, max_size=4),
                st.dictionaries(st.text(max_size=80), values, min_size=64, max_size=70),
            )
        schema = kind
    primitives: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": _longs(INT_MIN, INT_MAX),
        "long": _longs(LONG_MIN, LONG_MAX),
        "float": st.floats(width=32),
        "double": DOUBLES,
        "string": st.one_of(st.text(max_size=20), st.text(min_size=60, max_size=200)),
        "bytes": st.one_of(
            st.binary(max_size=20),
            st.binary(min_size=60, max_size=300),
            st.binary(max_size=5).map(bytearray),
        ),
    }
    return primitives[schema]


def record_strategy(name: str) -> st.SearchStrategy[dict[str, Any]]:
    parsed = schemas.schema(name)
    strategy: st.SearchStrategy[dict[str, Any]] = records(parsed, parsed["__named_schemas"])
    return strategy


STRATEGIES = {name: record_strategy(name) for name in schemas.SCHEMA_NAMES}


def expected_read(schema: Any, named: dict[str, Any], value: Any) -> Any:
    """What fastavro reads back for a ``value`` written with ``schema``."""
    if isinstance(schema, list):
        if value is None:
            return None
        (other,) = (branch for branch in schema if branch != "null")
        return expected_read(other, named, value)
    if isinstance(schema, str) and schema in named:
        return expected_read(named[schema], named, value)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-micros":
            micros = value if isinstance(value, int) else epoch_micros(value)
            return EPOCH + timedelta(microseconds=micros)
        if schema["type"] == "record":
            read = {}
            for field in schema["fields"]:
                raw = value.get(field["name"], field.get("default"))
                read[field["name"]] = expected_read(field["type"], named, raw)
            return read
        if schema["type"] == "array":
            return [expected_read(schema["items"], named, item) for item in value]
        if schema["type"] == "map":
            return {k: expected_read(schema["values"], named, v) for k, v in value.items()}
        schema = schema["type"]
    if schema == "double":
        return float(value)
    if schema == "bytes":
        return bytes(value)
    return value


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN and 0.0 differs from -0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def decoded_of(measurement: Measurement) -> Decoded:
    """The decoder output ``measurement`` completes (what ``Measurement.from_decoded`` takes)."""
    return Decoded(
        codec=measurement.codec,
        kind=measurement.kind,
        values=dict(measurement.values),
        counts=list(measurement.counts),
        regions=list(measurement.regions),
        partial=measurement.partial,
        position=measurement.position,
    )
