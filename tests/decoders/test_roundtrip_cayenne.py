"""Round trips of the Cayenne LPP codec: decode(encode(m)) == m within resolution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import Decoded, DeviceProfile, get_codec
from tests.decoders._roundtrip import assert_roundtrip, on_grid

NAME = "cayenne-lpp"
#: LPP name → (component suffixes, low, high, step), from the type table.
TYPES: dict[str, tuple[tuple[str, ...], float, float, float]] = {
    "digital_in": (("",), 0, 255, 1),
    "digital_out": (("",), 0, 255, 1),
    "analog_in": (("",), -327.68, 327.67, 0.01),
    "analog_out": (("",), -327.68, 327.67, 0.01),
    "luminosity": (("",), 0, 65535, 1),
    "presence": (("",), 0, 255, 1),
    "temperature": (("",), -3276.8, 3276.7, 0.1),
    "relative_humidity": (("",), 0, 127.5, 0.5),
    "accelerometer": (("_x", "_y", "_z"), -32.768, 32.767, 0.001),
    "barometric_pressure": (("",), 0, 6553.5, 0.1),
    "gyrometer": (("_x", "_y", "_z"), -327.68, 327.67, 0.01),
}
GPS = (("_latitude", -838.8608, 838.8607, 0.0001), ("_longitude", -838.8608, 838.8607, 0.0001),
       ("_altitude", -83886.08, 83886.07, 0.01))  # fmt: skip


@st.composite
def lpp_messages(draw: st.DrawFn) -> tuple[Decoded, dict[str, float]]:
    entries = draw(
        st.lists(
            st.tuples(st.integers(0, 255), st.sampled_from([*TYPES, "gps"])),
            min_size=1,
            max_size=8,
            unique=True,
        )
    )
    values: dict[str, float] = {}
    steps: dict[str, float] = {}
    for channel, type_name in entries:
        fields: tuple[tuple[str, float, float, float], ...]
        if type_name == "gps":
            fields = GPS
        else:
            suffixes, low, high, step = TYPES[type_name]
            fields = tuple((suffix, low, high, step) for suffix in suffixes)
        for suffix, low, high, step in fields:
            name = f"{type_name}_{channel}{suffix}"
            values[name] = draw(on_grid(low, high))
            steps[name] = step
    return Decoded(codec=NAME, kind="air", values=values), steps


@given(lpp_messages())
def test_lpp_roundtrip(case: tuple[Decoded, dict[str, float]]) -> None:
    message, steps = case
    assert_roundtrip(NAME, message, steps.__getitem__)


@given(on_grid(0, 140), on_grid(-40, 80))
def test_lpp_roundtrip_through_channel_map(laeq: float, temperature: float) -> None:
    profile = DeviceProfile(
        channel_map={"analog_in_3": "laeq_db", "temperature_1": "temperature_c"}
    )
    message = Decoded(
        codec=NAME, kind="noise", values={"laeq_db": laeq, "temperature_c": temperature}
    )
    assert_roundtrip(NAME, message, {"laeq_db": 0.01, "temperature_c": 0.1}.__getitem__, profile)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"temperature_1": 5000.0},
        {"temperature_1": float("-inf")},
        {"analog_in_1": float("nan")},
        {"digital_in_1": -1.0},
        {"temperature_256": 1.0},
        {"laeq_db": 60.0},
        {"gps_1_latitude": 1.0, "gps_1_longitude": 2.0},
        {"temperature_1_x": 1.0},
    ],
)
def test_lpp_encoder_rejects(values: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=NAME):
        get_codec(NAME).encode(Decoded(codec=NAME, kind="air", values=values))
