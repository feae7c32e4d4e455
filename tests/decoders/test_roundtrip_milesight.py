"""Round trip ``decode(encode(m)) == m`` for the Milesight codecs: WS302, AM307, VS133, VS121."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import Decoded, DeviceProfile, RegionCount, TrafficCount
from decoders._model import Direction
from tests.decoders._roundtrip import (
    assert_decodes_or_rejects,
    assert_roundtrip,
    fports_of,
    on_grid,
    steps_from,
)

COUNTER_PROFILE = DeviceProfile(line_classes={1: "bicycle", 3: "pedestrian"})
DIRECTIONS: tuple[Direction, ...] = ("in", "out")
flags = st.sampled_from([0.0, 1.0])
# Records with channel ids and types these codecs know, so fuzzing reaches past the first record.
TLV_RECORDS = st.builds(
    lambda channel_id, channel_type, data: bytes([channel_id, channel_type]) + data,
    st.integers(0x01, 0x10),
    st.sampled_from(bytes.fromhex("00 01 5B 67 68 73 75 7D 85 C9 CB CC CD D2 D5 E3 E4 E6")),
    st.binary(max_size=9),
)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)


def integral(name: str) -> float:
    """Counters and people counts are integers: no rounding allowed."""
    return 0.0


@st.composite
def ws302_measurements(draw: st.DrawFn) -> Decoded:
    values: dict[str, float] = {}
    if draw(st.booleans()):
        values["battery_pct"] = draw(on_grid(0, 100))
    if not values or draw(st.booleans()):
        f = draw(st.sampled_from("azc"))
        t = draw(st.sampled_from("fsi"))
        level = on_grid(0, 6553.5)
        values |= {
            f"l{f}{t}_db": draw(level),
            f"l{f}eq_db": draw(level),
            f"l{f}{t}max_db": draw(level),
        }
    return Decoded(codec="milesight-ws302", kind="noise", values=values)


@given(ws302_measurements())
def test_ws302(original: Decoded) -> None:
    assert_roundtrip(
        "milesight-ws302", original, lambda name: 1.0 if name == "battery_pct" else 0.1
    )


AM307_FIELDS = {
    # name: (strategy, step)
    "battery_pct": (on_grid(0, 100), 1.0),
    "temperature_c": (on_grid(-3276.8, 3276.7), 0.1),
    "humidity_pct": (on_grid(0, 100), 0.5),
    "motion_detected": (flags, 1.0),
    "light_level": (st.integers(0, 5).map(float), 1.0),
    "co2_ppm": (on_grid(0, 65535), 1.0),
    "tvoc_iaq": (on_grid(0, 655.35), 0.01),
    "tvoc_ugm3": (on_grid(0, 65535), 1.0),
    "pressure_hpa": (on_grid(300, 1100), 0.1),
    "hcho_mgm3": (on_grid(0, 655.35), 0.01),
    "pm2_5_ugm3": (on_grid(0, 65535), 1.0),
    "pm10_ugm3": (on_grid(0, 65535), 1.0),
    "o3_ugm3": (on_grid(0, 0xFFFF / 100 * 1996), 19.96),
    "buzzer_on": (flags, 1.0),
}


@given(
    st.fixed_dictionaries({}, optional={n: s for n, (s, _) in AM307_FIELDS.items()}).filter(bool)
)
def test_am307(values: dict[str, float]) -> None:
    original = Decoded(codec="milesight-am307", kind="air", values=values)
    assert_roundtrip(
        "milesight-am307", original, steps_from({n: s for n, (_, s) in AM307_FIELDS.items()})
    )


@st.composite
def dwell_times(draw: st.DrawFn, regions: st.SearchStrategy[int]) -> dict[str, float]:
    values: dict[str, float] = {}
    for region in draw(st.sets(regions, max_size=4)):
        values[f"region_{region}_dwell_avg_s"] = float(draw(u16))
        values[f"region_{region}_dwell_max_s"] = float(draw(u16))
    return values


@st.composite
def vs133_measurements(draw: st.DrawFn) -> Decoded:
    counts: list[TrafficCount] = []
    for line in range(1, 5):
        totals = {d: draw(st.none() | st.integers(0, 0xFFFF_FFFF)) for d in DIRECTIONS}
        period = draw(st.none() | st.tuples(u16, u16))
        for index, direction in enumerate(DIRECTIONS):
            count = None if period is None else period[index]
            cumulative = totals[direction]
            if count is not None or cumulative is not None:
                cls = COUNTER_PROFILE.traffic_class(line)
                counts.append(TrafficCount(line, direction, cls, count, cumulative))
    regions = []
    if draw(st.booleans()):
        regions = [RegionCount(region, draw(u8)) for region in range(1, 5)]
    values = draw(dwell_times(st.integers(1, 0xFF)))
    decoded = Decoded(codec="milesight-vs133", kind="traffic", values=values)
    decoded.counts, decoded.regions = counts, regions
    return decoded


@given(vs133_measurements().filter(lambda m: bool(m.counts or m.regions or m.values)))
def test_vs133(original: Decoded) -> None:
    assert_roundtrip("milesight-vs133", original, integral, COUNTER_PROFILE)


@st.composite
def vs121_measurements(draw: st.DrawFn) -> Decoded:
    values: dict[str, float] = {}
    if draw(st.booleans()):
        values["people_count"] = float(draw(u8))
        for region in range(1, draw(st.integers(0, 16)) + 1):
            values[f"region_{region}_occupied"] = draw(flags)
    if draw(st.booleans()):
        values["people_in_count"] = float(draw(st.integers(-0x8000, 0x7FFF)))
        values["people_out_count"] = float(draw(st.integers(-0x8000, 0x7FFF)))
    if draw(st.booleans()):
        values["people_max_count"] = float(draw(u8))
    if draw(st.booleans()):
        values["people_in_total_count"] = float(draw(u16))
        values["people_out_total_count"] = float(draw(u16))
    values |= draw(dwell_times(st.integers(1, 16)))
    regions: list[RegionCount] = []
    for first in (1, 9):
        if draw(st.booleans()):
            regions += [RegionCount(r, draw(u8)) for r in range(first, first + 8)]
    observed_at = None
    if draw(st.booleans()):
        observed_at = datetime.fromtimestamp(draw(st.integers(0, 0xFFFF_FFFF)), tz=UTC)
    decoded = Decoded(codec="milesight-vs121", kind="occupancy", values=values)
    decoded.regions, decoded.observed_at = regions, observed_at
    return decoded


@given(vs121_measurements().filter(lambda m: bool(m.values or m.regions or m.observed_at)))
def test_vs121(original: Decoded) -> None:
    assert_roundtrip("milesight-vs121", original, integral)


@pytest.mark.parametrize(
    "codec_name", ["milesight-ws302", "milesight-am307", "milesight-vs133", "milesight-vs121"]
)
@given(data=st.data())
def test_garbage(codec_name: str, data: st.DataObject) -> None:
    payload = data.draw(st.binary(max_size=64) | st.lists(TLV_RECORDS).map(b"".join))
    assert_decodes_or_rejects(codec_name, payload, data.draw(fports_of(codec_name)))
