"""``encode_aggregate`` writes exactly what ``encode("Aggregate", …)`` writes, and
``decode_aggregate`` reads back what ``decode`` reads (times as int µs), compiled or not."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
import schemas._aggregate_codec
from schemas import SchemaError, epoch_micros
from tests._source import plain_python
from tests.schemas._strategies import STRATEGIES

_SOURCE = plain_python(schemas._aggregate_codec)

ENCODERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "imported": schemas._aggregate_codec.encode_aggregate,
    "source": _SOURCE.encode_aggregate,
}
DECODERS: dict[str, Callable[[bytes | bytearray], dict[str, Any] | None]] = {
    "imported": schemas._aggregate_codec.decode_aggregate,
    "source": _SOURCE.decode_aggregate,
}

_NAMES = st.sampled_from(
    ["laeq_db", "lamax_db", "l90_db", "coverage", "pm10_ugm3_mean", "", "é", "x" * 70]
) | st.text(max_size=12)
_US = st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(1_600_000_000_000_000, 1 << 51)


@st.composite
def _aggregator_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records shaped as the aggregator makes them (the specialised path), with absent
    defaulted fields, empty and large ``values`` maps and edge numbers."""
    record: dict[str, Any] = {
        "key": draw(st.sampled_from(["bench-noise-0001", "site:s1"]) | st.text(max_size=80)),
        "kind": draw(st.sampled_from(["noise", "air", "traffic", "occupancy"])),
        "window_start": draw(_US),
        "window_end": draw(_US),
        "window_size_seconds": draw(st.sampled_from([60, 3600, 86_400]) | _US),
        "sample_count": draw(st.integers(0, 10_000) | _US),
    }
    for name, strategy in (
        ("revision", st.integers(-(1 << 31), (1 << 31) - 1)),
        ("final", st.booleans()),
        (
            "values",
            st.dictionaries(_NAMES, st.floats(), max_size=10)
            | st.dictionaries(_NAMES, st.floats(), min_size=64, max_size=70),
        ),
        ("counts", st.just([]) | st.just(())),
        ("regions", st.just([]) | st.just(())),
    ):
        if draw(st.booleans()):
            record[name] = draw(strategy)
    return record


def _reference(record: dict[str, Any]) -> bytes | type[SchemaError]:
    try:
        return schemas.encode("Aggregate", record)
    except SchemaError:
        return SchemaError


def _ours(encoder: Callable[[dict[str, Any]], bytes], record: dict[str, Any]) -> Any:
    try:
        return encoder(record)
    except SchemaError:
        return SchemaError


def _expected_read(data: bytes) -> dict[str, Any] | None:
    """What the aggregator read before: the generic decoder's record, None where it refused."""
    try:
        name, record = schemas.decode(data)
    except SchemaError:
        return None
    assert name == "Aggregate"
    record["window_start"] = epoch_micros(record["window_start"])
    record["window_end"] = epoch_micros(record["window_end"])
    return record


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, key order included."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_the_loaded_schema_is_the_specialised_layout() -> None:
    """Otherwise every property below would only compare the generic codec with itself."""
    assert schemas._aggregate_codec.specialised()
    assert _SOURCE.specialised()


@pytest.mark.parametrize("which", list(ENCODERS))
@settings(max_examples=400, deadline=None)
@given(record=_aggregator_records())
def test_encode_matches_the_generic_encoder(which: str, record: dict[str, Any]) -> None:
    assert _ours(ENCODERS[which], record) == _reference(record)


@pytest.mark.parametrize("which", list(ENCODERS))
@settings(max_examples=300, deadline=None)
@given(record=STRATEGIES["Aggregate"])
def test_encode_matches_on_any_record_the_schema_takes(which: str, record: dict[str, Any]) -> None:
    """Traffic counts, occupancy regions, datetimes, ints in doubles: the generic encoder's."""
    assert _ours(ENCODERS[which], record) == _reference(record)


