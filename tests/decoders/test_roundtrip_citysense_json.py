"""Round trips of the citysense JSON codec: decode(encode(m)) == m exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import KINDS, TRAFFIC_CLASSES, Decoded, RegionCount, TrafficCount, get_codec
from tests.decoders._roundtrip import assert_roundtrip

NAME = "citysense-json"
NAMES = st.sampled_from(
    ["laeq_db", "lafmax_db", "lz_63hz_db", "pm2_5_ugm3", "no2_ugm3", "co_mgm3", "temperature_c",
     "humidity_pct", "pressure_hpa", "battery_v", "nc0_5_per_cm3", "wind_speed_mps"]
)  # fmt: skip
FINITE = st.floats(allow_nan=False, allow_infinity=False)
COUNT = st.integers(0, 2**53)
TIMEZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])


@st.composite
def json_messages(draw: st.DrawFn) -> Decoded:
    kind = draw(st.sampled_from(KINDS))
    counts = regions = []
    if kind == "traffic":
        counts = draw(
            st.lists(
                st.builds(
                    TrafficCount,
                    st.integers(1, 64),
                    st.sampled_from(["in", "out"]),
                    st.sampled_from(TRAFFIC_CLASSES),
                    COUNT,
                    st.none() | COUNT,
                ),
                min_size=1,
                max_size=6,
            )
        )
    if kind == "occupancy":
        regions = draw(st.lists(st.builds(RegionCount, st.integers(1, 16), COUNT), min_size=1))
    values = draw(st.dictionaries(NAMES, FINITE, min_size=0 if counts or regions else 1))
    observed_at = draw(st.none() | st.datetimes(timezones=TIMEZONES))
    return Decoded(
        codec=NAME,
        kind=kind,
        values=values,
        counts=counts,
        regions=regions,
        observed_at=observed_at,
    )


@given(json_messages())
def test_json_roundtrip(message: Decoded) -> None:
    decoded = assert_roundtrip(NAME, message, lambda name: 0.0)
    assert decoded.values == message.values
    assert decoded.observed_at is None or decoded.observed_at.tzinfo is UTC


@pytest.mark.parametrize(
    "message",
    [
        Decoded(codec=NAME, kind="noise", values={"laeq": 1.0}),
        Decoded(codec=NAME, kind="noise", values={"laeq_db": float("nan")}),
        Decoded(codec=NAME, kind="noise"),
        Decoded(codec=NAME, kind="noise", values={"laeq_db": 1.0}, partial=True),
        Decoded(codec=NAME, kind="air", values={"pm10_ugm3": 1.0}, regions=[RegionCount(1, 2)]),
        Decoded(
            codec=NAME,
            kind="noise",
            values={"laeq_db": 1.0},
            observed_at=datetime(2026, 1, 1),  # noqa: DTZ001 - naive on purpose
        ),
    ],
)
def test_json_encoder_rejects(message: Decoded) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's or the codec's own message
        get_codec(NAME).encode(message)
