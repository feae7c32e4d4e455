"""Round trips of the Parametric PCR2 codec: decode(encode(m)) == m within resolution."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import TRAFFIC_CLASSES, Decoded, DeviceProfile, TrafficCount, get_codec
from tests.decoders._roundtrip import assert_roundtrip, on_grid, steps_from

NAME = "parametric-pcr2"
STEPS = {"battery_v": 0.001, "solar_power_mw": 1.0, "board_temperature_c": 0.1}
U16 = st.integers(0, 0xFFFF)


@st.composite
def pcr2_messages(draw: st.DrawFn) -> tuple[Decoded, DeviceProfile]:
    traffic_class = draw(st.sampled_from(TRAFFIC_CLASSES))
    profile = DeviceProfile(line_classes={1: traffic_class})
    message = Decoded(
        codec=NAME,
        kind="traffic",
        values={
            "battery_v": draw(on_grid(0, 65.535)),
            "solar_power_mw": float(draw(U16)),
            "board_temperature_c": draw(on_grid(-3276.8, 3276.7)),
        },
        counts=[
            TrafficCount(1, "in", traffic_class, draw(U16), draw(U16)),
            TrafficCount(1, "out", traffic_class, draw(U16), draw(U16)),
        ],
    )
    return message, profile


@given(pcr2_messages())
def test_pcr2_roundtrip(case: tuple[Decoded, DeviceProfile]) -> None:
    message, profile = case
    assert_roundtrip(NAME, message, steps_from(STEPS), profile)


def _message(**changes: object) -> Decoded:
    counts = [TrafficCount(1, "in", "unknown", 1, 3), TrafficCount(1, "out", "unknown", 2, 4)]
    values = {"battery_v": 7.2, "solar_power_mw": 3300.0, "board_temperature_c": 31.3}
    message = Decoded(codec=NAME, kind="traffic", values=values, counts=counts)
    for name, value in changes.items():
        setattr(message, name, value)
    return message


def test_pcr2_encodes_the_ttn_example() -> None:
    assert get_codec(NAME).encode(_message()) == (
        14,
        bytes.fromhex("be010400010002000300041c200ce40139"),
    )


@pytest.mark.parametrize(
    "message",
    [
        _message(counts=[TrafficCount(1, "in", "unknown", 1, 3)]),
        _message(counts=[TrafficCount(1, "in", "car", 1, 3), TrafficCount(1, "out", "car", 2, 4)]),
        _message(
            counts=[
                TrafficCount(1, "in", "unknown", None, 3),
                TrafficCount(1, "out", "unknown", 2, 4),
            ]
        ),
        _message(
            counts=[
                TrafficCount(1, "in", "unknown", 1, 70000),
                TrafficCount(1, "out", "unknown", 2, 4),
            ]
        ),
        _message(values={"battery_v": 7.2}),
        _message(values={"battery_v": 7.2, "solar_power_mw": 1.0, "board_temperature_c": math.inf}),
        _message(values={"battery_v": 7.2, "solar_power_mw": 1.0, "board_temperature_c": 4000.0}),
    ],
)
def test_pcr2_encoder_rejects(message: Decoded) -> None:
    with pytest.raises(ValueError, match=NAME):
        get_codec(NAME).encode(message)