@pytest.mark.parametrize("which", list(DECODERS))
@settings(max_examples=300, deadline=None)
@given(record=_aggregator_records() | STRATEGIES["Aggregate"])
def test_decode_matches_the_generic_decoder(which: str, record: dict[str, Any]) -> None:
    data = _reference(record)
    if not isinstance(data, bytes):
        return
    assert _same(DECODERS[which](data), _expected_read(data))


@pytest.mark.parametrize("which", list(ENCODERS))
def test_values_of_the_wrong_type_are_the_generic_errors(which: str) -> None:
    """A None where the schema has no null, a missing required field, a string double."""
    base = {
        "key": "s",
        "kind": "noise",
        "window_start": 0,
        "window_end": 60_000_000,
        "window_size_seconds": 60,
        "sample_count": 1,
    }
    for bad in (
        {"values": None},
        {"counts": None},
        {"final": None},
        {"values": {"laeq_db": "60"}},
        {"revision": 1 << 31},
        {"key": None},
    ):
        with pytest.raises(SchemaError):
            ENCODERS[which]({**base, **bad})
    missing = dict(base)
    del missing["sample_count"]
    with pytest.raises(SchemaError, match="sample_count"):
        ENCODERS[which](missing)


@pytest.mark.parametrize("which", list(DECODERS))
def test_decode_of_bytes_that_are_no_aggregate_is_none(which: str) -> None:
    good = schemas.encode(
        "Aggregate",
        {
            "key": "s",
            "kind": "noise",
            "window_start": datetime(2026, 1, 1, tzinfo=UTC),
            "window_end": datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
            "window_size_seconds": 60,
            "values": {"laeq_db": 60.0},
            "sample_count": 1,
        },
    )
    decode = DECODERS[which]
    assert decode(good) is not None
    bad: bytes | bytearray
    for bad in (
        b"",
        good[:-1],
        good + b"\x00",
        good[:-2] + b"\x02\x00",  # a traffic count array cut short
        bytearray(good),
    ):
        assert _same(decode(bad), _expected_read(bytes(bad)))
    boolean_at = good.index(b"noise") + len(b"noise") + 8 + 8 + 1 + 1  # after size and revision
    assert good[boolean_at] == 1
    not_a_boolean = good[:boolean_at] + b"\x02" + good[boolean_at + 1 :]
    assert decode(not_a_boolean) is None
    dead_letter = schemas.encode(
        "DeadLetter",
        {
            "original_topic": "t",
            "payload": b"",
            "error_class": "E",
            "error_message": "m",
            "reason": "undecodable",
            "codec": None,
            "received_at": datetime(2026, 1, 1, tzinfo=UTC),
            "sensor_id": None,
        },
    )
    assert decode(dead_letter) is None


@pytest.mark.parametrize("which", list(DECODERS))
def test_decoded_strings_are_shared_and_their_cache_is_bounded(which: str) -> None:
    """Names read again are the same ``str`` objects (no new string per record), and a stream
    of ever new keys does not grow the cache past its bound (read through the plain source,
    whose module globals are visible)."""
    decode = DECODERS[which]

    def frame(key: str) -> bytes:
        return schemas._aggregate_codec.encode_aggregate(
            {
                "key": key,
                "kind": "noise",
                "window_start": 0,
                "window_end": 60_000_000,
                "window_size_seconds": 60,
                "values": {"laeq_db": 60.0},
                "sample_count": 1,
            }
        )

    first, again = decode(frame("sensor-a")), decode(frame("sensor-a"))
    assert first is not None
    assert again is not None
    assert first["key"] is again["key"]
    assert first == again
    assert next(iter(first["values"])) is next(iter(again["values"]))
    if which == "source":
        bound = _SOURCE._STRINGS_MAX
        for index in range(bound + 10):
            read = decode(frame(f"k{index}"))
            assert read is not None
            assert read["key"] == f"k{index}"
        assert len(_SOURCE._DECODED) <= bound
