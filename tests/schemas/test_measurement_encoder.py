"""``encode_measurement`` and ``encode_decoded`` write exactly what
``encode(name, measurement_record(m))`` writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
import schemas._measurement_encoder
from decoders import KINDS, Decoded, Position, RegionCount, TrafficCount
from schemas import (
    Measurement,
    SchemaError,
    Source,
    encode_decoded,
    encode_measurement,
    typed_quantities,
)
from tests._source import plain_python
from tests.schemas._strategies import DOUBLES, MAX_TIME, MIN_TIME, ZONES, _longs, decoded_of

_NAMES = st.text(min_size=1, max_size=12)
_OPTIONAL_TEXT = st.none() | st.text(max_size=40)
_TIMES = st.datetimes(min_value=MIN_TIME, max_value=MAX_TIME, timezones=ZONES)


_SOURCE_MODULE = plain_python(schemas._measurement_encoder)


def _via_decoded(encoder: Callable[..., bytes]) -> Callable[[Measurement], bytes]:
    """``encode_decoded`` of the parts ``measurement`` is made of (ingest's path)."""

    def encode(measurement: Measurement) -> bytes:
        return encoder(
            decoded_of(measurement),
            sensor_id=measurement.sensor_id,
            observed_at=measurement.observed_at,
            received_at=measurement.received_at,
            source=measurement.source,
        )

    return encode


ENCODERS: dict[str, Callable[[Measurement], bytes]] = {
    "imported": encode_measurement,
    "source": _SOURCE_MODULE.encode_measurement,
    "decoded imported": _via_decoded(encode_decoded),
    "decoded source": _via_decoded(_SOURCE_MODULE.encode_decoded),
}


def _reference(measurement: Measurement) -> bytes:
    name = schemas.measurement_schema_name(measurement.kind)
    return schemas.encode(name, schemas.measurement_record(measurement))


@st.composite
def _values(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    typed = sorted(typed_quantities(kind))
    names = draw(st.lists(st.sampled_from(typed) | _NAMES, unique=True, max_size=12))
    return {name: draw(DOUBLES | st.floats()) for name in names}


@st.composite
def measurements(draw: st.DrawFn, kind: str) -> Measurement:
    counts: tuple[TrafficCount, ...] = ()
    regions: tuple[RegionCount, ...] = ()
    if kind == "traffic":
        counts = tuple(
            draw(
                st.lists(
                    st.builds(
                        TrafficCount,
                        line=_longs(-(1 << 31), (1 << 31) - 1),
                        direction=st.sampled_from(["in", "out"]),
                        traffic_class=st.text(max_size=12),
                        count=st.none() | _longs(-(1 << 63), (1 << 63) - 1),
                        cumulative=st.none() | _longs(-(1 << 63), (1 << 63) - 1),
                    ),
                    max_size=6,
                )
            )
        )
    if kind == "occupancy":
        ints = _longs(-(1 << 31), (1 << 31) - 1)
        regions = tuple(draw(st.lists(st.builds(RegionCount, region=ints, count=ints), max_size=6)))
    source = Source(
        network=draw(_OPTIONAL_TEXT),
        gateway_id=draw(_OPTIONAL_TEXT),
        rssi=draw(st.none() | st.floats()),
        snr=draw(st.none() | st.floats()),
        f_cnt=draw(st.none() | _longs(-(1 << 63), (1 << 63) - 1)),
        dev_eui=draw(_OPTIONAL_TEXT),
        dedup_id=draw(_OPTIONAL_TEXT),
        idempotency_key=draw(_OPTIONAL_TEXT),
    )
    position = None
    if kind == "air" and draw(st.booleans()):
        # Any doubles (ints too, which the careful path converts), as the encoders take them;
        # ranges are ingest's to check.
        number = st.floats() | _longs(-1000, 1000)
        position = Position(draw(number), draw(number), draw(st.none() | number))
    observed_at = draw(_TIMES)
    # The same object for both times, as on direct topics, where the encoder converts it once.
    received_at = observed_at if draw(st.booleans()) else draw(_TIMES)
    return Measurement(
        sensor_id=draw(st.text(max_size=30)),
        kind=kind,  # type: ignore[arg-type]
        observed_at=observed_at,
        received_at=received_at,
        codec=draw(st.text(max_size=20)),
        values=draw(_values(kind)),
        counts=counts,
        regions=regions,
        partial=draw(st.booleans()),
        source=source,
        position=position,
    )


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_same_bytes_as_the_record_encoder(
    encoder: Callable[[Measurement], bytes], kind: str, data: st.DataObject
) -> None:
    measurement = data.draw(measurements(kind))
    assert encoder(measurement) == _reference(measurement)


def test_a_shape_seen_again_writes_its_own_values() -> None:
    """The cached layout of a shape must not keep the values of the message that created it."""

    def noise(sensor_id: str, day: int, values: dict[str, float]) -> Measurement:
        at = datetime(2026, 1, day, tzinfo=UTC)
        return Measurement(sensor_id, "noise", at, at, "c", values=values)

    first = noise("s1", 1, {"laeq_db": 61.5, "lafmax_db": 70.25, "x": 1.0})
    second = noise("s2", 2, {"laeq_db": 48.0, "lafmax_db": 52.0, "x": 2.0})
    assert encode_measurement(first) == _reference(first)
    assert encode_measurement(second) == _reference(second)
    assert encode_measurement(first) != encode_measurement(second)


def test_decoded_times_may_be_micros() -> None:
    """Ints of µs since the epoch are the same instants as the datetimes they stand for."""
    at = datetime(2026, 3, 3, 5, 27, 0, 350_001, tzinfo=UTC)
    decoded = Decoded("c", "noise", {"laeq_db": 61.5})
    as_datetimes = encode_decoded(decoded, sensor_id="s1", observed_at=at, received_at=at)
    micros = schemas.epoch_micros(at)
    as_ints = encode_decoded(decoded, sensor_id="s1", observed_at=micros, received_at=micros)
    assert as_ints == as_datetimes


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"observed_at": datetime(2026, 1, 1)}, "observed_at"),  # noqa: DTZ001  naive on purpose
        ({"sensor_id": 42}, "sensor_id"),
        ({"counts": (TrafficCount(1, "in", "car", 1, None),)}, "traffic counts"),
        ({"source": Source(f_cnt=1 << 70)}, "source.f_cnt"),
    ],
)
def test_bad_values_get_the_record_encoders_error(
    encoder: Callable[[Measurement], bytes], change: dict[str, Any], field: str
) -> None:
    fields: dict[str, Any] = {
        "sensor_id": "s1",
        "kind": "noise",
        "observed_at": datetime(2026, 1, 1, tzinfo=UTC),
        "received_at": datetime(2026, 1, 1, tzinfo=UTC),
        "codec": "c",
        "values": {"laeq_db": 61.5},
    }
    fields.update(change)
    measurement = Measurement(**fields)
    with pytest.raises(SchemaError, match=field) as caught:
        encoder(measurement)
    with pytest.raises(SchemaError) as expected:
        _reference(measurement)
    assert str(caught.value) == str(expected.value)
